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
//! replays the same way a second time, a decoded snapshot round-trips, a JWT
//! the verifier accepts is signed by a key of the set and meets the policy.
//!
//! Inputs are raw bytes; where a checksum or an encoding would stop the
//! fuzzer at the door (journal CRCs, snapshot digests, base64url JWT
//! segments), a mode bit in the first byte makes the target build that
//! framing itself so that the decoder behind it is reached.
//!
//! The JWT verifier's target (`jwt_verify`) signs tokens itself, with ring
//! keys built once, so that claim checks are reached; what it accepts is
//! checked without the verifier (ring verifies the signature, the claims are
//! compared with the policy here).
//!
//! To add a target `NAME`: a `pub fn NAME(data: &[u8])` here (document the
//! properties it checks and any mode bits), an entry in [`TARGETS`],
//! `fuzz_targets/NAME.rs` (a copy of another one), a `[[bin]]` in
//! `fuzz/Cargo.toml`, a `fn NAME()` replay test in `tests/fuzz_corpus.rs`
//! (`every_target_has_a_replay_test_and_a_corpus` fails without it), a few
//! seed files in `corpus/NAME/`, then `fuzz/run.sh 600 NAME`,
//! `cargo +nightly fuzz cmin NAME`, and a row in BENCHMARKS.md. A crate the
//! body needs goes in `fuzz/Cargo.toml` and must also be a (dev-)dependency
//! of the main crate, since the replay test compiles this file there.

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
    ("jwt_verify", jwt_verify),
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

// === JWT verifier ===

/// One signer the `jwt_verify` target signs with: a ring key pair, the alg
/// it signs under, and the `kid` it puts in a header.
struct Signer {
    kid: &'static str,
    alg: jsonwebtoken::Algorithm,
    key: SigningKey,
}

enum SigningKey {
    Rsa(ring::signature::RsaKeyPair),
    Ecdsa(ring::signature::EcdsaKeyPair),
    Ed25519(ring::signature::Ed25519KeyPair),
}

/// One key of the fixed set as the target knows it (independently of the
/// verifier): its `kid`, the algs it may verify, and its public key.
struct PublicKey {
    kid: &'static str,
    algs: &'static [jsonwebtoken::Algorithm],
    public: Vec<u8>,
    /// `(n, e)` for RSA keys.
    rsa: Option<(Vec<u8>, Vec<u8>)>,
}

/// What `jwt_verify` builds once: the signers, the public keys of the set,
/// the set itself and a [`revgate::identity::Verifier`] over it (file
/// source), the policy, tokens signed by every signer with good claims, and
/// a runtime to drive the (async) verifier.
struct JwtWorld {
    signers: Vec<Signer>,
    /// The index in `signers` of the signer whose key is not in the set.
    stranger: usize,
    public: Vec<PublicKey>,
    keys: Arc<revgate::identity::KeySet>,
    verifier: revgate::identity::Verifier,
    policy: revgate::identity::Policy,
    /// `(token, alg, kid, index of the signer)`.
    good_tokens: Vec<(String, jsonwebtoken::Algorithm, Option<&'static str>, usize)>,
    rt: tokio::runtime::Runtime,
}

const JWT_ISS: &str = "https://idp.fuzz/";
const JWT_AUD: &str = "revgate-fuzz";

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn rsa_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM body")
}

impl Signer {
    /// The JWS signature of `input` (the fixed-length forms JWS uses).
    fn sign(&self, input: &[u8]) -> Vec<u8> {
        use jsonwebtoken::Algorithm as A;
        let rng = ring::rand::SystemRandom::new();
        match &self.key {
            SigningKey::Rsa(pair) => {
                let pad: &'static dyn ring::signature::RsaEncoding = match self.alg {
                    A::RS256 => &ring::signature::RSA_PKCS1_SHA256,
                    A::RS384 => &ring::signature::RSA_PKCS1_SHA384,
                    A::RS512 => &ring::signature::RSA_PKCS1_SHA512,
                    A::PS256 => &ring::signature::RSA_PSS_SHA256,
                    A::PS384 => &ring::signature::RSA_PSS_SHA384,
                    _ => &ring::signature::RSA_PSS_SHA512,
                };
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(pad, &rng, input, &mut sig).expect("RSA sign");
                sig
            }
            SigningKey::Ecdsa(pair) => pair
                .sign(&rng, input)
                .expect("ECDSA sign")
                .as_ref()
                .to_vec(),
            SigningKey::Ed25519(pair) => pair.sign(input).as_ref().to_vec(),
        }
    }
}

impl Signer {
    /// Whether this JWK holds this signer's public key (RSA components
    /// compared without leading zero bytes).
    fn is_key_of(&self, jwk: &serde_json::Value) -> bool {
        use ring::signature::KeyPair as _;
        let bytes = |name: &str| {
            jwk.get(name)
                .and_then(serde_json::Value::as_str)
                .and_then(|s| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(s)
                        .ok()
                })
        };
        let strip = |b: Vec<u8>| b.into_iter().skip_while(|&x| x == 0).collect::<Vec<u8>>();
        match &self.key {
            SigningKey::Rsa(pair) => {
                let c: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
                jwk["kty"] == "RSA"
                    && bytes("n").map(strip) == Some(c.n)
                    && bytes("e").map(strip) == Some(c.e)
            }
            SigningKey::Ecdsa(pair) => {
                let (Some(x), Some(y)) = (bytes("x"), bytes("y")) else {
                    return false;
                };
                jwk["kty"] == "EC" && [&[4u8][..], &x, &y].concat() == pair.public_key().as_ref()
            }
            SigningKey::Ed25519(pair) => {
                jwk["kty"] == "OKP" && bytes("x").as_deref() == Some(pair.public_key().as_ref())
            }
        }
    }
}

impl PublicKey {
    /// Whether `sig` is `alg`'s signature of `input` under this key, checked
    /// with ring directly (not through the verifier under test).
    fn verifies(&self, alg: jsonwebtoken::Algorithm, input: &[u8], sig: &[u8]) -> bool {
        use jsonwebtoken::Algorithm as A;
        use ring::signature as s;
        if !self.algs.contains(&alg) {
            return false;
        }
        if let Some((n, e)) = &self.rsa {
            let params: &s::RsaParameters = match alg {
                A::RS256 => &s::RSA_PKCS1_2048_8192_SHA256,
                A::RS384 => &s::RSA_PKCS1_2048_8192_SHA384,
                A::RS512 => &s::RSA_PKCS1_2048_8192_SHA512,
                A::PS256 => &s::RSA_PSS_2048_8192_SHA256,
                A::PS384 => &s::RSA_PSS_2048_8192_SHA384,
                A::PS512 => &s::RSA_PSS_2048_8192_SHA512,
                _ => return false,
            };
            return s::RsaPublicKeyComponents { n, e }
                .verify(params, input, sig)
                .is_ok();
        }
        let params: &dyn s::VerificationAlgorithm = match alg {
            A::ES256 => &s::ECDSA_P256_SHA256_FIXED,
            A::ES384 => &s::ECDSA_P384_SHA384_FIXED,
            A::EdDSA => &s::ED25519,
            _ => return false,
        };
        s::UnparsedPublicKey::new(params, &self.public)
            .verify(input, sig)
            .is_ok()
    }
}

fn jwt_world() -> &'static JwtWorld {
    use jsonwebtoken::Algorithm as A;
    use ring::signature::{self as s, KeyPair as _};
    static WORLD: OnceLock<JwtWorld> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        let rsa = |pem: &str| {
            let pair = s::RsaKeyPair::from_der(&rsa_der(pem)).expect("RSA key");
            let c: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
            (pair, c.n, c.e)
        };
        let ecdsa = |alg: &'static s::EcdsaSigningAlgorithm| {
            let pkcs8 = s::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("EC key");
            s::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("EC key")
        };
        // RSA and Ed25519 keys are fixed (a JWKS seed in the corpus can hold
        // them); ECDSA keys are generated per run.
        let (rsa_a, a_n, a_e) = rsa(include_str!("../tests/data/jwt_rsa_a.pem"));
        let (rsa_a2, _, _) = rsa(include_str!("../tests/data/jwt_rsa_a.pem"));
        let (rsa_a3, _, _) = rsa(include_str!("../tests/data/jwt_rsa_a.pem"));
        let (rsa_b, b_n, b_e) = rsa(include_str!("../tests/data/jwt_rsa_b.pem"));
        let (rsa_b2, _, _) = rsa(include_str!("../tests/data/jwt_rsa_b.pem"));
        let p256 = ecdsa(&s::ECDSA_P256_SHA256_FIXED_SIGNING);
        let p384 = ecdsa(&s::ECDSA_P384_SHA384_FIXED_SIGNING);
        let stranger = ecdsa(&s::ECDSA_P256_SHA256_FIXED_SIGNING);
        let ed = s::Ed25519KeyPair::from_seed_unchecked(&[0x5e; 32]).expect("Ed25519 key");

        let p256_pub = p256.public_key().as_ref().to_vec();
        let p384_pub = p384.public_key().as_ref().to_vec();
        let ed_pub = ed.public_key().as_ref().to_vec();
        const RSA_ALGS: &[A] = &[A::RS256, A::RS384, A::RS512, A::PS256, A::PS384, A::PS512];
        let public = vec![
            PublicKey { kid: "rs256", algs: &[A::RS256], public: vec![], rsa: Some((a_n.clone(), a_e.clone())) },
            PublicKey { kid: "rsa", algs: RSA_ALGS, public: vec![], rsa: Some((b_n.clone(), b_e.clone())) },
            PublicKey { kid: "es256", algs: &[A::ES256], public: p256_pub.clone(), rsa: None },
            PublicKey { kid: "es384", algs: &[A::ES384], public: p384_pub.clone(), rsa: None },
            PublicKey { kid: "ed", algs: &[A::EdDSA], public: ed_pub.clone(), rsa: None },
        ];
        let jwks = serde_json::json!({"keys": [
            {"kty":"RSA","kid":"rs256","alg":"RS256","use":"sig","n":b64url(&a_n),"e":b64url(&a_e)},
            {"kty":"RSA","kid":"rsa","n":b64url(&b_n),"e":b64url(&b_e)},
            {"kty":"EC","crv":"P-256","kid":"es256","x":b64url(&p256_pub[1..33]),"y":b64url(&p256_pub[33..])},
            {"kty":"EC","crv":"P-384","kid":"es384","alg":"ES384","key_ops":["verify"],
             "x":b64url(&p384_pub[1..49]),"y":b64url(&p384_pub[49..])},
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":b64url(&ed_pub)},
            {"kty":"RSA","kid":"enc","use":"enc","n":b64url(&a_n),"e":b64url(&a_e)},
            {"kty":"oct","kid":"hs","k":"c2VjcmV0"},
        ]});
        let keys = Arc::new(
            revgate::identity::KeySet::parse(jwks.to_string().as_bytes()).expect("fixed JWKS"),
        );
        assert_eq!(keys.len(), public.len());
        let signers = vec![
            Signer { kid: "rs256", alg: A::RS256, key: SigningKey::Rsa(rsa_a) },
            Signer { kid: "rs256", alg: A::PS256, key: SigningKey::Rsa(rsa_a2) },
            Signer { kid: "rsa", alg: A::RS512, key: SigningKey::Rsa(rsa_b) },
            Signer { kid: "es256", alg: A::ES256, key: SigningKey::Ecdsa(p256) },
            Signer { kid: "es384", alg: A::ES384, key: SigningKey::Ecdsa(p384) },
            Signer { kid: "ed", alg: A::EdDSA, key: SigningKey::Ed25519(ed) },
            // Not in the set, under the kid of a key that is.
            Signer { kid: "es256", alg: A::ES256, key: SigningKey::Ecdsa(stranger) },
            Signer { kid: "rsa", alg: A::PS384, key: SigningKey::Rsa(rsa_b2) },
            // The "enc" key's material, signing as RS256 (that key is not loaded).
            Signer { kid: "enc", alg: A::RS256, key: SigningKey::Rsa(rsa_a3) },
        ];
        let policy = revgate::identity::Policy {
            issuers: vec!["https://other.fuzz/".into(), JWT_ISS.into()],
            audiences: vec![JWT_AUD.into(), "second".into()],
            leeway: std::time::Duration::from_secs(60),
            require_exp: true,
        };
        let settings = revgate::identity::VerifySettings {
            source: revgate::identity::KeySource::File {
                path: "/fuzz/jwks.json".into(),
                keys: keys.clone(),
            },
            policy: policy.clone(),
            refresh_interval: std::time::Duration::from_secs(300),
            min_refresh_interval: std::time::Duration::from_secs(30),
            fetch_timeout: std::time::Duration::from_secs(5),
        };
        let tls = rustls::ClientConfig::builder_with_provider(revgate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let verifier = revgate::identity::Verifier::new(&settings, tls);
        // Far-off expiry: these tokens stay good for any run.
        let claims = serde_json::json!({"sub":"u","iss":JWT_ISS,"aud":JWT_AUD,"exp":4_000_000_000u64});
        let mut good_tokens = Vec::new();
        for (i, signer) in signers.iter().enumerate() {
            for kid in [Some(signer.kid), None] {
                let mut h = serde_json::json!({"alg": format!("{:?}", signer.alg)});
                if let Some(k) = kid {
                    h["kid"] = k.into();
                }
                good_tokens.push((
                    signed_token(signer, h.to_string().as_bytes(), claims.to_string().as_bytes()),
                    signer.alg,
                    kid,
                    i,
                ));
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        JwtWorld {
            signers,
            stranger: 6,
            public,
            keys,
            verifier,
            policy,
            good_tokens,
            rt,
        }
    })
}

impl JwtWorld {
    /// Whether `signer`'s key is the set's key of its `kid`.
    fn signer_in_set(&self, signer: &Signer) -> bool {
        !std::ptr::eq(signer, &self.signers[self.stranger])
    }
}

/// `header.claims.signature`, signed by `signer` over the two encoded parts.
fn signed_token(signer: &Signer, header: &[u8], claims: &[u8]) -> String {
    let input = format!("{}.{}", b64url(header), b64url(claims));
    let sig = signer.sign(input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

/// A claim as a number (what the verifier's rules compare).
fn claim_number(claims: &serde_json::Map<String, serde_json::Value>, name: &str) -> Option<f64> {
    claims.get(name).and_then(serde_json::Value::as_f64)
}

/// The checks on a token the fixed set accepted, made without the verifier:
/// the `kid` of the key it names is the header's (when it has one), that key
/// may verify the header's alg and ring verifies the signature under it; the
/// claims satisfy the policy within the clock readings `t0..=t1` (one second
/// of slack for the verifier's rounding of fractional times); and flipping
/// a bit of any of three signature bytes gets the token refused.
fn check_accepted(
    w: &JwtWorld,
    token: &str,
    verified: &revgate::identity::VerifiedClaims,
    t0: u64,
    t1: u64,
    pick: usize,
) {
    use serde_json::Value;
    let header = revgate::identity::verify::header(token).expect("an accepted token's header");
    if let Some(kid) = &header.kid {
        assert_eq!(verified.kid(), Some(kid.as_str()), "{token}");
    }
    let key = w
        .public
        .iter()
        .find(|k| Some(k.kid) == verified.kid())
        .unwrap_or_else(|| panic!("accepted by a key not in the set: {token}"));
    let (input, sig) = token.rsplit_once('.').expect("three parts");
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .expect("an accepted signature is base64url");
    assert!(
        key.verifies(header.alg, input.as_bytes(), &sig),
        "accepted, but ring does not verify it under {} as {:?}: {token}",
        key.kid,
        header.alg
    );
    let payload = input.split_once('.').expect("two parts").1;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("an accepted payload is base64url");
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&payload) else {
        panic!("accepted claims are not a JSON object: {token}");
    };
    let leeway = w.policy.leeway.as_secs() as f64;
    let exp =
        claim_number(&claims, "exp").unwrap_or_else(|| panic!("accepted without exp: {token}"));
    assert!(
        exp + leeway + 1.0 >= t0 as f64,
        "accepted expired (exp {exp}): {token}"
    );
    for name in ["nbf", "iat"] {
        match claims.get(name) {
            None => {}
            Some(Value::Number(n)) => {
                let v = n.as_f64().unwrap_or(f64::INFINITY);
                assert!(
                    v <= t1 as f64 + leeway + 1.0,
                    "accepted with {name} {v} ahead: {token}"
                );
            }
            Some(other) => panic!("accepted with {name} {other}: {token}"),
        }
    }
    match claims.get("iss") {
        Some(Value::String(iss)) => assert!(w.policy.issuers.contains(iss), "{token}"),
        other => panic!("accepted with iss {other:?}: {token}"),
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        other => panic!("accepted with aud {other:?}: {token}"),
    };
    assert!(
        audiences
            .iter()
            .any(|a| w.policy.audiences.iter().any(|p| p == a)),
        "accepted with no accepted audience: {token}"
    );
    for at in [0, sig.len() - 1, pick % sig.len()] {
        let mut bad = sig.clone();
        bad[at] ^= 1 << (pick % 8);
        let forged = format!("{input}.{}", b64url(&bad));
        let again = revgate::identity::verify::header(&forged).and_then(|h| {
            w.keys
                .verify(&forged, &h, &w.policy, revgate::store::now_unix())
        });
        assert!(
            again.is_err(),
            "signature byte {at} flipped, still accepted: {forged}"
        );
    }
}

/// One token through the real verifier (`Verifier::verify`, file source) and
/// again through `header` + `KeySet::verify`: the same verdict both times
/// (unless the clock ticked between them); an accepted token passes
/// [`check_accepted`]; `KeySet::knows` is false only of tokens refused as
/// `UnknownKey`.
fn verify_token(w: &JwtWorld, token: &str, pick: usize) {
    use revgate::identity::{verify, VerifyError};
    let t0 = revgate::store::now_unix();
    let first = w.rt.block_on(w.verifier.verify(token));
    let second = verify::header(token).and_then(|h| {
        let r = w
            .keys
            .verify(token, &h, &w.policy, revgate::store::now_unix());
        if !w.keys.knows(&h) {
            assert_eq!(r, Err(VerifyError::UnknownKey), "{token}");
        }
        r
    });
    let t1 = revgate::store::now_unix();
    if t0 == t1 {
        assert_eq!(first, second, "two verdicts on one token: {token}");
    }
    if let Ok(v) = &first {
        check_accepted(w, token, v, t0, t1, pick);
    }
    if let Ok(v) = &second {
        check_accepted(w, token, v, t0, t1, pick);
    }
}

/// Whether ring can verify with this JWK's key material, by ring's own
/// rules (restated here): an RSA modulus of 256 to 1024 bytes that is odd
/// and an odd exponent of 3 to 2^33 - 1 (leading zero bytes aside); EC
/// coordinates of the curve's size; a 32-byte Ed25519 key.
fn usable_material(jwk: &serde_json::Value) -> bool {
    let bytes = |name: &str| {
        jwk.get(name)
            .and_then(serde_json::Value::as_str)
            .and_then(|s| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(s)
                    .ok()
            })
    };
    let strip = |b: Vec<u8>| b.into_iter().skip_while(|&x| x == 0).collect::<Vec<u8>>();
    match jwk["kty"].as_str() {
        Some("RSA") => {
            let (Some(n), Some(e)) = (bytes("n").map(strip), bytes("e").map(strip)) else {
                return false;
            };
            let e_value =
                (e.len() <= 5).then(|| e.iter().fold(0u64, |v, &b| v << 8 | u64::from(b)));
            (256..=1024).contains(&n.len())
                && n.last().is_some_and(|b| b & 1 == 1)
                && e_value.is_some_and(|v| v & 1 == 1 && (3..1 << 33).contains(&v))
        }
        Some("EC") => {
            let size = if jwk["crv"] == "P-384" { 48 } else { 32 };
            bytes("x").is_some_and(|x| x.len() == size)
                && bytes("y").is_some_and(|y| y.len() == size)
        }
        Some("OKP") => bytes("x").is_some_and(|x| x.len() == 32),
        _ => false,
    }
}

/// A fuzzed JWKS document through `KeySet::parse`: the same result twice;
/// a parsed set holds at least one key, and its keys and skipped keys are
/// all of the document's; a document's only key, when loaded, has material
/// ring can use ([`usable_material`]); every token signed by the target's keys verifies
/// against it without panicking, to a key-choice or signature refusal or to
/// acceptance, and an accepted token names (by `kid`) a key of the document
/// that may verify its alg: of the alg's key type, with no other `alg`, a
/// `use` of `sig` (or none) and `key_ops` allowing `verify` (or none).
fn jwks_document(w: &JwtWorld, doc: &[u8]) {
    use revgate::identity::{verify, KeySet, VerifyError};
    use serde_json::Value;
    let parsed = KeySet::parse(doc);
    let again = KeySet::parse(doc);
    let Ok(set) = parsed else {
        assert!(again.is_err(), "parsed only the second time");
        return;
    };
    let again = again.expect("parsed only the first time");
    assert_eq!((set.len(), set.skipped()), (again.len(), again.skipped()));
    assert!(!set.is_empty());
    let raw: Value = serde_json::from_slice(doc).expect("a parsed JWKS is JSON");
    let entries = raw["keys"].as_array().expect("a parsed JWKS has keys");
    assert_eq!(entries.len(), set.len() + set.skipped().len());
    let _ = format!("{set:?}");
    if let [only] = entries.as_slice() {
        assert!(
            usable_material(only),
            "a key ring cannot use was loaded: {only}"
        );
    }
    let now = revgate::store::now_unix();
    for (token, alg, kid, signer) in &w.good_tokens {
        let h = verify::header(token).expect("a good token's header");
        let r = set.verify(token, &h, &w.policy, now);
        if !set.knows(&h) {
            assert_eq!(r, Err(VerifyError::UnknownKey));
        }
        let alg_name = format!("{alg:?}");
        let family = match alg_name.as_bytes()[0] {
            b'R' | b'P' => ("RSA", None),
            b'E' if alg_name == "EdDSA" => ("OKP", Some("Ed25519")),
            _ if alg_name == "ES256" => ("EC", Some("P-256")),
            _ => ("EC", Some("P-384")),
        };
        let may_verify = |e: &Value, kid: Option<&str>| {
            e.get("kid").and_then(Value::as_str) == kid
                && e["kty"] == family.0
                && family.1.is_none_or(|c| e["crv"] == c)
                && e.get("alg").is_none_or(|a| *a == *alg_name)
                && e.get("use").is_none_or(|u| u == "sig")
                && e.get("key_ops").is_none_or(|ops| {
                    ops.as_array()
                        .is_some_and(|o| o.iter().any(|x| x == "verify"))
                })
        };
        // The converse: a document whose only key is the signer's, and may
        // verify its tokens, verifies them.
        if let ([only], Some(k)) = (entries.as_slice(), kid) {
            if may_verify(only, Some(k)) && w.signers[*signer].is_key_of(only) {
                assert!(
                    r.is_ok(),
                    "{alg_name} token refused ({r:?}) by its own key {only}"
                );
            }
        }
        let v = match r {
            Ok(v) => v,
            Err(VerifyError::UnknownKey | VerifyError::KeyMismatch | VerifyError::BadSignature) => {
                continue
            }
            Err(e) => panic!("a good token refused as {e:?} by a fuzzed set"),
        };
        if let Some(k) = kid {
            assert_eq!(v.kid(), Some(*k));
        }
        assert!(
            entries.iter().any(|e| may_verify(e, v.kid())),
            "{alg_name} token (kid {kid:?}) accepted by {:?}, which may not verify it",
            v.kid()
        );
    }
}

/// The JWT verifier (`src/identity/`). The first byte is the mode:
///
/// - `mode % 4 == 0`: the rest is a JWKS document ([`jwks_document`]);
/// - `1`: the rest is a token (bit 2: NUL-separated header, claims and
///   signature bytes, base64url-encoded into one, as in [`jwt_peek`]);
/// - `2`, `3`: the rest is header JSON, NUL, claims JSON, and the target
///   signs it with one of its keys (`(mode >> 2) % signers`), so that the
///   checks behind the signature are reached. Bit 5 sets the header's `alg`
///   to the signer's (when the header is a JSON object), bit 6 its `kid`,
///   bit 7 fills in `iss`, `aud` and an `exp` five minutes ahead where the
///   claims (an object) lack them; bits unset leave the fuzzed bytes as they
///   are.
///
/// Every token goes through [`verify_token`].
pub fn jwt_verify(data: &[u8]) {
    use serde_json::Value;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let w = jwt_world();
    let pick = data.iter().fold(0usize, |h, &b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    match mode % 4 {
        0 => jwks_document(w, rest),
        1 => {
            let token = if mode & 4 != 0 {
                jws_from_parts(rest)
            } else {
                String::from_utf8_lossy(rest).into_owned()
            };
            verify_token(w, &token, pick);
        }
        _ => {
            let signer = &w.signers[usize::from(mode >> 2) % w.signers.len()];
            let (header, claims) = match rest.iter().position(|&b| b == 0) {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &b"{}"[..]),
            };
            let mut header = header.to_vec();
            if mode & 0x60 != 0 {
                if let Ok(Value::Object(mut h)) = serde_json::from_slice::<Value>(&header) {
                    if mode & 0x20 != 0 {
                        h.insert("alg".into(), format!("{:?}", signer.alg).into());
                    }
                    if mode & 0x40 != 0 {
                        h.insert("kid".into(), signer.kid.into());
                    }
                    header = serde_json::to_vec(&h).expect("JSON");
                }
            }
            let mut claims = claims.to_vec();
            if mode & 0x80 != 0 {
                if let Ok(Value::Object(mut c)) = serde_json::from_slice::<Value>(&claims) {
                    c.entry("iss").or_insert(JWT_ISS.into());
                    c.entry("aud").or_insert(JWT_AUD.into());
                    c.entry("exp")
                        .or_insert((revgate::store::now_unix() + 300).into());
                    claims = serde_json::to_vec(&c).expect("JSON");
                }
            }
            let token = signed_token(signer, &header, &claims);
            verify_token(w, &token, pick);
            if mode & 0xe0 == 0xe0 && plain_header(&header) {
                must_accept(w, signer, &token, &claims);
            }
        }
    }
}

/// Whether a (patched) header holds nothing but `alg`, `kid` and a string
/// `typ`: a header the verifier has no reason to refuse.
fn plain_header(header: &[u8]) -> bool {
    use serde_json::Value;
    let Ok(Value::Object(h)) = serde_json::from_slice::<Value>(header) else {
        return false;
    };
    h.iter().all(|(k, v)| match k.as_str() {
        "alg" | "kid" => true,
        "typ" => v.is_string(),
        _ => false,
    })
}

/// The converse of [`check_accepted`]: a token signed by a key of the set,
/// with a plain header naming it, whose claims clearly satisfy the policy
/// (judged here, with two seconds of margin on every time), is accepted.
/// Catches refusals of good tokens (a claim type or encoding the verifier
/// misreads). Numbers `exp` must be representable as seconds (0 to 1e19).
fn must_accept(w: &JwtWorld, signer: &Signer, token: &str, claims: &[u8]) {
    use serde_json::Value;
    let in_set = w
        .public
        .iter()
        .any(|k| k.kid == signer.kid && k.algs.contains(&signer.alg));
    if !in_set || !w.signer_in_set(signer) {
        return;
    }
    let Ok(Value::Object(c)) = serde_json::from_slice::<Value>(claims) else {
        return;
    };
    let now = revgate::store::now_unix() as f64;
    let leeway = w.policy.leeway.as_secs() as f64;
    let time_ok = |name: &str, ok: &dyn Fn(f64) -> bool| match c.get(name) {
        None => name != "exp",
        Some(v) => v.as_f64().is_some_and(ok),
    };
    let good = matches!(c.get("iss"), Some(Value::String(i)) if w.policy.issuers.contains(i))
        && match c.get("aud") {
            Some(Value::String(a)) => w.policy.audiences.contains(a),
            Some(Value::Array(a)) => {
                a.iter().all(Value::is_string)
                    && a.iter()
                        .any(|x| w.policy.audiences.iter().any(|p| x == p.as_str()))
            }
            _ => false,
        }
        && time_ok("exp", &|e| {
            (0.0..1e19).contains(&e) && e >= now - leeway + 2.0
        })
        && time_ok("nbf", &|n| n <= now + leeway - 2.0)
        && time_ok("iat", &|i| i <= now + leeway - 2.0);
    if good {
        let r = w.rt.block_on(w.verifier.verify(token));
        assert!(r.is_ok(), "a good token refused as {r:?}: {token}");
    }
}
