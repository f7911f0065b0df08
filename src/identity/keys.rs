//! The key set of a JWKS document: which of its keys are loaded (signature
//! keys only), which key may verify a token of a given `alg`, and the
//! signature check itself (through `jsonwebtoken`), after which the claims
//! go to `claims.rs`. The rules are in the doc of `verify.rs`.

use std::fmt;
use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::claims::{check_claims, map_error, VerifiedClaims};
use super::verify::{JwsHeader, Policy, VerifyError};

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
        let key = decoding_key(jwk)?;
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

/// The key's material as ring will use it, or why ring would refuse it
/// (checked here so that such a key is skipped with its reason, rather than
/// loaded and failing every token as a bad signature). ring's rules: an RSA
/// modulus of 2048 to 8192 bits (counted in whole bytes) that is odd, an odd
/// exponent of 3 to 2^33 - 1, neither with leading zero bytes (dropped here:
/// RFC 7518 §6.3.1.1 forbids them, but some providers send them); EC
/// coordinates of the curve's size; a 32-byte Ed25519 key. An EC point off
/// its curve, or an Ed25519 key that is no point, still loads (ring says so
/// only when verifying).
fn decoding_key(jwk: &Jwk) -> Result<DecodingKey, &'static str> {
    use base64::Engine as _;
    let decode = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| "bad key material")
    };
    let unpadded = |b: &[u8]| b.iter().position(|&x| x != 0).unwrap_or(b.len());
    match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let (n, e) = (decode(&p.n)?, decode(&p.e)?);
            let (n, e) = (&n[unpadded(&n)..], &e[unpadded(&e)..]);
            if !(256..=1024).contains(&n.len()) {
                return Err("RSA modulus not 2048 to 8192 bits");
            }
            if n.last().is_some_and(|b| b & 1 == 0) {
                return Err("RSA modulus even");
            }
            let value = (e.len() <= 5).then(|| e.iter().fold(0u64, |v, &b| v << 8 | u64::from(b)));
            if !value.is_some_and(|v| v & 1 == 1 && (3..1 << 33).contains(&v)) {
                return Err("RSA exponent not odd, 3 to 2^33 - 1");
            }
            return Ok(DecodingKey::from_rsa_raw_components(n, e));
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let size = if p.curve == EllipticCurve::P384 {
                48
            } else {
                32
            };
            if decode(&p.x)?.len() != size || decode(&p.y)?.len() != size {
                return Err("EC coordinates not of the curve's size");
            }
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if decode(&p.x)?.len() != 32 {
                return Err("Ed25519 key not 32 bytes");
            }
        }
        AlgorithmParameters::OctetKey(_) => {}
    }
    DecodingKey::from_jwk(jwk).map_err(|_| "bad key material")
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
        validation.required_spec_claims = if policy.require_exp {
            ["exp"].iter().map(|s| s.to_string()).collect()
        } else {
            Default::default()
        };
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

#[cfg(test)]
mod tests {
    use super::super::test_keys::*;
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    /// Found by the `jwt_verify` fuzz target: keys whose material ring
    /// refuses (an RSA modulus under 2048 bits or even, a bad exponent, EC
    /// or Ed25519 coordinates of the wrong size) were loaded, so every token
    /// naming them failed as a bad signature instead of the key being
    /// skipped with its reason; and an RSA modulus or exponent with a
    /// leading zero byte (RFC 7518 forbids it, some providers send it) made
    /// a good key unusable.
    #[test]
    fn keys_ring_cannot_use_are_skipped_and_leading_zeros_are_dropped() {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let unb64 = |s: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s.as_str().unwrap())
                .unwrap()
        };
        let r = rsa("r", Algorithm::RS256);
        let n = unb64(&r.jwk["n"]);
        let e = ec("e");
        let d = ed("d");
        let with = |mut jwk: Value, field: &str, bytes: &[u8]| {
            jwk[field] = b64(bytes).into();
            jwk
        };
        let mut even = n.clone();
        *even.last_mut().unwrap() &= !1;
        let cases = [
            (
                with(r.jwk.clone(), "n", &n[..128]),
                "RSA modulus not 2048 to 8192 bits",
            ),
            (
                with(r.jwk.clone(), "n", &[n.as_slice(); 5].concat()),
                "RSA modulus not 2048 to 8192 bits",
            ),
            (with(r.jwk.clone(), "n", &even), "RSA modulus even"),
            (
                with(r.jwk.clone(), "e", &[1, 0, 0]),
                "RSA exponent not odd, 3 to 2^33 - 1",
            ),
            (
                with(r.jwk.clone(), "e", &[1]),
                "RSA exponent not odd, 3 to 2^33 - 1",
            ),
            (
                with(r.jwk.clone(), "e", &[1, 0, 0, 0, 0, 1]),
                "RSA exponent not odd, 3 to 2^33 - 1",
            ),
            (
                with(e.jwk.clone(), "x", &[1; 31]),
                "EC coordinates not of the curve's size",
            ),
            (
                with(e.jwk.clone(), "y", &[1; 48]),
                "EC coordinates not of the curve's size",
            ),
            (
                with(d.jwk.clone(), "x", &[1; 31]),
                "Ed25519 key not 32 bytes",
            ),
        ];
        for (jwk, reason) in cases {
            let doc = json!({ "keys": [jwk] }).to_string();
            assert!(
                matches!(
                    KeySet::parse(doc.as_bytes()),
                    Err(KeySetError::NoUsableKeys { skipped: 1 })
                ),
                "{doc}"
            );
            let ks = set(&[&jwk, &r.jwk]);
            assert_eq!(ks.skipped()[0].reason, reason, "{jwk}");
        }
        let padded = with(
            with(r.jwk.clone(), "n", &[&[0u8, 0][..], &n].concat()),
            "e",
            &[0, 1, 0, 1],
        );
        let ks = set(&[&padded]);
        let token = sign(&r, Some("r"), &claims());
        assert_eq!(
            check(&ks, &token).map(|c| c.text("sub")),
            Ok(Some("u1".into()))
        );
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
