//! Validation: [`Config::validate`] checks the file section by section, each
//! section's function returning the typed parts it builds, and assembles the
//! [`Settings`]. Every error names the offending key. A section records
//! every bad key it finds ([`Found`]) and goes on, so [`Config::check_all`]
//! (what `check-config` prints) names all of them in one run; a check that
//! compares two keys is skipped while either is itself out of bounds.
//!
//! Every configured duration has an upper bound (and most a lower one):
//! deadlines are computed as `Instant + Duration` on the request path and
//! in background tasks, and std's addition panics on overflow, so a
//! duration absurdly large in the file must be refused here, at start-up
//! or on SIGHUP, never discovered on a request. The bounds are generous
//! (a day for anything on a request's path) and are in the error message.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Config, ConfigError, DialectSetting, RateLimitConfig, Route, Settings, UpstreamUrl};
use crate::credentials::{AttributeSources, CredentialSources, IdentityHeaders};
use crate::dialect::{DialectKind, DialectSecrets};

pub(super) const MINUTE: Duration = Duration::from_secs(60);
pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const DAY: Duration = Duration::from_secs(24 * 3600);
/// humantime's year (365.25 days), so that the bound prints as "10years".
pub(super) const YEAR: Duration = Duration::from_secs(31_557_600);

/// Refuses `d` outside `min..=max`; the message says both bounds (e.g.
/// "must be between 1ms and 1day").
pub(super) fn within(
    key: &str,
    d: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if d < min || d > max {
        let message = if min.is_zero() {
            format!("must be at most {}", humantime::format_duration(max))
        } else {
            format!(
                "must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            )
        };
        return Err(ConfigError::new(key, message));
    }
    Ok(())
}

/// The least a duration that must be "more than 0" may be.
pub(super) const MIN: Duration = Duration::from_millis(1);

/// The errors found so far. A section goes on past a bad key, so one run
/// names every bad key; a check that builds on an earlier one (a route's
/// prefix on its URL) is skipped when that one failed.
#[derive(Debug, Default)]
pub(super) struct Found(Vec<ConfigError>);

impl Found {
    /// Errors recorded so far.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Records an error.
    pub(super) fn add(&mut self, e: ConfigError) {
        self.0.push(e);
    }

    /// The value, or `None` with its error recorded.
    pub(super) fn ok<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(e);
                None
            }
        }
    }
}

impl Config {
    /// Checks every key and builds the [`Settings`]; the first error of
    /// [`Config::check_all`] when there is any.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        self.validate_all().map_err(|errors| {
            errors
                .into_iter()
                .next()
                .unwrap_or_else(|| ConfigError::new("config", "invalid"))
        })
    }

    /// Every error at once, in the file's section order, for `check-config`
    /// and start-up. Empty when [`Config::validate`] passes.
    pub fn check_all(&self) -> Vec<ConfigError> {
        self.validate_all().err().unwrap_or_default()
    }

    /// Runs every section's checks; `Err` holds every error (never empty).
    fn validate_all(&self) -> Result<Settings, Vec<ConfigError>> {
        let mut f = Found::default();
        let listen = self.validate_server(&mut f);
        self.validate_upstream(&mut f);
        let routes = self.validate_routes(&mut f);
        let tokens = self.validate_tokens(&mut f);
        self.validate_store(&mut f);
        let revoke = self.validate_revoke(&mut f);
        let admin_listen = self.validate_admin(&mut f);
        self.validate_log(&mut f);
        self.validate_tracing(&mut f);
        self.validate_issuance(&mut f);
        let introspection = self.validate_identity(&mut f);
        if self.families.reuse_grace > std::time::Duration::from_secs(3600) {
            f.add(ConfigError::new(
                "families.reuse_grace",
                "must be at most 1h",
            ));
        }
        let paths: Vec<&str> = revoke
            .iter()
            .flat_map(|(dialects, _)| dialects.iter().map(|d| d.path.as_str()))
            .collect();
        let feeds = self.feeds.validate(&paths, &mut f);
        let (
            Some(listen),
            Some(routes),
            Some((credential_sources, attribute_sources, verify)),
            Some((dialects, dialect_secrets)),
            Some(admin_listen),
            Some(introspection),
            Some(feeds),
        ) = (
            listen,
            routes,
            tokens,
            revoke,
            admin_listen,
            introspection,
            feeds,
        )
        else {
            if f.0.is_empty() {
                // A section that built nothing says why; this is a backstop.
                f.add(ConfigError::new("config", "invalid"));
            }
            return Err(f.0);
        };
        if !f.0.is_empty() {
            return Err(f.0);
        }
        Ok(Settings {
            raw: self.clone(),
            listen,
            admin_listen,
            routes,
            credential_sources,
            attribute_sources,
            dialects,
            dialect_secrets,
            verify,
            introspection,
            feeds,
        })
    }

    /// `[[identity.issuance]]`: each token endpoint a path and a method,
    /// each field name and static value non-empty.
    fn validate_issuance(&self, f: &mut Found) {
        for (i, e) in self.identity.issuance.iter().enumerate() {
            let key = |k: &str| format!("identity.issuance[{i}].{k}");
            if !e.path.starts_with('/') {
                f.add(ConfigError::new(key("path"), "must start with /"));
            }
            if http::Method::from_bytes(e.method.as_bytes()).is_err() {
                f.add(ConfigError::new(key("method"), "is not an HTTP method"));
            }
            let named = [
                ("fields.sub", &e.fields.sub),
                ("fields.org", &e.fields.org),
                ("fields.provider", &e.fields.provider),
                ("provider", &e.provider),
                ("org", &e.org),
            ];
            for (k, v) in named {
                if v.as_deref().is_some_and(str::is_empty) {
                    f.add(ConfigError::new(key(k), "must not be empty"));
                }
            }
        }
    }

    /// `[identity]`: `[identity.introspection]` (the endpoint, its client
    /// pair, timings, the cache bound, the response's member names).
    fn validate_identity(
        &self,
        f: &mut Found,
    ) -> Option<Option<crate::identity::IntrospectionSettings>> {
        let Some(i) = &self.identity.introspection else {
            return Some(None);
        };
        let uri = f.ok(super::verify::secure_url(
            "identity.introspection.url",
            &i.url,
            "raw tokens and the client secret would cross the network in the clear",
        ));
        let authorization = match (&i.client_id, &i.client_secret) {
            (Some(id), Some(_)) if id.is_empty() => {
                f.add(ConfigError::new(
                    "identity.introspection.client_id",
                    "must not be empty",
                ));
                None
            }
            (Some(id), Some(secret)) => f.ok(crate::identity::introspection::basic_authorization(
                id, secret,
            )
            .map(Some)
            .ok_or_else(|| {
                ConfigError::new(
                    "identity.introspection.client_id",
                    "cannot be sent in an Authorization header",
                )
            })),
            (None, None) => Some(None),
            (Some(_), None) => {
                f.add(ConfigError::new(
                    "identity.introspection.client_secret",
                    "required with client_id",
                ));
                None
            }
            (None, Some(_)) => {
                f.add(ConfigError::new(
                    "identity.introspection.client_id",
                    "required with client_secret",
                ));
                None
            }
        };
        f.ok(within(
            "identity.introspection.timeout",
            i.timeout,
            MIN,
            MINUTE,
        ));
        f.ok(within(
            "identity.introspection.cache_ttl",
            i.cache_ttl,
            MIN,
            DAY,
        ));
        f.ok(within(
            "identity.introspection.negative_ttl",
            i.negative_ttl,
            MIN,
            DAY,
        ));
        if !(1..=100_000_000).contains(&i.max_entries) {
            f.add(ConfigError::new(
                "identity.introspection.max_entries",
                "must be between 1 and 100000000",
            ));
        }
        let claims = &self.tokens.claims;
        let n = &i.fields;
        let mut fields = crate::credentials::ClaimNames::default();
        for (key, target, set, default) in [
            ("sub", &mut fields.sub, &n.sub, &claims.sub),
            ("org", &mut fields.org, &n.org, &claims.org),
            (
                "provider",
                &mut fields.provider,
                &n.provider,
                &claims.provider,
            ),
            ("iat", &mut fields.iat, &n.iat, &claims.iat),
            ("exp", &mut fields.exp, &n.exp, &claims.exp),
        ] {
            match set {
                Some(name) if name.is_empty() => f.add(ConfigError::new(
                    format!("identity.introspection.fields.{key}"),
                    "must not be empty",
                )),
                Some(name) => *target = name.clone(),
                None => *target = default.clone(),
            }
        }
        Some(Some(crate::identity::IntrospectionSettings {
            uri: uri?,
            authorization: authorization?,
            timeout: i.timeout,
            cache_ttl: i.cache_ttl,
            negative_ttl: i.negative_ttl,
            max_entries: i.max_entries,
            on_error: i.on_error,
            fields,
        }))
    }

    /// `[tracing]`: the OTLP endpoint (plain `http://`: a collector beside
    /// the gateway), the sample ratio, the export times.
    fn validate_tracing(&self, f: &mut Found) {
        let t = &self.tracing;
        if !t.otlp_endpoint.is_empty() {
            let ok = t
                .otlp_endpoint
                .parse::<http::Uri>()
                .ok()
                .is_some_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
            if !ok {
                f.add(ConfigError::new(
                    "tracing.otlp_endpoint",
                    format!(
                        "expected http://host:port/v1/traces (OTLP/HTTP), got {:?}",
                        t.otlp_endpoint
                    ),
                ));
            }
        }
        if t.service_name.is_empty() {
            f.add(ConfigError::new(
                "tracing.service_name",
                "must not be empty",
            ));
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            f.add(ConfigError::new(
                "tracing.sample_ratio",
                "must be between 0 and 1",
            ));
        }
        f.ok(within(
            "tracing.export_interval",
            t.export_interval,
            MIN,
            HOUR,
        ));
        f.ok(within(
            "tracing.export_timeout",
            t.export_timeout,
            MIN,
            HOUR,
        ));
    }

    /// `[server]`: the listen address, limits, timeouts, TLS files.
    fn validate_server(&self, f: &mut Found) -> Option<SocketAddr> {
        let s = &self.server;
        let listen = f.ok(parse_addr("server.listen", &s.listen));
        if s.io_threads > 1024 {
            f.add(ConfigError::new(
                "server.io_threads",
                "must be at most 1024 (0 = one per CPU)",
            ));
        }
        if s.max_connections == 0 {
            f.add(ConfigError::new(
                "server.max_connections",
                "must be positive",
            ));
        }
        if s.h2_max_concurrent_streams == 0 {
            f.add(ConfigError::new(
                "server.h2_max_concurrent_streams",
                "must be positive",
            ));
        }
        for (key, d) in [
            ("server.body_idle_timeout", s.body_idle_timeout),
            ("server.h2_keepalive_interval", s.h2_keepalive_interval),
            ("server.h2_keepalive_timeout", s.h2_keepalive_timeout),
            ("server.upgrade_idle_timeout", s.upgrade_idle_timeout),
        ] {
            f.ok(within(key, d, MIN, DAY));
        }
        // 0 is allowed: stop at once, cutting in-flight requests.
        f.ok(within(
            "server.drain_timeout",
            s.drain_timeout,
            Duration::ZERO,
            DAY,
        ));
        if s.max_header_bytes < 8192 {
            f.add(ConfigError::new(
                "server.max_header_bytes",
                "must be at least 8192",
            ));
        }
        if let Some(tls) = &s.tls {
            for (key, path) in [("server.tls.cert", &tls.cert), ("server.tls.key", &tls.key)] {
                if !path.is_file() {
                    f.add(ConfigError::new(
                        key,
                        format!("no such file: {}", path.display()),
                    ));
                }
            }
            f.ok(crate::tls::sni::validate(&tls.certificates));
        }
        listen
    }

    /// `[upstream]`: TLS files and timeouts (the URL is checked with the routes).
    fn validate_upstream(&self, f: &mut Found) {
        let u = &self.upstream;
        if u.client_cert.is_some() != u.client_key.is_some() {
            f.add(ConfigError::new(
                "upstream.client_cert",
                "client_cert and client_key go together",
            ));
        }
        for (key, path) in [
            ("upstream.ca_file", &u.ca_file),
            ("upstream.client_cert", &u.client_cert),
            ("upstream.client_key", &u.client_key),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    f.add(ConfigError::new(
                        key,
                        format!("no such file: {}", p.display()),
                    ));
                }
            }
        }
        f.ok(within(
            "upstream.connect_timeout",
            u.connect_timeout,
            MIN,
            HOUR,
        ));
        f.ok(within(
            "upstream.response_header_timeout",
            u.response_header_timeout,
            MIN,
            DAY,
        ));
        f.ok(within(
            "upstream.pool_idle_timeout",
            u.pool_idle_timeout,
            Duration::ZERO,
            DAY,
        ));
    }

    /// `[[routes]]` and `upstream.url`: most specific first, the default last.
    fn validate_routes(&self, f: &mut Found) -> Option<Vec<Route>> {
        let mut routes = Vec::new();
        let mut whole = true;
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            let upstream = f.ok(parse_upstream(&format!("{key}.upstream"), &r.upstream));
            let path_prefix = match &r.path_prefix {
                Some(p) if !p.starts_with('/') => {
                    f.add(ConfigError::new(
                        format!("{key}.path_prefix"),
                        "must start with '/'",
                    ));
                    None
                }
                Some(p) => Some(p.clone()),
                None => Some("/".into()),
            };
            let host = match &r.host {
                Some(h) if h.is_empty() || h.contains('/') || h.contains(' ') => {
                    f.add(ConfigError::new(
                        format!("{key}.host"),
                        "must be a host name",
                    ));
                    None
                }
                Some(h) => Some(Some(h.to_ascii_lowercase())),
                None => Some(None),
            };
            if r.host.is_none() && r.path_prefix.is_none() {
                f.add(ConfigError::new(
                    key,
                    "a route needs a host or a path_prefix (upstream.url is the default route)",
                ));
                whole = false;
            }
            let (Some(upstream), Some(path_prefix), Some(host)) = (upstream, path_prefix, host)
            else {
                whole = false;
                continue;
            };
            routes.push(Route {
                name: r
                    .name
                    .clone()
                    .unwrap_or_else(|| upstream.authority.to_string()),
                host,
                path_prefix,
                upstream,
            });
        }
        // Most specific first: a host match beats none, then the longest prefix.
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
        });
        if let Some(url) = &self.upstream.url {
            match f.ok(parse_upstream("upstream.url", url)) {
                Some(upstream) => routes.push(Route {
                    name: "default".into(),
                    host: None,
                    path_prefix: "/".into(),
                    upstream,
                }),
                None => whole = false,
            }
        } else if self.routes.is_empty() {
            f.add(ConfigError::new(
                "upstream.url",
                "required (or at least one [[routes]] entry): where do requests go?",
            ));
            whole = false;
        }
        whole.then_some(routes)
    }

    /// `[tokens]`: the key, limits, lifetimes, where credentials and
    /// attributes are read from, and `[tokens.verify]`.
    #[allow(clippy::type_complexity)]
    fn validate_tokens(
        &self,
        f: &mut Found,
    ) -> Option<(
        CredentialSources,
        AttributeSources,
        Option<crate::identity::VerifySettings>,
    )> {
        let t = &self.tokens;
        if let Some(k) = &t.fingerprint_key {
            if let Err(e) = crate::credentials::FingerprintKey::from_hex(k) {
                f.add(ConfigError::new("tokens.fingerprint_key", e.to_string()));
            }
        }
        if t.form_body_limit > 16 * 1024 * 1024 {
            f.add(ConfigError::new(
                "tokens.form_body_limit",
                "must be at most 16777216 bytes (it is held in memory while judged)",
            ));
        }
        // A revocation kept beyond ten years is a mistake in the file.
        f.ok(within(
            "tokens.max_lifetime",
            t.max_lifetime,
            Duration::from_secs(1),
            10 * YEAR,
        ));
        f.ok(within(
            "tokens.clock_skew",
            t.clock_skew,
            Duration::ZERO,
            HOUR,
        ));
        let mut api_key_headers = Vec::new();
        for (i, h) in t.api_key_headers.iter().enumerate() {
            let key = format!("tokens.api_key_headers[{i}]");
            let Some(name) = f.ok(header_name(&key, h)) else {
                continue;
            };
            if name == http::header::AUTHORIZATION {
                f.add(ConfigError::new(
                    key,
                    "Authorization is read as a Bearer header already",
                ));
                continue;
            }
            api_key_headers.push(name);
        }
        let ih = &t.identity_headers;
        let mut opt_header = |key: &str, v: &Option<String>| -> Option<Option<http::HeaderName>> {
            f.ok(v.as_deref().map(|h| header_name(key, h)).transpose())
        };
        let identity_headers = (
            opt_header("tokens.identity_headers.sub", &ih.sub),
            opt_header("tokens.identity_headers.org", &ih.org),
            opt_header("tokens.identity_headers.provider", &ih.provider),
            opt_header("tokens.identity_headers.iat", &ih.iat),
        );
        for (key, v) in [
            ("tokens.claims.sub", &t.claims.sub),
            ("tokens.claims.org", &t.claims.org),
            ("tokens.claims.provider", &t.claims.provider),
            ("tokens.claims.iat", &t.claims.iat),
            ("tokens.claims.exp", &t.claims.exp),
        ] {
            if v.is_empty() {
                f.add(ConfigError::new(key, "must not be empty"));
            }
        }
        let verify = match &t.verify {
            Some(v) => Some(v.validate(f)?),
            None => None,
        };
        let (Some(sub), Some(org), Some(provider), Some(iat)) = identity_headers else {
            return None;
        };
        Some((
            CredentialSources {
                query_param: t.query_param,
                api_key_headers,
            },
            AttributeSources {
                claims: t.claims.clone(),
                identity_headers: IdentityHeaders {
                    sub,
                    org,
                    provider,
                    iat,
                },
            },
            verify,
        ))
    }

    /// `[store]`: the URL (and the key a shared store needs), journal,
    /// bloom sizing, intervals.
    fn validate_store(&self, f: &mut Found) {
        let s = &self.store;
        let url_ok = s.url == "memory"
            || [
                "redis://",
                "rediss://",
                "redis+sentinel://",
                "rediss+sentinel://",
                "redis+cluster://",
                "rediss+cluster://",
            ]
            .iter()
            .any(|p| s.url.starts_with(p) && s.url.len() > p.len());
        if !url_ok {
            f.add(ConfigError::new(
                "store.url",
                format!("expected memory, redis://host:port/db, rediss://..., redis+sentinel://host:port,.../master or redis+cluster://host:port,...; got {:?}", s.url),
            ));
        }
        if s.url != "memory" && self.tokens.fingerprint_key.is_none() {
            f.add(ConfigError::new(
                "tokens.fingerprint_key",
                "required with a shared store: every instance must fingerprint tokens alike (or set REVGATE_FINGERPRINT_KEY)",
            ));
        }
        if s.journal.as_os_str().is_empty() {
            f.add(ConfigError::new("store.journal", "must be a file path"));
        }
        if s.bloom_capacity == 0 {
            f.add(ConfigError::new("store.bloom_capacity", "must be positive"));
        }
        if !(s.bloom_fp_rate > 0.0 && s.bloom_fp_rate < 0.5) {
            f.add(ConfigError::new(
                "store.bloom_fp_rate",
                "must be between 0 and 0.5",
            ));
        }
        f.ok(within(
            "store.maintenance_interval",
            s.maintenance_interval,
            MIN,
            DAY,
        ));
        if let Some(d) = s.max_staleness {
            f.ok(within("store.max_staleness", d, MIN, DAY));
        }
        // 0 is allowed: every bloom hit asks Redis.
        f.ok(within(
            "store.confirm_ttl",
            s.confirm_ttl,
            Duration::ZERO,
            HOUR,
        ));
        if s.key_prefix.is_empty() || s.key_prefix.contains(['{', '}', ' ']) {
            f.add(ConfigError::new(
                "store.key_prefix",
                "must be non-empty, without braces or spaces",
            ));
        }
        if s.stream_maxlen == 0 {
            f.add(ConfigError::new("store.stream_maxlen", "must be positive"));
        }
        let lease = f.ok(within(
            "store.lease",
            s.lease,
            Duration::from_millis(200),
            Duration::from_secs(60),
        ));
        // Measured against the lease only when the lease itself is right.
        if lease.is_some()
            && (s.confirm_timeout <= s.lease || s.confirm_timeout > Duration::from_secs(120))
        {
            f.add(ConfigError::new(
                "store.confirm_timeout",
                "must be longer than store.lease (a paused instance is waited for that long) and at most 2m",
            ));
        }
        if s.redis.min_replicas_acked > 16 {
            f.add(ConfigError::new(
                "store.redis.min_replicas_acked",
                "must be between 0 and 16",
            ));
        }
        f.ok(within(
            "store.redis.wait_timeout",
            s.redis.wait_timeout,
            MIN,
            Duration::from_secs(60),
        ));
    }

    /// `[revoke]`: limits, the rate limit, each dialect's path, mode and secrets.
    fn validate_revoke(&self, f: &mut Found) -> Option<(Vec<DialectSetting>, DialectSecrets)> {
        let r = &self.revoke;
        if r.max_body_bytes == 0 || r.max_body_bytes > 16 * 1024 * 1024 {
            f.add(ConfigError::new(
                "revoke.max_body_bytes",
                "must be between 1 and 16 MiB",
            ));
        }
        if r.max_scopes_per_subject == 0 || r.max_scopes_per_subject > 100_000 {
            f.add(ConfigError::new(
                "revoke.max_scopes_per_subject",
                "must be between 1 and 100000",
            ));
        }
        r.rate_limit.validate("revoke.rate_limit", f);
        let mut dialects = Vec::new();
        for kind in DialectKind::ALL {
            let d = self.dialect(kind);
            let key = format!("revoke.{}", kind.name());
            if !d.api_keys.is_empty() && kind != DialectKind::Nylas {
                f.add(ConfigError::new(
                    format!("{key}.api_keys"),
                    "only Nylas checks API keys",
                ));
            }
            if !d.clients.is_empty() && kind != DialectKind::OneLogin {
                f.add(ConfigError::new(
                    format!("{key}.clients"),
                    "only OneLogin checks client pairs",
                ));
            }
            if d.family.is_some() && matches!(kind, DialectKind::LangSmith | DialectKind::Codegen) {
                f.add(ConfigError::new(
                    format!("{key}.family"),
                    "only the token dialects (nylas, onelogin, rfc7009) revoke families",
                ));
            }
            if !d.enabled {
                continue;
            }
            let path = d
                .path
                .clone()
                .unwrap_or_else(|| kind.default_path().to_string());
            if !path.starts_with('/') || path.contains('?') {
                f.add(ConfigError::new(
                    format!("{key}.path"),
                    "must start with '/' and have no query",
                ));
                continue;
            }
            if let Some(other) = dialects.iter().find(|o: &&DialectSetting| o.path == path) {
                f.add(ConfigError::new(
                    format!("{key}.path"),
                    format!("{path} is already the {} endpoint", other.kind.name()),
                ));
                continue;
            }
            dialects.push(DialectSetting {
                kind,
                path,
                mode: d.mode.unwrap_or(r.mode),
                family: d.family,
            });
        }
        for (i, c) in r.onelogin.clients.iter().enumerate() {
            if c.client_id.is_empty() || c.client_secret.is_empty() {
                f.add(ConfigError::new(
                    format!("revoke.onelogin.clients[{i}]"),
                    "client_id and client_secret must be non-empty",
                ));
            }
        }
        if r.nylas.api_keys.iter().any(|k| k.is_empty()) {
            f.add(ConfigError::new(
                "revoke.nylas.api_keys",
                "keys must be non-empty",
            ));
        }
        let secrets = DialectSecrets {
            nylas_api_keys: r.nylas.api_keys.clone(),
            onelogin_clients: r
                .onelogin
                .clients
                .iter()
                .map(|c| (c.client_id.clone(), c.client_secret.clone()))
                .collect(),
        };
        Some((dialects, secrets))
    }

    /// `[admin]`: the listener, its token (required off loopback), its rate limit.
    fn validate_admin(&self, f: &mut Found) -> Option<SocketAddr> {
        let admin_listen = f.ok(parse_addr("admin.listen", &self.admin.listen));
        self.admin.rate_limit.validate("admin.rate_limit", f);
        if let Some(t) = &self.admin.token {
            if t.len() < 16 {
                f.add(ConfigError::new(
                    "admin.token",
                    "must be at least 16 characters",
                ));
            }
        } else if let Some(listen) = admin_listen {
            if !listen.ip().is_loopback() && !self.admin.allow_unauthenticated {
                f.add(ConfigError::new(
                    "admin.token",
                    format!(
                        "required when admin.listen ({listen}) is not a loopback address \
                         (or REVGATE_ADMIN_TOKEN; admin.allow_unauthenticated = true to run without one)"
                    ),
                ));
            }
        }
        admin_listen
    }

    /// `[log]`: the filter parses; the access log's path names a file.
    /// (Whether that file can be opened is a look at the machine:
    /// [`super::access_log_writable`], in `check-config` and at start.)
    fn validate_log(&self, f: &mut Found) {
        if !self.log.filter.is_empty() {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
                f.add(ConfigError::new("log.filter", e.to_string()));
            }
        }
        if let Some(p) = &self.log.access_log_path {
            let text = p.as_os_str().as_encoded_bytes();
            if text.is_empty() {
                f.add(ConfigError::new(
                    "log.access_log_path",
                    "must not be empty (leave it unset for stderr)",
                ));
            } else if text.ends_with(b"/") {
                f.add(ConfigError::new(
                    "log.access_log_path",
                    format!("{} names a directory, not a file", p.display()),
                ));
            }
        }
    }
}

// === impl RateLimitConfig ===

impl RateLimitConfig {
    fn validate(&self, key: &str, f: &mut Found) {
        if !self.per_second.is_finite() || self.per_second <= 0.0 || self.per_second > 1e9 {
            f.add(ConfigError::new(
                format!("{key}.per_second"),
                "must be a number above 0 and at most 1e9",
            ));
        }
        if self.burst == 0 || self.burst > 1_000_000 {
            f.add(ConfigError::new(
                format!("{key}.burst"),
                "must be between 1 and 1000000",
            ));
        }
        if self.max_clients == 0 || self.max_clients > 10_000_000 {
            f.add(ConfigError::new(
                format!("{key}.max_clients"),
                "must be between 1 and 10000000",
            ));
        }
    }
}

fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|_| ConfigError::new(key, format!("expected ip:port, got {v:?}")))
}

fn header_name(key: &str, v: &str) -> Result<http::HeaderName, ConfigError> {
    http::HeaderName::from_bytes(v.as_bytes())
        .map_err(|_| ConfigError::new(key, format!("not a valid header name: {v:?}")))
}

/// Parses an upstream URL: `http://` or `https://`, a host, no query; or
/// a built-in upstream, `builtin:ok` or `builtin:echo` ([`crate::builtin`]).
pub fn parse_upstream(key: &str, v: &str) -> Result<UpstreamUrl, ConfigError> {
    if v.starts_with("builtin:") {
        let builtin = crate::builtin::Builtin::parse(v).ok_or_else(|| {
            ConfigError::new(
                key,
                format!("unknown built-in upstream {v:?}: builtin:ok or builtin:echo"),
            )
        })?;
        return Ok(UpstreamUrl {
            uri: http::Uri::from_static("http://builtin.invalid"),
            scheme: http::uri::Scheme::HTTP,
            authority: http::uri::Authority::from_static("builtin.invalid"),
            base_path: String::new(),
            builtin: Some(builtin),
        });
    }
    let uri: http::Uri = v
        .parse()
        .map_err(|_| ConfigError::new(key, format!("not a URL: {v:?}")))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| ConfigError::new(key, "needs a scheme: http:// or https://"))?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err(ConfigError::new(key, "scheme must be http or https"));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| ConfigError::new(key, "needs a host"))?;
    if uri.query().is_some() {
        return Err(ConfigError::new(key, "must not have a query"));
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok(UpstreamUrl {
        uri,
        scheme,
        authority,
        base_path,
        builtin: None,
    })
}
