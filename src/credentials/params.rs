//! `access_token` in a query string or a form body (RFC 6750 §2.2, §2.3),
//! read as the union of what common parsers accept.

use std::borrow::Cow;

use super::grammar::{valid_token, CredentialError};

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
