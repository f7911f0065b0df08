//! A credential's attributes: the claims peeked (unverified) from a JWT and
//! the trusted identity headers that fill what the claims do not give.

use base64::Engine as _;

use super::grammar::Headers;
use super::identity::{jws_parts, LENIENT_B64URL};

/// What is known of a credential beyond its fingerprint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Subject (user id).
    pub sub: Option<String>,
    /// Organisation.
    pub org: Option<String>,
    /// OAuth provider.
    pub provider: Option<String>,
    /// Issued-at, unix seconds.
    pub iat: Option<u64>,
    /// Expiry, unix seconds.
    pub exp: Option<u64>,
    /// The JWT's `jti` (for revocation by `jti`).
    pub jti: Option<String>,
    /// The JWT's `iss`.
    pub iss: Option<String>,
}

impl Attributes {
    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        self.sub.is_none()
            && self.org.is_none()
            && self.provider.is_none()
            && self.iat.is_none()
            && self.exp.is_none()
            && self.jti.is_none()
            && self.iss.is_none()
    }
}

/// Names of the JWT claims (or identity headers) that carry each attribute.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimNames {
    /// Subject claim.
    pub sub: String,
    /// Organisation claim.
    pub org: String,
    /// Provider claim.
    pub provider: String,
    /// Issued-at claim.
    pub iat: String,
    /// Expiry claim.
    pub exp: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            sub: "sub".into(),
            org: "org_id".into(),
            provider: "provider".into(),
            iat: "iat".into(),
            exp: "exp".into(),
        }
    }
}

/// Trusted identity headers, set by an auth layer in front; none by default.
#[derive(Clone, Debug, Default)]
pub struct IdentityHeaders {
    /// Header carrying the subject.
    pub sub: Option<http::HeaderName>,
    /// Header carrying the organisation.
    pub org: Option<http::HeaderName>,
    /// Header carrying the provider.
    pub provider: Option<http::HeaderName>,
    /// Header carrying the issue time (unix seconds).
    pub iat: Option<http::HeaderName>,
}

impl IdentityHeaders {
    /// Whether any identity header is configured.
    pub fn any(&self) -> bool {
        self.sub.is_some() || self.org.is_some() || self.provider.is_some() || self.iat.is_some()
    }
}

/// How attributes are read: claim names and identity headers.
#[derive(Clone, Debug, Default)]
pub struct AttributeSources {
    /// JWT claim names.
    pub claims: ClaimNames,
    /// Trusted identity headers.
    pub identity_headers: IdentityHeaders,
}

/// Peeks the claims of a JWT without verifying it; `None` when the token is not
/// a JWS (see [`super::token_identity`]) whose payload is a JSON object. There is no
/// size limit beyond what carried the token (the header limit, a body
/// limit): a large payload must not hide a subject from a scope rule.
pub fn peek_jwt(token: &str, names: &ClaimNames) -> Option<Attributes> {
    Some(from_claims(&peek_claims(token)?, names))
}

/// The claims of a JWT, unverified (as [`peek_jwt`] reads them).
pub fn peek_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let (_, payload) = jws_parts(token)?;
    let bytes = LENIENT_B64URL.decode(payload.as_bytes()).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(claims) => Some(claims),
        _ => None,
    }
}

/// The attributes named by `names` in a JSON object of claims (a JWT's
/// payload, an RFC 7662 introspection response): strings or numbers for
/// the identifiers (empty strings count as absent), unix seconds as
/// numbers or numeric strings for the times.
pub fn from_claims(
    claims: &serde_json::Map<String, serde_json::Value>,
    names: &ClaimNames,
) -> Attributes {
    let text = |name: &str| match claims.get(name) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let time = |name: &str| match claims.get(name) {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Attributes {
        sub: text(&names.sub),
        org: text(&names.org),
        provider: text(&names.provider),
        iat: time(&names.iat),
        exp: time(&names.exp),
        jti: text("jti"),
        iss: text("iss"),
    }
}

/// A credential's attributes: JWT claims first, then trusted identity headers
/// for whatever the claims did not give.
pub fn attributes<H: Headers + ?Sized>(
    token: &str,
    headers: &H,
    sources: &AttributeSources,
) -> Attributes {
    let mut attrs = peek_jwt(token, &sources.claims).unwrap_or_default();
    identity_fill(&mut attrs, headers, &sources.identity_headers);
    attrs
}

/// Fills the attributes still unknown from trusted identity headers.
pub fn identity_fill<H: Headers + ?Sized>(
    attrs: &mut Attributes,
    headers: &H,
    ids: &IdentityHeaders,
) {
    let get = |name: &Option<http::HeaderName>| -> Option<String> {
        let v = headers.first(name.as_ref()?.as_str())?;
        // Visible ASCII and tabs only, as `HeaderValue::to_str` requires.
        if !v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
            return None;
        }
        let v = std::str::from_utf8(v).ok()?.trim();
        (!v.is_empty()).then(|| v.to_string())
    };
    if attrs.sub.is_none() {
        attrs.sub = get(&ids.sub);
    }
    if attrs.org.is_none() {
        attrs.org = get(&ids.org);
    }
    if attrs.provider.is_none() {
        attrs.provider = get(&ids.provider);
    }
    if attrs.iat.is_none() {
        attrs.iat = get(&ids.iat).and_then(|s| s.parse().ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::testutil::headers;

    fn jwt(claims: &str) -> String {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", e(r#"{"alg":"none"}"#), e(claims))
    }

    #[test]
    fn jwt_peek() {
        let t = jwt(r#"{"sub":"u1","org_id":42,"provider":"github","iat":100,"exp":200}"#);
        let a = peek_jwt(&t, &ClaimNames::default()).unwrap();
        assert_eq!(a.sub.as_deref(), Some("u1"));
        assert_eq!(a.org.as_deref(), Some("42"));
        assert_eq!(a.provider.as_deref(), Some("github"));
        assert_eq!((a.iat, a.exp), (Some(100), Some(200)));
        for bad in ["abc", "a.b", "a.!!!.c", &jwt("[1]"), "a.b.c.d"] {
            assert!(peek_jwt(bad, &ClaimNames::default()).is_none(), "{bad}");
        }
    }

    #[test]
    fn identity_headers_fill_the_gaps() {
        let h = headers(&[("x-user", b"u9"), ("x-provider", b"gh")]);
        let src = AttributeSources {
            claims: ClaimNames::default(),
            identity_headers: IdentityHeaders {
                sub: Some(http::HeaderName::from_static("x-user")),
                provider: Some(http::HeaderName::from_static("x-provider")),
                ..Default::default()
            },
        };
        let a = attributes("opaque", &h, &src);
        assert_eq!(a.sub.as_deref(), Some("u9"));
        assert_eq!(a.provider.as_deref(), Some("gh"));
        let a = attributes(&jwt(r#"{"sub":"jwt-user"}"#), &h, &src);
        assert_eq!(a.sub.as_deref(), Some("jwt-user"));
        assert_eq!(a.provider.as_deref(), Some("gh"));
    }
}
