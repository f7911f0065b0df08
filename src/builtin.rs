//! The built-in upstreams (issue 18): `builtin:ok` and `builtin:echo`,
//! accepted wherever an upstream URL is (`upstream.url`, a route's
//! `upstream`, `--upstream`). For load tests and demos, **not for
//! production**: nothing is forwarded anywhere.
//!
//! A request routed to one is admitted exactly as any other (route, revoke
//! call, verdict: a revoked token still gets its 401) and then answered on
//! the I/O thread that read it, with no socket hop and no upstream
//! connection: on the HTTP/1.1 fast path (`h1/`) and on the hyper path
//! (h2, upgrades, everything the fast path hands over) alike.
//!
//! - `builtin:ok`: `200`, `content-type: text/plain`, body `ok\n`: the
//!   cheapest answer the gateway can give, so a load test measures the
//!   gateway's admission and not an upstream.
//! - `builtin:echo`: `200`, `content-type: application/json`, what the
//!   demo's echo upstream answers (`revgate demo` serves this same
//!   rendering): the method, the path (never the query, which may carry an
//!   `access_token`), whether a credential came (`authorized`), and the
//!   request's header fields minus every credential (`authorization`,
//!   `proxy-authorization`, `cookie`, `x-api-key` and the configured
//!   `tokens.api_key_headers`): never a token.
//!
//! Choices where the issue is silent: the request body is read and dropped
//! (on the fast path up to the gateway's discard bound, past which the
//! connection is closed after the answer, as for any answer the gateway
//! makes itself); an upgrade request gets the same `200`, not a `101`
//! (there is nothing to upgrade to); the answer counts as `forwarded` in
//! metrics and the access log, with no upstream time.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::credentials::Headers;

/// Which built-in upstream a route goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builtin {
    /// `builtin:ok`: a fixed small 200.
    Ok,
    /// `builtin:echo`: the request, described (no credentials).
    Echo,
}

/// The body `builtin:ok` answers.
pub const OK_BODY: &[u8] = b"ok\n";

impl Builtin {
    /// The built-in an upstream URL names, if it names one.
    pub fn parse(url: &str) -> Option<Builtin> {
        match url {
            "builtin:ok" => Some(Builtin::Ok),
            "builtin:echo" => Some(Builtin::Echo),
            _ => None,
        }
    }

    /// Its URL form.
    pub fn url(self) -> &'static str {
        match self {
            Builtin::Ok => "builtin:ok",
            Builtin::Echo => "builtin:echo",
        }
    }

    /// The answer to a request with this head (`api_key_headers`: the
    /// configured credential headers, left out of an echo).
    pub fn respond<H: Headers + ?Sized>(
        self,
        method: &str,
        path: &str,
        headers: &H,
        api_key_headers: &[http::HeaderName],
    ) -> Response<Bytes> {
        match self {
            Builtin::Ok => ok_response(),
            Builtin::Echo => echo_response(method, path, headers, api_key_headers),
        }
    }
}

/// `builtin:ok`'s answer.
pub fn ok_response() -> Response<Bytes> {
    let mut r = Response::new(Bytes::from_static(OK_BODY));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    r
}

/// Header fields an echo never shows: they carry credentials.
fn is_credential(name: &[u8], api_key_headers: &[http::HeaderName]) -> bool {
    const ALWAYS: [&[u8]; 4] = [
        b"authorization",
        b"proxy-authorization",
        b"cookie",
        b"x-api-key",
    ];
    ALWAYS.iter().any(|c| name.eq_ignore_ascii_case(c))
        || api_key_headers
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
}

/// The echo's answer: method, path, `authorized`, and the header fields
/// minus credentials (a name seen twice lists its values in order).
pub fn echo_response<H: Headers + ?Sized>(
    method: &str,
    path: &str,
    headers: &H,
    api_key_headers: &[http::HeaderName],
) -> Response<Bytes> {
    let mut fields = serde_json::Map::new();
    let mut authorized = false;
    for (name, value) in headers.fields() {
        if is_credential(name, api_key_headers) {
            authorized = true;
            continue;
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = serde_json::Value::String(String::from_utf8_lossy(value).into_owned());
        match fields.get_mut(&name) {
            None => {
                fields.insert(name, value);
            }
            Some(serde_json::Value::Array(all)) => all.push(value),
            Some(first) => {
                let first = first.take();
                fields.insert(name, serde_json::Value::Array(vec![first, value]));
            }
        }
    }
    let body = serde_json::json!({
        "upstream": "revgate builtin:echo",
        "method": method,
        "path": path,
        "authorized": authorized,
        "headers": fields,
    });
    let mut r = Response::new(Bytes::from(format!("{body}\n")));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_names_no_credential() {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer secret-1"));
        h.insert("x-key", HeaderValue::from_static("secret-2"));
        h.insert("cookie", HeaderValue::from_static("s=secret-3"));
        h.append("accept", HeaderValue::from_static("a/b"));
        h.append("accept", HeaderValue::from_static("c/d"));
        let keys = [http::HeaderName::from_static("x-key")];
        let r = echo_response("GET", "/p", &h, &keys);
        let text = std::str::from_utf8(r.body()).unwrap();
        assert!(!text.contains("secret"), "{text}");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["authorized"], true);
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/p");
        assert_eq!(v["headers"]["accept"], serde_json::json!(["a/b", "c/d"]));
    }

    #[test]
    fn urls_parse() {
        assert_eq!(Builtin::parse("builtin:ok"), Some(Builtin::Ok));
        assert_eq!(Builtin::parse("builtin:echo"), Some(Builtin::Echo));
        assert_eq!(Builtin::parse("builtin:nope"), None);
        assert_eq!(Builtin::Echo.url(), "builtin:echo");
    }
}
