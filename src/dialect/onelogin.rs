//! OneLogin revoke endpoint: `POST /auth/oauth2/revoke` with a JSON body
//! `{"access_token": "..."}` (seed `003_a53386780e94e20f.txt`), revoking
//! that access token.
//!
//! # Request, checked in this order
//! 1. Method: anything but POST is the documented 404 "No Route Exists".
//! 2. `Content-Type`: one header whose media type is `application/json`,
//!    parameters allowed (`application/json; charset=utf-8` is JSON),
//!    case-insensitive. Otherwise the documented Content-Type 400.
//! 3. `Authorization`: one header, either the documented
//!    `client_id:<id>, client_secret:<secret>` (labels case-insensitive,
//!    any whitespace around `:` and `,` or none, as the legacy SDK sends
//!    `client_id:<id>,client_secret:<secret>`; id and secret non-empty without
//!    whitespace, the id without a comma), or HTTP Basic
//!    `base64(<id>:<secret>)`, which the current `onelogin` SDK sends (see
//!    below). Absent, repeated, a client id over 256 bytes or a secret over
//!    8 KiB, or anything else: the documented 400 "The authorization
//!    information is missing".
//! 4. When `clients` are configured, the pair must be one of them
//!    (constant-time over BLAKE3 digests of the length-prefixed pair): else
//!    401 "Authentication Failure". Authentication comes before the body so
//!    that an unauthenticated caller learns nothing about its token.
//! 5. Body: a JSON object whose `access_token` is a non-empty string, given
//!    once. Empty or malformed JSON, non-UTF-8 bytes, a non-object, a missing,
//!    `null`, non-string, empty or repeated `access_token`: 400 "Access Token
//!    Missing". Other keys are ignored. The token is taken as is (no trim).
//!    A well-formed token over 8 KiB: 400 in the same shape, message
//!    "Access Token is too long" (the body itself is bounded by
//!    `revoke.max_body_bytes`, 413 past it).
//!
//! # Responses
//! Exactly the documented bodies, compact, keys in the documented order
//! (`error`, `code`, `type`, `message`); the Content-Type message, wrapped
//! over two lines in the documentation, is one line with a single space.
//! 413, 429 (`"type":"too many requests","message":"Too Many Requests"`,
//! with `Retry-After`) and 503, which the documentation does not list, use
//! the same shape.
//!
//! # What the `onelogin` Python SDKs send and need, read from their source
//! - `onelogin` 4.0.1 (the current PyPI release, OpenAPI-generated):
//!   `OAuth2Api.revoke_tokens(revoke_tokens_request=RevokeTokensRequest(
//!   access_token=...))` posts `{"access_token": "..."}` with
//!   `Content-Type: application/json` and **`Authorization: Basic
//!   base64(client_id:client_secret)`** (its `basicAuth` setting, from
//!   `Configuration(username=client_id, password=client_secret)`), hence the
//!   Basic form accepted above. Non-2xx answers raise `ApiException`
//!   subclasses without reading the body. On 200 it deserializes the body
//!   into its flat `Error` model, which *requires* top-level `code` (int) and
//!   `message` (str): the documented `{"status":{...}}` success body makes
//!   `revoke_tokens()` raise pydantic's `ValidationError` **after** the
//!   revocation succeeded, against OneLogin itself as against revgate. The
//!   SDK's `revoke_tokens_with_http_info(..., _preload_content=False)`
//!   returns the raw 200 response. Its `Error.from_dict` reads only the
//!   top-level `error`, `code`, `type` and `message`, so a caller that
//!   authenticates with HTTP Basic (this SDK's form; the documentation's is
//!   the `client_id:..., client_secret:...` header) is answered the
//!   documented body with those four members also at the top level:
//!   `{"status":{...},"error":false,"code":200,"type":"success","message":"Success"}`
//!   ([`BASIC_SUCCESS`]). `revoke_tokens()` then returns; a client reading
//!   `status` reads what the documentation says. Callers with the documented
//!   header get exactly the documented body.
//! - `onelogin` 2.x (`OneLoginClient.revoke_token()`): posts the same JSON
//!   with `Authorization: client_id:<id>,client_secret:<secret>`, and only
//!   checks for status 200; on an error it reads `status.message`, which every
//!   error here has.

use base64::Engine as _;
use http::{header::AUTHORIZATION, Method, StatusCode};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{
    content_type_is, single_header, Dialect, DialectKind, DialectResponse, RevokeCall,
    RevokeIntent, SecretSet, MAX_ID_LEN, MAX_TOKEN_BYTES,
};

/// The OneLogin dialect.
#[derive(Debug)]
pub struct OneLogin {
    clients: SecretSet,
}

impl OneLogin {
    /// With the accepted client pairs (empty: any well-formed pair).
    pub fn new(clients: Vec<(String, String)>) -> Self {
        OneLogin {
            clients: SecretSet::new(
                clients
                    .iter()
                    .map(|(id, secret)| SecretSet::digest(&[id.as_bytes(), secret.as_bytes()])),
            ),
        }
    }
}

const SUCCESS: &str =
    r#"{"status":{"error":false,"code":200,"type":"success","message":"Success"}}"#;
/// The success body for HTTP Basic callers (see the module doc).
pub const BASIC_SUCCESS: &str = r#"{"status":{"error":false,"code":200,"type":"success","message":"Success"},"error":false,"code":200,"type":"success","message":"Success"}"#;
const BAD_CONTENT_TYPE: &str = r#"{"status":{"error":true,"code":400,"type":"bad request","message":"Content Type is not specified or specified incorrectly. Content-Type header must be set to application/json"}}"#;
const TOKEN_MISSING: &str =
    r#"{"status":{"error":true,"code":400,"type":"bad request","message":"Access Token Missing"}}"#;
const AUTH_MISSING: &str = r#"{"status":{"error":true,"code":400,"type":"bad request","message":"The authorization information is missing"}}"#;
const AUTH_FAILURE: &str = r#"{"status":{"error":true,"code":401,"type":"Unauthorized","message":"Authentication Failure"}}"#;
const NO_ROUTE: &str =
    r#"{"status":{"error":true,"code":404,"type":"not found","message":"No Route Exists"}}"#;
const TOO_LARGE: &str = r#"{"status":{"error":true,"code":413,"type":"payload too large","message":"Request Entity Too Large"}}"#;
const TOKEN_TOO_LONG: &str = r#"{"status":{"error":true,"code":400,"type":"bad request","message":"Access Token is too long"}}"#;
const TOO_MANY: &str = r#"{"status":{"error":true,"code":429,"type":"too many requests","message":"Too Many Requests"}}"#;
const UNAVAILABLE: &str = r#"{"status":{"error":true,"code":503,"type":"service unavailable","message":"Service Unavailable"}}"#;

/// The client pair from an `Authorization` value, as bytes, within the
/// length limits (an id is an identifier, a secret is bounded as a token).
fn client_pair(value: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = value.trim();
    let pair = match value.split_once([' ', '\t']) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => basic_pair(rest.trim()),
        _ => documented_pair(value),
    }?;
    (pair.0.len() <= MAX_ID_LEN && pair.1.len() <= MAX_TOKEN_BYTES).then_some(pair)
}

/// `base64(<id>:<secret>)`, padding optional.
fn basic_pair(encoded: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let decoded = STANDARD
        .decode(encoded)
        .or_else(|_| STANDARD_NO_PAD.decode(encoded))
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let (id, secret) = (&decoded[..colon], &decoded[colon + 1..]);
    if id.is_empty() || secret.is_empty() {
        return None;
    }
    Some((id.to_vec(), secret.to_vec()))
}

/// `client_id:<id>, client_secret:<secret>`, whitespace-tolerant.
fn documented_pair(value: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    fn label<'a>(s: &'a str, name: &str) -> Option<&'a str> {
        let s = s.trim_start();
        let head = s.get(..name.len())?;
        if !head.eq_ignore_ascii_case(name) {
            return None;
        }
        s[name.len()..]
            .trim_start()
            .strip_prefix(':')
            .map(str::trim)
    }
    let (first, second) = value.split_once(',')?;
    let id = label(first, "client_id")?;
    let secret = label(second, "client_secret")?;
    let blank = |s: &str| s.is_empty() || s.contains(char::is_whitespace);
    if blank(id) || blank(secret) {
        return None;
    }
    Some((id.as_bytes().to_vec(), secret.as_bytes().to_vec()))
}

/// The body's `access_token`, read without keeping anything else.
enum TokenField {
    Absent,
    Repeated,
    NotAString,
    Given(String),
}

struct Body(TokenField);

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = Body;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
                let mut field = TokenField::Absent;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "access_token" {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    let value = map.next_value::<serde_json::Value>()?;
                    field = match (field, value) {
                        (TokenField::Absent, serde_json::Value::String(s)) => TokenField::Given(s),
                        (TokenField::Absent, _) => TokenField::NotAString,
                        _ => TokenField::Repeated,
                    };
                }
                Ok(Body(field))
            }
        }
        deserializer.deserialize_map(BodyVisitor)
    }
}

/// The body's token, or the documented 400 to answer.
fn access_token(body: &[u8]) -> Result<String, &'static str> {
    match serde_json::from_slice::<Body>(body) {
        Ok(Body(TokenField::Given(token))) if token.len() > MAX_TOKEN_BYTES => Err(TOKEN_TOO_LONG),
        Ok(Body(TokenField::Given(token))) if !token.is_empty() => Ok(token),
        _ => Err(TOKEN_MISSING),
    }
}

impl Dialect for OneLogin {
    fn kind(&self) -> DialectKind {
        DialectKind::OneLogin
    }

    fn needs_body(&self) -> bool {
        true
    }

    fn parse(&self, call: &RevokeCall<'_>) -> Result<RevokeIntent, DialectResponse> {
        if call.method != Method::POST {
            return Err(DialectResponse::static_json(
                StatusCode::NOT_FOUND,
                NO_ROUTE,
            ));
        }
        if !content_type_is(call.headers, "application/json") {
            return Err(DialectResponse::static_json(
                StatusCode::BAD_REQUEST,
                BAD_CONTENT_TYPE,
            ));
        }
        let Some((id, secret)) = single_header(call.headers, AUTHORIZATION).and_then(client_pair)
        else {
            return Err(DialectResponse::static_json(
                StatusCode::BAD_REQUEST,
                AUTH_MISSING,
            ));
        };
        if !self.clients.is_empty() && !self.clients.contains(&SecretSet::digest(&[&id, &secret])) {
            return Err(self.unauthenticated());
        }
        access_token(call.body)
            .map(RevokeIntent::Token)
            .map_err(|body| DialectResponse::static_json(StatusCode::BAD_REQUEST, body))
    }

    fn success(&self) -> DialectResponse {
        DialectResponse::static_json(StatusCode::OK, SUCCESS)
    }

    fn success_for(&self, call: &RevokeCall<'_>) -> DialectResponse {
        let basic = call
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().get(..6))
            .is_some_and(|s| s.eq_ignore_ascii_case(b"basic "));
        if basic {
            DialectResponse::static_json(StatusCode::OK, BASIC_SUCCESS)
        } else {
            self.success()
        }
    }

    fn unauthenticated(&self) -> DialectResponse {
        DialectResponse::static_json(StatusCode::UNAUTHORIZED, AUTH_FAILURE)
    }

    fn payload_too_large(&self) -> DialectResponse {
        DialectResponse::static_json(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE)
    }

    fn unavailable(&self) -> DialectResponse {
        DialectResponse::static_json(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)
    }

    fn too_many_requests(&self) -> DialectResponse {
        DialectResponse::static_json(StatusCode::TOO_MANY_REQUESTS, TOO_MANY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header::CONTENT_TYPE, HeaderMap, HeaderValue};

    const JSON: &[u8] = b"application/json";
    const PAIR: &[u8] = b"client_id:cid, client_secret:csecret";

    fn run(
        d: &OneLogin,
        method: Method,
        content_type: &[&[u8]],
        auth: &[&[u8]],
        body: &[u8],
    ) -> Result<String, (StatusCode, String)> {
        let mut headers = HeaderMap::new();
        for c in content_type {
            headers.append(CONTENT_TYPE, HeaderValue::from_bytes(c).unwrap());
        }
        for a in auth {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(a).unwrap());
        }
        match d.parse(&RevokeCall {
            method: &method,
            query: None,
            headers: &headers,
            body,
        }) {
            Ok(RevokeIntent::Token(t)) => Ok(t),
            Ok(other) => panic!("unexpected intent {other:?}"),
            Err(e) => {
                assert_eq!(e.content_type, Some("application/json"));
                Err((e.status, String::from_utf8(e.body.to_vec()).unwrap()))
            }
        }
    }

    fn e(status: StatusCode, body: &str) -> Result<String, (StatusCode, String)> {
        Err((status, body.to_owned()))
    }

    #[test]
    fn documented_bodies_byte_for_byte() {
        let d = OneLogin::new(vec![]);
        #[rustfmt::skip]
        let cases = [
            (d.success(), StatusCode::OK, r#"{"status":{"error":false,"code":200,"type":"success","message":"Success"}}"#),
            (d.unauthenticated(), StatusCode::UNAUTHORIZED, r#"{"status":{"error":true,"code":401,"type":"Unauthorized","message":"Authentication Failure"}}"#),
            (d.payload_too_large(), StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE),
            (d.unavailable(), StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
            (d.too_many_requests(), StatusCode::TOO_MANY_REQUESTS, TOO_MANY),
        ];
        for (r, status, body) in cases {
            assert_eq!((r.status, &r.body[..]), (status, body.as_bytes()));
            assert_eq!(r.content_type, Some("application/json"));
        }
        assert_eq!(
            BAD_CONTENT_TYPE,
            r#"{"status":{"error":true,"code":400,"type":"bad request","message":"Content Type is not specified or specified incorrectly. Content-Type header must be set to application/json"}}"#
        );
        assert_eq!(
            TOKEN_MISSING,
            r#"{"status":{"error":true,"code":400,"type":"bad request","message":"Access Token Missing"}}"#
        );
        assert_eq!(
            AUTH_MISSING,
            r#"{"status":{"error":true,"code":400,"type":"bad request","message":"The authorization information is missing"}}"#
        );
        assert_eq!(
            NO_ROUTE,
            r#"{"status":{"error":true,"code":404,"type":"not found","message":"No Route Exists"}}"#
        );
        // Every body parses, with the documented keys in the documented order.
        for body in [
            SUCCESS,
            BAD_CONTENT_TYPE,
            TOKEN_MISSING,
            AUTH_MISSING,
            AUTH_FAILURE,
            NO_ROUTE,
            TOO_LARGE,
            UNAVAILABLE,
            TOKEN_TOO_LONG,
            TOO_MANY,
        ] {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let status = v["status"].as_object().unwrap();
            assert_eq!(status.len(), 4);
            let order: Vec<usize> = ["\"error\"", "\"code\"", "\"type\"", "\"message\""]
                .iter()
                .map(|k| body.find(k).unwrap())
                .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{body}");
        }
        assert!(d.needs_body());
        assert_eq!(d.method(), Method::POST);
        assert_eq!(d.kind(), DialectKind::OneLogin);
    }

    #[test]
    fn table() {
        let open = OneLogin::new(vec![]);
        let checked = OneLogin::new(vec![
            ("cid".into(), "csecret".into()),
            ("other".into(), "s2".into()),
        ]);
        let ok = |t: &str| Ok::<String, (StatusCode, String)>(t.to_owned());
        let ct = || e(StatusCode::BAD_REQUEST, BAD_CONTENT_TYPE);
        let missing = || e(StatusCode::BAD_REQUEST, TOKEN_MISSING);
        let noauth = || e(StatusCode::BAD_REQUEST, AUTH_MISSING);
        let fail = || e(StatusCode::UNAUTHORIZED, AUTH_FAILURE);
        let no_route = || e(StatusCode::NOT_FOUND, NO_ROUTE);
        let body = br#"{"access_token":"tok"}"#;
        let huge_token = "x".repeat(1 << 20);
        let huge_body = format!(r#"{{"access_token":"{huge_token}"}}"#);
        let max_token = "x".repeat(MAX_TOKEN_BYTES);
        let max_body = format!(r#"{{"access_token":"{max_token}"}}"#);
        let escaped_over = format!(
            r#"{{"access_token":"{}"}}"#,
            "\\u0078".repeat(MAX_TOKEN_BYTES + 1)
        );
        let long_id = format!("client_id:{}, client_secret:s", "i".repeat(MAX_ID_LEN + 1));
        let max_id = format!("client_id:{}, client_secret:s", "i".repeat(MAX_ID_LEN));
        let long_secret = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("cid:{}", "s".repeat(MAX_TOKEN_BYTES + 1)))
        );
        let too_long = || e(StatusCode::BAD_REQUEST, TOKEN_TOO_LONG);
        let deep = format!(
            "{{\"access_token\":{}1{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("cid:csecret")
        );
        let basic_nopad = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode("cid:csecret")
        );
        #[allow(clippy::type_complexity)]
        #[rustfmt::skip]
        let cases: Vec<(&OneLogin, Method, Vec<&[u8]>, Vec<&[u8]>, &[u8], Result<String, (StatusCode, String)>)> = vec![
            // success, documented header and the SDK's shapes
            (&open, Method::POST, vec![JSON], vec![PAIR], body, ok("tok")),
            (&checked, Method::POST, vec![JSON], vec![PAIR], body, ok("tok")),
            (&checked, Method::POST, vec![JSON], vec![b"client_id:other, client_secret:s2"], body, ok("tok")),
            (&checked, Method::POST, vec![JSON], vec![b"client_id:cid,client_secret:csecret"], body, ok("tok")),
            (&checked, Method::POST, vec![JSON], vec![b"  Client_ID : cid ,\tCLIENT_SECRET:  csecret  "], body, ok("tok")),
            (&checked, Method::POST, vec![JSON], vec![basic.as_bytes()], body, ok("tok")),
            (&checked, Method::POST, vec![JSON], vec![basic_nopad.as_bytes()], body, ok("tok")),
            (&open, Method::POST, vec![b"application/json; charset=utf-8"], vec![PAIR], body, ok("tok")),
            (&open, Method::POST, vec![b"APPLICATION/JSON;charset=UTF-8"], vec![PAIR], body, ok("tok")),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access_token": "xx508 +/=", "other": [1, {"a": null}]}"#, ok("xx508 +/=")),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#" {"access_token":"\u00fc\n"} "#, ok("ü\n")),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access\u005ftoken":"t"}"#, ok("t")),
            (&open, Method::POST, vec![JSON], vec![PAIR], max_body.as_bytes(), Ok(max_token.clone())),
            (&open, Method::POST, vec![JSON], vec![max_id.as_bytes()], body, ok("tok")),
            // length limits
            (&open, Method::POST, vec![JSON], vec![PAIR], huge_body.as_bytes(), too_long()),
            (&open, Method::POST, vec![JSON], vec![PAIR], escaped_over.as_bytes(), too_long()),
            (&open, Method::POST, vec![JSON], vec![long_id.as_bytes()], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![long_secret.as_bytes()], body, noauth()),
            // method
            (&open, Method::GET, vec![JSON], vec![PAIR], body, no_route()),
            (&open, Method::PUT, vec![], vec![], b"", no_route()),
            (&open, Method::DELETE, vec![JSON], vec![PAIR], body, no_route()),
            // content type
            (&open, Method::POST, vec![], vec![PAIR], body, ct()),
            (&open, Method::POST, vec![b"text/plain"], vec![PAIR], body, ct()),
            (&open, Method::POST, vec![b"application/x-www-form-urlencoded"], vec![PAIR], body, ct()),
            (&open, Method::POST, vec![b"application/json-patch+json"], vec![PAIR], body, ct()),
            (&open, Method::POST, vec![b""], vec![PAIR], body, ct()),
            (&open, Method::POST, vec![JSON, JSON], vec![PAIR], body, ct()),
            (&open, Method::POST, vec![b"application/json\xff"], vec![PAIR], body, ct()),
            // authorization format
            (&open, Method::POST, vec![JSON], vec![], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b""], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b"Bearer tok"], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b"bearer:tok"], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b"client_id:cid"], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b"client_id:, client_secret:s"], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b"client_id:c, client_secret:"], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b"client_id c, client_secret s"], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b"client_secret:s, client_id:c"], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b"client_id:a b, client_secret:s"], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b"client_id:c, client_secret:s t"], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b"client_idx:c, client_secret:s"], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b"client_id:c, client_secret:s\xff"], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![PAIR, PAIR], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b"Basic !!!"], body, noauth()),
            (&open, Method::POST, vec![JSON], vec![b"Basic Y2lk"], body, noauth()), // "cid", no colon
            (&open, Method::POST, vec![JSON], vec![b"Basic OnM="], body, noauth()), // ":s"
            (&open, Method::POST, vec![JSON], vec![b"Basic Yzo="], body, noauth()), // "c:"
            // authorization failure, before the body is looked at
            (&checked, Method::POST, vec![JSON], vec![b"client_id:cid, client_secret:wrong"], body, fail()),
            (&checked, Method::POST, vec![JSON], vec![b"client_id:other, client_secret:csecret"], body, fail()),
            (&checked, Method::POST, vec![JSON], vec![b"client_id:CID, client_secret:csecret"], body, fail()),
            (&checked, Method::POST, vec![JSON], vec![b"client_id:cid, client_secret:wrong"], b"", fail()),
            (&checked, Method::POST, vec![JSON], vec![b"Basic Y2lkOndyb25n"], body, fail()), // cid:wrong
            // the body
            (&open, Method::POST, vec![JSON], vec![PAIR], b"", missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], b"{}", missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], b"null", missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], b"[]", missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#""tok""#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], b"{", missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access_token":"tok"} x"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access_token":"tok",}"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access_token":""}"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access_token":null}"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access_token":123}"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access_token":["tok"]}"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access_token":{"a":"tok"}}"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access_token":true}"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"Access_Token":"tok"}"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"token":"tok"}"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access_token":"a","access_token":"b"}"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access_token":"a","access_token":"a"}"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access_token":1,"access_token":"a"}"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], b"{\"access_token\":\"\xff\xfe\"}", missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], br#"{"access_token":"\ud800"}"#, missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], b"access_token=tok", missing()),
            (&open, Method::POST, vec![JSON], vec![PAIR], deep.as_bytes(), missing()),
        ];
        for (i, (d, method, ct, auth, body, want)) in cases.into_iter().enumerate() {
            let got = run(d, method, &ct, &auth, body);
            let short = |r: &Result<String, (StatusCode, String)>| match r {
                Ok(t) => Ok(t.len().min(40)),
                Err(x) => Err(x.clone()),
            };
            assert_eq!(got, want, "case {i}: {:?}", short(&want));
        }
    }

    #[test]
    fn errors_never_echo_the_token() {
        let d = OneLogin::new(vec![("cid".into(), "csecret".into())]);
        let body = br#"{"access_token":"SECRET-TOKEN","access_token":"SECRET-TOKEN"}"#;
        for auth in [
            &b"client_id:cid, client_secret:csecret"[..],
            b"client_id:SECRET-TOKEN, client_secret:x",
        ] {
            let r = run(&d, Method::POST, &[JSON], &[auth], body).unwrap_err();
            assert!(!r.1.contains("SECRET"));
        }
    }
}
