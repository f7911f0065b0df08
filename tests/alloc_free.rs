//! The hot path allocates nothing for an unrevoked credential: naming a JWS
//! by its signing input (issue 9) and the verdict around it, counted by a
//! global allocator that tallies this thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use revgate::credentials::{AttributeSources, CredentialSources, FingerprintKey};
use revgate::store::memory::MemoryStore;
use revgate::store::{
    now_unix, Binding, RevocationCommand, RevocationStore, ScopeKey, ScopeRule, TokenRule,
};
use revgate::verdict::{Checker, Verdict};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// thread-local counter is a const-initialised `Cell` (no allocation, no
// destructor), so counting cannot recurse into the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

fn jwt(sub: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"ES256","typ":"JWT","kid":"k-2026"}"#);
    let claims = serde_json::json!({"sub": sub, "iat": 1, "exp": 2, "scope": "read write"});
    format!(
        "{header}.{}.{}",
        b64.encode(claims.to_string()),
        b64.encode([7u8; 64])
    )
}

#[test]
fn an_unrevoked_jwt_and_an_opaque_token_are_judged_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = MemoryStore::open(&dir.path().join("j"), 10_000, 0.01).unwrap();
    let key = Arc::new(FingerprintKey::from_bytes([5; 32]));
    let checker = Checker {
        key: key.clone(),
        sources: CredentialSources::default(),
        attributes: AttributeSources::default(),
        jti: false,
        introspection: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(store.apply(RevocationCommand::Token(TokenRule {
        fingerprint: key.token_fingerprint(&jwt("revoked")),
        expires_at: now_unix() + 600,
    })))
    .unwrap();
    for token in [jwt("live"), "opaque-token-123".to_string()] {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        // Warm up whatever is allocated once (thread-locals, lazy statics).
        let _ = rt.block_on(checker.judge(&headers, None, None, &store));
        let n = allocations_in(|| {
            let fp = key.token_fingerprint(&token);
            std::hint::black_box(fp);
        });
        assert_eq!(n, 0, "naming {token} allocated");
        let mut verdict = None;
        let n = allocations_in(|| {
            verdict = Some(rt.block_on(checker.judge(&headers, None, None, &store)));
        });
        assert!(matches!(verdict, Some(Verdict::Pass(_))), "{verdict:?}");
        assert_eq!(n, 0, "judging {token} allocated");
    }
    // With bindings and scope rules (issue 12): a bound opaque credential no
    // rule covers, and an unbound one, are judged without allocating too
    // (scope rules reach bound credentials as derived token rules).
    rt.block_on(async {
        let now = now_unix();
        for i in 0..100 {
            store
                .apply(RevocationCommand::Scope(ScopeRule {
                    key: ScopeKey {
                        sub: format!("ruled-{i}"),
                        org: None,
                        provider: None,
                    },
                    revoked_at: now,
                    expires_at: now + 600,
                }))
                .await
                .unwrap();
            store
                .apply(RevocationCommand::Bind(Binding {
                    fingerprint: key.token_fingerprint(&format!("bound-{i}")),
                    who: ScopeKey {
                        sub: format!("free-{i}"),
                        org: None,
                        provider: None,
                    },
                    issued_at: now - 60,
                    expires_at: now + 600,
                }))
                .await
                .unwrap();
        }
    });
    assert!(store.cache().has_scope_rules());
    for token in ["bound-7", "unbound-opaque-1"] {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let _ = rt.block_on(checker.judge(&headers, None, None, &store));
        let mut verdict = None;
        let n = allocations_in(|| {
            verdict = Some(rt.block_on(checker.judge(&headers, None, None, &store)));
        });
        assert!(matches!(verdict, Some(Verdict::Pass(_))), "{verdict:?}");
        assert_eq!(
            n, 0,
            "judging {token} with scope rules and bindings allocated"
        );
    }
    // The counter works: a revoked token's lookup is allowed to allocate,
    // and a plain allocation is seen.
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(vec![1u8; 8]))),
        1
    );
}
