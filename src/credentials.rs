//! Credentials: where a request's token comes from, the keyed fingerprint that
//! stands for it everywhere else, and the attributes (subject, org, provider,
//! issue and expiry times) peeked from a JWT or from trusted identity headers.
//!
//! Sources, per RFC 6750: the `Authorization: Bearer` header (§2.1, scheme
//! matched case-insensitively), the `access_token` query parameter (§2.3,
//! configurable), and configured API-key headers. A request that carries more
//! than one of them, or two `Authorization` headers, is malformed (§3.1) and is
//! answered 400 `invalid_request` by the verdict stage.
//!
//! The raw token never leaves this module except as a [`Fingerprint`]: a
//! BLAKE3 keyed hash (128 bits kept) under a secret shared by all instances.
//! BLAKE3 was chosen over HMAC-SHA256 because the fingerprint is on every
//! request's path: it costs well under 100 ns for a typical token.
//!
//! The JWT peek is deliberately unverified: a forged claim can only make its
//! bearer *rejected* (a scope rule matches it), never accepted.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use http::HeaderMap;

/// The keyed hash of a raw token: the only form in which a token is stored,
/// logged (as a prefix) or sent to Redis.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 16]);

impl Fingerprint {
    /// Length of the fingerprint in bytes.
    pub const LEN: usize = 16;

    /// Wraps raw fingerprint bytes (as read back from a journal or Redis).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Fingerprint(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The two 64-bit halves; uniformly distributed because the hash is keyed,
    /// so the bloom filter uses them directly instead of hashing again.
    pub fn halves(&self) -> (u64, u64) {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&self.0[..8]);
        b.copy_from_slice(&self.0[8..]);
        (u64::from_le_bytes(a), u64::from_le_bytes(b))
    }

    /// Lower-case hex, 32 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters: what an access log may show.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Parses 32 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Fingerprint(out))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Fingerprint::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom("fingerprint must be 32 hex characters"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The secret under which tokens are fingerprinted; shared by all instances.
#[derive(Clone)]
pub struct FingerprintKey([u8; 32]);

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

/// Why a fingerprint key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The configured key is not 64 hex characters.
    #[error("must be 64 hex characters (32 bytes)")]
    BadHex,
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The OS random source failed.
    #[error("random source: {0}")]
    Random(String),
}

impl FingerprintKey {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        FingerprintKey(bytes)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| KeyError::BadHex)?;
        Ok(FingerprintKey(out))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut out = [0u8; 32];
        getrandom::fill(&mut out).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(FingerprintKey(out))
    }

    /// Reads the key kept at `path`, or generates one and keeps it there
    /// (mode 0600), so that an embedded store's restarts still match.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(s) => Self::from_hex(&s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let tmp = path.with_extension("tmp");
                {
                    use std::io::Write as _;
                    #[cfg(unix)]
                    use std::os::unix::fs::OpenOptionsExt as _;
                    let mut opts = std::fs::OpenOptions::new();
                    opts.write(true).create(true).truncate(true);
                    #[cfg(unix)]
                    opts.mode(0o600);
                    let mut f = opts.open(&tmp).map_err(io)?;
                    f.write_all(hex::encode(key.0).as_bytes()).map_err(io)?;
                    f.sync_all().map_err(io)?;
                }
                std::fs::rename(&tmp, path).map_err(io)?;
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The fingerprint of a raw token.
    #[inline]
    pub fn fingerprint(&self, token: &[u8]) -> Fingerprint {
        let hash = blake3::keyed_hash(&self.0, token);
        let mut out = [0u8; 16];
        out.copy_from_slice(&hash.as_bytes()[..16]);
        Fingerprint(out)
    }
}

/// Where a credential was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// `Authorization: Bearer ...`
    Bearer,
    /// `?access_token=...`
    Query,
    /// A configured API-key header.
    ApiKey(http::HeaderName),
}

/// A request's token, borrowed from the request where possible.
#[derive(Debug)]
pub struct Credential<'a> {
    token: Cow<'a, str>,
    /// Where it was found.
    pub source: CredentialSource,
}

impl<'a> Credential<'a> {
    /// The raw token. Never log it.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// Why a request's credentials are malformed; each becomes 400 with
/// `WWW-Authenticate: Bearer error="invalid_request"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Two `Authorization` headers.
    #[error("more than one Authorization header")]
    DuplicateAuthorization,
    /// Two credential sources at once (RFC 6750 §3.1: "more than one method").
    #[error("more than one method of passing the access token")]
    MultipleMethods,
    /// The same source twice (two `access_token` parameters, two API-key values).
    #[error("the access token is given more than once")]
    Duplicate,
    /// An empty token, bytes that are not visible ASCII, or a bad percent-encoding.
    #[error("malformed access token")]
    Malformed,
}

/// Which credential sources are read.
#[derive(Clone, Debug)]
pub struct CredentialSources {
    /// Read `access_token` from the query (RFC 6750 §2.3).
    pub query_param: bool,
    /// API-key headers whose whole value is a token.
    pub api_key_headers: Vec<http::HeaderName>,
}

impl Default for CredentialSources {
    fn default() -> Self {
        CredentialSources {
            query_param: true,
            api_key_headers: Vec::new(),
        }
    }
}

/// RFC 6750 b64token: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`,
/// loosened to any visible ASCII so that opaque vendor tokens pass; what is
/// refused is empty, space, control and non-ASCII bytes.
fn valid_token(t: &[u8]) -> bool {
    !t.is_empty() && t.iter().all(|&b| (0x21..=0x7e).contains(&b))
}

/// Read access to a request's header fields, by lower-case name: a
/// [`HeaderMap`] (requests through hyper) or the raw fields parsed by the
/// HTTP/1.1 fast path ([`crate::h1`]), which never builds a `HeaderMap`.
pub trait Headers {
    /// The values of the field `name` (lower case), in the order received.
    fn values<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n, Self>;

    /// The single value of `name`; `None` when absent.
    fn first<'a>(&'a self, name: &str) -> Option<&'a [u8]> {
        self.values(name).next()
    }
}

impl Headers for HeaderMap {
    fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.get_all(name).iter().map(|v| v.as_bytes())
    }
}

impl<'h> Headers for [httparse::Header<'h>] {
    fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n, 'h> {
        self.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// Finds the request's credential, if any.
///
/// `Ok(None)`: no credential (the request passes untouched; a non-Bearer
/// `Authorization` such as Basic is not ours to judge).
pub fn extract<'a, H: Headers + ?Sized>(
    headers: &'a H,
    query: Option<&'a str>,
    sources: &CredentialSources,
) -> Result<Option<Credential<'a>>, CredentialError> {
    let mut found: Option<Credential<'a>> = None;

    let mut auth = headers.values("authorization");
    if let Some(bytes) = auth.next() {
        if auth.next().is_some() {
            return Err(CredentialError::DuplicateAuthorization);
        }
        if bytes.len() >= 6 && bytes[..6].eq_ignore_ascii_case(b"bearer") {
            let rest = &bytes[6..];
            // "Bearer" alone, or "Bearer" glued to something else ("Bearerx").
            match rest.first() {
                Some(b' ') => {}
                None => return Err(CredentialError::Malformed),
                Some(_) => {
                    // Not the Bearer scheme at all (e.g. "BearerToken ..."): not ours.
                    return extract_rest(headers, query, sources, None);
                }
            }
            let token = trim_spaces(rest);
            if !valid_token(token) {
                return Err(CredentialError::Malformed);
            }
            let token = std::str::from_utf8(token).map_err(|_| CredentialError::Malformed)?;
            found = Some(Credential {
                token: Cow::Borrowed(token),
                source: CredentialSource::Bearer,
            });
        }
    }
    extract_rest(headers, query, sources, found)
}

fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

fn extract_rest<'a, H: Headers + ?Sized>(
    headers: &'a H,
    query: Option<&'a str>,
    sources: &CredentialSources,
    mut found: Option<Credential<'a>>,
) -> Result<Option<Credential<'a>>, CredentialError> {
    if sources.query_param {
        if let Some(q) = query {
            if let Some(token) = query_access_token(q)? {
                if found.is_some() {
                    return Err(CredentialError::MultipleMethods);
                }
                found = Some(Credential {
                    token,
                    source: CredentialSource::Query,
                });
            }
        }
    }
    for name in &sources.api_key_headers {
        let mut values = headers.values(name.as_str());
        let Some(value) = values.next() else {
            continue;
        };
        if values.next().is_some() {
            return Err(CredentialError::Duplicate);
        }
        if found.is_some() {
            return Err(CredentialError::MultipleMethods);
        }
        let bytes = trim_spaces(value);
        if !valid_token(bytes) {
            return Err(CredentialError::Malformed);
        }
        let token = std::str::from_utf8(bytes).map_err(|_| CredentialError::Malformed)?;
        found = Some(Credential {
            token: Cow::Borrowed(token),
            source: CredentialSource::ApiKey(name.clone()),
        });
    }
    Ok(found)
}

/// The `access_token` query parameter, percent-decoded; an error when it is
/// given twice, is empty, or does not decode to a visible-ASCII token.
fn query_access_token(q: &str) -> Result<Option<Cow<'_, str>>, CredentialError> {
    const NAME: &str = "access_token=";
    let mut found = None;
    for pair in q.split('&') {
        let Some(raw) = pair.strip_prefix(NAME) else {
            continue;
        };
        if found.is_some() {
            return Err(CredentialError::Duplicate);
        }
        let decoded: Cow<'_, [u8]> = if raw.bytes().any(|b| b == b'%' || b == b'+') {
            let plus: Cow<'_, str> = if raw.contains('+') {
                Cow::Owned(raw.replace('+', " "))
            } else {
                Cow::Borrowed(raw)
            };
            let bytes: Vec<u8> = percent_encoding::percent_decode_str(&plus).collect();
            Cow::Owned(bytes)
        } else {
            Cow::Borrowed(raw.as_bytes())
        };
        if !valid_token(&decoded) {
            return Err(CredentialError::Malformed);
        }
        let token = match decoded {
            Cow::Borrowed(b) => {
                Cow::Borrowed(std::str::from_utf8(b).map_err(|_| CredentialError::Malformed)?)
            }
            Cow::Owned(v) => {
                Cow::Owned(String::from_utf8(v).map_err(|_| CredentialError::Malformed)?)
            }
        };
        found = Some(token);
    }
    Ok(found)
}

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
}

impl Attributes {
    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        self.sub.is_none()
            && self.org.is_none()
            && self.provider.is_none()
            && self.iat.is_none()
            && self.exp.is_none()
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

/// How attributes are read: claim names and identity headers.
#[derive(Clone, Debug, Default)]
pub struct AttributeSources {
    /// JWT claim names.
    pub claims: ClaimNames,
    /// Trusted identity headers.
    pub identity_headers: IdentityHeaders,
}

/// Peeks the claims of a JWT without verifying it; `None` when the token is not
/// a JWT (three base64url segments whose middle one is a JSON object).
pub fn peek_jwt(token: &str, names: &ClaimNames) -> Option<Attributes> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.is_empty() || payload.len() > 16 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let serde_json::Value::Object(claims) = serde_json::from_slice(&bytes).ok()? else {
        return None;
    };
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
    Some(Attributes {
        sub: text(&names.sub),
        org: text(&names.org),
        provider: text(&names.provider),
        iat: time(&names.iat),
        exp: time(&names.exp),
    })
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
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    fn api(names: &[&str]) -> CredentialSources {
        CredentialSources {
            query_param: true,
            api_key_headers: names
                .iter()
                .map(|n| http::HeaderName::from_bytes(n.as_bytes()).unwrap())
                .collect(),
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER   abc  "] {
            let h = headers(&[("authorization", v.as_bytes())]);
            let c = extract(&h, None, &api(&[])).unwrap().unwrap();
            assert_eq!(c.token(), "abc");
            assert_eq!(c.source, CredentialSource::Bearer);
        }
    }

    #[test]
    fn other_schemes_are_not_ours() {
        let h = headers(&[("authorization", b"Basic dXNlcjpwYXNz")]);
        assert!(extract(&h, None, &api(&[])).unwrap().is_none());
        let h = headers(&[("authorization", b"BearerX abc")]);
        assert!(extract(&h, None, &api(&[])).unwrap().is_none());
    }

    #[test]
    fn malformed_and_duplicate() {
        type Case<'a> = (&'a [(&'a str, &'a [u8])], Option<&'a str>, CredentialError);
        let cases: &[Case] = &[
            (
                &[
                    ("authorization", b"Bearer a"),
                    ("authorization", b"Bearer b"),
                ],
                None,
                CredentialError::DuplicateAuthorization,
            ),
            (
                &[("authorization", b"Bearer a")],
                Some("access_token=b"),
                CredentialError::MultipleMethods,
            ),
            (
                &[("authorization", b"Bearer")],
                None,
                CredentialError::Malformed,
            ),
            (
                &[("authorization", b"Bearer    ")],
                None,
                CredentialError::Malformed,
            ),
            (
                &[("authorization", b"Bearer a b")],
                None,
                CredentialError::Malformed,
            ),
            (
                &[("authorization", b"Bearer \xff\xfe")],
                None,
                CredentialError::Malformed,
            ),
            (
                &[],
                Some("access_token=a&access_token=b"),
                CredentialError::Duplicate,
            ),
            (&[], Some("access_token="), CredentialError::Malformed),
            (&[], Some("access_token=%ff"), CredentialError::Malformed),
            (
                &[("x-api-key", b"k1"), ("x-api-key", b"k2")],
                None,
                CredentialError::Duplicate,
            ),
            (
                &[("x-api-key", b"k1")],
                Some("access_token=b"),
                CredentialError::MultipleMethods,
            ),
            (
                &[("x-api-key", b"k1"), ("authorization", b"Bearer t")],
                None,
                CredentialError::MultipleMethods,
            ),
        ];
        for (h, q, want) in cases {
            let h = headers(h);
            assert_eq!(
                extract(&h, *q, &api(&["x-api-key"])).unwrap_err(),
                *want,
                "{h:?} {q:?}"
            );
        }
    }

    #[test]
    fn query_and_api_key() {
        let h = headers(&[]);
        let c = extract(&h, Some("a=1&access_token=t%2Fk&b=2"), &api(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(c.token(), "t/k");
        assert_eq!(c.source, CredentialSource::Query);
        let off = CredentialSources {
            query_param: false,
            api_key_headers: vec![],
        };
        assert!(extract(&h, Some("access_token=t"), &off).unwrap().is_none());
        let h = headers(&[("x-api-key", b"key-1")]);
        let c = extract(&h, None, &api(&["x-api-key"])).unwrap().unwrap();
        assert_eq!(c.token(), "key-1");
    }

    #[test]
    fn fingerprint_is_keyed_and_stable() {
        let k1 = FingerprintKey::from_bytes([1; 32]);
        let k2 = FingerprintKey::from_bytes([2; 32]);
        assert_eq!(k1.fingerprint(b"t"), k1.fingerprint(b"t"));
        assert_ne!(k1.fingerprint(b"t"), k2.fingerprint(b"t"));
        assert_ne!(k1.fingerprint(b"t"), k1.fingerprint(b"u"));
        let fp = k1.fingerprint(b"t");
        assert_eq!(Fingerprint::from_hex(&fp.to_hex()), Some(fp));
    }

    #[test]
    fn key_is_kept_beside_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let a = FingerprintKey::load_or_create(&p).unwrap();
        let b = FingerprintKey::load_or_create(&p).unwrap();
        assert_eq!(a.fingerprint(b"x"), b.fingerprint(b"x"));
    }

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
