//! `[tokens.verify]` validation: where the revokers' signature keys come
//! from (a JWKS URL, `https://` or loopback `http://`, or a file read now),
//! the accepted issuers and audiences, and the bounded refresh timings.

use std::time::Duration;

use super::validate::{within, Found, DAY, MIN, MINUTE};
use super::{ConfigError, VerifyConfig};

impl VerifyConfig {
    /// Checks the section (every bad key into `f`); reads `jwks_file`.
    pub(super) fn validate(&self, f: &mut Found) -> Option<crate::identity::VerifySettings> {
        use crate::identity::{KeySet, KeySource, Policy, VerifySettings};
        let source = match (&self.jwks_url, &self.jwks_file) {
            (Some(_), Some(_)) => {
                f.add(ConfigError::new(
                    "tokens.verify.jwks_url",
                    "set jwks_url or jwks_file, not both",
                ));
                None
            }
            (None, None) => {
                f.add(ConfigError::new(
                    "tokens.verify.jwks_url",
                    "required (or jwks_file): where are the signature keys?",
                ));
                None
            }
            (Some(url), None) => f
                .ok(jwks_url("tokens.verify.jwks_url", url))
                .map(KeySource::Url),
            (None, Some(path)) => f
                .ok(KeySet::load_file(path).map_err(|e| {
                    ConfigError::new(
                        "tokens.verify.jwks_file",
                        format!("{}: {e}", path.display()),
                    )
                }))
                .map(|keys| KeySource::File {
                    path: path.clone(),
                    keys: std::sync::Arc::new(keys),
                }),
        };
        for (key, values) in [
            ("tokens.verify.issuers", &self.issuers),
            ("tokens.verify.audiences", &self.audiences),
        ] {
            if values.is_empty() {
                f.add(ConfigError::new(
                    key,
                    "at least one is required: a token minted for anyone else must not pass",
                ));
            }
            for (i, _) in values.iter().enumerate().filter(|(_, v)| v.is_empty()) {
                f.add(ConfigError::new(format!("{key}[{i}]"), "must not be empty"));
            }
        }
        f.ok(within(
            "tokens.verify.leeway",
            self.leeway,
            Duration::ZERO,
            10 * MINUTE,
        )
        .map_err(|e| ConfigError {
            message: format!(
                "{}: clocks that far apart need fixing, not tolerating",
                e.message
            ),
            ..e
        }));
        f.ok(within(
            "tokens.verify.fetch_timeout",
            self.fetch_timeout,
            MIN,
            5 * MINUTE,
        ));
        // It is what stops an unknown-kid spray from hammering the identity provider.
        let min_refresh = f.ok(within(
            "tokens.verify.min_refresh_interval",
            self.min_refresh_interval,
            MIN,
            DAY,
        ));
        let refresh = f.ok(within(
            "tokens.verify.refresh_interval",
            self.refresh_interval,
            MIN,
            7 * DAY,
        ));
        if min_refresh.is_some()
            && refresh.is_some()
            && self.refresh_interval < self.min_refresh_interval
        {
            f.add(ConfigError::new(
                "tokens.verify.refresh_interval",
                "must be at least min_refresh_interval",
            ));
        }
        Some(VerifySettings {
            source: source?,
            policy: Policy {
                issuers: self.issuers.clone(),
                audiences: self.audiences.clone(),
                leeway: self.leeway,
                require_exp: true,
            },
            refresh_interval: self.refresh_interval,
            min_refresh_interval: self.min_refresh_interval,
            fetch_timeout: self.fetch_timeout,
        })
    }
}

/// A JWKS URL: `https://`, or `http://` to a loopback host (where no one
/// can tamper with the keys in transit).
pub(super) fn jwks_url(key: &str, v: &str) -> Result<http::Uri, ConfigError> {
    secure_url(
        key,
        v,
        "keys fetched in the clear can be replaced in transit",
    )
}

/// A URL revgate sends to or trusts answers from: `https://`, or `http://`
/// to a loopback host only; `why` says what the clear would risk.
pub(super) fn secure_url(key: &str, v: &str, why: &str) -> Result<http::Uri, ConfigError> {
    let uri: http::Uri = v
        .parse()
        .map_err(|_| ConfigError::new(key, format!("not a URL: {v:?}")))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ConfigError::new(key, "needs a host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = bare.eq_ignore_ascii_case("localhost")
                || bare
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(uri)
            } else {
                Err(ConfigError::new(
                    key,
                    format!("must be https:// (http:// only to a loopback host): {why}"),
                ))
            }
        }
        _ => Err(ConfigError::new(key, "scheme must be https")),
    }
}
