//! Keys, tokens and a policy for the verifier's unit tests (`verify.rs`,
//! `keys.rs`): one RSA key from `tests/data`, fresh EC and Ed25519 keys,
//! tokens signed with `jsonwebtoken`.
//!
//! Test code only (`#[cfg(test)]`): its `unwrap`s are on test set-up.
#![cfg(test)]

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::KeyPair as _;
use serde_json::{json, Map, Value};

use super::verify::{header, KeySet, Policy, VerifiedClaims, VerifyError};

pub(super) const ISS: &str = "https://idp.test/";
pub(super) const AUD: &str = "api";

pub(super) fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub(super) struct Key {
    pub(super) alg: Algorithm,
    pub(super) enc: EncodingKey,
    pub(super) jwk: Value,
}

pub(super) fn rsa(kid: &str, alg: Algorithm) -> Key {
    let pem = include_str!("../../tests/data/jwt_rsa_a.pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let pair = ring::signature::RsaKeyPair::from_der(&der).unwrap();
    let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
    Key {
        alg,
        enc: EncodingKey::from_rsa_der(&der),
        jwk: json!({"kty":"RSA","kid":kid,"n":b64(&public.n),"e":b64(&public.e)}),
    }
}

pub(super) fn ec(kid: &str) -> Key {
    let rng = ring::rand::SystemRandom::new();
    let a = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(a, &rng).unwrap();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(a, pkcs8.as_ref(), &rng).unwrap();
    let p = pair.public_key().as_ref();
    Key {
        alg: Algorithm::ES256,
        enc: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty":"EC","crv":"P-256","kid":kid,"x":b64(&p[1..33]),"y":b64(&p[33..])}),
    }
}

pub(super) fn ec384(kid: &str) -> Key {
    let rng = ring::rand::SystemRandom::new();
    let a = &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(a, &rng).unwrap();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(a, pkcs8.as_ref(), &rng).unwrap();
    let p = pair.public_key().as_ref();
    Key {
        alg: Algorithm::ES384,
        enc: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty":"EC","crv":"P-384","kid":kid,"x":b64(&p[1..49]),"y":b64(&p[49..])}),
    }
}

pub(super) fn ed(kid: &str) -> Key {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    Key {
        alg: Algorithm::EdDSA,
        enc: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({"kty":"OKP","crv":"Ed25519","kid":kid,"x":b64(pair.public_key().as_ref())}),
    }
}

pub(super) fn sign(k: &Key, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(k.alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &k.enc).unwrap()
}

pub(super) fn now() -> u64 {
    crate::store::now_unix()
}

pub(super) fn claims() -> Value {
    let t = now();
    json!({"sub":"u1","iss":ISS,"aud":AUD,"iat":t - 5,"exp":t + 300})
}

pub(super) fn with(f: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut c = claims();
    f(c.as_object_mut().unwrap());
    c
}

pub(super) fn policy() -> Policy {
    Policy {
        issuers: vec!["https://other/".into(), ISS.into()],
        audiences: vec![AUD.into()],
        leeway: Duration::from_secs(60),
        require_exp: true,
    }
}

pub(super) fn set(jwks: &[&Value]) -> KeySet {
    KeySet::parse(json!({ "keys": jwks }).to_string().as_bytes()).unwrap()
}

pub(super) fn check(keys: &KeySet, token: &str) -> Result<VerifiedClaims, VerifyError> {
    let h = header(token)?;
    keys.verify(token, &h, &policy(), now())
}

pub(super) fn raw(header: &str, payload: &str, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        b64(header.as_bytes()),
        b64(payload.as_bytes())
    )
}
