//! Crash test of the embedded store's journal (issue 10, item 1): the real
//! binary compacts its journal continuously (`store.maintenance_interval =
//! "10ms"`, on a journal preloaded with enough rules that each compaction
//! takes a while) while several concurrent clients revoke through RFC 7009
//! `POST /oauth/revoke` and the admin API (tokens and scopes); the process is
//! `kill -9`ed at a random point, restarted on the same journal, and every
//! revocation that was acknowledged (a 200 received) before the kill must
//! still be enforced: a request with the token is answered 401 with the
//! revoked body and the upstream's hit counter does not move.
//!
//! Many rounds, bounded in count and time; the counts (acknowledged, lost)
//! are printed. A second test starts the binary on a journal in the format
//! of before issue 10 (JSON records) and checks the upgrade. The kill points come from a seed printed at the start
//! (`REVGATE_CRASH_SEED=N` replays one; `REVGATE_CRASH_ROUNDS=N` runs more).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use revgate::credentials::Fingerprint;
use revgate::store::journal::Journal;
use revgate::store::{RevocationCommand, TokenRule};
use support::*;

/// Rules written to the journal before the first start, so that every
/// compaction has real work to do and appends keep arriving while it runs.
const PRELOADED_RULES: u64 = 100_000;
/// Rounds in the normal test run.
const ROUNDS: u64 = 12;
/// The whole test stops starting new rounds after this long.
const BUDGET: Duration = Duration::from_secs(45);

/// What a client had acknowledged.
#[derive(Clone, Debug)]
enum Acked {
    /// A raw token revoked (RFC 7009 or admin).
    Token(String),
    /// A scope revoked for this subject (admin); checked with a JWT of it.
    Scope(String),
}

/// A small deterministic generator (xorshift64*), so a failing run's kill
/// points can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

async fn preload(path: &std::path::Path) {
    let far = now() + 30 * 24 * 3600;
    let rules = (0..PRELOADED_RULES).map(|i| {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&i.to_le_bytes());
        b[8..].copy_from_slice(&0x5eed_0fc0_ffee_u64.to_le_bytes());
        RevocationCommand::Token(TokenRule {
            fingerprint: Fingerprint::from_bytes(b),
            expires_at: far,
        })
    });
    let (journal, _, _) = Journal::open(path).unwrap();
    journal.rewrite(rules).await.unwrap();
    journal.close();
}

/// Waits until the gateway has replayed its journal and serves (`/readyz`
/// 200), so the kill falls while it revokes and compacts, not while it loads.
async fn ready(gw: &RunningGateway) {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let req = get(&format!("{}/readyz", gw.admin_url))
            .body(Default::default())
            .unwrap();
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(30), c.request(req)).await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the gateway never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One revoking client: revokes until `stop` or until the gateway is gone,
/// recording what was acknowledged.
async fn revoker(
    kind: usize,
    round: u64,
    id: usize,
    url: String,
    admin: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
) {
    let c = client();
    let form = ("content-type", "application/x-www-form-urlencoded");
    let json = ("content-type", "application/json");
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let (req, what) = match kind {
            0 => {
                let t = format!("crash-rfc-r{round}-c{id}-{i}");
                let body = format!("token={t}");
                (
                    call(
                        "POST",
                        &format!("{url}/oauth/revoke"),
                        &[form],
                        body.as_bytes(),
                    ),
                    Acked::Token(t),
                )
            }
            1 => {
                let t = format!("crash-admin-r{round}-c{id}-{i}");
                let body = serde_json::json!({ "token": t }).to_string();
                (
                    call(
                        "POST",
                        &format!("{admin}/admin/v1/revocations"),
                        &[json],
                        body.as_bytes(),
                    ),
                    Acked::Token(t),
                )
            }
            _ => {
                let sub = format!("crash-sub-r{round}-c{id}-{i}");
                let body = serde_json::json!({ "scope": { "sub": sub } }).to_string();
                (
                    call(
                        "POST",
                        &format!("{admin}/admin/v1/revocations"),
                        &[json],
                        body.as_bytes(),
                    ),
                    Acked::Scope(sub),
                )
            }
        };
        let resp = match tokio::time::timeout(Duration::from_secs(10), c.request(req)).await {
            Ok(Ok(r)) => r,
            // The gateway was killed mid-call: not acknowledged.
            _ => return,
        };
        let status = resp.status().as_u16();
        // The acknowledgement is the whole answer, not just its head.
        use http_body_util::BodyExt as _;
        if resp.into_body().collect().await.is_err() {
            return;
        }
        if status == 200 {
            acked.lock().unwrap().push(what);
        } else {
            panic!("revoke answered {status}");
        }
    }
}

/// Checks every acknowledged revocation against the running gateway; returns
/// the ones it no longer enforces.
async fn lost(gw: &RunningGateway, up: &RunningUpstream, acked: &[Acked]) -> Vec<Acked> {
    let c = client();
    let hits = up.hits();
    let url = format!("{}/data", gw.url);
    let issued = now() - 600;
    let mut lost = Vec::new();
    for chunk in acked.chunks(8) {
        let checks = chunk.iter().map(|a| {
            let bearer = match a {
                Acked::Token(t) => t.clone(),
                Acked::Scope(sub) => jwt(&serde_json::json!({
                    "sub": sub, "iat": issued, "exp": issued + 3600,
                })),
            };
            let req = get(&url)
                .header("authorization", format!("Bearer {bearer}"))
                .body(Default::default())
                .unwrap();
            let c = c.clone();
            async move {
                let r = send_with(&c, req).await;
                (r.status, r.text())
            }
        });
        let results = futures_util::future::join_all(checks).await;
        for (a, (status, body)) in chunk.iter().zip(results) {
            if status != 401 || body != REVOKED_BODY {
                lost.push(a.clone());
            }
        }
    }
    let served = up.hits() - hits;
    assert!(
        served <= lost.len(),
        "the upstream saw {served} requests, more than the {} lost tokens",
        lost.len()
    );
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_revocation_survives_kill9_during_compaction() {
    let seed: u64 = std::env::var("REVGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).unwrap();
            u64::from_le_bytes(b) | 1
        });
    let rounds: u64 = std::env::var("REVGATE_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ROUNDS);
    println!("journal crash test: seed {seed}, up to {rounds} rounds");
    let mut rng = Rng(seed);

    let up = Upstream::new().spawn().await;
    let dir = tempfile::tempdir().unwrap();
    preload(&dir.path().join("revgate.journal")).await;
    let mut gw = Gateway::new()
        .upstream(&up.url)
        .dir(dir.path())
        .arg("--revoke-mode")
        .arg("terminate")
        .toml("[store]\nmaintenance_interval = \"10ms\"\n[revoke.rate_limit]\nenabled = false\n[admin.rate_limit]\nenabled = false")
        .spawn();

    let started = Instant::now();
    let mut all: Vec<Acked> = Vec::new();
    let mut total_lost = 0usize;
    let mut done = 0u64;
    let mut kills_mid_compaction = 0usize;
    for round in 0..rounds {
        if started.elapsed() > BUDGET {
            break;
        }
        ready(&gw).await;
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        // 3 RFC 7009 clients, 2 admin token clients, 1 admin scope client.
        let clients: Vec<_> = [0, 0, 0, 1, 1, 2]
            .into_iter()
            .enumerate()
            .map(|(id, kind)| {
                tokio::spawn(revoker(
                    kind,
                    round,
                    id,
                    gw.url.clone(),
                    gw.admin_url.clone(),
                    stop.clone(),
                    acked.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.between(200, 1500))).await;
        gw.kill9();
        stop.store(true, Ordering::Relaxed);
        // Evidence the kill fell inside a compaction: its snapshot file was
        // there (the next start removes it).
        let mid_compaction = dir.path().join("revgate.journal.compact").exists();
        kills_mid_compaction += usize::from(mid_compaction);
        for c in clients {
            c.await.unwrap();
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        gw.restart();
        let lost_now = lost(&gw, &up, &acked).await;
        println!(
            "round {round}: acknowledged {}, lost {}, killed mid-compaction: {mid_compaction}",
            acked.len(),
            lost_now.len()
        );
        total_lost += lost_now.len();
        all.extend(acked);
        done += 1;
    }
    // A later compaction must not drop what an earlier one kept.
    let lost_at_end = lost(&gw, &up, &all).await;
    println!(
        "journal crash test: {done} rounds ({kills_mid_compaction} killed mid-compaction), {} acknowledged, {total_lost} lost after their round's kill, {} lost at the end",
        all.len(),
        lost_at_end.len()
    );
    assert!(done >= 3, "only {done} rounds ran");
    assert!(!all.is_empty(), "no revocation was acknowledged");
    assert_eq!(total_lost, 0, "acknowledged revocations lost (seed {seed})");
    assert!(
        lost_at_end.is_empty(),
        "acknowledged revocations lost by a later round (seed {seed}): {:?}",
        &lost_at_end[..lost_at_end.len().min(5)]
    );
    assert_eq!(up.hits(), 0, "a revoked token reached the upstream");
}

/// The upgrade path against the real binary: a journal as revgate wrote it
/// before issue 10 (JSON records, no header) is replayed, enforced, and
/// rewritten in the binary format at the first start; a `kill -9` and a
/// second start on the upgraded file enforce the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_journal_from_before_the_binary_format_is_upgraded_and_enforced() {
    use revgate::credentials::FingerprintKey;
    use revgate::store::{RevocationTarget, ScopeKey, ScopeRule};
    const KEY: &str = "4a6f75726e616c2d757067726164652d746573742d6b65792d30313233343536";
    let key = FingerprintKey::from_hex(KEY).unwrap();
    let far = now() + 24 * 3600;
    let token = |t: &str| {
        RevocationCommand::Token(TokenRule {
            fingerprint: key.fingerprint(t.as_bytes()),
            expires_at: far,
        })
    };
    let commands = [
        token("legacy-revoked-1"),
        token("legacy-revoked-2"),
        token("legacy-removed"),
        RevocationCommand::Scope(ScopeRule {
            key: ScopeKey {
                sub: "legacy-user".into(),
                org: None,
                provider: None,
            },
            revoked_at: now(),
            expires_at: far,
        }),
        RevocationCommand::Remove(RevocationTarget::Token(key.fingerprint(b"legacy-removed"))),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revgate.journal");
    let mut v1 = Vec::new();
    for c in &commands {
        let payload = serde_json::to_vec(c).unwrap();
        v1.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        v1.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        v1.extend_from_slice(&payload);
    }
    std::fs::write(&path, &v1).unwrap();

    let up = Upstream::new().spawn().await;
    let mut gw = Gateway::new()
        .upstream(&up.url)
        .dir(dir.path())
        .toml(&format!("[tokens]\nfingerprint_key = \"{KEY}\""))
        .spawn();
    let scoped = jwt(&serde_json::json!({"sub": "legacy-user", "iat": now() - 60}));
    for start in ["first start (upgrade)", "after kill -9 (upgraded file)"] {
        ready(&gw).await;
        let url = format!("{}/data", gw.url);
        for bearer in ["legacy-revoked-1", "legacy-revoked-2", scoped.as_str()] {
            let hits = up.hits();
            let r = get_bearer(&url, bearer).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (401, REVOKED_BODY),
                "{start}"
            );
            assert_eq!(
                up.hits(),
                hits,
                "{start}: a revoked token reached the upstream"
            );
        }
        let hits = up.hits();
        let r = get_bearer(&url, "legacy-removed").await;
        assert_eq!(r.status, 200, "{start}: a removed rule still applies");
        assert_eq!(up.hits(), hits + 1);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], b"RVGJ", "{start}: not upgraded");
        assert!(
            bytes.len() < v1.len(),
            "{start}: binary records are smaller"
        );
        gw.kill9();
        gw.restart();
    }
    assert!(
        !dir.path().join("revgate.journal.compact").exists(),
        "no upgrade litter"
    );
    let logs = gw.logs();
    assert_eq!(
        logs.matches("journal upgraded from format version 1")
            .count(),
        1,
        "the upgrade is logged once, at the first start:\n{logs}"
    );
}
