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
//!   `verify`, or symmetric (`kty: oct`), or of an unsupported type, or
//!   whose material ring would refuse (an RSA modulus outside 2048–8192
//!   bits, coordinates of the wrong size: the rules are in `keys.rs`), is
//!   never loaded (it is skipped with its reason, the rest of the set is
//!   kept). Leading zero bytes of an RSA modulus or exponent are dropped.
//! - **Claims**: the payload is a JSON object; `exp` (a number of seconds
//!   from 0 to 2^64, else [`VerifyError::Claim`]) is required (unless the
//!   policy says otherwise: SETs carry none) and must not
//!   be past `now - leeway`; `nbf`, when present, a number not after `now +
//!   leeway` (however large: `1e300` is not yet valid); `iat`, when present,
//!   a number not after `now + leeway`; `iss` a string equal to one of the
//!   policy's issuers; `aud` (a string or an array of strings) containing
//!   one of its audiences. A token breaking several rules always gets the
//!   same reason.
//!
//! Errors are small constant reasons: they never carry token bytes, so they
//! can be logged as they are.
//!
//! The work is split by job: this file has the rules above, the policy, the
//! reasons and the header check; `keys.rs` the key set (which JWKS keys are
//! loaded, which key may verify which token); `claims.rs` the claim checks
//! and the verified claims. Their public items are re-exported here.

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::Value;

pub use super::claims::VerifiedClaims;
pub use super::keys::{KeySet, KeySetError, SkippedKey};

/// What a verified token must say about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Accepted `iss` values (at least one).
    pub issuers: Vec<String>,
    /// Accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    /// Clock tolerance for `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Whether `exp` must be present (callers' JWTs, logout tokens); a
    /// Security Event Token usually has none (RFC 8417 §2.2), so the feeds
    /// that take SETs turn it off. When present it is checked either way.
    pub require_exp: bool,
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
    /// No loaded key has the token's `kid`, and the key set was fetched
    /// under `min_refresh_interval` ago, so it was not fetched again: the
    /// key may be one the provider has just rotated in. Worth a retry.
    #[error("unknown key, not fetched yet (key set refetched at most every min_refresh_interval)")]
    KeyPending,
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

#[cfg(test)]
mod tests {
    use super::super::test_keys::*;
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

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
}
