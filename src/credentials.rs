//! Credentials: where a request's token comes from, the identity and keyed
//! fingerprint that stand for it everywhere else, and the attributes
//! (subject, org, provider, issue and expiry times, `jti`, `iss`) peeked from
//! a JWT or from trusted identity headers.
//!
//! Sources ([`extract`]): the union of what common servers accept, so that
//! no upstream reads a token revgate did not judge — `Authorization` under
//! any scheme (strictly `Bearer 1*(SP/HTAB) token` when it says bearer), the
//! `access_token` parameter of the query (configurable) and of a
//! form-encoded body, under every spelling PHP, ASP.NET, Rack and Python
//! accept, and configured API-key headers under every CGI spelling. More
//! than one RFC 6750 method, the same one twice, or a spelling parsers read
//! differently is malformed (§3.1) and answered 400 `invalid_request` by the
//! verdict stage. `docs/security.md` has the whole grammar.
//!
//! Identity ([`token_identity`]): a JWS compact token is named by its
//! signing input, so every spelling of its signature and every other valid
//! signature over the same content is the same token; anything else by its
//! bytes. The raw token never leaves this module except as a
//! [`Fingerprint`]: a BLAKE3 keyed hash (128 bits kept) under a secret shared
//! by all instances. BLAKE3 was chosen over HMAC-SHA256 because the
//! fingerprint is on every request's path: it costs well under 100 ns for a
//! typical token.
//!
//! The JWT peek is deliberately unverified: a forged claim can only make its
//! bearer *rejected* (a scope rule matches it), never accepted. It never
//! identifies a revoker (see `docs/security.md`).

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
pub struct FingerprintKey {
    key: [u8; 32],
    /// The keyed hash of a JWS's signing input: SipHash-2-4 with 128-bit
    /// output under a key derived from `key` (see
    /// [`FingerprintKey::token_fingerprint`]).
    jws: siphasher::sip128::SipHasher24,
}

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
    fn new(key: [u8; 32]) -> Self {
        let derived = blake3::derive_key("revgate 2026-12 JWS signing-input fingerprint", &key);
        let mut jws_key = [0u8; 16];
        jws_key.copy_from_slice(&derived[..16]);
        FingerprintKey {
            key,
            jws: siphasher::sip128::SipHasher24::new_with_key(&jws_key),
        }
    }

    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        FingerprintKey::new(bytes)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| KeyError::BadHex)?;
        Ok(FingerprintKey::new(out))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut out = [0u8; 32];
        getrandom::fill(&mut out).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(FingerprintKey::new(out))
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
                    f.write_all(hex::encode(key.key).as_bytes()).map_err(io)?;
                    f.sync_all().map_err(io)?;
                }
                std::fs::rename(&tmp, path).map_err(io)?;
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The keyed hash of some bytes. A token's fingerprint is
    /// [`FingerprintKey::token_fingerprint`]: this is its opaque case, and the
    /// building block of other names (JWS signing inputs, `jti`s).
    #[inline]
    pub fn fingerprint(&self, bytes: &[u8]) -> Fingerprint {
        let hash = blake3::keyed_hash(&self.key, bytes);
        let mut out = [0u8; 16];
        out.copy_from_slice(&hash.as_bytes()[..16]);
        Fingerprint(out)
    }

    /// The fingerprint that names a token ([`token_identity`]): its bytes
    /// when opaque, its signing input when a JWS. No allocation.
    ///
    /// The two kinds are hashed by different keyed functions under different
    /// keys, so they never collide but by chance (2^-128). An opaque token's
    /// fingerprint is BLAKE3 (keyed), as it has always been: those names are
    /// in journals and Redis, and a new function would unrevoke them. A
    /// signing input is hundreds of bytes on every JWT request, and BLAKE3
    /// compresses 64 bytes at a time serially at that length (3 compressions
    /// for a usual RS256 signing input, ~2/3 of the verdict's time), so it is
    /// SipHash-2-4 with 128-bit output, the keyed PRF made for short inputs
    /// (about half BLAKE3's time at 180 bytes here; BENCHMARKS.md), under a
    /// 128-bit key derived from the fingerprint key.
    #[inline]
    pub fn token_fingerprint(&self, token: &str) -> Fingerprint {
        match token_identity(token) {
            TokenIdentity::Opaque(t) => self.fingerprint(t.as_bytes()),
            TokenIdentity::Jws(signing_input) => {
                Fingerprint(self.jws.hash(signing_input.as_bytes()).as_bytes())
            }
        }
    }

    /// The fingerprint of a `jti` revocation: the `jti` under one issuer, or
    /// under any (`iss = None`). A JWT is covered by either.
    pub fn jti_fingerprint(&self, iss: Option<&str>, jti: &str) -> Fingerprint {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(b"\0jti\0");
        match iss {
            Some(iss) => {
                h.update(&(iss.len() as u64).to_le_bytes());
                h.update(iss.as_bytes());
            }
            None => {
                h.update(&u64::MAX.to_le_bytes());
            }
        }
        h.update(jti.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        Fingerprint(out)
    }
}

/// Where a credential was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// `Authorization: Bearer ...`
    Bearer,
    /// `Authorization: <other scheme> <token>` or a bare `Authorization: <token>`:
    /// judged too, since an upstream may take the same token under another
    /// scheme (`Token`, `JWT`, none at all).
    Authorization,
    /// `?access_token=...`
    Query,
    /// `access_token` in an `application/x-www-form-urlencoded` body (RFC 6750 §2.2).
    Form,
    /// A configured API-key header.
    ApiKey(http::HeaderName),
}

/// A request's token, borrowed from the request where possible.
#[derive(Debug)]
pub struct Credential<'a> {
    token: Cow<'a, str>,
    /// Where it was found.
    pub source: CredentialSource,
    /// A token under a non-Bearer `Authorization` scheme that came with a
    /// credential from another source: judged as well, never used for
    /// attributes.
    extra: Option<&'a str>,
}

impl<'a> Credential<'a> {
    /// The raw token. Never log it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A second token judged alongside (see [`Credential`]). Never log it.
    pub fn extra(&self) -> Option<&str> {
        self.extra
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
    /// A token that common parsers would read differently (a `;` inside an
    /// `access_token` value, a `,` inside a header token).
    #[error("ambiguous access token")]
    Ambiguous,
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
    // A fold, not `all`: no early exit, so the loop vectorises (a JWT is
    // hundreds of bytes and this is on every request's path).
    !t.is_empty() && t.iter().fold(true, |ok, &b| ok & visible(b))
}

#[inline(always)]
fn visible(b: u8) -> bool {
    b.wrapping_sub(0x21) < 0x5e
}

/// A token carried in a header: [`valid_token`], and no `,` (a server that
/// splits a joined field list would read a different token).
fn header_token(t: &[u8]) -> Result<&str, CredentialError> {
    // Both checks in one pass of branch-free compares the compiler
    // vectorises (a JWT is hundreds of bytes and this is on every request's
    // path). Signed compares, which SSE2 has: a byte is visible ASCII when,
    // read as `i8`, it is above 0x20 (so not a control, a space, or >= 0x80)
    // and is not DEL.
    let (bad, comma) = t.iter().fold((false, false), |(bad, comma), &b| {
        (bad | ((b as i8) <= 0x20) | (b == 0x7f), comma | (b == b','))
    });
    if t.is_empty() || bad {
        return Err(CredentialError::Malformed);
    }
    if comma {
        return Err(CredentialError::Ambiguous);
    }
    // Visible ASCII by now, so this cannot fail; the SIMD check costs a
    // fraction of `std::str::from_utf8` over a long token.
    simdutf8::basic::from_utf8(t).map_err(|_| CredentialError::Malformed)
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

    /// Every field as (name, value), in the order received.
    fn fields<'a>(&'a self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a, Self>;

    /// The single value of `name`; `None` when absent.
    fn first<'a>(&'a self, name: &str) -> Option<&'a [u8]> {
        self.values(name).next()
    }

    /// The values of `Authorization`, read on every request: a method of its
    /// own so that a `HeaderMap` finds it by its standard name without
    /// parsing one.
    fn authorization<'a>(&'a self) -> impl Iterator<Item = &'a [u8]> + use<'a, Self> {
        self.values("authorization")
    }
}

impl Headers for HeaderMap {
    fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.get_all(name).iter().map(|v| v.as_bytes())
    }

    fn authorization<'a>(&'a self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        self.get_all(http::header::AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes())
    }

    fn fields<'a>(&'a self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a> {
        self.iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    }
}

impl<'h> Headers for [httparse::Header<'h>] {
    fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n, 'h> {
        self.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    fn fields<'a>(&'a self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a, 'h> {
        self.iter().map(|h| (h.name.as_bytes(), h.value))
    }
}

/// Whether two field names are the same to a CGI/WSGI/Rack upstream, which
/// reads `X-Api-Key`, `x_api_key` and `X_API-KEY` all as `HTTP_X_API_KEY`.
pub fn cgi_name_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(&x, &y)| {
            let fold = |c: u8| {
                if c == b'_' {
                    b'-'
                } else {
                    c.to_ascii_lowercase()
                }
            };
            fold(x) == fold(y)
        })
}

/// Finds the request's credential, if any.
///
/// The grammar is the union of what common servers accept (see
/// `docs/security.md`), so that no upstream can read a token revgate did not
/// judge: an `Authorization` value under any scheme, `access_token` in the
/// query and in a form body (`form`: the body of a request whose content type
/// is `application/x-www-form-urlencoded`, when the caller read it), and the
/// configured API-key headers under every spelling a CGI-style server merges.
///
/// `Ok(None)`: no credential (the request passes untouched; an
/// `Authorization` with auth-params, such as Digest, is not ours to judge).
pub fn extract<'a, H: Headers + ?Sized>(
    headers: &'a H,
    query: Option<&'a str>,
    form: Option<&'a [u8]>,
    sources: &CredentialSources,
) -> Result<Option<Credential<'a>>, CredentialError> {
    let mut found: Option<Credential<'a>> = None;
    let mut other_scheme: Option<&'a str> = None;

    let mut auth = headers.authorization();
    if let Some(bytes) = auth.next() {
        if auth.next().is_some() {
            return Err(CredentialError::DuplicateAuthorization);
        }
        match authorization_token(bytes)? {
            Some((token, true)) => {
                found = Some(Credential {
                    token: Cow::Borrowed(token),
                    source: CredentialSource::Bearer,
                    extra: None,
                })
            }
            Some((token, false)) => other_scheme = Some(token),
            None => {}
        }
    }
    let mut add = |token: Cow<'a, str>, source: CredentialSource| {
        if found.is_some() {
            return Err(CredentialError::MultipleMethods);
        }
        found = Some(Credential {
            token,
            source,
            extra: None,
        });
        Ok(())
    };
    if sources.query_param {
        if let Some(token) = query
            .map(|q| param_access_token(q.as_bytes()))
            .transpose()?
            .flatten()
        {
            add(token, CredentialSource::Query)?;
        }
    }
    if let Some(token) = form.map(param_access_token).transpose()?.flatten() {
        add(token, CredentialSource::Form)?;
    }
    for name in &sources.api_key_headers {
        let mut values = headers
            .fields()
            .filter(|(n, _)| cgi_name_eq(n, name.as_str().as_bytes()))
            .map(|(_, v)| v);
        let Some(value) = values.next() else {
            continue;
        };
        if values.next().is_some() {
            return Err(CredentialError::Duplicate);
        }
        let token = header_token(trim_spaces(value))?;
        add(Cow::Borrowed(token), CredentialSource::ApiKey(name.clone()))?;
    }
    Ok(match (found, other_scheme) {
        (Some(mut c), extra) => {
            c.extra = extra;
            Some(c)
        }
        (None, Some(token)) => Some(Credential {
            token: Cow::Borrowed(token),
            source: CredentialSource::Authorization,
            extra: None,
        }),
        (None, None) => None,
    })
}

/// Whether a `Content-Type` value is `application/x-www-form-urlencoded`
/// (any case, any parameters).
pub fn is_form_content_type(value: &[u8]) -> bool {
    let media = value.split(|&b| b == b';').next().unwrap_or_default();
    trim_spaces(media).eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
}

/// Whether any `Content-Type` of the request says form-encoded: with two
/// of them, an upstream may believe either.
pub fn is_form<H: Headers + ?Sized>(headers: &H) -> bool {
    headers.values("content-type").any(is_form_content_type)
}

/// The token of an `Authorization` value, and whether its scheme is Bearer.
///
/// - A value starting with `bearer` (any case) must be exactly `Bearer`,
///   one or more spaces or tabs, and one token: anything else (`Bearer<NBSP>t`,
///   `BearerX t`, `Bearer a b`) is malformed, since servers that split on any
///   whitespace, or cut a fixed-length prefix, would read a token from it.
/// - Any byte outside visible ASCII, space and tab is malformed.
/// - Another scheme followed by one token (`Token t`, `JWT t`, `Basic b64`),
///   or a bare token, yields that token: judged like a bearer token.
/// - A scheme with auth-params (`Digest username="u", ...`) is not ours.
fn authorization_token(value: &[u8]) -> Result<Option<(&str, bool)>, CredentialError> {
    let v = trim_spaces(value);
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() >= 6 && v[..6].eq_ignore_ascii_case(b"bearer") {
        let rest = &v[6..];
        if !matches!(rest.first(), Some(b' ' | b'\t')) {
            return Err(CredentialError::Malformed);
        }
        // Only spaces and tabs lie between the scheme and the token, and
        // the token's own check refuses every other byte: one pass.
        return Ok(Some((header_token(trim_spaces(rest))?, true)));
    }
    if !v.iter().fold(true, |ok, &b| {
        ok & (b == b'\t' || (0x20..=0x7e).contains(&b))
    }) {
        return Err(CredentialError::Malformed);
    }
    let Some(gap) = v.iter().position(|&b| b == b' ' || b == b'\t') else {
        return Ok(Some((header_token(v)?, false)));
    };
    let rest = trim_spaces(&v[gap..]);
    // Auth-params (`name=value` pairs, quoted strings) rather than one
    // token68, whose only `=` are trailing padding. A `,` without them is a
    // token that a list-splitting server would read differently: refused.
    let unpadded = rest
        .iter()
        .rposition(|&b| b != b'=')
        .map_or(&[][..], |i| &rest[..=i]);
    if unpadded.contains(&b'=') || rest.iter().any(|&b| matches!(b, b' ' | b'\t' | b'"')) {
        return Ok(None);
    }
    Ok(Some((header_token(rest)?, false)))
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

/// `access_token` in a query string or a form body, read as the union of
/// what common parsers accept:
///
/// - pairs are separated by `&` and by `;` (older Python, Go before 1.17,
///   many Java containers); an `access_token` value that contains `;` when
///   split at `&` alone is [`CredentialError::Ambiguous`];
/// - a name is percent-decoded, `+` is a space, leading spaces are dropped
///   (PHP), the letters compare case-insensitively (ASP.NET), the `_` may be
///   spelled ` `, `.` or `[` (PHP turns those into `_`), and a `[...]` suffix
///   (`access_token[]`, Rack and PHP arrays) still names it;
/// - the value is percent-decoded with `+` as a space and must be a visible
///   ASCII token; the name given twice is [`CredentialError::Duplicate`].
pub fn param_access_token(input: &[u8]) -> Result<Option<Cow<'_, str>>, CredentialError> {
    let mut found = None;
    for pair in input.split(|&b| b == b'&') {
        if !pair.contains(&b';') {
            take_access_token(pair, &mut found)?;
            continue;
        }
        if let Some(eq) = pair.iter().position(|&b| b == b'=') {
            if names_access_token(&pair[..eq]) && pair[eq..].contains(&b';') {
                return Err(CredentialError::Ambiguous);
            }
        }
        for sub in pair.split(|&b| b == b';') {
            take_access_token(sub, &mut found)?;
        }
    }
    Ok(found)
}

fn take_access_token<'a>(
    pair: &'a [u8],
    found: &mut Option<Cow<'a, str>>,
) -> Result<(), CredentialError> {
    let (name, raw) = match pair.iter().position(|&b| b == b'=') {
        Some(eq) => (&pair[..eq], &pair[eq + 1..]),
        None => (pair, &[][..]),
    };
    if !names_access_token(name) {
        return Ok(());
    }
    if found.is_some() {
        return Err(CredentialError::Duplicate);
    }
    let decoded: Cow<'a, [u8]> = if raw.iter().any(|&b| b == b'%' || b == b'+') {
        Cow::Owned(FormDecode::new(raw).collect())
    } else {
        Cow::Borrowed(raw)
    };
    if !valid_token(&decoded) {
        return Err(CredentialError::Malformed);
    }
    *found = Some(match decoded {
        Cow::Borrowed(b) => {
            Cow::Borrowed(std::str::from_utf8(b).map_err(|_| CredentialError::Malformed)?)
        }
        Cow::Owned(v) => Cow::Owned(String::from_utf8(v).map_err(|_| CredentialError::Malformed)?),
    });
    Ok(())
}

/// Whether a raw (still encoded) parameter name names `access_token` to
/// some common parser (see [`param_access_token`]).
fn names_access_token(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"access_token";
    // Cheap reject: a name that cannot decode to 12 characters or more.
    if raw.len() < NAME.len() {
        return false;
    }
    let mut chars = FormDecode::new(raw).skip_while(|&b| b == b' ');
    for (i, &want) in NAME.iter().enumerate() {
        let Some(got) = chars.next() else {
            return false;
        };
        let ok = if i == 6 {
            matches!(got, b'_' | b' ' | b'.' | b'[')
        } else {
            got.to_ascii_lowercase() == want
        };
        if !ok {
            return false;
        }
    }
    matches!(chars.next(), None | Some(b'['))
}

/// `application/x-www-form-urlencoded` decoding of one name or value: `+` is
/// a space, `%XX` a byte, and a `%` not followed by two hex digits itself.
struct FormDecode<'a> {
    rest: &'a [u8],
}

impl<'a> FormDecode<'a> {
    fn new(rest: &'a [u8]) -> Self {
        FormDecode { rest }
    }
}

impl Iterator for FormDecode<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        match b {
            b'+' => Some(b' '),
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
                match (
                    rest.first().and_then(|&c| hex(c)),
                    rest.get(1).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => {
                        self.rest = &rest[2..];
                        Some(h << 4 | l)
                    }
                    _ => Some(b'%'),
                }
            }
            _ => Some(b),
        }
    }
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

/// How attributes are read: claim names and identity headers.
#[derive(Clone, Debug, Default)]
pub struct AttributeSources {
    /// JWT claim names.
    pub claims: ClaimNames,
    /// Trusted identity headers.
    pub identity_headers: IdentityHeaders,
}

/// Base64url as verifiers read it: padding optional, unused trailing bits
/// ignored (the same bytes however they were spelled).
const LENIENT_B64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// What names a token (ARCHITECTURE.md, "Token identity").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenIdentity<'a> {
    /// A JWS compact serialization, named by its signing input (`header.payload`
    /// as sent): every spelling of its signature (padding, unused low bits)
    /// and every other valid signature over the same content (ECDSA's
    /// `(r, n - s)`) is the same token.
    Jws(&'a str),
    /// Anything else, named by its bytes.
    Opaque(&'a str),
}

/// How a token is named. A token is a JWS when it has exactly three
/// `.`-separated segments, a non-empty payload, and a header that decodes
/// (leniently) to something braced like a JSON object; the check is meant to
/// be inclusive, since a JWS taken for opaque would let a re-encoded
/// signature pass.
pub fn token_identity(token: &str) -> TokenIdentity<'_> {
    match jws_parts(token) {
        Some((header, payload)) => TokenIdentity::Jws(&token[..header.len() + 1 + payload.len()]),
        None => TokenIdentity::Opaque(token),
    }
}

/// `(header, payload)` of a JWS compact token (see [`token_identity`]).
fn jws_parts(token: &str) -> Option<(&str, &str)> {
    // `memchr` scans a whole vector register at a time: a JWT's signature
    // alone is hundreds of bytes, and every request's token is scanned.
    let bytes = token.as_bytes();
    let mut dots = memchr::memchr_iter(b'.', bytes);
    let (first, second) = (dots.next()?, dots.next()?);
    if dots.next().is_some() || first == 0 || second == first + 1 {
        return None;
    }
    let (header, payload) = (token.get(..first)?, token.get(first + 1..second)?);
    header_is_object(header).then_some((header, payload))
}

/// Whether a JWS header segment decodes (leniently) to something braced
/// like a JSON object.
fn header_is_object(header: &str) -> bool {
    // Decoded in place on the stack for any usual header; a longer one
    // (unusual, but an issuer's choice) on the heap.
    let mut stack = [0u8; 384];
    let heap;
    let decoded: &[u8] = if header.len() <= 512 {
        let Ok(n) = LENIENT_B64URL.decode_slice(header.as_bytes(), &mut stack) else {
            return false;
        };
        &stack[..n]
    } else {
        let Ok(bytes) = LENIENT_B64URL.decode(header.as_bytes()) else {
            return false;
        };
        heap = bytes;
        &heap
    };
    // A JSON object's braces, without parsing it: cheaper, and more
    // inclusive (the error to avoid is a JWS taken for opaque).
    let json = decoded.trim_ascii();
    json.first() == Some(&b'{') && json.last() == Some(&b'}')
}

/// Peeks the claims of a JWT without verifying it; `None` when the token is not
/// a JWS (see [`token_identity`]) whose payload is a JSON object. There is no
/// size limit beyond what carried the token (the header limit, a body
/// limit): a large payload must not hide a subject from a scope rule.
pub fn peek_jwt(token: &str, names: &ClaimNames) -> Option<Attributes> {
    let (_, payload) = jws_parts(token)?;
    let bytes = LENIENT_B64URL.decode(payload.as_bytes()).ok()?;
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
        jti: text("jti"),
        iss: text("iss"),
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
            let c = extract(&h, None, None, &api(&[])).unwrap().unwrap();
            assert_eq!(c.token(), "abc");
            assert_eq!(c.source, CredentialSource::Bearer);
        }
    }

    #[test]
    fn other_schemes_are_judged_and_auth_params_are_not_ours() {
        // A single token under any scheme, or none, is judged.
        for (v, want) in [
            ("Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
            ("Token abc", "abc"),
            ("JWT\tabc", "abc"),
            ("abc", "abc"),
        ] {
            let h = headers(&[("authorization", v.as_bytes())]);
            let c = extract(&h, None, None, &api(&[])).unwrap().unwrap();
            assert_eq!(
                (c.token(), &c.source),
                (want, &CredentialSource::Authorization),
                "{v}"
            );
        }
        // Auth-params (Digest, SigV4) are not a token.
        for v in [
            r#"Digest username="u", realm="r", response="x""#,
            "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=f",
        ] {
            let h = headers(&[("authorization", v.as_bytes())]);
            assert!(extract(&h, None, None, &api(&[])).unwrap().is_none(), "{v}");
        }
        // Another scheme beside a bearer query token: both are judged.
        let h = headers(&[("authorization", b"Basic Y2xpZW50")]);
        let c = extract(&h, Some("access_token=q"), None, &api(&[]))
            .unwrap()
            .unwrap();
        assert_eq!((c.token(), c.extra()), ("q", Some("Y2xpZW50")));
    }

    #[test]
    fn bearer_with_any_other_separator_is_malformed() {
        for v in [
            &b"BearerX abc"[..],
            b"Bearer\xa0abc",
            b"Bearer,abc",
            b"Bearer a,b",
            b"Token a\xa0b",
        ] {
            let h = headers(&[("authorization", v)]);
            assert!(extract(&h, None, None, &api(&[])).is_err(), "{v:?}");
        }
        let h = headers(&[("authorization", b"Bearer\tabc")]);
        let c = extract(&h, None, None, &api(&[])).unwrap().unwrap();
        assert_eq!((c.token(), &c.source), ("abc", &CredentialSource::Bearer));
    }

    #[test]
    fn query_names_are_read_as_every_common_parser_reads_them() {
        for q in [
            "access_token=t",
            "acc%65ss_token=t",
            "%61ccess%5Ftoken=t",
            "ACCESS_TOKEN=t",
            "Access_Token=t",
            "access.token=t",
            "access+token=t",
            "access%20token=t",
            "access[token=t",
            "++access_token=t",
            "access_token[]=t",
            "access_token[0]=t",
            "x=1;access_token=t",
            "x=1&y=2;access_token=t;z=3",
        ] {
            let none = headers(&[]);
            let c = extract(&none, Some(q), None, &api(&[]))
                .unwrap()
                .unwrap_or_else(|| panic!("{q}"));
            assert_eq!(c.token(), "t", "{q}");
        }
        for q in [
            "access_tokens=t",
            "xaccess_token=t",
            "access-token=t",
            "accesstoken=t",
        ] {
            assert!(
                extract(&headers(&[]), Some(q), None, &api(&[]))
                    .unwrap()
                    .is_none(),
                "{q}"
            );
        }
        for (q, want) in [
            ("access_token=t;x=1", CredentialError::Ambiguous),
            ("access_token=a;access_token=b", CredentialError::Ambiguous),
            (
                "access_token=a&x;access_token=b",
                CredentialError::Duplicate,
            ),
            ("access_token=a&ACCESS.TOKEN=b", CredentialError::Duplicate),
            ("access_token", CredentialError::Malformed),
        ] {
            assert_eq!(
                extract(&headers(&[]), Some(q), None, &api(&[])).unwrap_err(),
                want,
                "{q}"
            );
        }
    }

    #[test]
    fn form_bodies_carry_tokens_like_queries() {
        let none = headers(&[]);
        let c = extract(&none, None, Some(b"a=1&access_token=f%2Bm"), &api(&[]))
            .unwrap()
            .unwrap();
        assert_eq!((c.token(), &c.source), ("f+m", &CredentialSource::Form));
        let h = headers(&[("authorization", b"Bearer b")]);
        assert_eq!(
            extract(&h, None, Some(b"access_token=f"), &api(&[])).unwrap_err(),
            CredentialError::MultipleMethods
        );
        assert!(is_form_content_type(
            b"Application/X-WWW-Form-URLEncoded ; charset=utf-8"
        ));
        assert!(!is_form_content_type(b"application/json"));
    }

    #[test]
    fn api_key_headers_match_every_cgi_spelling() {
        for name in ["x_api_key", "X_Api_Key", "X-API_KEY"] {
            let h = headers(&[(name, b"k")]);
            let c = extract(&h, None, None, &api(&["x-api-key"]))
                .unwrap()
                .unwrap();
            assert_eq!(c.token(), "k", "{name}");
        }
        let h = headers(&[("x-api-key", b"k1"), ("x_api_key", b"k2")]);
        assert_eq!(
            extract(&h, None, None, &api(&["x-api-key"])).unwrap_err(),
            CredentialError::Duplicate
        );
        let h = headers(&[("x-api-key", b"k1,k2")]);
        assert_eq!(
            extract(&h, None, None, &api(&["x-api-key"])).unwrap_err(),
            CredentialError::Ambiguous
        );
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
                extract(&h, *q, None, &api(&["x-api-key"])).unwrap_err(),
                *want,
                "{h:?} {q:?}"
            );
        }
    }

    #[test]
    fn query_and_api_key() {
        let h = headers(&[]);
        let c = extract(&h, Some("a=1&access_token=t%2Fk&b=2"), None, &api(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(c.token(), "t/k");
        assert_eq!(c.source, CredentialSource::Query);
        let off = CredentialSources {
            query_param: false,
            api_key_headers: vec![],
        };
        assert!(extract(&h, Some("access_token=t"), None, &off)
            .unwrap()
            .is_none());
        let h = headers(&[("x-api-key", b"key-1")]);
        let c = extract(&h, None, None, &api(&["x-api-key"]))
            .unwrap()
            .unwrap();
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
    fn a_jws_is_named_by_its_signing_input_and_the_rest_by_bytes() {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let h = e(r#"{"alg":"ES256"}"#);
        let p = e(r#"{"sub":"u"}"#);
        let jws = format!("{h}.{p}.c2lnbmF0dXJl");
        assert_eq!(
            token_identity(&jws),
            TokenIdentity::Jws(&jws[..h.len() + 1 + p.len()])
        );
        let key = FingerprintKey::from_bytes([1; 32]);
        for other_sig in ["c2lnbmF0dXJl==", "c2lnbmF0dXJm", "", "AAAA"] {
            let t = format!("{h}.{p}.{other_sig}");
            assert_eq!(
                key.token_fingerprint(&t),
                key.token_fingerprint(&jws),
                "{t}"
            );
        }
        // Padded header, header with spaces around the object, a long header.
        let padded = format!("{}=.{p}.x", e(r#"{"alg":"RS256"}  "#));
        assert!(matches!(token_identity(&padded), TokenIdentity::Jws(_)));
        let long = format!(
            "{}.{p}.x",
            e(&format!(r#"{{"alg":"RS256","x5c":"{}"}}"#, "a".repeat(900)))
        );
        assert!(matches!(token_identity(&long), TokenIdentity::Jws(_)));
        // Not a JWS: named by every byte.
        for t in [
            "opaque".to_string(),
            "a.b.c".to_string(),
            format!("{}.{p}.x", e("[1]")),
            format!("{h}..x"),
            format!(".{p}.x"),
            format!("{h}.{p}.x.y"),
            format!("{h}.{p}"),
        ] {
            assert_eq!(token_identity(&t), TokenIdentity::Opaque(&t), "{t}");
            assert_eq!(key.token_fingerprint(&t), key.fingerprint(t.as_bytes()));
        }
        // The two kinds never share a name: an opaque token equal to a
        // JWS's signing input is another token.
        let signing_input = format!("{h}.{p}");
        assert_ne!(
            key.token_fingerprint(&signing_input),
            key.token_fingerprint(&jws)
        );
        // jti names are apart from both, and per issuer.
        assert_ne!(
            key.jti_fingerprint(None, "j"),
            key.jti_fingerprint(Some(""), "j")
        );
        assert_ne!(
            key.jti_fingerprint(Some("a"), "bj"),
            key.jti_fingerprint(Some("ab"), "j")
        );
    }

    /// Fingerprints are stored (journals, Redis, snapshots): the same key
    /// and token must give the same name in every version, whatever a hash
    /// crate's update does. Values computed once and pinned.
    #[test]
    fn fingerprints_are_stable_across_versions() {
        let key = FingerprintKey::from_bytes([0x2a; 32]);
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jws = format!("{}.{}.sig", e(r#"{"alg":"RS256"}"#), e(r#"{"sub":"u"}"#));
        assert_eq!(
            key.token_fingerprint("opaque-token-1").to_hex(),
            OPAQUE_KAT,
            "opaque"
        );
        assert_eq!(key.token_fingerprint(&jws).to_hex(), JWS_KAT, "jws");
    }
    const OPAQUE_KAT: &str = "26840e4ef21d4a1d55c39eed780b738a";
    const JWS_KAT: &str = "d1b6c7ebd5d18949ba6b0c1f50e4dd3b";

    /// The header-token check against its plain definition, for every byte
    /// at every position of tokens from 1 to 80 bytes (the vectorised loop
    /// has a body and a tail; both are covered).
    #[test]
    fn header_token_agrees_with_its_definition() {
        let reference = |t: &[u8]| -> Result<(), CredentialError> {
            if t.is_empty() || !t.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
                Err(CredentialError::Malformed)
            } else if t.contains(&b',') {
                Err(CredentialError::Ambiguous)
            } else {
                Ok(())
            }
        };
        for len in 1..=80 {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut t = vec![b'a'; len];
                    t[pos] = b;
                    assert_eq!(
                        header_token(&t).map(|_| ()),
                        reference(&t),
                        "len {len} pos {pos} byte {b:#x}"
                    );
                }
            }
        }
        assert_eq!(header_token(b""), Err(CredentialError::Malformed));
    }

    /// `jws_parts` finds the dots with `memchr`; the rule it implements is
    /// "exactly three `.`-separated segments, header and payload non-empty"
    /// (the reference here: the `split` it replaced).
    #[test]
    fn jws_segments_agree_with_their_definition() {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let h = e(r#"{"alg":"RS256"}"#);
        let pieces = [h.as_str(), "", "eyJzdWIiOiJ1In0", "sig", "."];
        let reference = |t: &str| {
            let segs: Vec<&str> = t.split('.').collect();
            segs.len() == 3
                && !segs[0].is_empty()
                && !segs[1].is_empty()
                && header_is_object(segs[0])
        };
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    for d in pieces {
                        let t = format!("{a}.{b}{c}{d}");
                        assert_eq!(jws_parts(&t).is_some(), reference(&t), "{t}");
                        let t = format!("{a}{b}.{c}.{d}");
                        assert_eq!(jws_parts(&t).is_some(), reference(&t), "{t}");
                    }
                }
            }
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
