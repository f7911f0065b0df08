//! The cost of a per-client-IP rate-limit check (`ratelimit::RateLimiter`),
//! the step every revoke call and admin call now pays before anything else.
//!
//! - `ratelimit/known_client`: one client calling again and again (the
//!   common case: a DashMap lookup and one GCRA step under the shard lock).
//! - `ratelimit/100k_clients_cycled`: 100,000 distinct IPv4 clients in turn,
//!   the table at its default size, so lookups miss the CPU caches as they
//!   do under a wide client population.
//! - `ratelimit/new_address_each_call`: a table of 1,000 and a new address
//!   per call (the flood case): the table stays at its bound, newcomers
//!   beyond it share the overflow bucket, idle entries are swept at most
//!   once a second.
//!
//! The limits are set high enough that nothing is refused: this measures the
//! bookkeeping, not the refusals. Run: `cargo bench --bench ratelimit --
//! --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use revgate::ratelimit::RateLimiter;

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratelimit");

    let one = RateLimiter::new(1e9, 1_000_000, 100_000);
    g.bench_function("known_client", |b| {
        b.iter(|| black_box(one.check(black_box(ip(0x7f00_0001)))))
    });

    let wide = RateLimiter::new(1e9, 1_000_000, 100_000);
    for n in 0..100_000 {
        let _ = wide.check(ip(n));
    }
    let mut n = 0u32;
    g.bench_function("100k_clients_cycled", |b| {
        b.iter(|| {
            n = (n + 7919) % 100_000;
            black_box(wide.check(black_box(ip(n))))
        })
    });

    let full = RateLimiter::new(1e9, 1_000_000, 1_000);
    for n in 0..1_000 {
        let _ = full.check(ip(n));
    }
    let mut fresh = 1_000_000u32;
    g.bench_function("new_address_each_call", |b| {
        b.iter(|| {
            fresh = fresh.wrapping_add(1);
            black_box(full.check(black_box(ip(fresh))))
        })
    });
    assert!(full.clients() <= 1_000, "the table grew past its bound");
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
