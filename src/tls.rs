//! TLS (placeholder until the production work lands): upstream client config.

use std::path::Path;
use std::sync::Arc;

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the material.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// The client config for `https://` upstreams: system roots or a CA file,
/// optional client certificate.
pub fn upstream_client_config(
    ca_file: Option<&Path>,
    _client_cert: Option<&Path>,
    _client_key: Option<&Path>,
) -> Result<rustls::ClientConfig, TlsError> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(p) => {
            for c in rustls_pki_types::CertificateDer::pem_file_iter(p)
                .map_err(|e| TlsError::Pem(e.to_string()))?
            {
                roots.add(c.map_err(|e| TlsError::Pem(e.to_string()))?)?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Server certificate holder (placeholder).
#[derive(Debug)]
pub struct ReloadingCertResolver;

impl ReloadingCertResolver {
    /// Loads a certificate chain and key.
    pub fn load(_cert: &Path, _key: &Path) -> Result<Self, TlsError> {
        Err(TlsError::Pem("TLS listener not built yet".into()))
    }
    /// Re-reads the files.
    pub fn reload(&self) -> Result<(), TlsError> {
        Ok(())
    }
}

/// Watches the certificate files (placeholder).
pub async fn watch(
    _r: Arc<ReloadingCertResolver>,
    _every: std::time::Duration,
    _stop: tokio_util::sync::CancellationToken,
) {
}

/// The listener's TLS config (placeholder).
pub fn server_config(_r: Arc<ReloadingCertResolver>) -> Arc<rustls::ServerConfig> {
    unreachable!("placeholder")
}
