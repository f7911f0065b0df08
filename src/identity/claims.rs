//! The claim checks of a token whose signature verified (what
//! `jsonwebtoken` leaves undone or does only for claims it can read), the
//! mapping of its errors to [`VerifyError`], and the claims handed back.

use jsonwebtoken::errors::ErrorKind;
use serde_json::{Map, Value};

use super::verify::{Policy, VerifyError};

/// The claim rules `jsonwebtoken` does not enforce on every input, checked
/// in a fixed order after it: `exp` a number; `iss` a string, and accepted;
/// `aud` a string or an array of strings, naming an accepted audience; `nbf`
/// and `iat` numbers not ahead of the clock. `jsonwebtoken` checks `iss`,
/// `aud` and `nbf` only when it can read them (`nbf` as a u64: it skips an
/// `nbf` of `1e300`), so they are all checked here whatever it did.
pub(super) fn check_claims(
    claims: &Map<String, Value>,
    policy: &Policy,
    now: u64,
) -> Result<(), VerifyError> {
    let exp_ok = match claims.get("exp") {
        Some(Value::Number(_)) => true,
        None => !policy.require_exp,
        Some(_) => false,
    };
    if !exp_ok {
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

pub(super) fn map_error(kind: &ErrorKind) -> VerifyError {
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
    pub(super) claims: Map<String, Value>,
    pub(super) kid: Option<String>,
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

    /// Every claim of the token (the feeds read `events`, `sid`, `jti`...).
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The `kid` of the key that verified the token.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
}
