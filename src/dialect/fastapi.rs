//! FastAPI shapes (LangSmith, Codegen): query parameters read as Starlette
//! does (the last value wins), pydantic's integer and length checks, and
//! the byte-exact error bodies FastAPI answers (422 `detail` lists, 405,
//! 403, 413, 429, 503).

use http::StatusCode;
use serde::Serialize;

use super::{form_values, DialectResponse, MAX_ID_LEN};

/// A pydantic error type FastAPI reports for a query parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldErrorKind {
    /// `missing`: absent (revgate also counts an empty string parameter as
    /// absent; see the dialects' docs).
    Missing,
    /// `string_unicode`: not UTF-8 once decoded.
    StringUnicode,
    /// `int_parsing`: not an integer.
    IntParsing,
    /// `int_parsing_size`: more than 4300 significant digits.
    IntParsingSize,
    /// `string_too_long`: over [`MAX_ID_LEN`] characters (as pydantic's
    /// `max_length=256` reports it).
    StringTooLong,
    /// `less_than_equal`: an integer above `i64::MAX` (`le=2**63-1`).
    IntTooLarge,
    /// `greater_than_equal`: an integer below `i64::MIN` (`ge=-2**63`).
    IntTooSmall,
}

impl FieldErrorKind {
    fn type_and_msg(self) -> (&'static str, &'static str) {
        match self {
            FieldErrorKind::Missing => ("missing", "Field required"),
            FieldErrorKind::StringUnicode => (
                "string_unicode",
                "Input should be a valid string, unable to parse raw data as a unicode string",
            ),
            FieldErrorKind::IntParsing => (
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            ),
            FieldErrorKind::IntParsingSize => (
                "int_parsing_size",
                "Unable to parse input string as an integer, exceeded maximum size",
            ),
            FieldErrorKind::StringTooLong => (
                "string_too_long",
                "String should have at most 256 characters",
            ),
            FieldErrorKind::IntTooLarge => (
                "less_than_equal",
                "Input should be less than or equal to 9223372036854775807",
            ),
            FieldErrorKind::IntTooSmall => (
                "greater_than_equal",
                "Input should be greater than or equal to -9223372036854775808",
            ),
        }
    }
}

/// One bad query parameter, as FastAPI reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// The parameter's name (`loc` is `["query", name]`).
    pub(crate) name: &'static str,
    /// What is wrong with it.
    pub(crate) kind: FieldErrorKind,
}

/// The value FastAPI's handler would see for a `str` query parameter: the
/// last occurrence (Starlette keeps the last), decoded, with a malformed
/// escape kept literally (as Python's `unquote_plus` does). `Ok("")` for
/// an empty value; each dialect decides what that means.
pub(crate) fn fastapi_query_str(
    query: Option<&str>,
    name: &'static str,
) -> Result<String, FieldError> {
    let values = form_values(query.unwrap_or("").as_bytes(), name);
    let last = values.into_iter().next_back().ok_or(FieldError {
        name,
        kind: FieldErrorKind::Missing,
    })?;
    String::from_utf8(last.bytes).map_err(|_| FieldError {
        name,
        kind: FieldErrorKind::StringUnicode,
    })
}

/// A FastAPI `str` query parameter declared `Query(min_length=1,
/// max_length=256)` as the scope dialects read it: the last occurrence; empty
/// is reported as missing (see the dialects' docs), over [`MAX_ID_LEN`]
/// characters as `string_too_long`.
pub(crate) fn fastapi_identifier(
    query: Option<&str>,
    name: &'static str,
) -> Result<String, FieldError> {
    let value = fastapi_query_str(query, name)?;
    let kind = if value.is_empty() {
        FieldErrorKind::Missing
    } else if value.len() > MAX_ID_LEN && value.chars().count() > MAX_ID_LEN {
        FieldErrorKind::StringTooLong
    } else {
        return Ok(value);
    };
    Err(FieldError { name, kind })
}

/// [`pydantic_int`] with `ge=-2**63, le=2**63-1`: an integer that fits an
/// `i64`, as every real org id does.
pub(crate) fn pydantic_i64(input: &str) -> Result<String, FieldErrorKind> {
    let normalized = pydantic_int(input)?;
    match normalized.parse::<i64>() {
        Ok(_) => Ok(normalized),
        Err(_) if normalized.starts_with('-') => Err(FieldErrorKind::IntTooSmall),
        Err(_) => Err(FieldErrorKind::IntTooLarge),
    }
}

/// Parses a string as pydantic v2 (lax mode) parses an `int` from a string,
/// and returns it normalized (no sign for zero or positives, no leading
/// zeros, no underscores), so that `007`, `+7`, ` 7 `, `7.0` and `7` all
/// name org 7, as they do for the upstream.
///
/// pydantic's rules, checked against pydantic 2.14: surrounding Unicode
/// whitespace is trimmed; one optional sign; ASCII digits, with single
/// underscores only *between* digits; an optional fraction made only of
/// zeros (`42.000`); more than 4300 significant digits is `int_parsing_size`.
pub(crate) fn pydantic_int(input: &str) -> Result<String, FieldErrorKind> {
    let s = input.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, fraction) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    if let Some(f) = fraction {
        if f.is_empty() || !f.bytes().all(|b| b == b'0') {
            return Err(FieldErrorKind::IntParsing);
        }
    }
    let bytes = int_part.as_bytes();
    let well_formed = bytes.first().is_some_and(u8::is_ascii_digit)
        && bytes.last().is_some_and(u8::is_ascii_digit)
        && bytes.iter().all(|&b| b.is_ascii_digit() || b == b'_')
        && !int_part.contains("__");
    if !well_formed {
        return Err(FieldErrorKind::IntParsing);
    }
    let digits: String = int_part
        .bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|&b| b == b'0')
        .map(char::from)
        .collect();
    if digits.len() > 4300 {
        return Err(FieldErrorKind::IntParsingSize);
    }
    Ok(match (digits.is_empty(), negative) {
        (true, _) => "0".to_owned(),
        (false, true) => format!("-{digits}"),
        (false, false) => digits,
    })
}

/// FastAPI's 422 body: one entry per bad field, in the order given.
pub(crate) fn fastapi_422(errors: &[FieldError]) -> DialectResponse {
    #[derive(Serialize)]
    struct Entry {
        loc: [&'static str; 2],
        msg: &'static str,
        #[serde(rename = "type")]
        kind: &'static str,
    }
    #[derive(Serialize)]
    struct Body {
        detail: Vec<Entry>,
    }
    let detail = errors
        .iter()
        .map(|e| {
            let (kind, msg) = e.kind.type_and_msg();
            Entry {
                loc: ["query", e.name],
                msg,
                kind,
            }
        })
        .collect();
    DialectResponse::serialized(StatusCode::UNPROCESSABLE_ENTITY, &Body { detail })
}

/// FastAPI's answer to a wrong method (Starlette's default).
pub(crate) fn fastapi_method_not_allowed() -> DialectResponse {
    DialectResponse::static_json(
        StatusCode::METHOD_NOT_ALLOWED,
        r#"{"detail":"Method Not Allowed"}"#,
    )
}

/// FastAPI's answer when no user can be identified (its security helpers').
pub(crate) fn fastapi_not_authenticated() -> DialectResponse {
    DialectResponse::static_json(
        StatusCode::UNAUTHORIZED,
        r#"{"detail":"Not authenticated"}"#,
    )
}

/// FastAPI's `HTTPException(413)` (default detail is the status phrase).
pub(crate) fn fastapi_payload_too_large() -> DialectResponse {
    DialectResponse::static_json(
        StatusCode::PAYLOAD_TOO_LARGE,
        r#"{"detail":"Request Entity Too Large"}"#,
    )
}

/// FastAPI's `HTTPException(429)` (default detail is the status phrase).
pub(crate) fn fastapi_too_many_requests() -> DialectResponse {
    DialectResponse::static_json(
        StatusCode::TOO_MANY_REQUESTS,
        r#"{"detail":"Too Many Requests"}"#,
    )
}

/// FastAPI's `HTTPException(429, detail=...)` for a user at the scope cap.
pub(crate) fn fastapi_scope_limit_reached() -> DialectResponse {
    DialectResponse::static_json(
        StatusCode::TOO_MANY_REQUESTS,
        r#"{"detail":"Too many active scope revocations for this user"}"#,
    )
}

/// FastAPI's `HTTPException(503)`.
pub(crate) fn fastapi_unavailable() -> DialectResponse {
    DialectResponse::static_json(
        StatusCode::SERVICE_UNAVAILABLE,
        r#"{"detail":"Service Unavailable"}"#,
    )
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pydantic_int_matches_pydantic() {
        use FieldErrorKind::*;
        #[rustfmt::skip]
        let cases: &[(&str, Result<&str, FieldErrorKind>)] = &[
            ("42", Ok("42")),
            (" 42 ", Ok("42")),
            ("\t42\n", Ok("42")),
            ("\u{a0}42\u{a0}", Ok("42")),
            ("+42", Ok("42")),
            ("-42", Ok("-42")),
            ("007", Ok("7")),
            ("00", Ok("0")),
            ("-0", Ok("0")),
            ("4_2", Ok("42")),
            ("1_000_000", Ok("1000000")),
            ("0_0", Ok("0")),
            ("42.0", Ok("42")),
            ("42.000", Ok("42")),
            ("-42.0", Ok("-42")),
            ("4_2.0", Ok("42")),
            ("0042.0", Ok("42")),
            ("0.0", Ok("0")),
            ("99999999999999999999999", Ok("99999999999999999999999")),
            ("", Err(IntParsing)),
            (" ", Err(IntParsing)),
            ("42.5", Err(IntParsing)),
            ("42.01", Err(IntParsing)),
            ("42.", Err(IntParsing)),
            (".0", Err(IntParsing)),
            ("-.0", Err(IntParsing)),
            ("42.0_0", Err(IntParsing)),
            ("1e3", Err(IntParsing)),
            ("0x10", Err(IntParsing)),
            ("4__2", Err(IntParsing)),
            ("_42", Err(IntParsing)),
            ("42_", Err(IntParsing)),
            ("+_42", Err(IntParsing)),
            ("+-4", Err(IntParsing)),
            ("--4", Err(IntParsing)),
            ("+", Err(IntParsing)),
            ("-", Err(IntParsing)),
            ("42 .0", Err(IntParsing)),
            ("42abc", Err(IntParsing)),
            ("\u{200b}42", Err(IntParsing)),
            ("\u{1c}42", Err(IntParsing)),
            ("٤٢", Err(IntParsing)),
            ("４２", Err(IntParsing)),
            ("null", Err(IntParsing)),
            ("[1]", Err(IntParsing)),
        ];
        for (input, want) in cases {
            assert_eq!(
                pydantic_int(input).as_deref().map_err(|e| *e),
                *want,
                "input {input:?}"
            );
        }
        assert!(pydantic_int(&"1".repeat(4300)).is_ok());
        assert_eq!(pydantic_int(&"1".repeat(4301)), Err(IntParsingSize));
        assert_eq!(
            pydantic_int(&format!("-{}", "1".repeat(4300))).map(|s| s.len()),
            Ok(4301)
        );
        assert_eq!(
            pydantic_int(&format!("{}1", "0".repeat(5000))).as_deref(),
            Ok("1")
        );
        assert!(pydantic_int(&format!("{}.0", "1".repeat(4299))).is_ok());
    }

    #[test]
    fn fastapi_query_str_takes_the_last() {
        #[rustfmt::skip]
        let cases: &[(Option<&str>, Result<&str, FieldErrorKind>)] = &[
            (None, Err(FieldErrorKind::Missing)),
            (Some(""), Err(FieldErrorKind::Missing)),
            (Some("p=a"), Ok("a")),
            (Some("p=a&p=b"), Ok("b")),
            (Some("p=a&p="), Ok("")),
            (Some("p"), Ok("")),
            (Some("p=%zz"), Ok("%zz")),
            (Some("p=a+b%2B"), Ok("a b+")),
            (Some("p=%ff"), Err(FieldErrorKind::StringUnicode)),
            (Some("p=%ff&p=ok"), Ok("ok")),
        ];
        for (q, want) in cases {
            let got = fastapi_query_str(*q, "p");
            assert_eq!(got.as_deref().map_err(|e| e.kind), *want, "query {q:?}");
        }
    }

    #[test]
    fn fastapi_identifier_and_i64_bounds() {
        use FieldErrorKind::*;
        let kind = |q: &str| fastapi_identifier(Some(q), "p").map_err(|e| e.kind);
        assert_eq!(kind("p=gh").as_deref(), Ok("gh"));
        assert_eq!(kind("p="), Err(Missing));
        assert_eq!(
            kind(&format!("p={}", "x".repeat(256))).map(|v| v.len()),
            Ok(256)
        );
        assert_eq!(kind(&format!("p={}", "x".repeat(257))), Err(StringTooLong));
        // Characters, not bytes, as pydantic counts.
        assert_eq!(
            kind(&format!("p={}", "%C3%BC".repeat(256))).map(|v| v.len()),
            Ok(512)
        );
        assert_eq!(
            kind(&format!("p={}", "%C3%BC".repeat(257))),
            Err(StringTooLong)
        );
        assert_eq!(
            pydantic_i64("9223372036854775807").as_deref(),
            Ok("9223372036854775807")
        );
        assert_eq!(
            pydantic_i64("-9223372036854775808").as_deref(),
            Ok("-9223372036854775808")
        );
        assert_eq!(pydantic_i64("9223372036854775808"), Err(IntTooLarge));
        assert_eq!(pydantic_i64("-9223372036854775809"), Err(IntTooSmall));
        assert_eq!(pydantic_i64(&"9".repeat(4301)), Err(IntParsingSize));
        assert_eq!(pydantic_i64("x"), Err(IntParsing));
        assert_eq!(pydantic_i64("007").as_deref(), Ok("7"));
    }

    #[test]
    fn fastapi_422_bytes() {
        let r = fastapi_422(&[
            FieldError {
                name: "provider",
                kind: FieldErrorKind::Missing,
            },
            FieldError {
                name: "org_id",
                kind: FieldErrorKind::IntParsing,
            },
        ]);
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            &r.body[..],
            br#"{"detail":[{"loc":["query","provider"],"msg":"Field required","type":"missing"},{"loc":["query","org_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","type":"int_parsing"}]}"#
        );
        assert_eq!(r.content_type, Some("application/json"));
    }
}
