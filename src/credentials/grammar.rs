//! The credential grammar: where a request's token is looked for, and
//! which spellings are refused as ambiguous (`docs/security.md` has the
//! whole grammar; [`extract`] its summary).
//!
//! Size: ~360 lines of code and ~290 of tests: the grammar's cases are its
//! specification, kept beside it.

use std::borrow::Cow;

use http::HeaderMap;

use super::params::param_access_token;

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
    /// The raw token, owned when it had to be decoded. Never log it.
    pub fn into_token(self) -> Cow<'a, str> {
        self.token
    }

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
pub(super) fn valid_token(t: &[u8]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::testutil::headers;

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
}
