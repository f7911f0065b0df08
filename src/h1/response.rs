//! Response heads on the fast path: the upstream's inspected and rewritten
//! (framing checked, hop-by-hop fields dropped, `Via` added), and the
//! gateway's own answers serialised with their length and date.

use bytes::Bytes;
use http::Response;

use super::framing::{content_length, is_chunked, tokens, Chunks, Framing};
#[allow(clippy::wildcard_imports)]
use super::*;
use crate::hygiene::{self, Direction, Fate};
use crate::refusal::Refusal;

/// What the upstream's response head said, once rewritten into `out`.
pub(super) struct ResponseHead {
    pub(super) status: u16,
    pub(super) body: Framing,
    /// The body's length when it has one and is sent (the access log's
    /// `$body_bytes_sent`): `Content-Length`, `0` for a body not sent.
    pub(super) length: Option<u64>,
    /// The upstream connection can carry another request afterwards.
    pub(super) reusable: bool,
    /// The client connection is closed after this response (its request
    /// body was not read to the end).
    pub(super) close_client: bool,
}

pub(super) enum HeadError {
    /// Closed or reset before any byte of a response (a stale connection).
    Closed(String),
    /// Garbage, or a response this path refuses to relay.
    Invalid(String),
    TimedOut,
}

/// Checks the framing of an upstream response head.
pub(super) fn inspect_response(
    resp: &httparse::Response<'_, '_>,
    head_request: bool,
) -> Result<ResponseHead, HeadError> {
    let code = resp.code.unwrap_or(0);
    let mut length = None;
    let mut lengths = 0;
    let mut codings = 0;
    let mut chunked = false;
    let mut close = resp.version != Some(1);
    for f in resp.headers.iter() {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            length = content_length(f.value);
            if length.is_none() {
                return Err(HeadError::Invalid("bad Content-Length".into()));
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings += 1;
            chunked = is_chunked(f.value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= tokens(f.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        }
    }
    if lengths > 1 || codings > 1 || (codings == 1 && (!chunked || lengths > 0)) {
        return Err(HeadError::Invalid(
            "conflicting or unsupported response framing".into(),
        ));
    }
    let body = if head_request || code == 204 || code == 304 {
        Framing::Done
    } else if chunked {
        Framing::Chunked(Chunks::default())
    } else {
        match length {
            Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let reusable = !close && !matches!(body, Framing::UntilClose);
    let length = match body {
        Framing::Done => Some(0),
        Framing::Length(n) => Some(n),
        Framing::Chunked(_) | Framing::UntilClose => None,
    };
    Ok(ResponseHead {
        status: code,
        body,
        length,
        reusable,
        close_client: false,
    })
}

/// Writes the client's response head: the upstream's status and fields,
/// hop-by-hop fields (and those its `Connection` names) removed, `Via`
/// appended to, `Transfer-Encoding: chunked` when the body is relayed
/// chunked (as it came, or re-framed from a body that ran until close), and
/// `Connection: close` when `close`.
pub(super) fn rewrite_response(
    out: &mut Vec<u8>,
    resp: &httparse::Response<'_, '_>,
    body: &Framing,
    close: bool,
) {
    let code = resp.code.unwrap_or(502);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(code).as_slice());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let fields: &[httparse::Header<'_>] = resp.headers;
    // Whether `Connection` names any field but `keep-alive` (hop-by-hop
    // anyway): usually not, and then no field needs looking up in it.
    let names_any = fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .any(|f| tokens(f.value).any(|t| !t.eq_ignore_ascii_case(b"keep-alive")));
    let mut chunked = false;
    for f in fields {
        let name = f.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        }
        // `Via` is joined into ours below.
        let connection_named = names_any && names_field(fields, name);
        if hygiene::field_fate(name, Direction::Response, connection_named, false) == Fate::Keep {
            push_field(out, name, f.value);
        }
    }
    push_joined(out, fields, "via", hygiene::VIA.as_bytes());
    let chunked = match body {
        Framing::Chunked(_) | Framing::UntilClose => true,
        // HEAD, 204, 304: the fields describe the body not sent.
        Framing::Done => chunked,
        Framing::Length(_) => false,
    };
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether a `Connection` field among `fields` names `name`.
pub(super) fn names_field(fields: &[httparse::Header<'_>], name: &[u8]) -> bool {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .any(|f| tokens(f.value).any(|t| t.eq_ignore_ascii_case(name)))
}

pub(super) fn itoa3(code: u16) -> [u8; 3] {
    let c = code.min(999);
    [
        b'0' + (c / 100) as u8,
        b'0' + (c / 10 % 10) as u8,
        b'0' + (c % 10) as u8,
    ]
}

/// A gateway-made response, serialised with its length (no body for HEAD).
pub(super) fn write_response(out: &mut Vec<u8>, resp: &Response<Bytes>, close: bool, head: bool) {
    let status = resp.status();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // `Connection` is this hop's: written below from `close` alone.
    for (name, value) in resp.headers() {
        if name != http::header::CONNECTION {
            push_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let mut len = itoa::Buffer::new();
    push_field(
        out,
        b"content-length",
        len.format(resp.body().len()).as_bytes(),
    );
    push_field(out, b"date", date::now().as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(resp.body());
    }
}

/// `builtin:ok`'s answer, written without building a response.
pub(super) fn write_ok(out: &mut Vec<u8>, close: bool, head: bool) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n");
    let mut len = itoa::Buffer::new();
    push_field(
        out,
        b"content-length",
        len.format(crate::builtin::OK_BODY.len()).as_bytes(),
    );
    push_field(out, b"date", date::now().as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(crate::builtin::OK_BODY);
    }
}

pub(super) fn bad_body() -> Refusal {
    Refusal::ClientBody("malformed or incomplete request body".into())
}

/// The `Date` value for gateway-made responses, formatted once a second
/// per thread.
pub(super) mod date {
    use std::cell::RefCell;
    use std::time::SystemTime;

    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    pub fn now() -> String {
        let t = SystemTime::now();
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs || c.1.is_empty() {
                *c = (secs, httpdate::fmt_http_date(t));
            }
            c.1.clone()
        })
    }
}
