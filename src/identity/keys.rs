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

#[cfg(test)]
mod tests {
    use super::super::test_keys::*;
    use super::*;
    use serde_json::json;

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
