//! `[feeds]` validation: each enabled feed's issuer, audience and key source
//! (one of `jwks_url`, `jwks_file`, read now), its path (absolute, and no
//! other revoke surface's), its bounded timings, and `[feeds.ssf.poll]`.

use std::time::Duration;

use super::validate::{within, Found, DAY, MIN, MINUTE};
use super::{ConfigError, FeedSourceConfig, FeedsConfig, SsfPollConfig};
use crate::feeds::{FeedSettings, PollSettings, SourceSettings, SsfSettings};
use crate::identity::{KeySet, KeySource, Policy, VerifySettings};

impl FeedsConfig {
    /// Checks the section, recording every error in `f`; `dialect_paths`
    /// are the revoke endpoints' paths, which a feed may not take.
    pub(super) fn validate(&self, dialect_paths: &[&str], f: &mut Found) -> Option<FeedSettings> {
        let before = f.len();
        if !(1..=10_000_000).contains(&self.replay_capacity) {
            f.add(ConfigError::new(
                "feeds.replay_capacity",
                "must be between 1 and 10000000",
            ));
        }
        let backchannel = match self.backchannel_logout.enabled {
            true => source(
                "feeds.backchannel_logout",
                &self.backchannel_logout,
                "/backchannel-logout",
                true,
                f,
            ),
            false => None,
        };
        let ssf = match self.ssf.enabled {
            false => None,
            true => {
                let s = &self.ssf;
                let src = source("feeds.ssf", &s.source(), "/ssf/events", false, f);
                let authorization = match s.authorization_header.as_deref() {
                    Some(v) => f
                        .ok(header_value("feeds.ssf.authorization_header", v))
                        .map(Some),
                    None => Some(None),
                };
                for (i, iss) in s.subjects.iss_sub_issuers.iter().enumerate() {
                    if iss.is_empty() {
                        f.add(ConfigError::new(
                            format!("feeds.ssf.subjects.iss_sub_issuers[{i}]"),
                            "must not be empty",
                        ));
                    }
                }
                let poll = match s.poll.as_ref() {
                    Some(p) => poll(p, f).map(Some),
                    None => Some(None),
                };
                match (src, authorization, poll) {
                    (Some(source), Some(authorization), Some(poll)) => Some(SsfSettings {
                        source,
                        authorization,
                        subjects: s.subjects.clone(),
                        poll,
                    }),
                    _ => None,
                }
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
                f.add(ConfigError::new(
                    *key,
                    format!("{path} is a revoke endpoint's path already"),
                ));
            }
            if taken[..i].iter().any(|(_, p)| p == path) {
                f.add(ConfigError::new(
                    *key,
                    format!("{path} is the other feed's path"),
                ));
            }
        }
        (f.len() == before).then(|| FeedSettings {
            backchannel,
            ssf,
            replay_capacity: self.replay_capacity,
        })
    }
}

/// One feed's source: issuer, audience, keys, path, timings; `None` with
/// every error recorded.
fn source(
    section: &str,
    c: &FeedSourceConfig,
    default_path: &str,
    require_exp: bool,
    f: &mut Found,
) -> Option<SourceSettings> {
    let before = f.len();
    let key = |k: &str| format!("{section}.{k}");
    let path = c.path.clone().unwrap_or_else(|| default_path.to_string());
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        f.add(ConfigError::new(
            key("path"),
            "must be an absolute path without query",
        ));
    }
    let issuer = f.ok(required(&key("issuer"), c.issuer.as_deref()));
    let audience = f.ok(required(&key("audience"), c.audience.as_deref()));
    let source = match (&c.jwks_url, &c.jwks_file) {
        (Some(_), Some(_)) => {
            f.add(ConfigError::new(
                key("jwks_url"),
                "set jwks_url or jwks_file, not both",
            ));
            None
        }
        (None, None) => {
            f.add(ConfigError::new(
                key("jwks_url"),
                "required (or jwks_file): where are the provider's signature keys?",
            ));
            None
        }
        (Some(url), None) => f
            .ok(super::verify::jwks_url(&key("jwks_url"), url))
            .map(KeySource::Url),
        (None, Some(path)) => f
            .ok(KeySet::load_file(path).map_err(|e| {
                ConfigError::new(key("jwks_file"), format!("{}: {e}", path.display()))
            }))
            .map(|keys| KeySource::File {
                path: path.clone(),
                keys: std::sync::Arc::new(keys),
            }),
    };
    f.ok(within(
        &key("leeway"),
        c.leeway,
        Duration::ZERO,
        10 * MINUTE,
    ));
    f.ok(within(
        &key("fetch_timeout"),
        c.fetch_timeout,
        MIN,
        5 * MINUTE,
    ));
    let min_ok = f
        .ok(within(
            &key("min_refresh_interval"),
            c.min_refresh_interval,
            MIN,
            DAY,
        ))
        .is_some();
    let max_ok = f
        .ok(within(
            &key("refresh_interval"),
            c.refresh_interval,
            MIN,
            7 * DAY,
        ))
        .is_some();
    if min_ok && max_ok && c.refresh_interval < c.min_refresh_interval {
        f.add(ConfigError::new(
            key("refresh_interval"),
            "must be at least min_refresh_interval",
        ));
    }
    let (Some(issuer), Some(audience), Some(source)) = (issuer, audience, source) else {
        return None;
    };
    (f.len() == before).then(|| SourceSettings {
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

fn poll(p: &SsfPollConfig, f: &mut Found) -> Option<PollSettings> {
    let before = f.len();
    let url = f.ok(super::verify::secure_url(
        "feeds.ssf.poll.url",
        &p.url,
        "events and their acknowledgements could be read or forged in transit",
    ));
    f.ok(within(
        "feeds.ssf.poll.interval",
        p.interval,
        Duration::from_millis(10),
        super::validate::HOUR,
    ));
    let lease_ok = f
        .ok(within(
            "feeds.ssf.poll.lease",
            p.lease,
            Duration::from_secs(1),
            10 * MINUTE,
        ))
        .is_some();
    let timeout_ok = f
        .ok(within("feeds.ssf.poll.timeout", p.timeout, MIN, 5 * MINUTE))
        .is_some();
    if lease_ok && timeout_ok && p.timeout > p.lease / 2 {
        f.add(ConfigError::new(
            "feeds.ssf.poll.timeout",
            "must be at most half the lease: a poll must end while its lease holds",
        ));
    }
    if !(1..=1000).contains(&p.max_events) {
        f.add(ConfigError::new(
            "feeds.ssf.poll.max_events",
            "must be between 1 and 1000",
        ));
    }
    let authorization = match p.authorization_header.as_deref() {
        Some(v) => Some(f.ok(header_value("feeds.ssf.poll.authorization_header", v))?),
        None => None,
    };
    let url = url?;
    (f.len() == before).then(|| PollSettings {
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

    #[test]
    fn every_bad_feed_key_is_reported_at_once() {
        let toml = format!(
            "[feeds]\nreplay_capacity = 0\n[feeds.backchannel_logout]\nenabled = true\nleeway = \"1h\"\n\
             {SSF}authorization_header = \" \"\n[feeds.ssf.poll]\nurl = \"http://example.com/poll\"\nmax_events = 0\n"
        );
        let mut c = Config::from_toml(&toml).unwrap();
        c.upstream.url = Some("http://127.0.0.1:1".into());
        let keys: Vec<String> = c.check_all().into_iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                "feeds.replay_capacity",
                "feeds.backchannel_logout.issuer",
                "feeds.backchannel_logout.audience",
                "feeds.backchannel_logout.jwks_url",
                "feeds.backchannel_logout.leeway",
                "feeds.ssf.authorization_header",
                "feeds.ssf.poll.url",
                "feeds.ssf.poll.max_events",
            ]
        );
    }
}
