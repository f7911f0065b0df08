//! Test PKI: a throw-away CA and the server and client certificates it
//! signs, written as PEM files, for TLS tests (listener, upstream, mTLS).
//!
//! ```ignore
//! let dir = tempfile::tempdir()?;
//! let pki = certs::write_pki(dir.path(), &["localhost", "127.0.0.1"]);
//! // pki.ca_cert, pki.server_cert, pki.server_key, pki.client_cert, pki.client_key
//! // rotate: let (c, k) = pki.ca.issue_server(&["localhost"]);
//! //         certs::write_atomic(&pki.server_cert, &c); ...
//! ```
//!
//! Used by integration tests (`mod support;`) and by `src/tls.rs`'s unit
//! tests (through `#[path]`), so it depends on rcgen only.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that lives for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl TestCa {
    /// A fresh self-signed CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA cert");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `sans` (DNS names or IP addresses):
    /// `(cert_pem, key_pem)`. Each call makes a new key and certificate.
    pub fn issue_server(&self, sans: &[&str]) -> (String, String) {
        self.issue(
            sans,
            sans.first().copied().unwrap_or("server"),
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name `name`: `(cert_pem, key_pem)`.
    pub fn issue_client(&self, name: &str) -> (String, String) {
        self.issue(&[], name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, sans: &[&str], cn: &str, eku: ExtendedKeyUsagePurpose) -> (String, String) {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![eku];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        (cert.pem(), key.serialize_pem())
    }
}

/// Paths of a PKI written by [`write_pki`], and the CA that signed it (to
/// issue more, e.g. a rotated server certificate).
pub struct Pki {
    /// The CA.
    pub ca: TestCa,
    /// CA certificate (trust anchor for clients and for client auth).
    pub ca_cert: PathBuf,
    /// Server certificate chain (leaf only).
    pub server_cert: PathBuf,
    /// Server private key (PKCS#8).
    pub server_key: PathBuf,
    /// Client certificate, for mTLS.
    pub client_cert: PathBuf,
    /// Client private key.
    pub client_key: PathBuf,
}

/// Writes `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key`
/// into `dir`: a fresh CA, a server certificate for `sans`, and a client
/// certificate (CN `revgate-client`).
pub fn write_pki(dir: &Path, sans: &[&str]) -> Pki {
    let ca = TestCa::new("revgate test CA");
    let ca_cert = dir.join("ca.pem");
    write_atomic(&ca_cert, ca.cert_pem());
    let (server_cert, server_key) = (dir.join("server.pem"), dir.join("server.key"));
    let (c, k) = ca.issue_server(sans);
    write_atomic(&server_cert, &c);
    write_atomic(&server_key, &k);
    let (client_cert, client_key) = (dir.join("client.pem"), dir.join("client.key"));
    let (c, k) = ca.issue_client("revgate-client");
    write_atomic(&client_cert, &c);
    write_atomic(&client_key, &k);
    Pki {
        ca,
        ca_cert,
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

/// Replaces `path` with `contents` through a rename, as a secret mount or
/// a certificate manager would: a reader never sees half a file.
pub fn write_atomic(path: &Path, contents: &str) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}
