//! Real signed JWTs for tests, a real JWKS server, and the spellings of one
//! signed token that lenient verifiers accept (the tests' one JWT signer).
//!
//! Keys: RSA from the committed test-only PEMs (`tests/data/jwt_rsa_*.pem`,
//! PKCS#1, generated for these tests and used nowhere else), P-256, P-384
//! and Ed25519 generated per run with ring. Tokens are signed with
//! `jsonwebtoken` and checked with ring ([`SigningKey::verifies`]).
//! [`respellings`] and [`SigningKey::malleate`] give other spellings of the
//! same signed token: padded or bit-flipped signatures, and ECDSA's other
//! valid signature `(r, n - s)`. `JwksServer::spawn(doc)` serves a JWKS document on
//! 127.0.0.1:0 that the test can replace (key rotation) and counts the
//! fetches that reached it; `JwksServer::spawn_tls(doc, &pki)` the same over
//! HTTPS.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::KeyPair as _;
use tokio::net::TcpListener;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A private key that signs tokens, and its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// The public JWK (with `kid`, `use: sig`, `alg`).
    pub jwk: serde_json::Value,
    /// The public key as ring verifies with it (RSA: DER `RSAPublicKey`;
    /// EC: the uncompressed point; Ed25519: the 32 bytes).
    public: Vec<u8>,
}

/// The group orders of P-256 and P-384 (big-endian), for `(r, n - s)`.
const N_P256: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
const N_P384: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973";

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

impl SigningKey {
    /// RSA key `a` or `b` (the committed test PEMs), signing with `alg`
    /// (RS256/384/512 or PS256/384/512).
    pub fn rsa(which: char, kid: &str, alg: Algorithm) -> SigningKey {
        let pem = match which {
            'a' => include_str!("../data/jwt_rsa_a.pem"),
            'b' => include_str!("../data/jwt_rsa_b.pem"),
            _ => panic!("rsa keys are a and b"),
        };
        let der = pem_der(pem);
        let pair = ring::signature::RsaKeyPair::from_der(&der).unwrap();
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
        SigningKey {
            kid: kid.into(),
            alg,
            encoding: EncodingKey::from_rsa_der(&der),
            jwk: serde_json::json!({
                "kty": "RSA", "use": "sig", "alg": format!("{alg:?}"), "kid": kid,
                "n": b64(&public.n), "e": b64(&public.e),
            }),
            public: pair.public().as_ref().to_vec(),
        }
    }

    /// A fresh P-256 key (ES256).
    pub fn es256(kid: &str) -> SigningKey {
        Self::ecdsa(kid, Algorithm::ES256)
    }

    /// A fresh P-384 key (ES384).
    pub fn es384(kid: &str) -> SigningKey {
        Self::ecdsa(kid, Algorithm::ES384)
    }

    fn ecdsa(kid: &str, alg: Algorithm) -> SigningKey {
        let (signing, crv, half) = match alg {
            Algorithm::ES256 => (
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                "P-256",
                32,
            ),
            Algorithm::ES384 => (
                &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                "P-384",
                48,
            ),
            other => panic!("{other:?} is not ECDSA"),
        };
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
        let pair =
            ring::signature::EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        assert_eq!(point.len(), 1 + 2 * half);
        SigningKey {
            kid: kid.into(),
            alg,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "EC", "crv": crv, "use": "sig", "alg": format!("{alg:?}"), "kid": kid,
                "x": b64(&point[1..1 + half]), "y": b64(&point[1 + half..]),
            }),
            public: point.to_vec(),
        }
    }

    /// A fresh Ed25519 key (EdDSA).
    pub fn ed25519(kid: &str) -> SigningKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        SigningKey {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
                "x": b64(pair.public_key().as_ref()),
            }),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    /// This key under another `kid` (same private key).
    pub fn with_kid(&self, kid: &str) -> SigningKey {
        let mut k = self.clone();
        k.kid = kid.into();
        k.jwk["kid"] = kid.into();
        k
    }

    /// A token with these claims, signed, its header naming this key's kid.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// A token signed with this key but naming `kid`.
    pub fn sign_as(&self, kid: &str, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// Public key material an attacker has (the JWK's `n`, or `x` for
    /// curves, decoded) to key an HS256 forgery with: the classic
    /// algorithm-confusion attack.
    pub fn public_bytes(&self) -> Vec<u8> {
        let field = self.jwk.get("n").or_else(|| self.jwk.get("x")).unwrap();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(field.as_str().unwrap())
            .unwrap()
    }

    /// Whether `token`'s signature verifies under this key (padding and
    /// unused bits ignored, as lenient verifiers do).
    pub fn verifies(&self, token: &str) -> bool {
        use ring::signature as s;
        let alg: &dyn s::VerificationAlgorithm = match self.alg {
            Algorithm::RS256 => &s::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::RS384 => &s::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::RS512 => &s::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::PS256 => &s::RSA_PSS_2048_8192_SHA256,
            Algorithm::PS384 => &s::RSA_PSS_2048_8192_SHA384,
            Algorithm::PS512 => &s::RSA_PSS_2048_8192_SHA512,
            Algorithm::ES256 => &s::ECDSA_P256_SHA256_FIXED,
            Algorithm::ES384 => &s::ECDSA_P384_SHA384_FIXED,
            Algorithm::EdDSA => &s::ED25519,
            other => panic!("{other:?} is not a public-key algorithm"),
        };
        let (input, sig) = token.rsplit_once('.').unwrap();
        let Some(sig) = lenient_decode(sig) else {
            return false;
        };
        s::UnparsedPublicKey::new(alg, &self.public)
            .verify(input.as_bytes(), &sig)
            .is_ok()
    }

    /// The same token with its ECDSA signature `(r, s)` replaced by
    /// `(r, n - s)`: another valid signature over the same content (`None`
    /// for other algorithms).
    pub fn malleate(&self, token: &str) -> Option<String> {
        let order = match self.alg {
            Algorithm::ES256 => N_P256,
            Algorithm::ES384 => N_P384,
            _ => return None,
        };
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        let half = sig.len() / 2;
        let n = hex::decode(order).unwrap();
        let s = sig[half..].to_vec();
        // n - s, big-endian, with borrow.
        let mut borrow = 0i16;
        for i in (0..half).rev() {
            let mut d = n[i] as i16 - s[i] as i16 - borrow;
            borrow = if d < 0 {
                d += 256;
                1
            } else {
                0
            };
            sig[half + i] = d as u8;
        }
        Some(format!("{input}.{}", b64(&sig)))
    }
}

fn lenient_decode(s: &str) -> Option<Vec<u8>> {
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(s).ok()
}

/// Spellings of `token`'s signature that decode to the same bytes: `=`
/// padding appended, and the unused low bits of the last character set.
pub fn respellings(token: &str) -> Vec<String> {
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut out = Vec::new();
    let pad = (4 - sig.len() % 4) % 4;
    if pad > 0 {
        out.push(format!("{input}.{sig}{}", "=".repeat(pad)));
    }
    let unused_bits = match sig.len() % 4 {
        2 => 4,
        3 => 2,
        _ => 0,
    };
    if unused_bits > 0 {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = *sig.as_bytes().last().unwrap();
        let v = ALPHABET.iter().position(|&c| c == last).unwrap();
        let flipped = ALPHABET[v ^ 1];
        if flipped != last {
            let mut s = sig.to_string();
            s.pop();
            s.push(flipped as char);
            out.push(format!("{input}.{s}"));
        }
    }
    out
}

/// A JWKS document of these keys.
pub fn jwks(keys: &[&SigningKey]) -> serde_json::Value {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

/// An HS256 token keyed with `secret`.
pub fn hs256(kid: &str, secret: &[u8], claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// An unsigned (`alg: none`) token.
pub fn unsigned(claims: &serde_json::Value) -> String {
    format!(
        "{}.{}.x",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// A real HTTP server for one JWKS document, replaceable, counting fetches.
pub struct JwksServer {
    pub url: String,
    doc: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    tasks: super::tasks::Tasks,
}

impl Drop for JwksServer {
    /// Stops the server; a panic in any of its tasks fails the test here.
    fn drop(&mut self) {
        self.tasks.finish();
    }
}

impl JwksServer {
    /// Over plain HTTP.
    pub async fn spawn(doc: serde_json::Value) -> JwksServer {
        JwksServer::start(doc, None).await
    }

    /// Over HTTPS with the PKI's server certificate (issued for
    /// `localhost`): the URL is `https://localhost:<port>/jwks.json`.
    pub async fn spawn_tls(doc: serde_json::Value, pki: &super::certs::Pki) -> JwksServer {
        let cfg = rustls::ServerConfig::builder_with_provider(revgate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                revgate::tls::read_certs(&pki.server_cert).unwrap(),
                revgate::tls::read_key(&pki.server_key).unwrap(),
            )
            .unwrap();
        JwksServer::start(doc, Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start(doc: serde_json::Value, tls: Option<tokio_rustls::TlsAcceptor>) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let doc = Arc::new(Mutex::new((200, doc.to_string())));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let url = match &tls {
            Some(_) => format!("https://localhost:{}/jwks.json", addr.port()),
            None => format!("http://{addr}/jwks.json"),
        };
        let tasks = super::tasks::Tasks::default();
        let t = tasks.clone();
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (d, h, tls) = (d.clone(), h.clone(), tls.clone());
                t.spawn(async move {
                    match tls {
                        None => serve_jwks(TokioIo::new(stream), d, h).await,
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                serve_jwks(TokioIo::new(s), d, h).await
                            }
                        }
                    }
                });
            }
        });
        JwksServer {
            url,
            doc,
            hits,
            tasks,
        }
    }

    /// Serves another document from now on.
    pub fn set(&self, doc: serde_json::Value) {
        *self.doc.lock().unwrap() = (200, doc.to_string());
    }

    /// Answers this status and body from now on.
    pub fn set_raw(&self, status: u16, body: String) {
        *self.doc.lock().unwrap() = (status, body);
    }

    /// Fetches that reached the server.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve_jwks<IO>(io: IO, doc: Arc<Mutex<(u16, String)>>, hits: Arc<AtomicUsize>)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |_req: Request<Incoming>| {
        hits.fetch_add(1, Ordering::SeqCst);
        let (status, body) = doc.lock().unwrap().clone();
        async move {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, svc)
        .await;
}
