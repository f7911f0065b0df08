//! Verifying one JWS compact token against a key set (JWKS) and a policy:
//! the pure, synchronous half of [`crate::identity`] (where the keys come
//! from, and when they are refetched, is `jwks.rs`).
//!
//! # The rules
//!
//! - **Shape**: exactly three base64url segments (no padding), a JSON object
//!   header with a string `alg`, a non-empty signature. Anything else is
//!   [`VerifyError::Malformed`].
//! - **Algorithms**: RS256/384/512, PS256/384/512, ES256, ES384, EdDSA
//!   (Ed25519), all through `jsonwebtoken`'s ring backend. `alg: none` (any
//!   spelling) is [`VerifyError::Unsigned`]; HS256/384/512 are
//!   [`VerifyError::Symmetric`], refused before any key is looked at, so the
//!   classic "HS256 keyed with the RSA public key" forgery has nothing to be
//!   checked against. A `crit` header (RFC 7515 §4.1.11) names extensions
//!   revgate does not implement: refused. Key-carrying headers (`jku`, `jwk`,
//!   `x5u`, `x5c`) are ignored: keys come only from the configured JWKS.
//! - **Key choice**: by `kid`; a token without `kid` is tried against every
//!   key that fits its `alg`. A key fits when its type and curve agree with
//!   the algorithm (RSA for RS*/PS*, P-256 for ES256, P-384 for ES384,
//!   OKP/Ed25519 for EdDSA) and its own `alg`, when it names one, is the
//!   token's. A JWKS key marked `use` other than `sig`, or `key_ops` without
//!   `verify`, or symmetric (`kty: oct`), or of an unsupported type, is never
//!   loaded (it is skipped, the rest of the set is kept).
//! - **Claims**: the payload is a JSON object; `exp` (a number of seconds
//!   from 0 to 2^64, else [`VerifyError::Claim`]) is required and must not
//!   be past `now - leeway`; `nbf`, when present, a number not after `now +
//!   leeway` (however large: `1e300` is not yet valid); `iat`, when present,
//!   a number not after `now + leeway`; `iss` a string equal to one of the
//!   policy's issuers; `aud` (a string or an array of strings) containing
//!   one of its audiences. A token breaking several rules always gets the
//!   same reason.
//!
//! Errors are small constant reasons: they never carry token bytes, so they
//! can be logged as they are.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// What a verified token must say about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Accepted `iss` values (at least one).
    pub issuers: Vec<String>,
    /// Accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    /// Clock tolerance for `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

/// Why a token was not accepted. Each is a fixed reason (no token bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWS compact token (or its header is not a JSON object).
    #[error("not a JWS compact token")]
    Malformed,
    /// `alg: none`.
    #[error("unsigned token (alg none)")]
    Unsigned,
    /// An HMAC algorithm: a shared secret is not a verifiable identity.
    #[error("symmetric algorithm refused")]
    Symmetric,
    /// An algorithm revgate does not verify.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// A `crit` header.
    #[error("critical header extension")]
    Critical,
    /// No loaded key has the token's `kid` (or, without `kid`, fits its `alg`).
    #[error("unknown key")]
    UnknownKey,
    /// The key named by `kid` does not fit the token's `alg`.
    #[error("key does not fit the algorithm")]
    KeyMismatch,
    /// No key set has been loaded yet.
    #[error("no signature keys loaded")]
    NoKeys,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("expired")]
    Expired,
    /// `nbf` is ahead (beyond the leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// `iat` is ahead (beyond the leeway).
    #[error("issued in the future")]
    IssuedInFuture,
    /// `iss` is not an accepted issuer.
    #[error("issuer not accepted")]
    WrongIssuer,
    /// `aud` names no accepted audience.
    #[error("audience not accepted")]
    WrongAudience,
    /// A required claim is missing, or a claim has the wrong type.
    #[error("claim missing or malformed: {0}")]
    Claim(&'static str),
}

/// A token's header, as far as key choice needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwsHeader {
    /// The signature algorithm (never `none` or HMAC).
    pub alg: Algorithm,
    /// The key id, if any.
    pub kid: Option<String>,
}

/// Reads and checks a token's header: the shape, the algorithm, `crit`.
pub fn header(token: &str) -> Result<JwsHeader, VerifyError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed);
    };
    if h.is_empty() || p.is_empty() {
        return Err(VerifyError::Malformed);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| VerifyError::Malformed)?;
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(VerifyError::Malformed);
    };
    let Some(Value::String(alg)) = fields.get("alg") else {
        return Err(VerifyError::Malformed);
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(VerifyError::Unsigned);
    }
    if s.is_empty() {
        return Err(VerifyError::Malformed);
    }
    let alg = match alg.as_str() {
        "HS256" | "HS384" | "HS512" => return Err(VerifyError::Symmetric),
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return Err(VerifyError::UnsupportedAlgorithm),
    };
    if fields.contains_key("crit") {
        return Err(VerifyError::Critical);
    }
    let kid = match fields.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(VerifyError::Malformed),
    };
    Ok(JwsHeader { alg, kid })
}

// === KeySet ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

/// One signature key from a JWKS, checked for what it may verify.
#[derive(Clone)]
struct TrustedKey {
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's own `alg`, when it names one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl TrustedKey {
    /// The key, or why it is not loaded.
    fn from_jwk(jwk: &Jwk) -> Result<TrustedKey, &'static str> {
        match &jwk.common.public_key_use {
            None | Some(PublicKeyUse::Signature) => {}
            Some(_) => return Err("use is not sig"),
        }
        if let Some(ops) = &jwk.common.key_operations {
            if !ops.contains(&KeyOperations::Verify) {
                return Err("key_ops lacks verify");
            }
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(KeyAlgorithm::HS256 | KeyAlgorithm::HS384 | KeyAlgorithm::HS512) => {
                return Err("symmetric alg")
            }
            Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
            Some(KeyAlgorithm::RS384) => Some(Algorithm::RS384),
            Some(KeyAlgorithm::RS512) => Some(Algorithm::RS512),
            Some(KeyAlgorithm::PS256) => Some(Algorithm::PS256),
            Some(KeyAlgorithm::PS384) => Some(Algorithm::PS384),
            Some(KeyAlgorithm::PS512) => Some(Algorithm::PS512),
            Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
            Some(KeyAlgorithm::ES384) => Some(Algorithm::ES384),
            Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
            Some(_) => return Err("encryption alg"),
        };
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyKind::Rsa,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => KeyKind::P256,
                EllipticCurve::P384 => KeyKind::P384,
                _ => return Err("unsupported curve"),
            },
            AlgorithmParameters::OctetKeyPair(p) => match p.curve {
                EllipticCurve::Ed25519 => KeyKind::Ed25519,
                _ => return Err("unsupported curve"),
            },
            AlgorithmParameters::OctetKey(_) => return Err("symmetric key"),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|_| "bad key material")?;
        let me = TrustedKey {
            kid: jwk.common.key_id.clone(),
            kind,
            alg,
            key,
        };
        if let Some(a) = alg {
            if !me.fits(a) {
                return Err("alg does not fit kty/crv");
            }
        }
        Ok(me)
    }

    /// Whether this key may verify a token signed with `alg`.
    fn fits(&self, alg: Algorithm) -> bool {
        let kind_fits = match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => self.kind == KeyKind::Rsa,
            Algorithm::ES256 => self.kind == KeyKind::P256,
            Algorithm::ES384 => self.kind == KeyKind::P384,
            Algorithm::EdDSA => self.kind == KeyKind::Ed25519,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => false,
        };
        kind_fits && self.alg.is_none_or(|a| a == alg)
    }
}

/// A JWKS key that was not loaded, and why (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKey {
    /// Its `kid`, if it had one.
    pub kid: Option<String>,
    /// Why.
    pub reason: &'static str,
}

/// Why a JWKS document was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    /// Not a JSON object with a `keys` array.
    #[error("not a JWKS document (a JSON object with a \"keys\" array)")]
    NotJwks,
    /// No key in it can verify signatures.
    #[error("no usable signature key ({skipped} skipped)")]
    NoUsableKeys {
        /// Keys skipped.
        skipped: usize,
    },
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The signature keys of a JWKS document.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<TrustedKey>,
    skipped: Vec<SkippedKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field(
                "kids",
                &self
                    .keys
                    .iter()
                    .map(|k| k.kid.as_deref())
                    .collect::<Vec<_>>(),
            )
            .field("skipped", &self.skipped.len())
            .finish()
    }
}

impl KeySet {
    /// Parses a JWKS document; keys that cannot verify signatures are skipped
    /// (see [`KeySet::skipped`]), and a set with none left is an error.
    pub fn parse(json: &[u8]) -> Result<KeySet, KeySetError> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<Value>,
        }
        let doc: Doc = serde_json::from_slice(json).map_err(|_| KeySetError::NotJwks)?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for raw in doc.keys {
            let kid = raw.get("kid").and_then(Value::as_str).map(str::to_owned);
            let parsed = serde_json::from_value::<Jwk>(raw)
                .map_err(|_| "unsupported or malformed key")
                .and_then(|jwk| TrustedKey::from_jwk(&jwk));
            match parsed {
                Ok(k) => keys.push(k),
                Err(reason) => skipped.push(SkippedKey { kid, reason }),
            }
        }
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKeys {
                skipped: skipped.len(),
            });
        }
        Ok(KeySet { keys, skipped })
    }

    /// Reads and parses a JWKS file.
    pub fn load_file(path: &Path) -> Result<KeySet, KeySetError> {
        KeySet::parse(&std::fs::read(path)?)
    }

    /// How many keys were loaded.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key was loaded (never true of a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that were not loaded, and why.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// Whether the set has a key with this header's `kid` (any key that
    /// fits its `alg` when it has none): if not, a newer set might.
    pub fn knows(&self, header: &JwsHeader) -> bool {
        match &header.kid {
            Some(kid) => self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
            None => self.keys.iter().any(|k| k.fits(header.alg)),
        }
    }

    /// Verifies `token` (whose header is `header`) with this set's keys under
    /// `policy`; `now` (unix seconds) is the time `iat` is checked against.
    pub fn verify(
        &self,
        token: &str,
        header: &JwsHeader,
        policy: &Policy,
        now: u64,
    ) -> Result<VerifiedClaims, VerifyError> {
        let named: Vec<&TrustedKey> = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => self.keys.iter().collect(),
        };
        if named.is_empty() {
            return Err(VerifyError::UnknownKey);
        }
        let fitting: Vec<&TrustedKey> = named.into_iter().filter(|k| k.fits(header.alg)).collect();
        if fitting.is_empty() {
            return Err(if header.kid.is_some() {
                VerifyError::KeyMismatch
            } else {
                VerifyError::UnknownKey
            });
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = policy.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&policy.issuers);
        validation.set_audience(&policy.audiences);
        // One required claim only: `jsonwebtoken` reports the first missing
        // one in a `HashSet`'s order, which differs from call to call; `iss`
        // and `aud` are required (in a fixed order) by `check_claims`.
        validation.required_spec_claims = ["exp"].iter().map(|s| s.to_string()).collect();
        for key in fitting {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => {
                    let claims = data.claims;
                    check_claims(&claims, policy, now)?;
                    return Ok(VerifiedClaims {
                        claims,
                        kid: key.kid.clone(),
                    });
                }
                // Another key with the same kid (or any key, without one)
                // may be the signer.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(map_error(e.kind())),
            }
        }
        Err(VerifyError::BadSignature)
    }
}

/// The claim rules `jsonwebtoken` does not enforce on every input, checked
/// in a fixed order after it: `exp` a number; `iss` a string, and accepted;
/// `aud` a string or an array of strings, naming an accepted audience; `nbf`
/// and `iat` numbers not ahead of the clock. `jsonwebtoken` checks `iss`,
/// `aud` and `nbf` only when it can read them (`nbf` as a u64: it skips an
/// `nbf` of `1e300`), so they are all checked here whatever it did.
fn check_claims(claims: &Map<String, Value>, policy: &Policy, now: u64) -> Result<(), VerifyError> {
    if !matches!(claims.get("exp"), Some(Value::Number(_))) {
        return Err(VerifyError::Claim("exp"));
    }
    match claims.get("iss") {
        Some(Value::String(iss)) if policy.issuers.contains(iss) => {}
        Some(Value::String(_)) => return Err(VerifyError::WrongIssuer),
        _ => return Err(VerifyError::Claim("iss")),
    }
    let accepted = |a: &str| policy.audiences.iter().any(|p| p == a);
    match claims.get("aud") {
        Some(Value::String(aud)) if accepted(aud) => {}
        Some(Value::String(_)) => return Err(VerifyError::WrongAudience),
        Some(Value::Array(auds)) if auds.iter().all(Value::is_string) => {
            if !auds.iter().filter_map(Value::as_str).any(accepted) {
                return Err(VerifyError::WrongAudience);
            }
        }
        _ => return Err(VerifyError::Claim("aud")),
    }
    let latest = now.saturating_add(policy.leeway.as_secs()) as f64;
    for (name, ahead) in [
        ("nbf", VerifyError::NotYetValid),
        ("iat", VerifyError::IssuedInFuture),
    ] {
        match claims.get(name) {
            None => {}
            Some(Value::Number(n)) => {
                // Every JSON number reads as an f64 (serde_json has no
                // arbitrary precision here); a huge one reads as a huge f64.
                let t = n.as_f64().ok_or(VerifyError::Claim(name))?;
                if t > latest {
                    return Err(ahead);
                }
            }
            Some(_) => return Err(VerifyError::Claim(name)),
        }
    }
    Ok(())
}

fn map_error(kind: &ErrorKind) -> VerifyError {
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::Crypto(_) | ErrorKind::InvalidEcdsaKey => {
            VerifyError::BadSignature
        }
        ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => VerifyError::BadSignature,
        ErrorKind::ExpiredSignature => VerifyError::Expired,
        ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
        ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
        ErrorKind::InvalidAudience => VerifyError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => VerifyError::Claim(match c.as_str() {
            "exp" => "exp",
            "iss" => "iss",
            "aud" => "aud",
            _ => "required claim",
        }),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => VerifyError::KeyMismatch,
        _ => VerifyError::Malformed,
    }
}

/// The claims of a token whose signature and registered claims verified.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedClaims {
    claims: Map<String, Value>,
    kid: Option<String>,
}

impl VerifiedClaims {
    /// A claim as text, read as the claim peek reads attributes
    /// (`credentials::peek_jwt`): a non-empty string, or a number's decimal
    /// form; anything else is `None`. Reading alike matters: a scope rule
    /// made from this must match the same user's tokens when they are judged.
    pub fn text(&self, name: &str) -> Option<String> {
        match self.claims.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The `kid` of the key that verified the token.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::signature::KeyPair as _;
    use serde_json::json;

    const ISS: &str = "https://idp.test/";
    const AUD: &str = "api";

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    struct Key {
        alg: Algorithm,
        enc: EncodingKey,
        jwk: Value,
    }

    fn rsa(kid: &str, alg: Algorithm) -> Key {
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

    fn ec(kid: &str) -> Key {
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

    fn ec384(kid: &str) -> Key {
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

    fn ed(kid: &str) -> Key {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Key {
            alg: Algorithm::EdDSA,
            enc: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({"kty":"OKP","crv":"Ed25519","kid":kid,"x":b64(pair.public_key().as_ref())}),
        }
    }

    fn sign(k: &Key, kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(k.alg);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, claims, &k.enc).unwrap()
    }

    fn now() -> u64 {
        crate::store::now_unix()
    }

    fn claims() -> Value {
        let t = now();
        json!({"sub":"u1","iss":ISS,"aud":AUD,"iat":t - 5,"exp":t + 300})
    }

    fn with(f: impl FnOnce(&mut Map<String, Value>)) -> Value {
        let mut c = claims();
        f(c.as_object_mut().unwrap());
        c
    }

    fn policy() -> Policy {
        Policy {
            issuers: vec!["https://other/".into(), ISS.into()],
            audiences: vec![AUD.into()],
            leeway: Duration::from_secs(60),
        }
    }

    fn set(jwks: &[&Value]) -> KeySet {
        KeySet::parse(json!({ "keys": jwks }).to_string().as_bytes()).unwrap()
    }

    fn check(keys: &KeySet, token: &str) -> Result<VerifiedClaims, VerifyError> {
        let h = header(token)?;
        keys.verify(token, &h, &policy(), now())
    }

    fn raw(header: &str, payload: &str, sig: &str) -> String {
        format!(
            "{}.{}.{sig}",
            b64(header.as_bytes()),
            b64(payload.as_bytes())
        )
    }

    #[test]
    fn headers_that_are_refused_before_any_key() {
        let p = r#"{"sub":"victim"}"#;
        #[rustfmt::skip]
        let cases: Vec<(String, VerifyError)> = vec![
            (raw(r#"{"alg":"none"}"#, p, "x"), VerifyError::Unsigned),
            (raw(r#"{"alg":"None"}"#, p, ""), VerifyError::Unsigned),
            (raw(r#"{"alg":"NONE","typ":"JWT"}"#, p, "sig"), VerifyError::Unsigned),
            (raw(r#"{"alg":"HS256"}"#, p, "c2ln"), VerifyError::Symmetric),
            (raw(r#"{"alg":"HS384"}"#, p, "c2ln"), VerifyError::Symmetric),
            (raw(r#"{"alg":"HS512"}"#, p, "c2ln"), VerifyError::Symmetric),
            (raw(r#"{"alg":"ES512"}"#, p, "c2ln"), VerifyError::UnsupportedAlgorithm),
            (raw(r#"{"alg":"RSA-OAEP"}"#, p, "c2ln"), VerifyError::UnsupportedAlgorithm),
            (raw(r#"{"alg":"rs256"}"#, p, "c2ln"), VerifyError::UnsupportedAlgorithm),
            (raw(r#"{"alg":"RS256","crit":["exp"]}"#, p, "c2ln"), VerifyError::Critical),
            (raw(r#"{"alg":"RS256"}"#, p, ""), VerifyError::Malformed),
            (raw(r#"{"alg":"RS256","kid":7}"#, p, "c2ln"), VerifyError::Malformed),
            (raw(r#"{"kid":"k"}"#, p, "c2ln"), VerifyError::Malformed),
            (raw(r#"{"alg":256}"#, p, "c2ln"), VerifyError::Malformed),
            (raw(r#"["RS256"]"#, p, "c2ln"), VerifyError::Malformed),
            (raw("not json", p, "c2ln"), VerifyError::Malformed),
            ("opaque-token".into(), VerifyError::Malformed),
            ("a.b".into(), VerifyError::Malformed),
            ("a.b.c.d".into(), VerifyError::Malformed),
            (".b.c".into(), VerifyError::Malformed),
            (format!("{}..c", b64(br#"{"alg":"RS256"}"#)), VerifyError::Malformed),
            (format!("{}=.e30.c", b64(br#"{"alg":"RS256"}"#)), VerifyError::Malformed),
            ("!!!.e30.c".into(), VerifyError::Malformed),
        ];
        for (token, want) in cases {
            assert_eq!(header(&token), Err(want), "{token}");
        }
        assert_eq!(
            header(&raw(
                r#"{"alg":"ES256","kid":"k1","jku":"https://evil/"}"#,
                p,
                "c2ln"
            )),
            Ok(JwsHeader {
                alg: Algorithm::ES256,
                kid: Some("k1".into())
            })
        );
    }

    #[test]
    fn good_tokens_of_every_family_verify() {
        let keys = [
            rsa("r", Algorithm::RS256),
            rsa("r384", Algorithm::RS384),
            rsa("r512", Algorithm::RS512),
            rsa("p", Algorithm::PS256),
            ec("e"),
            ed("d"),
            ec384("e384"),
        ];
        let ks = set(&keys.iter().map(|k| &k.jwk).collect::<Vec<_>>());
        assert_eq!(ks.len(), keys.len());
        for (k, kid) in keys
            .iter()
            .zip(["r", "r384", "r512", "p", "e", "d", "e384"])
        {
            let v = check(&ks, &sign(k, Some(kid), &claims())).unwrap();
            assert_eq!(v.text("sub").as_deref(), Some("u1"), "{:?}", k.alg);
            assert_eq!(v.kid(), Some(kid));
        }
        // Without kid: every key that fits the alg is tried.
        let v = check(&ks, &sign(&keys[4], None, &claims())).unwrap();
        assert_eq!(v.kid(), Some("e"));
        // A numeric subject reads as peek_jwt reads it.
        let v = check(
            &ks,
            &sign(
                &keys[5],
                Some("d"),
                &with(|c| {
                    c.insert("sub".into(), json!(42));
                }),
            ),
        )
        .unwrap();
        assert_eq!(v.text("sub").as_deref(), Some("42"));
        assert_eq!(v.text("missing"), None);
        // aud as an array naming one accepted audience; exp just past, within leeway.
        let t = now();
        for c in [
            with(|c| {
                c.insert("aud".into(), json!(["x", AUD]));
            }),
            with(|c| {
                c.insert("exp".into(), json!(t - 30));
            }),
            with(|c| {
                c.insert("iat".into(), json!(t + 30));
                c.insert("nbf".into(), json!(t + 30));
            }),
            with(|c| {
                c.remove("iat");
            }),
        ] {
            assert!(check(&ks, &sign(&keys[0], Some("r"), &c)).is_ok(), "{c}");
        }
    }

    #[test]
    fn refusal_paths() {
        let r = rsa("r", Algorithm::RS256);
        let e = ec("e");
        let d = ed("d");
        let ks = set(&[&r.jwk, &e.jwk, &d.jwk]);
        let t = now();
        let other_ec = ec("e");
        let other_ed = ed("d");
        let good = sign(&r, Some("r"), &claims());
        let (hp, sig) = good.rsplit_once('.').unwrap();
        let (h, _) = hp.split_once('.').unwrap();
        let tampered = format!(
            "{h}.{}.{sig}",
            b64(with(|c| {
                c.insert("sub".into(), json!("victim"));
            })
            .to_string()
            .as_bytes())
        );
        #[rustfmt::skip]
        let cases: Vec<(&str, String, VerifyError)> = vec![
            ("unknown kid", sign(&r, Some("nope"), &claims()), VerifyError::UnknownKey),
            ("RS256 naming the EC key", sign(&r, Some("e"), &claims()), VerifyError::KeyMismatch),
            ("ES256 naming the RSA key", sign(&e, Some("r"), &claims()), VerifyError::KeyMismatch),
            ("ES384 naming the P-256 key", sign(&ec384("x"), Some("e"), &claims()), VerifyError::KeyMismatch),
            ("EdDSA naming the P-256 key", sign(&d, Some("e"), &claims()), VerifyError::KeyMismatch),
            ("wrong EC key", sign(&other_ec, Some("e"), &claims()), VerifyError::BadSignature),
            ("wrong Ed key", sign(&other_ed, Some("d"), &claims()), VerifyError::BadSignature),
            ("wrong key, no kid", sign(&other_ec, None, &claims()), VerifyError::BadSignature),
            ("payload swapped", tampered, VerifyError::BadSignature),
            ("padded signature", format!("{good}="), VerifyError::Malformed),
            ("expired", sign(&r, Some("r"), &with(|c| { c.insert("exp".into(), json!(t - 120)); })), VerifyError::Expired),
            ("nbf ahead", sign(&r, Some("r"), &with(|c| { c.insert("nbf".into(), json!(t + 120)); })), VerifyError::NotYetValid),
            ("iat ahead", sign(&r, Some("r"), &with(|c| { c.insert("iat".into(), json!(t + 120)); })), VerifyError::IssuedInFuture),
            ("wrong iss", sign(&r, Some("r"), &with(|c| { c.insert("iss".into(), json!("https://evil/")); })), VerifyError::WrongIssuer),
            ("iss array", sign(&r, Some("r"), &with(|c| { c.insert("iss".into(), json!([ISS])); })), VerifyError::Claim("iss")),
            ("no iss", sign(&r, Some("r"), &with(|c| { c.remove("iss"); })), VerifyError::Claim("iss")),
            ("wrong aud", sign(&r, Some("r"), &with(|c| { c.insert("aud".into(), json!("other")); })), VerifyError::WrongAudience),
            ("no aud", sign(&r, Some("r"), &with(|c| { c.remove("aud"); })), VerifyError::Claim("aud")),
            ("no exp", sign(&r, Some("r"), &with(|c| { c.remove("exp"); })), VerifyError::Claim("exp")),
            ("exp as text", sign(&r, Some("r"), &with(|c| { c.insert("exp".into(), json!((t + 300).to_string())); })), VerifyError::Claim("exp")),
            ("nbf as text", sign(&r, Some("r"), &with(|c| { c.insert("nbf".into(), json!("0")); })), VerifyError::Claim("nbf")),
            ("iat as text", sign(&r, Some("r"), &with(|c| { c.insert("iat".into(), json!("0")); })), VerifyError::Claim("iat")),
            ("claims not an object", sign(&r, Some("r"), &json!(["sub"])), VerifyError::Malformed),
        ];
        for (what, token, want) in cases {
            assert_eq!(
                check(&ks, &token).map(|c| c.text("sub")),
                Err(want),
                "{what}"
            );
        }
        // HS256 keyed with public key material: refused whatever the key.
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(r.jwk["n"].as_str().unwrap())
            .unwrap();
        for secret in [&n[..], r.jwk.to_string().as_bytes()] {
            let forged = jsonwebtoken::encode(
                &Header {
                    kid: Some("r".into()),
                    ..Header::new(Algorithm::HS256)
                },
                &claims(),
                &EncodingKey::from_secret(secret),
            )
            .unwrap();
            assert_eq!(check(&ks, &forged).map(|_| ()), Err(VerifyError::Symmetric));
        }
        // A key whose own alg differs from the token's.
        let mut pinned = rsa("r", Algorithm::RS256).jwk;
        pinned["alg"] = "RS384".into();
        let ks = set(&[&pinned]);
        assert_eq!(check(&ks, &good).map(|_| ()), Err(VerifyError::KeyMismatch));
        assert_eq!(
            check(&ks, &sign(&r, None, &claims())).map(|_| ()),
            Err(VerifyError::UnknownKey)
        );
    }

    /// Found by the `jwt_verify` fuzz target: the reason for a token missing
    /// several required claims came from a `HashSet`'s iteration order, so
    /// two calls on one token could give two verdicts.
    #[test]
    fn a_token_gets_the_same_reason_every_time() {
        let r = rsa("r", Algorithm::RS256);
        let ks = set(&[&r.jwk]);
        let t = now();
        for claims in [
            json!({"sub":"u","exp":t + 300}),
            json!({"sub":"u"}),
            json!({"sub":"u","iss":ISS}),
            json!({"sub":"u","aud":AUD}),
        ] {
            let token = sign(&r, Some("r"), &claims);
            let first = check(&ks, &token).map(|_| ());
            assert!(first.is_err(), "{claims}");
            for _ in 0..50 {
                assert_eq!(check(&ks, &token).map(|_| ()), first, "{claims}");
            }
        }
    }

    /// Found by the `jwt_verify` fuzz target: an `nbf` too large for a u64
    /// (`1e300`, `2^64`) was skipped by `jsonwebtoken`'s check, so a token
    /// not valid for ages was accepted.
    #[test]
    fn nbf_beyond_any_clock_is_not_yet_valid() {
        let r = rsa("r", Algorithm::RS256);
        let ks = set(&[&r.jwk]);
        for nbf in [json!(1e300), json!(18446744073709551616.0), json!(u64::MAX)] {
            let token = sign(
                &r,
                Some("r"),
                &with(|c| {
                    c.insert("nbf".into(), nbf.clone());
                }),
            );
            assert_eq!(
                check(&ks, &token).map(|_| ()),
                Err(VerifyError::NotYetValid),
                "nbf {nbf}"
            );
        }
        // A negative or fractional nbf in the past is fine.
        for nbf in [json!(-1), json!(-1e300), json!(1.5)] {
            let token = sign(
                &r,
                Some("r"),
                &with(|c| {
                    c.insert("nbf".into(), nbf.clone());
                }),
            );
            assert!(check(&ks, &token).is_ok(), "nbf {nbf}");
        }
    }

    #[test]
    fn key_sets_keep_only_signature_keys() {
        let r = rsa("r", Algorithm::RS256).jwk;
        let e = ec("e").jwk;
        let mut enc = r.clone();
        enc["use"] = "enc".into();
        enc["kid"] = "enc".into();
        let mut ops = e.clone();
        ops["key_ops"] = json!(["sign"]);
        ops["kid"] = "ops".into();
        let mut hs = r.clone();
        hs["alg"] = "HS256".into();
        hs["kid"] = "hs".into();
        let mut misfit = r.clone();
        misfit["alg"] = "ES256".into();
        misfit["kid"] = "misfit".into();
        let mut p521 = e.clone();
        p521["crv"] = "P-521".into();
        p521["kid"] = "p521".into();
        let oct = json!({"kty":"oct","k":"c2VjcmV0","kid":"oct"});
        let weird = json!({"kty":"XYZ","kid":"weird"});
        let bad_n = json!({"kty":"RSA","kid":"badn","n":"!!","e":"AQAB"});
        let ks = set(&[
            &r, &enc, &ops, &hs, &misfit, &p521, &oct, &weird, &bad_n, &e,
        ]);
        assert_eq!(ks.len(), 2);
        let skipped: Vec<(Option<&str>, &str)> = ks
            .skipped()
            .iter()
            .map(|s| (s.kid.as_deref(), s.reason))
            .collect();
        assert_eq!(
            skipped,
            [
                (Some("enc"), "use is not sig"),
                (Some("ops"), "key_ops lacks verify"),
                (Some("hs"), "symmetric alg"),
                (Some("misfit"), "alg does not fit kty/crv"),
                (Some("p521"), "unsupported curve"),
                (Some("oct"), "symmetric key"),
                (Some("weird"), "unsupported or malformed key"),
                (Some("badn"), "bad key material"),
            ]
        );
        assert!(format!("{ks:?}").contains("\"r\""));
        assert!(matches!(
            KeySet::parse(json!({"keys":[oct]}).to_string().as_bytes()),
            Err(KeySetError::NoUsableKeys { skipped: 1 })
        ));
        for doc in [
            "",
            "[]",
            "{}",
            r#"{"keys":3}"#,
            r#"{"keys":{}}"#,
            "not json",
        ] {
            assert!(
                matches!(KeySet::parse(doc.as_bytes()), Err(KeySetError::NotJwks)),
                "{doc}"
            );
        }
        assert!(matches!(
            KeySet::parse(br#"{"keys":[]}"#),
            Err(KeySetError::NoUsableKeys { skipped: 0 })
        ));
    }
}
