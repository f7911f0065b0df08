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
//! - **Claims**: the payload is a JSON object; `exp` (a number) is required
//!   and must not be past `now - leeway`; `nbf`, when present, a number not
//!   after `now + leeway`; `iat`, when present, a number not after `now +
//!   leeway`; `iss` a string equal to one of the policy's issuers; `aud` (a
//!   string or an array of strings) containing one of its audiences.
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
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next())
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
                &self.keys.iter().map(|k| k.kid.as_deref()).collect::<Vec<_>>(),
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
        let fitting: Vec<&TrustedKey> =
            named.into_iter().filter(|k| k.fits(header.alg)).collect();
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
        validation.required_spec_claims =
            ["exp", "iss", "aud"].iter().map(|s| s.to_string()).collect();
        for key in fitting {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => {
                    let claims = data.claims;
                    check_claim_types(&claims, policy, now)?;
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

/// What `jsonwebtoken` leaves to the caller: `iss` a string, `iat` and
/// `nbf` numbers, `iat` not ahead of the clock.
fn check_claim_types(
    claims: &Map<String, Value>,
    policy: &Policy,
    now: u64,
) -> Result<(), VerifyError> {
    if !matches!(claims.get("iss"), Some(Value::String(_))) {
        return Err(VerifyError::Claim("iss"));
    }
    if !matches!(claims.get("exp"), Some(Value::Number(_))) {
        return Err(VerifyError::Claim("exp"));
    }
    match claims.get("nbf") {
        None | Some(Value::Number(_)) => {}
        Some(_) => return Err(VerifyError::Claim("nbf")),
    }
    match claims.get("iat") {
        None => {}
        Some(Value::Number(n)) => {
            let iat = n.as_f64().ok_or(VerifyError::Claim("iat"))?;
            if iat > now.saturating_add(policy.leeway.as_secs()) as f64 {
                return Err(VerifyError::IssuedInFuture);
            }
        }
        Some(_) => return Err(VerifyError::Claim("iat")),
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
