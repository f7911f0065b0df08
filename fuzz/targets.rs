//! The bodies of the fuzz targets, one `pub fn NAME(data: &[u8])` per target
//! in `fuzz_targets/NAME.rs`. This file is the fuzz crate's library and is
//! also included by `tests/fuzz_corpus.rs` (`#[path]`), which replays every
//! committed corpus file through the same function on the stable toolchain.
//!
//! Each body calls the crate's real parsers and then checks properties that
//! must hold whatever the input (not only "no panic"): a chunk scan gives the
//! same answer however the bytes are split, a forwarded head parses back as
//! one whole HTTP head, the two `Headers` views of a request find the same
//! credential, a JWS is one token whatever its signature, a replayed journal
//! replays the same way a second time, a decoded snapshot round-trips.
//!
//! Inputs are raw bytes; where a checksum or an encoding would stop the
//! fuzzer at the door (journal CRCs, snapshot digests, base64url JWT
//! segments), a mode bit in the first byte makes the target build that
//! framing itself so that the decoder behind it is reached.
//!
//! To add: a target for the JWT verifier (`src/identity/verify.rs`, being
//! written on another branch) once it is merged; add it to [`TARGETS`], to
//! `fuzz_targets/`, and a replay test in `tests/fuzz_corpus.rs`.

#![allow(clippy::missing_panics_doc)]

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use revgate::credentials::{
    self, ClaimNames, CredentialSource, CredentialSources, FingerprintKey, TokenIdentity,
};
use revgate::dialect::{self, DialectKind, DialectSecrets, RevokeCall, RevokeIntent};
use revgate::h1::framing::{content_length, is_chunked, tokens, BadChunk, Chunks, Framing};
use revgate::store::redis::snapshot;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by name: what `tests/fuzz_corpus.rs` replays.
pub const TARGETS: &[(&str, Target)] = &[
    ("h1_chunks", h1_chunks),
    ("h1_request", h1_request),
    ("h1_response", h1_response),
    ("credentials", credentials),
    ("jwt_peek", jwt_peek),
    ("dialects", dialects),
    ("form_values", form_values),
    ("journal", journal),
    ("redis_snapshot", redis_snapshot),
    ("config", config),
];

/// The most header fields read, as on the fast path.
const MAX_HEADERS: usize = revgate::h1::MAX_HEADERS;

// === HTTP/1 framing ===

/// Feeds `input` to a request body's framing `split` bytes at a time, as
/// the relay does; returns what is sent on, the bytes consumed, and whether
/// the body ended (`Err` at a malformed chunk).
fn relay_request(
    mut framing: Framing,
    input: &[u8],
    split: usize,
) -> Result<(Vec<u8>, usize, bool), BadChunk> {
    let mut sent = Vec::new();
    let mut at = 0;
    while !framing.is_done() && at < input.len() {
        let end = (at + split).min(input.len());
        let piece = &input[at..end];
        let t = framing.take_request(piece)?;
        assert!(t.keep <= t.consumed && t.consumed <= piece.len(), "{t:?}");
        sent.extend_from_slice(&piece[..t.keep]);
        sent.extend_from_slice(t.end);
        at += t.consumed;
        if t.consumed < piece.len() {
            assert!(framing.is_done(), "stopped early without ending the body");
        }
    }
    Ok((sent, at, framing.is_done()))
}

/// Chunks::scan over the whole input at once.
fn scan_whole(input: &[u8]) -> Result<(usize, bool), BadChunk> {
    let mut c = Chunks::default();
    let n = c.scan(input)?;
    assert!(n <= input.len());
    assert!(
        n == input.len() || c.is_done(),
        "stopped early without ending"
    );
    Ok((n, c.is_done()))
}

/// Chunks::scan over `input` cut into pieces of `split` bytes.
fn scan_split(input: &[u8], split: usize) -> Result<(usize, bool), BadChunk> {
    let mut c = Chunks::default();
    let mut at = 0;
    while at < input.len() && !c.is_done() {
        let end = (at + split).min(input.len());
        at += c.scan(&input[at..end])?;
    }
    Ok((at, c.is_done()))
}

/// The chunk scanner and the request-body framing (trailers dropped): the
/// same result however the bytes arrive; what is sent on never holds a
/// trailer field and, when the body ended, is itself a complete chunked body.
pub fn h1_chunks(data: &[u8]) {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let split = usize::from(split % 32) + 1;
    let whole = scan_whole(input);
    assert_eq!(whole, scan_split(input, split), "split {split}");
    assert_eq!(whole, scan_split(input, 1), "byte by byte");

    let relayed = relay_request(
        Framing::Chunked(Chunks::default()),
        input,
        input.len().max(1),
    );
    let relayed_split = relay_request(Framing::Chunked(Chunks::default()), input, split);
    assert_eq!(relayed, relayed_split, "split {split}");
    assert_eq!(
        relayed.as_ref().map(|r| (r.1, r.2)).map_err(|e| *e),
        whole,
        "take_request and scan disagree"
    );
    if let Ok((sent, _, true)) = &relayed {
        // What goes on is a whole chunked body without trailers.
        assert_eq!(scan_whole(sent), Ok((sent.len(), true)));
        assert!(sent.ends_with(b"0\r\n\r\n") || sent.ends_with(b"\r\n\r\n"));
        let mut again = Chunks::default();
        again.scan(sent).expect("sent body rescans");
        let resent = relay_request(Framing::Chunked(Chunks::default()), sent, sent.len())
            .expect("sent body relays");
        assert_eq!(&resent.0, sent, "a trailer survived the first relay");
    }

    // A Content-Length body takes exactly its length.
    if let Some(n) = content_length(input) {
        let mut f = Framing::Length(n);
        let taken = f.take(input).expect("length framing never fails");
        assert_eq!(taken as u64, n.min(input.len() as u64));
    }
    let _ = is_chunked(input);
    for t in tokens(input) {
        assert!(!t.is_empty());
    }
}

/// A gateway built once, without listeners, for planning requests: a
/// default route, a host route with a base path, an `https://` route (handed
/// to hyper), every revoke endpoint, an API-key header, and one revoked
/// token (`revoked-token`) so that every verdict is reachable.
fn gateway() -> &'static (tokio::runtime::Runtime, Arc<revgate::proxy::Gateway>) {
    static GATEWAY: OnceLock<(tokio::runtime::Runtime, Arc<revgate::proxy::Gateway>)> =
        OnceLock::new();
    GATEWAY.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = std::env::temp_dir().join(format!("revgate-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let journal = dir.join("gateway.journal");
        let _ = std::fs::remove_file(&journal);
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:9"
[tokens]
api_key_headers = ["x-api-key"]
[store]
url = "memory"
journal = {journal:?}
bloom_capacity = 1000
[log]
access_log = true
[[routes]]
host = "api.example"
upstream = "http://127.0.0.1:9/base"
[[routes]]
path_prefix = "/secure/"
upstream = "https://127.0.0.1:9"
"#
        );
        let settings = revgate::config::Config::from_toml(&toml)
            .and_then(|c| c.validate())
            .expect("fuzz gateway config");
        let key = FingerprintKey::from_bytes([7; 32]);
        let gw = rt.block_on(async {
            use revgate::store::RevocationStore;
            let store: Arc<dyn RevocationStore> = Arc::new(
                revgate::store::memory::MemoryStore::open(&journal, 1000, 0.01)
                    .expect("store")
                    .0,
            );
            store
                .apply(revgate::store::RevocationCommand::Token(
                    revgate::store::TokenRule {
                        fingerprint: key.token_fingerprint("revoked-token"),
                        expires_at: u64::MAX / 2,
                    },
                ))
                .await
                .expect("revoke");
            revgate::build(
                settings,
                store,
                key,
                tokio_util::sync::CancellationToken::new(),
            )
            .expect("gateway")
        });
        (rt, gw)
    })
}

/// The fast path's request head: httparse with the fast path's settings,
/// then the real planning stage (route, revoke endpoint, verdict, upstream
/// head). A forwarded head parses back as exactly one whole request head
/// with one `Host`; the body framing then takes the rest of the input as
/// the relay would.
pub fn h1_request(data: &[u8]) {
    let (rt, gw) = gateway();
    let Some((decision, out, framing, head_len)) =
        rt.block_on(revgate::h1::plan_for_fuzzing(gw, data))
    else {
        return;
    };
    assert!(head_len <= data.len());
    if decision == "forward" {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
        let mut req = httparse::Request::new(&mut fields);
        match req.parse(&out) {
            Ok(httparse::Status::Complete(n)) => assert_eq!(n, out.len(), "{out:?}"),
            other => panic!("forwarded head does not parse: {other:?} {out:?}"),
        }
        let hosts = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("host"))
            .count();
        assert_eq!(hosts, 1, "{out:?}");
        for h in req.headers.iter() {
            for banned in ["te", "upgrade", "proxy-connection", "keep-alive"] {
                assert!(!h.name.eq_ignore_ascii_case(banned), "{out:?}");
            }
        }
    }
    let _ = relay_request(framing, &data[head_len..], 7);
}

/// An upstream response head: httparse, framing inspection, and the
/// client's head rewritten from it (which must parse back as one whole
/// response head); the body framing then takes the rest.
pub fn h1_response(data: &[u8]) {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let head_request = flags & 1 != 0;
    let close_client = flags & 2 != 0;
    let Some(result) = revgate::h1::response_head_for_fuzzing(input, head_request, close_client)
    else {
        return;
    };
    let Ok((_status, mut framing, reusable, out, head_len)) = result else {
        return;
    };
    assert!(head_len <= input.len());
    if reusable {
        assert!(!matches!(framing, Framing::UntilClose));
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS + 8];
    let mut resp = httparse::Response::new(&mut fields);
    match resp.parse(&out) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, out.len(), "{out:?}"),
        other => panic!("client head does not parse: {other:?} {out:?}"),
    }
    let body = &input[head_len..];
    if let Ok(n) = framing.take(body) {
        assert!(n <= body.len());
    }
}

// === Credentials ===

/// A request as httparse reads it: method, target, fields, and the rest.
struct ParsedRequest<'b> {
    method: &'b str,
    path: &'b str,
    query: Option<&'b str>,
    fields: Vec<httparse::Header<'b>>,
    body: &'b [u8],
}

fn parse_request(data: &[u8]) -> Option<ParsedRequest<'_>> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let n = match req.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let target = req.path?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    Some(ParsedRequest {
        method: req.method?,
        path,
        query,
        fields: req.headers.to_vec(),
        body: &data[n..],
    })
}

/// The same fields as a `HeaderMap`, as hyper builds it; `None` when a
/// field would not make it into one (hyper refuses such a request).
fn header_map(fields: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for f in fields {
        map.append(
            HeaderName::from_bytes(f.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(f.value).ok()?,
        );
    }
    Some(map)
}

/// What a credential search found, comparable across the two views.
fn found(
    r: Result<Option<credentials::Credential<'_>>, credentials::CredentialError>,
) -> Result<Option<(String, CredentialSource, Option<String>)>, credentials::CredentialError> {
    r.map(|c| {
        c.map(|c| {
            (
                c.token().to_owned(),
                c.source.clone(),
                c.extra().map(str::to_owned),
            )
        })
    })
}

/// The credential extractor over httparse fields and over a `HeaderMap` of
/// the same request (query and form body included): both find the same
/// credential, and any token found is non-empty visible ASCII. Then the
/// token's identity and fingerprint, and the query and body read as
/// `access_token` parameters on their own.
pub fn credentials(data: &[u8]) {
    let Some(req) = parse_request(data) else {
        // Still worth reading as a parameter string and a token.
        let _ = credentials::param_access_token(data);
        if let Ok(s) = std::str::from_utf8(data) {
            let _ = credentials::token_identity(s);
        }
        return;
    };
    let sources = CredentialSources {
        query_param: !req.path.starts_with("/noquery"),
        api_key_headers: vec![
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("api-key"),
        ],
    };
    let fields: &[httparse::Header<'_>] = &req.fields;
    let form = credentials::is_form(fields).then_some(req.body);
    let raw = found(credentials::extract(fields, req.query, form, &sources));
    if let Some(map) = header_map(fields) {
        assert_eq!(credentials::is_form(&map), form.is_some());
        let mapped = found(credentials::extract(&map, req.query, form, &sources));
        assert_eq!(raw, mapped, "the two header views disagree");
    }
    if let Ok(Some((token, _, extra))) = &raw {
        for t in std::iter::once(token).chain(extra) {
            assert!(
                !t.is_empty() && t.bytes().all(|b| (0x21..=0x7e).contains(&b)),
                "a token that is not visible ASCII: {t:?}"
            );
            let key = FingerprintKey::from_bytes([1; 32]);
            assert_eq!(key.token_fingerprint(t), key.token_fingerprint(t));
            let _ = credentials::token_identity(t);
            let names = ClaimNames::default();
            let _ = credentials::attributes(
                t,
                fields,
                &revgate::credentials::AttributeSources {
                    claims: names,
                    identity_headers: credentials::IdentityHeaders {
                        sub: Some(HeaderName::from_static("x-user")),
                        org: Some(HeaderName::from_static("x-org")),
                        provider: None,
                        iat: Some(HeaderName::from_static("x-iat")),
                    },
                },
            );
        }
    }
    if let Some(q) = req.query {
        let _ = credentials::param_access_token(q.as_bytes());
    }
    let _ = credentials::param_access_token(req.body);
}

// === JWT peek ===

/// Builds a compact JWS from `data`: header JSON, payload JSON and
/// signature bytes separated by NUL, each base64url-encoded (unpadded).
fn jws_from_parts(data: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = data.splitn(3, |&b| b == 0);
    let header = parts.next().unwrap_or_default();
    let payload = parts.next().unwrap_or_default();
    let sig = parts.next().unwrap_or_default();
    format!(
        "{}.{}.{}",
        b64.encode(header),
        b64.encode(payload),
        b64.encode(sig)
    )
}

/// The JWT claim peek and token identity: a token whose claims can be
/// peeked is a JWS; a JWS is named by its signing input, so the same token
/// with any other signature has the same identity and the same fingerprint.
pub fn jwt_peek(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode & 1 == 1 {
        jws_from_parts(rest)
    } else {
        String::from_utf8_lossy(rest).into_owned()
    };
    let names = ClaimNames::default();
    let peeked = credentials::peek_jwt(&token, &names);
    let identity = credentials::token_identity(&token);
    if peeked.is_some() {
        assert!(matches!(identity, TokenIdentity::Jws(_)), "{token:?}");
    }
    let key = FingerprintKey::from_bytes([2; 32]);
    match identity {
        TokenIdentity::Jws(signing_input) => {
            assert!(token.starts_with(signing_input));
            assert_eq!(token.as_bytes().get(signing_input.len()), Some(&b'.'));
            let resigned = format!("{signing_input}.c2lnbmF0dXJl");
            assert_eq!(
                credentials::token_identity(&resigned),
                TokenIdentity::Jws(signing_input)
            );
            assert_eq!(
                key.token_fingerprint(&token),
                key.token_fingerprint(&resigned)
            );
            assert_eq!(credentials::peek_jwt(&resigned, &names), peeked);
        }
        TokenIdentity::Opaque(t) => assert_eq!(t, token),
    }
    let _ = key.token_fingerprint(&token);
}

// === Dialects ===

/// Every dialect's `parse` over a call built from an HTTP request (method,
/// query, headers as hyper builds them, body), with and without configured
/// secrets. A token intent names a non-empty token; an error is the
/// vendor's response, whose body is empty or JSON.
pub fn dialects(data: &[u8]) {
    let Some(req) = parse_request(data) else {
        return;
    };
    let Ok(method) = Method::from_bytes(req.method.as_bytes()) else {
        return;
    };
    let Some(headers) = header_map(&req.fields) else {
        return;
    };
    let call = RevokeCall {
        method: &method,
        query: req.query,
        headers: &headers,
        body: req.body,
    };
    let secrets = [
        DialectSecrets::default(),
        DialectSecrets {
            nylas_api_keys: vec!["nyk_key".into()],
            onelogin_clients: vec![("client".into(), "secret".into())],
        },
    ];
    for secrets in &secrets {
        for kind in DialectKind::ALL {
            let d = dialect::build(kind, secrets);
            match d.parse(&call) {
                Ok(RevokeIntent::Token(t)) => assert!(!t.is_empty(), "{kind:?}"),
                Ok(RevokeIntent::Scope { provider, .. }) => {
                    assert!(!provider.is_empty(), "{kind:?}")
                }
                Err(resp) => {
                    if !resp.body.is_empty() {
                        serde_json::from_slice::<serde_json::Value>(&resp.body)
                            .unwrap_or_else(|e| panic!("{kind:?}: error body not JSON: {e}"));
                    }
                }
            }
        }
    }
}

/// The dialects' query and form decoder (and the single-token and FastAPI
/// readings built on it). Without `%` or `+` in the input, every value is
/// taken verbatim from it.
pub fn form_values(data: &[u8]) {
    const NAMES: [&str; 6] = [
        "token",
        "access_token",
        "provider_id",
        "provider",
        "org_id",
        "token_type_hint",
    ];
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(which) % NAMES.len()];
    let values = dialect::form_values_for_fuzzing(input, name);
    assert!(values.len() <= input.iter().filter(|&&b| b == b'&').count() + 1);
    if !input.contains(&b'%') && !input.contains(&b'+') {
        for (bytes, malformed) in &values {
            assert!(!malformed);
            assert!(
                bytes.is_empty() || input.windows(bytes.len()).any(|w| w == bytes.as_slice()),
                "a value not in the input"
            );
        }
    }
}

// === Stores ===

/// A fresh file path for one input (inputs may be replayed concurrently).
fn scratch_path(what: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("revgate-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(format!("{what}-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// Journal replay through its public entry point (`Journal::open` on a file
/// holding the input): the replayed count is what the report says, the cut
/// tail is within the file, and reopening replays the same commands with
/// nothing left to cut. Mode bit 1 frames the input's `\n`-separated lines
/// as records (length and CRC computed here) so that the record decoder is
/// reached; otherwise the file is the raw input.
pub fn journal(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 {
        let mut out = Vec::with_capacity(rest.len() + 64);
        for line in rest.split(|&b| b == b'\n') {
            out.extend_from_slice(&(line.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(line).to_le_bytes());
            out.extend_from_slice(line);
        }
        out
    } else {
        rest.to_vec()
    };
    let path = scratch_path("journal");
    std::fs::write(&path, &bytes).expect("write journal");
    let (j, first, report) = revgate::store::journal::Journal::open(&path).expect("open journal");
    drop(j);
    assert_eq!(report.records, first.len() as u64);
    assert!(report.torn_bytes <= bytes.len() as u64);
    let (j, second, again) = revgate::store::journal::Journal::open(&path).expect("reopen");
    drop(j);
    assert_eq!(again.torn_bytes, 0, "the tail was not cut the first time");
    assert_eq!(first, second, "a second replay differs");
    let _ = std::fs::remove_file(&path);
}

/// The Redis snapshot decoder, as a starting instance uses it: the header
/// checked against the value's length before a filter is allocated, the
/// value decoded and its words merged. A decoded snapshot re-encodes to one
/// that decodes the same. Mode bit 1 makes the input's header consistent
/// (magic, version, sizes that fit, checksum) so that the body is reached.
pub fn redis_snapshot(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut value = rest.to_vec();
    if mode & 1 == 1 && value.len() >= snapshot::HEADER_LEN + 8 {
        let body = (value.len() - snapshot::HEADER_LEN) as u64;
        let words = (u64::from(value[52]) % (body / 8)) + 1;
        value[..6].copy_from_slice(b"RGSNAP");
        value[6..8].copy_from_slice(&1u16.to_le_bytes());
        value[24..32].copy_from_slice(&(words * 64).to_le_bytes());
        let hashes = u32::from(value[32]) % 30 + 1;
        value[32..36].copy_from_slice(&hashes.to_le_bytes());
        value[52..60].copy_from_slice(&words.to_le_bytes());
        value[60..68].copy_from_slice(&(body - words * 8).to_le_bytes());
        let sum = blake3::hash(&value[snapshot::HEADER_LEN..]);
        value[68..84].copy_from_slice(&sum.as_bytes()[..16]);
    }
    let head = &value[..value.len().min(snapshot::HEADER_LEN)];
    let Some(h) = snapshot::Header::parse(head).filter(|h| h.total_len() == value.len() as u64)
    else {
        assert!(snapshot::decode(&value).is_none());
        return;
    };
    let Some(bloom) =
        revgate::store::cache::AtomicBloom::with_shape(h.bits, h.hashes, h.capacity as usize)
    else {
        return;
    };
    let Some(snap) = snapshot::decode(&value).filter(|s| s.header == h) else {
        return;
    };
    assert!(
        bloom.merge_words_le(snap.words_le),
        "words do not fit the header"
    );
    let key = FingerprintKey::from_bytes([3; 32]);
    let _ = bloom.may_contain(&key.token_fingerprint("t"));
    let again = snapshot::encode(h.at, &bloom, h.token_rules, &snap.scopes);
    let back = snapshot::decode(&again).expect("a re-encoded snapshot decodes");
    assert_eq!(back.words_le, snap.words_le);
    assert_eq!(back.scopes, snap.scopes);
    assert_eq!(
        (back.header.at, back.header.token_rules),
        (h.at, h.token_rules)
    );
}

// === Config ===

/// Config parsing from a TOML string through validation.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = revgate::config::Config::from_toml(text) else {
        return;
    };
    let _ = config.validate();
}
