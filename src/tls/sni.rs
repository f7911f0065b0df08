//! Several certificates on one listener, chosen by the client's SNI name
//! (`[[server.tls.certificates]]`).
//!
//! The rule, checked in this order: an exact name (`api.example.com`), then
//! a wildcard covering exactly one label (`*.example.com` matches
//! `a.example.com`, not `example.com` nor `a.b.example.com`, as RFC 6125
//! §6.4.3 has clients check it), then the default `[server.tls]`
//! certificate, also for clients that send no SNI. Names are compared in
//! ASCII lower case. A name listed twice is a configuration error, so the
//! choice never depends on order.
//!
//! Each certificate is a [`ReloadingCertResolver`]: watched and reloaded on
//! its own, like the default one; a handshake costs one hash lookup (two
//! for a wildcard).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{ReloadingCertResolver, TlsError};
use crate::config::{ConfigError, ServerTlsConfig, SniCertificateConfig};

/// Picks the certificate by SNI (see the module doc).
#[derive(Debug)]
pub struct SniResolver {
    default: Arc<ReloadingCertResolver>,
    exact: HashMap<String, Arc<ReloadingCertResolver>>,
    /// By the domain after `*.`.
    wildcard: HashMap<String, Arc<ReloadingCertResolver>>,
    all: Vec<Arc<ReloadingCertResolver>>,
}

impl SniResolver {
    /// Loads the default certificate and every SNI one.
    pub fn load(tls: &ServerTlsConfig) -> Result<Self, TlsError> {
        let default = Arc::new(ReloadingCertResolver::load(&tls.cert, &tls.key)?);
        let mut all = vec![default.clone()];
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for c in &tls.certificates {
            let r = Arc::new(ReloadingCertResolver::load(&c.cert, &c.key)?);
            for name in &c.names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(domain) => wildcard.insert(domain.to_string(), r.clone()),
                    None => exact.insert(name, r.clone()),
                };
            }
            all.push(r);
        }
        Ok(SniResolver {
            default,
            exact,
            wildcard,
            all,
        })
    }

    /// Every certificate, the default first: to watch and to reload.
    pub fn resolvers(&self) -> &[Arc<ReloadingCertResolver>] {
        &self.all
    }

    /// Re-reads every certificate; the first error, after trying them all.
    pub fn reload(&self) -> Result<(), TlsError> {
        let mut first = None;
        for r in &self.all {
            if let Err(e) = r.reload() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The certificate for SNI name `name` (`None`: no SNI).
    pub fn choose(&self, name: Option<&str>) -> &Arc<ReloadingCertResolver> {
        let Some(name) = name else {
            return &self.default;
        };
        let name = name.to_ascii_lowercase();
        if let Some(r) = self.exact.get(&name) {
            return r;
        }
        if let Some((_, domain)) = name.split_once('.') {
            if let Some(r) = self.wildcard.get(domain) {
                return r;
            }
        }
        &self.default
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(hello.server_name()).current())
    }
}

/// `[[server.tls.certificates]]`: names well-formed and listed once, files
/// present. Errors name the entry's key.
pub fn validate(certs: &[SniCertificateConfig]) -> Result<(), ConfigError> {
    let err = |key: String, message: String| Err(ConfigError { key, message });
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, c) in certs.iter().enumerate() {
        let at = format!("server.tls.certificates[{i}]");
        if c.names.is_empty() {
            return err(format!("{at}.names"), "must list at least one name".into());
        }
        for name in &c.names {
            let host = name.strip_prefix("*.").unwrap_or(name);
            let ok = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return err(
                    format!("{at}.names"),
                    format!("{name:?} is not a host name or *.domain"),
                );
            }
            if let Some(j) = seen.insert(name.to_ascii_lowercase(), i) {
                return err(
                    format!("{at}.names"),
                    format!("{name:?} is already listed by server.tls.certificates[{j}]"),
                );
            }
        }
        for (key, path) in [("cert", &c.cert), ("key", &c.key)] {
            if !path.is_file() {
                return err(
                    format!("{at}.{key}"),
                    format!("no such file: {}", path.display()),
                );
            }
        }
    }
    Ok(())
}
