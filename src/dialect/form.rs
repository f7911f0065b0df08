//! Query and form decoding shared by the dialects: `&`-separated pairs
//! split at the first `=`, `+` and `%XX` decoded in names and values (a
//! malformed `%` kept and flagged), the one-token-parameter rule
//! (duplicates refused), and the header helpers a parse needs.

use http::HeaderMap;

/// One occurrence of a query or form parameter, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FormValue {
    /// The decoded bytes (not necessarily UTF-8).
    pub(crate) bytes: Vec<u8>,
    /// A `%` not followed by two hex digits was kept literally.
    pub(crate) malformed_escape: bool,
}

/// Decodes one `application/x-www-form-urlencoded` component.
fn form_decode(raw: &[u8]) -> FormValue {
    /// A hex digit's value (std's `to_digit`, as `credentials::params` reads them).
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut bytes = Vec::with_capacity(raw.len());
    let mut malformed_escape = false;
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hi = raw.get(i + 1).copied().and_then(hex);
                let lo = raw.get(i + 2).copied().and_then(hex);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    bytes.push(hi << 4 | lo);
                    i += 2;
                } else {
                    malformed_escape = true;
                    bytes.push(b'%');
                }
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    FormValue {
        bytes,
        malformed_escape,
    }
}

/// Every value of parameter `name` in a query string or form body, in order.
/// Names are decoded before comparison (`%74oken` is `token`).
pub(crate) fn form_values(input: &[u8], name: &str) -> Vec<FormValue> {
    let mut out = Vec::new();
    for pair in input.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        let matches = if raw_name.iter().any(|&b| b == b'%' || b == b'+') {
            form_decode(raw_name).bytes == name.as_bytes()
        } else {
            raw_name == name.as_bytes()
        };
        if matches {
            out.push(form_decode(raw_value));
        }
    }
    out
}

/// Why a token parameter (a query or form parameter naming one token)
/// could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenParamError {
    /// Absent.
    Missing,
    /// Present but empty.
    Empty,
    /// Given more than once.
    Duplicate,
    /// A malformed `%` escape, or not UTF-8 once decoded.
    BadEncoding,
    /// Longer than the limit given, once decoded.
    TooLong,
}

/// The single, non-empty, well-encoded UTF-8 value of a token parameter,
/// at most `max` bytes once decoded. A value over the limit is `TooLong`
/// only when it is otherwise well-formed (given once, well-encoded), so that
/// the other errors keep their meaning.
pub(crate) fn single_token_param(
    input: &[u8],
    name: &str,
    max: usize,
) -> Result<String, TokenParamError> {
    let mut values = form_values(input, name);
    if values.len() > 1 {
        return Err(TokenParamError::Duplicate);
    }
    let value = values.pop().ok_or(TokenParamError::Missing)?;
    if value.malformed_escape {
        return Err(TokenParamError::BadEncoding);
    }
    if value.bytes.len() > max {
        return Err(TokenParamError::TooLong);
    }
    let token = String::from_utf8(value.bytes).map_err(|_| TokenParamError::BadEncoding)?;
    if token.is_empty() {
        return Err(TokenParamError::Empty);
    }
    Ok(token)
}

/// The one value of a header, if it is present exactly once and is visible
/// ASCII; `None` otherwise (absent, repeated, or opaque bytes).
pub(crate) fn single_header(headers: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// Whether the request's single `Content-Type` has this media type
/// (parameters such as `charset` are allowed; case-insensitive).
pub(crate) fn content_type_is(headers: &HeaderMap, essence: &str) -> bool {
    match single_header(headers, http::header::CONTENT_TYPE) {
        Some(value) => value
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case(essence)),
        None => false,
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::MAX_TOKEN_BYTES;

    fn values(input: &str, name: &str) -> Vec<(Vec<u8>, bool)> {
        form_values(input.as_bytes(), name)
            .into_iter()
            .map(|v| (v.bytes, v.malformed_escape))
            .collect()
    }

    #[test]
    fn form_values_decode_and_split() {
        #[allow(clippy::type_complexity)]
        #[rustfmt::skip]
        let cases: &[(&str, &str, &[(&[u8], bool)])] = &[
            ("", "token", &[]),
            ("token=abc", "token", &[(b"abc", false)]),
            ("token=a+b", "token", &[(b"a b", false)]),
            ("token=a%2Bb", "token", &[(b"a+b", false)]),
            ("token=a%2bb%2F", "token", &[(b"a+b/", false)]),
            ("token=%zz", "token", &[(b"%zz", true)]),
            ("token=%4", "token", &[(b"%4", true)]),
            ("token=%", "token", &[(b"%", true)]),
            ("token=%ff%FE", "token", &[(b"\xff\xfe", false)]),
            ("token", "token", &[(b"", false)]),
            ("token=", "token", &[(b"", false)]),
            ("token==x", "token", &[(b"=x", false)]),
            ("&&token=x&&", "token", &[(b"x", false)]),
            ("a=1&token=x&token=y", "token", &[(b"x", false), (b"y", false)]),
            ("%74oken=x", "token", &[(b"x", false)]),
            ("tok+en=x", "tok en", &[(b"x", false)]),
            ("tokens=x&xtoken=y&Token=z", "token", &[]),
            ("token=a;b", "token", &[(b"a;b", false)]),
            ("token=%00", "token", &[(b"\0", false)]),
        ];
        for (input, name, want) in cases {
            let want: Vec<(Vec<u8>, bool)> = want.iter().map(|(b, m)| (b.to_vec(), *m)).collect();
            assert_eq!(values(input, name), want, "input {input:?}");
        }
    }

    #[test]
    fn single_token_param_rules() {
        use TokenParamError::*;
        #[rustfmt::skip]
        let cases: &[(&str, Result<&str, TokenParamError>)] = &[
            ("token=abc", Ok("abc")),
            ("x=1&token=a%20b%2Bc/d", Ok("a b+c/d")),
            ("token=%C3%BC", Ok("ü")),
            ("", Err(Missing)),
            ("tokenx=a", Err(Missing)),
            ("token=", Err(Empty)),
            ("token", Err(Empty)),
            ("token=a&token=a", Err(Duplicate)),
            ("token=a&token=", Err(Duplicate)),
            ("token=%ff", Err(BadEncoding)),
            ("token=%C3", Err(BadEncoding)),
            ("token=ab%zz", Err(BadEncoding)),
            ("token=12345678", Ok("12345678")),
            ("token=123456789", Err(TooLong)),
            ("token=%C3%BC%C3%BC%C3%BC%C3%BC", Ok("üüüü")),
            ("token=%C3%BC%C3%BC%C3%BC%C3%BCx", Err(TooLong)),
            ("token=123456789&token=1", Err(Duplicate)),
            ("token=123456789%zz", Err(BadEncoding)),
        ];
        for (input, want) in cases {
            let got = single_token_param(input.as_bytes(), "token", 8);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "input {input:?}");
        }
    }

    #[test]
    fn huge_inputs_are_linear_and_correct() {
        let mut q = "a=b&".repeat(200_000);
        q.push_str("token=");
        q.push_str(&"x".repeat(1 << 20));
        let t = single_token_param(q.as_bytes(), "token", usize::MAX).unwrap();
        assert_eq!(t.len(), 1 << 20);
        assert_eq!(
            single_token_param(q.as_bytes(), "token", MAX_TOKEN_BYTES),
            Err(TokenParamError::TooLong)
        );
        let many = "token=x&".repeat(100_000);
        assert_eq!(
            single_token_param(many.as_bytes(), "token", MAX_TOKEN_BYTES),
            Err(TokenParamError::Duplicate)
        );
    }

    #[test]
    fn content_type_and_single_header() {
        use http::header::{HeaderValue, CONTENT_TYPE};
        let mut h = HeaderMap::new();
        assert!(!content_type_is(&h, "application/json"));
        for (v, ok) in [
            ("application/json", true),
            ("Application/JSON", true),
            ("application/json; charset=utf-8", true),
            (" application/json ;charset=UTF-8", true),
            ("application/json-patch+json", false),
            ("text/plain", false),
            ("application/jsonx", false),
            ("", false),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(v));
            assert_eq!(content_type_is(&h, "application/json"), ok, "{v:?}");
        }
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(
            !content_type_is(&h, "application/json"),
            "repeated header is ambiguous"
        );
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_bytes(b"application/json\xff").unwrap(),
        );
        assert!(!content_type_is(&h, "application/json"));
    }
}
