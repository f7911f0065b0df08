//! `[feeds]` validation: each enabled feed's issuer, audience and key source
//! (one of `jwks_url`, `jwks_file`, read now), its path (absolute, and no
//! other revoke surface's), its bounded timings, and `[feeds.ssf.poll]`.

use std::time::Duration;

use super::validate::{within, DAY, MIN, MINUTE};
use super::{ConfigError, FeedSourceConfig, FeedsConfig, SsfPollConfig};
use crate::feeds::{FeedSettings, PollSettings, SourceSettings, SsfSettings};
use crate::identity::{KeySet, KeySource, Policy, VerifySettings};

impl FeedsConfig {
    /// Checks the section; `dialect_paths` are the revoke endpoints' paths,
    /// which a feed may not take.
    pub(super) fn validate(&self, dialect_paths: &[&str]) -> Result<FeedSettings, ConfigError> {
        if !(1..=10_000_000).contains(&self.replay_capacity) {
            return Err(ConfigError::new(
                "feeds.replay_capacity",
                "must be between 1 and 10000000",
            ));
        }
        let backchannel = match self.backchannel_logout.enabled {
            true => Some(source(
                "feeds.backchannel_logout",
                &self.backchannel_logout,
                "/backchannel-logout",
                true,
            )?),
            false => None,
        };
        let ssf = match self.ssf.enabled {
            false => None,
            true => {
                let s = &self.ssf;
                let src = source("feeds.ssf", &s.source(), "/ssf/events", false)?;
                let authorization = s
                    .authorization_header
                    .as_deref()
                    .map(|v| header_value("feeds.ssf.authorization_header", v))
                    .transpose()?;
                for (i, iss) in s.subjects.iss_sub_issuers.iter().enumerate() {
                    if iss.is_empty() {
                        return Err(ConfigError::new(
                            format!("feeds.ssf.subjects.iss_sub_issuers[{i}]"),
                            "must not be empty",
                        ));
                    }
                }
                let poll = s.poll.as_ref().map(poll).transpose()?;
                Some(SsfSettings {
                    source: src,
                    authorization,
                    subjects: s.subjects.clone(),
                    poll,
                })
            }
        };
        let mut taken: Vec<(&str, String)> = Vec::new();
        if let Some(b) = &backchannel {
            taken.push(("feeds.backchannel_logout.path", b.path.clone()));
        }
        if let Some(s) = &ssf {
            taken.push(("feeds.ssf.path", s.source.path.clone()));
        }
        for (i, (key, path)) in taken.iter().enumerate() {
            if dialect_paths.contains(&path.as_str()) {
                return Err(ConfigError::new(
                    *key,
                    format!("{path} is a revoke endpoint's path already"),
                ));
            }
            if taken[..i].iter().any(|(_, p)| p == path) {
                return Err(ConfigError::new(
                    *key,
                    format!("{path} is the other feed's path"),
                ));
            }
        }
        Ok(FeedSettings {
            backchannel,
            ssf,
            replay_capacity: self.replay_capacity,
        })
    }
}

/// One feed's source: issuer, audience, keys, path, timings.
fn source(
    section: &str,
    c: &FeedSourceConfig,
    default_path: &str,
    require_exp: bool,
) -> Result<SourceSettings, ConfigError> {
    let key = |k: &str| format!("{section}.{k}");
    let path = c.path.clone().unwrap_or_else(|| default_path.to_string());
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(ConfigError::new(
            key("path"),
            "must be an absolute path without query",
        ));
    }
    let issuer = required(&key("issuer"), c.issuer.as_deref())?;
    let audience = required(&key("audience"), c.audience.as_deref())?;
    let source = match (&c.jwks_url, &c.jwks_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                key("jwks_url"),
                "set jwks_url or jwks_file, not both",
            ))
        }
        (None, None) => {
            return Err(ConfigError::new(
                key("jwks_url"),
                "required (or jwks_file): where are the provider's signature keys?",
            ))
        }
        (Some(url), None) => KeySource::Url(super::verify::jwks_url(&key("jwks_url"), url)?),
        (None, Some(path)) => {
            let keys = KeySet::load_file(path).map_err(|e| {
                ConfigError::new(key("jwks_file"), format!("{}: {e}", path.display()))
            })?;
            KeySource::File {
                path: path.clone(),
                keys: std::sync::Arc::new(keys),
            }
        }
    };
    within(&key("leeway"), c.leeway, Duration::ZERO, 10 * MINUTE)?;
    within(&key("fetch_timeout"), c.fetch_timeout, MIN, 5 * MINUTE)?;
    within(
        &key("min_refresh_interval"),
        c.min_refresh_interval,
        MIN,
        DAY,
    )?;
    within(&key("refresh_interval"), c.refresh_interval, MIN, 7 * DAY)?;
    if c.refresh_interval < c.min_refresh_interval {
        return Err(ConfigError::new(
            key("refresh_interval"),
            "must be at least min_refresh_interval",
        ));
    }
    Ok(SourceSettings {
        path,
        verify: VerifySettings {
            source,
            policy: Policy {
                issuers: vec![issuer],
                audiences: vec![audience],
                leeway: c.leeway,
                require_exp,
            },
            refresh_interval: c.refresh_interval,
            min_refresh_interval: c.min_refresh_interval,
            fetch_timeout: c.fetch_timeout,
        },
    })
}

fn required(key: &str, v: Option<&str>) -> Result<String, ConfigError> {
    match v {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(ConfigError::new(
            key,
            "required when the feed is enabled: a token minted for anyone else must not revoke",
        )),
    }
}

/// A header value revgate sends or compares: visible ASCII and spaces.
fn header_value(key: &str, v: &str) -> Result<http::HeaderValue, ConfigError> {
    if v.trim().is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    http::HeaderValue::from_str(v)
        .ok()
        .filter(|_| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .ok_or_else(|| ConfigError::new(key, "must be visible ASCII"))
}

fn poll(p: &SsfPollConfig) -> Result<PollSettings, ConfigError> {
    let url = super::verify::secure_url(
        "feeds.ssf.poll.url",
        &p.url,
        "events and their acknowledgements could be read or forged in transit",
    )?;
    within(
        "feeds.ssf.poll.interval",
        p.interval,
        Duration::from_millis(10),
        super::validate::HOUR,
    )?;
    within(
        "feeds.ssf.poll.lease",
        p.lease,
        Duration::from_secs(1),
        10 * MINUTE,
    )?;
    within("feeds.ssf.poll.timeout", p.timeout, MIN, 5 * MINUTE)?;
    if p.timeout > p.lease / 2 {
        return Err(ConfigError::new(
            "feeds.ssf.poll.timeout",
            "must be at most half the lease: a poll must end while its lease holds",
        ));
    }
    if !(1..=1000).contains(&p.max_events) {
        return Err(ConfigError::new(
            "feeds.ssf.poll.max_events",
            "must be between 1 and 1000",
        ));
    }
    let authorization = p
        .authorization_header
        .as_deref()
        .map(|v| header_value("feeds.ssf.poll.authorization_header", v))
        .transpose()?;
    Ok(PollSettings {
        url,
        interval: p.interval,
        authorization,
        max_events: p.max_events,
        lease: p.lease,
        timeout: p.timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};

    fn check(toml: &str) -> Result<crate::config::Settings, ConfigError> {
        let mut c = Config::from_toml(toml)?;
        c.upstream.url = Some("http://127.0.0.1:1".into());
        c.validate()
    }

    const BCL: &str = "[feeds.backchannel_logout]\nenabled = true\nissuer = \"https://i/\"\naudience = \"a\"\njwks_url = \"https://i/jwks\"\n";
    const SSF: &str = "[feeds.ssf]\nenabled = true\nissuer = \"https://i/\"\naudience = \"a\"\njwks_url = \"https://i/jwks\"\n";

    #[test]
    fn enabled_feeds_need_issuer_audience_and_one_key_source() {
        let s = check(&format!("{BCL}{SSF}")).unwrap();
        let f = s.feeds();
        assert_eq!(f.backchannel.as_ref().unwrap().path, "/backchannel-logout");
        assert!(f.backchannel.as_ref().unwrap().verify.policy.require_exp);
        let ssf = f.ssf.as_ref().unwrap();
        assert_eq!(ssf.source.path, "/ssf/events");
        assert!(!ssf.source.verify.policy.require_exp, "SETs carry no exp");
        assert!(check("").unwrap().feeds().backchannel.is_none());
        #[rustfmt::skip]
        let cases: Vec<(String, &str)> = vec![
            ("[feeds.backchannel_logout]\nenabled = true\n".into(), "feeds.backchannel_logout.issuer"),
            (BCL.replace("audience = \"a\"\n", ""), "feeds.backchannel_logout.audience"),
            (BCL.replace("jwks_url = \"https://i/jwks\"\n", ""), "feeds.backchannel_logout.jwks_url"),
            (format!("{BCL}jwks_file = \"/nonexistent\"\n"), "feeds.backchannel_logout.jwks_url"),
            (BCL.replace("https://i/jwks", "http://example.com/jwks"), "feeds.backchannel_logout.jwks_url"),
            (format!("{BCL}path = \"relative\"\n"), "feeds.backchannel_logout.path"),
            (format!("{BCL}leeway = \"1h\"\n"), "feeds.backchannel_logout.leeway"),
            (format!("{SSF}path = \"/oauth/revoke\"\n"), "feeds.ssf.path"),
            (format!("{BCL}path = \"/ssf/events\"\n{SSF}"), "feeds.ssf.path"),
            (format!("{SSF}authorization_header = \" \"\n"), "feeds.ssf.authorization_header"),
            (format!("{SSF}[feeds.ssf.poll]\nurl = \"http://example.com/poll\"\n"), "feeds.ssf.poll.url"),
            (format!("{SSF}[feeds.ssf.poll]\nurl = \"https://t/poll\"\ntimeout = \"10s\"\n"), "feeds.ssf.poll.timeout"),
            (format!("{SSF}[feeds.ssf.poll]\nurl = \"https://t/poll\"\nmax_events = 0\n"), "feeds.ssf.poll.max_events"),
            (format!("{SSF}[feeds.ssf.poll]\nurl = \"https://t/poll\"\nlease = \"1h\"\n"), "feeds.ssf.poll.lease"),
            ("[feeds]\nreplay_capacity = 0\n".into(), "feeds.replay_capacity"),
        ];
        for (toml, key) in cases {
            assert_eq!(check(&toml).map(|_| ()).unwrap_err().key, key, "{toml}");
        }
    }
}
