//! A property test of the credential grammar (issue 9): requests that carry a
//! revoked token in generated placements and spellings, read by reference
//! parsers that model what common upstream servers accept (Python's
//! `str.split`, JavaScript's `\s`, a fixed-prefix cut, PHP's and ASP.NET's
//! query names, old Python's `;` separator, CGI header names). Whenever any
//! of them finds the revoked token, revgate's verdict must not let the
//! request on — on both header views (hyper's `HeaderMap` and the fast
//! path's httparse fields).

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use revgate::credentials::{AttributeSources, CredentialSources, FingerprintKey};
use revgate::store::memory::MemoryStore;
use revgate::store::{now_unix, RevocationCommand, RevocationStore, TokenRule};
use revgate::verdict::{Checker, Verdict};

const REVOKED: &str = "Rv0ked-tok.en_~42";
const OTHER: &str = "good-token-7";

/// One generated request.
#[derive(Clone, Debug)]
struct Req {
    headers: Vec<(String, Vec<u8>)>,
    query: Option<String>,
    form: Option<Vec<u8>>,
}

// === reference parsers: what an upstream might read ===

/// Whitespace as Python's `str.split()` sees it in a latin-1 decoded header
/// (WSGI), and as JavaScript's `\s` does.
fn is_py_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | 0x0b | 0x0c | 0x1c..=0x1f | 0x85 | 0xa0)
}

fn authorization_readings(v: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // Python: `scheme, token = value.split()`, any scheme (DRF's Token, JWT...).
    let parts: Vec<&[u8]> = v
        .split(|&b| is_py_space(b))
        .filter(|p| !p.is_empty())
        .collect();
    if parts.len() == 2 {
        out.push(parts[1].to_vec());
    }
    if parts.len() == 1 {
        out.push(parts[0].to_vec()); // a bare token
    }
    // A fixed-length cut after a case-insensitive "bearer".
    if v.len() > 7 && v[..6].eq_ignore_ascii_case(b"bearer") {
        out.push(v[7..].to_vec());
        out.push(v[6..].to_vec());
    }
    // `.replace("Bearer", "").strip()`
    if v.len() > 6 && &v[..6] == b"Bearer" {
        let rest = &v[6..];
        let start = rest
            .iter()
            .position(|&b| !is_py_space(b))
            .unwrap_or(rest.len());
        let end = rest
            .iter()
            .rposition(|&b| !is_py_space(b))
            .map_or(start, |e| e + 1);
        out.push(rest[start..end.max(start)].to_vec());
    }
    // A parser that splits a joined list at commas.
    for piece in v.split(|&b| b == b',') {
        out.extend(authorization_readings_simple(piece));
    }
    out
}

fn authorization_readings_simple(v: &[u8]) -> Vec<Vec<u8>> {
    let parts: Vec<&[u8]> = v
        .split(|&b| is_py_space(b))
        .filter(|p| !p.is_empty())
        .collect();
    match parts.len() {
        1 => vec![parts[0].to_vec()],
        2 => vec![parts[1].to_vec()],
        _ => vec![],
    }
}

fn form_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Names PHP, ASP.NET and Rack would read as `access_token`.
fn query_name_means_token(name: &[u8]) -> bool {
    let d = form_decode(name);
    let d: Vec<u8> = d.into_iter().skip_while(|&b| b == b' ').collect();
    let mangled: Vec<u8> = d
        .iter()
        .map(|&b| match b {
            b' ' | b'.' | b'[' => b'_',
            b => b.to_ascii_lowercase(),
        })
        .collect();
    mangled == b"access_token"
        || (mangled.starts_with(b"access_token_") && d.get(12) == Some(&b'['))
}

fn param_readings(q: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for seps in [&b"&"[..], b"&;"] {
        for pair in q.split(|b| seps.contains(b)) {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            if query_name_means_token(name) {
                out.push(form_decode(value));
                // A parser that does not decode `+`.
                out.push(percent_only(value));
            }
        }
    }
    out
}

fn percent_only(s: &[u8]) -> Vec<u8> {
    let plus_kept: Vec<u8> = s.to_vec();
    let decoded = form_decode(
        &plus_kept
            .iter()
            .map(|&b| if b == b'+' { 0 } else { b })
            .collect::<Vec<_>>(),
    );
    decoded
        .into_iter()
        .map(|b| if b == 0 { b'+' } else { b })
        .collect()
}

/// What any reference upstream would take as the request's credentials.
fn upstream_sees(r: &Req, api_key: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (name, value) in &r.headers {
        if name.eq_ignore_ascii_case("authorization") {
            out.extend(authorization_readings(value));
        }
        let cgi = |n: &str| n.to_ascii_uppercase().replace('-', "_");
        if cgi(name) == cgi(api_key) {
            out.push(value.clone());
            out.extend(value.split(|&b| b == b',').map(|p| p.trim_ascii().to_vec()));
        }
    }
    if let Some(q) = &r.query {
        out.extend(param_readings(q.as_bytes()));
    }
    if let Some(f) = &r.form {
        out.extend(param_readings(f));
    }
    out
}

// === generators ===

fn spell_name(base: &'static str) -> impl Strategy<Value = String> {
    // Per character: as is, upper case, or percent-encoded; the `_` also as
    // ` `, `+`, `.` or `[`.
    let chars: Vec<BoxedStrategy<String>> = base
        .chars()
        .map(|c| {
            let s = c.to_string();
            let upper = c.to_ascii_uppercase().to_string();
            let pct = format!("%{:02X}", c as u8);
            if c == '_' {
                prop_oneof![
                    Just(s),
                    Just(pct),
                    Just(" ".to_string()),
                    Just("+".to_string()),
                    Just(".".to_string()),
                    Just("[".to_string()),
                    Just("-".to_string())
                ]
                .boxed()
            } else {
                prop_oneof![4 => Just(s), 1 => Just(upper), 1 => Just(pct)].boxed()
            }
        })
        .collect();
    (
        chars,
        prop_oneof![4 => Just(""), 1 => Just("[]"), 1 => Just("[0]"), 1 => Just("s")],
    )
        .prop_map(|(v, suffix)| v.concat() + suffix)
}

fn spell_value(token: &'static str) -> impl Strategy<Value = String> {
    let chars: Vec<BoxedStrategy<String>> = token
        .chars()
        .map(|c| {
            prop_oneof![5 => Just(c.to_string()), 1 => Just(format!("%{:02x}", c as u8))].boxed()
        })
        .collect();
    chars.prop_map(|v| v.concat())
}

fn noise() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a=1".to_string()),
        Just("x=y;z".to_string()),
        Just("token=abc".to_string()),
        Just("".to_string()),
        Just("access_tokens=q".to_string()),
    ]
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("&"), Just(";"), Just("&&")]
}

fn params(token: &'static str) -> impl Strategy<Value = String> {
    (
        noise(),
        separator(),
        spell_name("access_token"),
        spell_value(token),
        prop_oneof![Just(""), Just(";"), Just(";x=1")],
        separator(),
        noise(),
    )
        .prop_map(|(a, s1, n, v, tail, s2, b)| format!("{a}{s1}{n}={v}{tail}{s2}{b}"))
}

fn authorization(token: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let scheme = prop_oneof![
        Just("Bearer"),
        Just("bearer"),
        Just("BEARER"),
        Just("Token"),
        Just("JWT"),
        Just(""),
        Just("BearerX")
    ];
    let sep = prop_oneof![
        Just(&b" "[..]),
        Just(&b"\t"[..]),
        Just(&b"  "[..]),
        Just(&b"\xa0"[..]),
        Just(&b" \t"[..]),
        Just(&b""[..])
    ];
    let tail = prop_oneof![
        Just(&b""[..]),
        Just(&b" "[..]),
        Just(&b",x"[..]),
        Just(&b" x"[..])
    ];
    (scheme, sep, tail).prop_map(move |(scheme, sep, tail)| {
        let mut v = scheme.as_bytes().to_vec();
        if !scheme.is_empty() {
            v.extend_from_slice(sep);
        }
        v.extend_from_slice(token.as_bytes());
        v.extend_from_slice(tail);
        v
    })
}

fn request() -> impl Strategy<Value = Req> {
    let token = prop_oneof![3 => Just(REVOKED), 1 => Just(OTHER)];
    let api_name = prop_oneof![
        Just("x-api-key"),
        Just("X_Api_Key"),
        Just("x_api_key"),
        Just("X-API_KEY"),
        Just("x-api-keys")
    ];
    (token.clone(), token.clone(), token, 0u8..16, api_name)
        .prop_flat_map(|(t1, t2, t3, mask, api_name)| {
            (
                if mask & 1 != 0 {
                    authorization(t1).prop_map(Some).boxed()
                } else {
                    Just(None).boxed()
                },
                if mask & 2 != 0 {
                    params(t2).prop_map(Some).boxed()
                } else {
                    Just(None).boxed()
                },
                if mask & 4 != 0 {
                    params(t3).prop_map(Some).boxed()
                } else {
                    Just(None).boxed()
                },
                if mask & 8 != 0 {
                    Just(Some((api_name, t1))).boxed()
                } else {
                    Just(None).boxed()
                },
            )
        })
        .prop_map(|(auth, query, form, api)| {
            let mut headers = vec![("host".to_string(), b"x".to_vec())];
            if let Some(a) = auth {
                headers.push(("authorization".into(), a));
            }
            if let Some((name, t)) = api {
                headers.push((name.to_string(), t.as_bytes().to_vec()));
            }
            Req {
                headers,
                query,
                form: form.map(String::into_bytes),
            }
        })
}

// === the property ===

struct World {
    checker: Checker,
    store: MemoryStore,
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = MemoryStore::open(&dir.path().join("j"), 1000, 0.01).unwrap();
    let key = Arc::new(FingerprintKey::from_bytes([9; 32]));
    let checker = Checker {
        key: key.clone(),
        sources: CredentialSources {
            query_param: true,
            api_key_headers: vec![HeaderName::from_static("x-api-key")],
        },
        attributes: AttributeSources::default(),
        jti: false,
        introspection: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(store.apply(RevocationCommand::Token(TokenRule {
        fingerprint: key.token_fingerprint(REVOKED),
        expires_at: now_unix() + 3600,
    })))
    .unwrap();
    World {
        checker,
        store,
        _dir: dir,
        rt,
    }
}

fn verdicts(w: &World, r: &Req) -> Vec<Verdict> {
    let mut map = HeaderMap::new();
    for (n, v) in &r.headers {
        map.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v).unwrap(),
        );
    }
    let fields: Vec<httparse::Header<'_>> = r
        .headers
        .iter()
        .map(|(n, v)| httparse::Header { name: n, value: v })
        .collect();
    let q = r.query.as_deref();
    let f = r.form.as_deref();
    vec![
        w.rt.block_on(w.checker.judge(&map, q, f, &w.store)),
        w.rt.block_on(w.checker.judge(&fields[..], q, f, &w.store)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

    #[test]
    fn a_revoked_token_any_upstream_would_read_is_never_let_on(r in request()) {
        let w = WORLD.with(|w| w.clone());
        let seen = upstream_sees(&r, "x-api-key");
        if seen.iter().any(|t| t.as_slice() == REVOKED.as_bytes()) {
            for v in verdicts(&w, &r) {
                prop_assert!(
                    matches!(v, Verdict::Revoked(_) | Verdict::BadRequest(_)),
                    "{v:?} for {r:?}"
                );
            }
        }
    }
}

thread_local! {
    static WORLD: Arc<World> = Arc::new(world());
}

#[test]
fn the_generator_reaches_both_outcomes() {
    // The property is only worth something if both kinds of request occur,
    // and requests that carry only good tokens in plain spellings pass.
    let w = world();
    let plain = Req {
        headers: vec![
            ("host".into(), b"x".to_vec()),
            (
                "authorization".into(),
                format!("Bearer {OTHER}").into_bytes(),
            ),
        ],
        query: Some("a=1".into()),
        form: None,
    };
    assert!(upstream_sees(&plain, "x-api-key")
        .iter()
        .all(|t| t != REVOKED.as_bytes()));
    for v in verdicts(&w, &plain) {
        assert!(matches!(v, Verdict::Pass(_)), "{v:?}");
    }
    let bad = Req {
        headers: vec![("host".into(), b"x".to_vec())],
        query: Some(format!("Access.Token={REVOKED}")),
        form: None,
    };
    assert!(upstream_sees(&bad, "x-api-key")
        .iter()
        .any(|t| t == REVOKED.as_bytes()));
    for v in verdicts(&w, &bad) {
        assert!(matches!(v, Verdict::Revoked(_)), "{v:?}");
    }
}
