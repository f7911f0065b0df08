//! Validation tests: each error names its key; shipped configs pass.
//!
//! Test code only (`#[cfg(test)]`): its `unwrap`s are on test set-up.
#![cfg(test)]

use std::time::Duration;

use super::verify::jwks_url;
use super::*;
use crate::dialect::RevokeMode;

fn check(toml: &str) -> Result<Settings, ConfigError> {
    Config::from_toml(toml)?.validate()
}

#[test]
fn defaults_with_an_upstream_are_valid() {
    let s = check("[upstream]\nurl = \"http://127.0.0.1:3000\"\n").unwrap();
    assert_eq!(s.routes.len(), 1);
    assert_eq!(s.dialects.len(), 5);
    assert!(s.dialects.iter().all(|d| d.mode == RevokeMode::Forward));
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("", "upstream.url"),
        ("[upstream]\nurl = \"ftp://x\"", "upstream.url"),
        (
            "[upstream]\nurl = \"http://u\"\n[server]\nlisten = \"nope\"",
            "server.listen",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[store]\nurl = \"mongo://x\"",
            "store.url",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[store]\nbloom_fp_rate = 0.9",
            "store.bloom_fp_rate",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[tokens]\nfingerprint_key = \"abc\"",
            "tokens.fingerprint_key",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[tokens]\napi_key_headers = [\"bad header\"]",
            "tokens.api_key_headers[0]",
        ),
        (
            "[[routes]]\nupstream = \"http://u\"\npath_prefix = \"v1\"",
            "routes[0].path_prefix",
        ),
        ("[[routes]]\nupstream = \"http://u\"", "routes[0]"),
        (
            "[upstream]\nurl = \"http://u\"\n[revoke.codegen]\npath = \"/oauth/revoke\"",
            "revoke.rfc7009.path",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[revoke.codegen]\napi_keys = [\"k\"]",
            "revoke.codegen.api_keys",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[revoke]\nmax_scopes_per_subject = 0",
            "revoke.max_scopes_per_subject",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[revoke.rate_limit]\nper_second = 0.0",
            "revoke.rate_limit.per_second",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[revoke.rate_limit]\nburst = 0",
            "revoke.rate_limit.burst",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[admin.rate_limit]\nmax_clients = 0",
            "admin.rate_limit.max_clients",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[admin.rate_limit]\nper_second = nan",
            "admin.rate_limit.per_second",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[server]\nmax_header_bytes = 10",
            "server.max_header_bytes",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[server]\nio_threads = 5000",
            "server.io_threads",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[server]\nbody_idle_timeout = \"0s\"",
            "server.body_idle_timeout",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[tokens.verify]\nissuers = [\"i\"]\naudiences = [\"a\"]",
            "tokens.verify.jwks_url",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[tokens.verify]\njwks_url = \"http://10.0.0.1/k\"\nissuers = [\"i\"]\naudiences = [\"a\"]",
            "tokens.verify.jwks_url",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[tokens.verify]\njwks_url = \"https://i/k\"\naudiences = [\"a\"]",
            "tokens.verify.issuers",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[tokens.verify]\njwks_url = \"https://i/k\"\nissuers = [\"i\"]",
            "tokens.verify.audiences",
        ),
        (
            "[upstream]\nurl = \"http://u\"\n[tokens.verify]\njwks_file = \"/nonexistent/jwks.json\"\nissuers = [\"i\"]\naudiences = [\"a\"]",
            "tokens.verify.jwks_file",
        ),
    ];
    for (toml, key) in cases {
        let err = check(toml).unwrap_err();
        assert_eq!(err.key, key, "{toml}: {err}");
    }
}

#[test]
fn jwks_urls_are_https_or_loopback() {
    for ok in [
        "https://idp.example/jwks",
        "http://127.0.0.1:8080/jwks",
        "http://[::1]/jwks",
        "http://localhost/jwks",
    ] {
        assert!(jwks_url("k", ok).is_ok(), "{ok}");
    }
    for bad in [
        "http://idp.example/jwks",
        "http://10.0.0.1/jwks",
        "ftp://idp.example/jwks",
        "/jwks",
        "idp.example/jwks",
        "https:///jwks",
    ] {
        assert_eq!(jwks_url("k", bad).unwrap_err().key, "k", "{bad}");
    }
    let s = check(
        "[upstream]\nurl = \"http://u\"\n[tokens.verify]\njwks_url = \"https://i/k\"\nissuers = [\"i\"]\naudiences = [\"a\"]",
    )
    .unwrap();
    let v = s.verify.unwrap();
    assert_eq!(v.policy.leeway, Duration::from_secs(60));
    assert!(v.min_refresh_interval <= v.refresh_interval);
    assert!(check("[upstream]\nurl = \"http://u\"")
        .unwrap()
        .verify
        .is_none());
}

#[test]
fn unknown_keys_and_bad_types_are_refused_with_their_dotted_key() {
    let err = check("[upstream]\nurl = \"http://u\"\nbogus = 1\n").unwrap_err();
    assert_eq!(err.key, "upstream.bogus");
    assert!(err.message.contains("unknown field `bogus`"), "{err}");
    let err = check("[upstream]\nconnect_timeout = \"soon\"\n").unwrap_err();
    assert_eq!(err.key, "upstream.connect_timeout", "{err}");
    let err = check("[server]\nmax_header_bytes = \"32k\"\n").unwrap_err();
    assert_eq!(err.key, "server.max_header_bytes", "{err}");
    assert_eq!(err.message, "invalid type: string \"32k\", expected usize");
    let err =
        check("[upstream]\nurl = \"http://u\"\n[[routes]]\npath_prefix = \"/a\"\nupstream = 3\n")
            .unwrap_err();
    assert_eq!(err.key, "routes[0].upstream", "{err}");
    // A syntax error has no key yet: its line.
    let err = check("[upstream\n").unwrap_err();
    assert_eq!(err.key, "line 1", "{err}");
}

#[test]
fn every_bad_key_is_reported_in_one_pass() {
    let text = "[server]\nmax_header_bytes = \"32k\"\nbogus = 1\n[upstream]\nurl = \"http://u\"\nconnect_timeout = \"soon\"\n";
    let errors = Config::from_toml_all(text).unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.bogus",
            "server.max_header_bytes",
            "upstream.connect_timeout"
        ],
        "{errors:?}"
    );
    let c = Config::from_toml(
        "[upstream]\nurl = \"http://u\"\n[store]\nbloom_capacity = 0\n[admin]\nlisten = \"nope\"\n",
    )
    .unwrap();
    let keys: Vec<String> = c.check_all().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["store.bloom_capacity", "admin.listen"]);
}

#[test]
fn several_bad_keys_of_one_section_are_all_reported() {
    let c = Config::from_toml(
        "[upstream]\nurl = \"http://u\"\n\
         [[routes]]\nupstream = \"ftp://x\"\npath_prefix = \"a\"\n\
         [tokens.verify]\njwks_url = \"http://example.com/jwks\"\nissuers = []\naudiences = [\"\"]\n\
         [revoke.rate_limit]\nper_second = 0\nburst = 0\n",
    )
    .unwrap();
    let keys: Vec<String> = c.check_all().into_iter().map(|e| e.key).collect();
    assert_eq!(
        keys,
        [
            "routes[0].upstream",
            "routes[0].path_prefix",
            "tokens.verify.jwks_url",
            "tokens.verify.issuers",
            "tokens.verify.audiences[0]",
            "revoke.rate_limit.per_second",
            "revoke.rate_limit.burst",
        ]
    );
    // `validate` refuses the file with the first of them.
    assert_eq!(c.validate().unwrap_err().key, "routes[0].upstream");
}

#[test]
fn the_journal_directory_must_take_a_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(super::journal_writable(&dir.path().join("j")), Ok(()));
    // A directory still to be made is judged by the nearest existing one.
    assert_eq!(super::journal_writable(&dir.path().join("a/b/j")), Ok(()));
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = super::journal_writable(&file.join("j")).unwrap_err();
    assert_eq!(err.key, "store.journal");
    assert!(err.message.contains("is not a directory"), "{err}");
    // The probe leaves nothing behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn routes_most_specific_first() {
    let s = check(
        "[upstream]\nurl = \"http://d\"\n\
         [[routes]]\npath_prefix = \"/a\"\nupstream = \"http://a\"\n\
         [[routes]]\npath_prefix = \"/a/b\"\nupstream = \"http://ab\"\n\
         [[routes]]\nhost = \"API.example\"\nupstream = \"http://h\"\n",
    )
    .unwrap();
    let order: Vec<_> = s
        .routes
        .iter()
        .map(|r| r.upstream.authority.to_string())
        .collect();
    assert_eq!(order, ["h", "ab", "a", "d"]);
    assert_eq!(s.routes[0].host.as_deref(), Some("api.example"));
}

#[test]
fn shipped_configs_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let mut c = Config::from_toml(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if c.upstream.url.is_none() && c.routes.is_empty() {
            c.upstream.url = Some("http://127.0.0.1:3000".into());
        }
        if c.store.url != "memory" {
            c.tokens.fingerprint_key = Some("ab".repeat(32));
        }
        // As deployed: an admin listener off loopback gets its token
        // from REVGATE_ADMIN_TOKEN (the config says so).
        if c.admin.token.is_none() && !c.admin.listen.starts_with("127.") {
            c.admin.token = Some("placeholder-admin-token".into());
        }
        c.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(seen >= 3);
}

#[test]
fn a_shared_store_needs_a_fingerprint_key() {
    let err = check("[upstream]\nurl = \"http://u\"\n[store]\nurl = \"redis://127.0.0.1:6379\"")
        .unwrap_err();
    assert_eq!(err.key, "tokens.fingerprint_key");
}

#[test]
fn flags_override_the_file() {
    let mut c =
        Config::from_toml("[upstream]\nurl = \"http://file\"\n[revoke.nylas]\nmode = \"forward\"")
            .unwrap();
    let o = Overrides {
        upstream: Some("http://flag".into()),
        revoke_mode: Some(RevokeMode::Terminate),
        ..Default::default()
    };
    o.apply(&mut c);
    let s = c.validate().unwrap();
    assert_eq!(s.routes[0].upstream.authority.as_str(), "flag");
    assert!(s.dialects.iter().all(|d| d.mode == RevokeMode::Terminate));
}

/// Every configured duration is bounded: past its cap, the exact error
/// names the key (a deadline `Instant + Duration` must never overflow).
#[test]
fn every_duration_is_capped_with_an_error_naming_the_key() {
    let verify = "jwks_url = \"https://i/k\"\nissuers = [\"i\"]\naudiences = [\"a\"]\n";
    let cases: &[(&str, &str, &str)] = &[
        ("server", "drain_timeout", "must be at most 1day"),
        (
            "server",
            "body_idle_timeout",
            "must be between 1ms and 1day",
        ),
        (
            "server",
            "h2_keepalive_interval",
            "must be between 1ms and 1day",
        ),
        (
            "server",
            "h2_keepalive_timeout",
            "must be between 1ms and 1day",
        ),
        (
            "server",
            "upgrade_idle_timeout",
            "must be between 1ms and 1day",
        ),
        ("upstream", "connect_timeout", "must be between 1ms and 1h"),
        (
            "upstream",
            "response_header_timeout",
            "must be between 1ms and 1day",
        ),
        ("upstream", "pool_idle_timeout", "must be at most 1day"),
        ("tokens", "max_lifetime", "must be between 1s and 10years"),
        ("tokens", "clock_skew", "must be at most 1h"),
        (
            "tokens.verify",
            "leeway",
            "must be at most 10m: clocks that far apart need fixing, not tolerating",
        ),
        (
            "tokens.verify",
            "fetch_timeout",
            "must be between 1ms and 5m",
        ),
        (
            "tokens.verify",
            "min_refresh_interval",
            "must be between 1ms and 1day",
        ),
        (
            "tokens.verify",
            "refresh_interval",
            "must be between 1ms and 7days",
        ),
        (
            "store",
            "maintenance_interval",
            "must be between 1ms and 1day",
        ),
        ("store", "max_staleness", "must be between 1ms and 1day"),
        ("store", "confirm_ttl", "must be at most 1h"),
    ];
    for (section, key, message) in cases {
        let extra = if *section == "tokens.verify" {
            verify
        } else {
            ""
        };
        // 100 million days: parses, and overflows any `Instant + Duration`.
        assert_duration_refused(section, extra, key, "100000000d", message);
    }
}

/// `value` for `[section] key` (after `extra` lines) is refused with
/// exactly `message`, naming the key.
fn assert_duration_refused(section: &str, extra: &str, key: &str, value: &str, message: &str) {
    let toml = if section == "upstream" {
        format!("[upstream]\nurl = \"http://u\"\n{key} = \"{value}\"\n")
    } else {
        format!("[upstream]\nurl = \"http://u\"\n[{section}]\n{extra}{key} = \"{value}\"\n")
    };
    let err = check(&toml).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{section}.{key}: {message}"),
        "{toml}"
    );
}

#[test]
fn durations_that_must_be_positive_refuse_zero() {
    for (section, key, message) in [
        (
            "server",
            "h2_keepalive_timeout",
            "must be between 1ms and 1day",
        ),
        ("upstream", "connect_timeout", "must be between 1ms and 1h"),
        ("tokens", "max_lifetime", "must be between 1s and 10years"),
        (
            "store",
            "maintenance_interval",
            "must be between 1ms and 1day",
        ),
    ] {
        assert_duration_refused(section, "", key, "0s", message);
    }
}

#[test]
fn a_refresh_interval_below_the_minimum_is_refused() {
    let err = check(
        "[upstream]\nurl = \"http://u\"\n[tokens.verify]\njwks_url = \"https://i/k\"\nissuers = [\"i\"]\naudiences = [\"a\"]\nmin_refresh_interval = \"10m\"\nrefresh_interval = \"5m\"\n",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tokens.verify.refresh_interval: must be at least min_refresh_interval"
    );
}

#[test]
fn introspection_is_checked_key_by_key() {
    let base = "[upstream]\nurl = \"http://u\"\n[identity.introspection]\n";
    let good =
        "url = \"https://as.example/introspect\"\nclient_id = \"rg\"\nclient_secret = \"s3cret\"\n";
    assert!(check("[upstream]\nurl = \"http://u\"\n")
        .unwrap()
        .introspection()
        .is_none());
    let s = check(&format!("{base}{good}")).unwrap();
    let i = s.introspection().unwrap();
    assert_eq!(i.uri, "https://as.example/introspect");
    assert_eq!(i.timeout, Duration::from_secs(2));
    assert_eq!(i.cache_ttl, Duration::from_secs(60));
    assert_eq!(i.negative_ttl, Duration::from_secs(10));
    assert_eq!(i.max_entries, 100_000);
    assert_eq!(i.on_error, IntrospectionOnError::Reject);
    assert_eq!(i.fields, crate::credentials::ClaimNames::default());
    assert_eq!(i.authorization.as_ref().unwrap(), "Basic cmc6czNjcmV0");
    assert!(!format!("{i:?}").contains("cmc6czNjcmV0"), "{i:?}");
    // Loopback http, no client pair, `pass`, and member names: each unset
    // one is the `[tokens.claims]` name.
    let s = check(&format!(
        "[tokens.claims]\nsub = \"uid\"\n{base}url = \"http://127.0.0.1:9/i\"\non_error = \"pass\"\n[identity.introspection.fields]\norg = \"tenant\"\n"
    ))
    .unwrap();
    let i = s.introspection().unwrap();
    assert!(i.authorization.is_none());
    assert_eq!(i.on_error, IntrospectionOnError::Pass);
    assert_eq!(
        (
            i.fields.sub.as_str(),
            i.fields.org.as_str(),
            i.fields.provider.as_str()
        ),
        ("uid", "tenant", "provider")
    );
    let cases = [
        ("url = \"\"", "identity.introspection.url"),
        (
            "url = \"http://as.example/i\"",
            "identity.introspection.url",
        ),
        ("url = \"ftp://as.example/i\"", "identity.introspection.url"),
        (
            "url = \"https://a/i\"\nclient_id = \"rg\"",
            "identity.introspection.client_secret",
        ),
        (
            "url = \"https://a/i\"\nclient_secret = \"s\"",
            "identity.introspection.client_id",
        ),
        (
            "url = \"https://a/i\"\nclient_id = \"\"\nclient_secret = \"s\"",
            "identity.introspection.client_id",
        ),
        (
            "url = \"https://a/i\"\ntimeout = \"0s\"",
            "identity.introspection.timeout",
        ),
        (
            "url = \"https://a/i\"\ntimeout = \"2m\"",
            "identity.introspection.timeout",
        ),
        (
            "url = \"https://a/i\"\ncache_ttl = \"0s\"",
            "identity.introspection.cache_ttl",
        ),
        (
            "url = \"https://a/i\"\nnegative_ttl = \"0s\"",
            "identity.introspection.negative_ttl",
        ),
        (
            "url = \"https://a/i\"\nmax_entries = 0",
            "identity.introspection.max_entries",
        ),
        (
            "url = \"https://a/i\"\n[identity.introspection.fields]\nsub = \"\"",
            "identity.introspection.fields.sub",
        ),
    ];
    for (toml, key) in cases {
        let err = check(&format!("{base}{toml}")).unwrap_err();
        assert_eq!(err.key, key, "{toml}: {err}");
    }
    // Unknown keys and values are refused by the parser, naming the key.
    for (toml, key) in [
        (
            "url = \"https://a/i\"\non_error = \"maybe\"",
            "identity.introspection.on_error",
        ),
        (
            "url = \"https://a/i\"\nttl = \"1s\"",
            "identity.introspection.ttl",
        ),
    ] {
        let err = check(&format!("{base}{toml}")).unwrap_err();
        assert!(err.to_string().contains(key), "{toml}: {err}");
    }
}

#[test]
fn consistency_and_redis_durability_are_read_and_checked() {
    let base = "[upstream]\nurl = \"http://u\"\n";
    let s = check(base).unwrap();
    assert_eq!(s.store().consistency, Consistency::Eventual);
    assert_eq!(s.store().redis.min_replicas_acked, 0);
    let s = check(&format!(
        "{base}[store]\nconsistency = \"confirmed\"\nlease = \"1s\"\nconfirm_timeout = \"3s\"\n\
         [store.redis]\nmin_replicas_acked = 2\nwait_timeout = \"250ms\"\nwait_aof = true\n"
    ))
    .unwrap();
    let st = s.store();
    assert_eq!(st.consistency, Consistency::Confirmed);
    assert_eq!(st.lease, Duration::from_secs(1));
    assert_eq!(st.confirm_timeout, Duration::from_secs(3));
    assert_eq!(st.redis.min_replicas_acked, 2);
    assert_eq!(st.redis.wait_timeout, Duration::from_millis(250));
    assert!(st.redis.wait_aof);

    let refused = |extra: &str| check(&format!("{base}{extra}")).unwrap_err().to_string();
    let unknown = refused("[store]\nconsistency = \"strong\"\n");
    assert!(
        unknown.contains("eventual") && unknown.contains("confirmed"),
        "{unknown}"
    );
    assert_eq!(
        refused("[store]\nlease = \"100ms\"\n"),
        "store.lease: must be between 200ms and 1m"
    );
    assert_eq!(
        refused("[store]\nlease = \"5s\"\nconfirm_timeout = \"5s\"\n"),
        "store.confirm_timeout: must be longer than store.lease (a paused instance is waited for that long) and at most 2m"
    );
    assert_eq!(
        refused("[store.redis]\nmin_replicas_acked = 17\n"),
        "store.redis.min_replicas_acked: must be between 0 and 16"
    );
    assert_eq!(
        refused("[store.redis]\nwait_timeout = \"0s\"\n"),
        "store.redis.wait_timeout: must be between 1ms and 1m"
    );
    assert!(refused("[store.redis]\nwait = 1\n").contains("unknown field"));
    assert_eq!(
        refused("[store]\nurl = \"redis+clusterx://h:1\"\n"),
        "store.url: expected memory, redis://host:port/db, rediss://..., redis+sentinel://host:port,.../master or redis+cluster://host:port,...; got \"redis+clusterx://h:1\""
    );
}

#[test]
fn the_consistency_flag_overrides_the_file() {
    let mut c =
        Config::from_toml("[upstream]\nurl = \"http://u\"\n[store]\nconsistency = \"eventual\"\n")
            .unwrap();
    let o = Overrides {
        consistency: Some(Consistency::Confirmed),
        ..Default::default()
    };
    o.apply(&mut c);
    assert_eq!(c.store.consistency, Consistency::Confirmed);
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        o: Overrides,
    }
    let cli = Cli::try_parse_from(["revgate", "--consistency", "confirmed"]).unwrap();
    assert_eq!(cli.o.consistency, Some(Consistency::Confirmed));
    let err = Cli::try_parse_from(["revgate", "--consistency", "strong"])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("expected eventual or confirmed, got \"strong\""),
        "{err}"
    );
}

#[test]
fn family_settings_are_checked_and_name_their_keys() {
    let c = Config::from_toml(
        "[upstream]\nurl = \"http://u\"\n\
         [revoke.langsmith]\nfamily = \"grant\"\n\
         [revoke.nylas]\nfamily = \"pair\"\n\
         [families]\nreuse_grace = \"2h\"\n",
    )
    .unwrap();
    let errors = c.check_all();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["revoke.langsmith.family", "families.reuse_grace"]);
    assert!(Config::from_toml("[revoke.nylas]\nfamily = \"all\"\n").is_err());
    let ok = Config::from_toml("[upstream]\nurl = \"http://u\"\n[revoke.rfc7009]\nfamily = \"token\"\n[families]\nreuse_grace = \"30s\"\n")
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(
        ok.families().reuse_grace,
        std::time::Duration::from_secs(30)
    );
}
