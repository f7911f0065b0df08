//! What closing live sessions on revocation costs (`store::live`).
//!
//! Plain HTTP/1.1 requests pay nothing (they are never registered), so the
//! costs measured are those of the traffic that is registered and of the
//! revocations that sweep the registry:
//!
//! - `live/register_drop`: one upgrade or HTTP/2 stream's registration and
//!   its removal when it ends, with 10,000 other sessions open (the entry's
//!   attributes are a JWT-like subject; the JWT peek itself is in
//!   `benches/verdict.rs`, `scope/peek`).
//! - `live/token_rule_miss` and `live/token_rule_hit`: a token rule reaching
//!   the registry (every `insert_token`, and every key of a Redis `SCAN`)
//!   with 10,000 sessions open, none or one of them covered (the covered one
//!   is registered again each round).
//! - `live/scope_rule`: a scope rule sweeping 10,000 open sessions, none of
//!   them covered (the worst case: every entry is tried).
//!
//! Run: `cargo bench --bench live -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};

use revgate::credentials::{Attributes, Fingerprint, FingerprintKey};
use revgate::store::live::{Admitted, LiveSession, LiveSessions, Rule, SessionKind};
use revgate::store::{now_unix, ScopeKey, ScopeRule};

/// Sessions open while measuring.
const OPEN: usize = 10_000;

fn fp(i: u64) -> Fingerprint {
    FingerprintKey::from_bytes([5; 32]).fingerprint(&i.to_le_bytes())
}

fn admitted(i: u64) -> Admitted {
    let mut a = Admitted::new(fp(i));
    a.attributes = Attributes {
        sub: Some(format!("user-{i}")),
        iat: Some(now_unix()),
        ..Default::default()
    };
    a
}

fn open(live: &Arc<LiveSessions>) -> Vec<LiveSession> {
    (0..OPEN as u64)
        .map(|i| live.register(admitted(i), SessionKind::Stream))
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("live");
    let live = Arc::new(LiveSessions::new());
    let _open = open(&live);

    let one = admitted(u64::MAX);
    g.bench_function("register_drop", |b| {
        b.iter(|| drop(black_box(live.register(one.clone(), SessionKind::Upgrade))))
    });

    let absent = fp(u64::MAX - 1);
    g.bench_function("token_rule_miss", |b| {
        b.iter(|| black_box(live.revoked(Rule::Token(black_box(&absent)))))
    });

    let target = admitted(u64::MAX - 2);
    g.bench_function("token_rule_hit", |b| {
        b.iter(|| {
            let s = live.register(target.clone(), SessionKind::Upgrade);
            let n = live.revoked(Rule::Token(&target.fingerprint));
            drop(s);
            black_box(n)
        })
    });

    let rule = ScopeRule {
        key: ScopeKey {
            sub: "nobody-open".into(),
            org: None,
            provider: None,
        },
        revoked_at: now_unix(),
        expires_at: now_unix() + 3600,
    };
    g.bench_function("scope_rule", |b| {
        b.iter(|| black_box(live.revoked(Rule::Scope(black_box(&rule)))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
