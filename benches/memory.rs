//! Memory of the embedded store: resident bytes per revoked token.
//!
//! The target is ≤ 64 bytes of RSS per revoked token above the empty
//! gateway, with 1,000,000 revoked tokens. This bench opens an empty
//! [`MemoryStore`] with the gateway's default sizing (bloom filter for
//! 1,000,000 at 1%), reads `VmRSS` from `/proc/self/status`, then opens a
//! second store on a journal of 1,000,000 token rules and reads it again; the
//! difference divided by the count is the figure.
//!
//! The journal is written by a child process (this same binary re-executed
//! with `prepare-journal`), so building a million commands and their JSON
//! never touches the measuring process's heap: it only replays, as the
//! gateway does at start. Both readings are taken twice: as they are, and
//! after `malloc_trim(0)` hands freed heap back to the OS (what stays is what
//! the store really holds; the raw figure is what `ps` would show).
//!
//! Run: `cargo bench --bench memory` (about 10 s). Override the count with
//! `REVGATE_BENCH_TOKENS=N`. `REVGATE_BENCH_KIND=bindings` measures
//! credential bindings instead (`store::principal`; target ≤ 96 B each):
//! N bindings of opaque credentials, ten per subject, each subject with a
//! provider and every other one an org. `REVGATE_BENCH_KIND=families`
//! measures token-family members (`store::family`; no target): N members,
//! ten per family, alternating access and refresh tokens over five
//! generations.

use std::path::Path;
use std::process::{Command, ExitCode};

use revgate::credentials::FingerprintKey;
use revgate::store::journal::Journal;
use revgate::store::memory::MemoryStore;
use revgate::store::{
    now_unix, Binding, Member, RevocationCommand, RevocationStore, ScopeKey, TokenRule,
};

/// The target, bytes of RSS per revoked token.
const TARGET_BYTES_PER_TOKEN: f64 = 64.0;

/// The target for `REVGATE_BENCH_KIND=bindings`, bytes of RSS per binding.
const TARGET_BYTES_PER_BINDING: f64 = 96.0;

fn bindings_kind() -> bool {
    std::env::var("REVGATE_BENCH_KIND").is_ok_and(|k| k == "bindings")
}

fn families_kind() -> bool {
    std::env::var("REVGATE_BENCH_KIND").is_ok_and(|k| k == "families")
}

/// The gateway's default `store.bloom_capacity` and `store.bloom_fp_rate`.
const BLOOM_CAPACITY: usize = 1_000_000;
const BLOOM_FP_RATE: f64 = 0.01;

fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn trim() {
    // SAFETY: malloc_trim only returns free heap pages to the OS.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Child mode: writes a journal of `n` token rules at `path`.
fn prepare(path: &Path, n: usize) -> std::io::Result<()> {
    let key = FingerprintKey::from_bytes([9; 32]);
    let expires_at = now_unix() + 30 * 24 * 3600;
    let bindings = bindings_kind();
    let families = families_kind();
    let commands = (0..n).map(move |i| {
        let fingerprint = key.fingerprint(format!("rv1m-{i:035}").as_bytes());
        if families {
            RevocationCommand::Join(Member {
                fingerprint,
                family: key.family_fingerprint(None, &format!("grant-{}", i / 10)),
                generation: (i % 10 / 2) as u32,
                refresh: i % 2 == 1,
                expires_at,
                superseded_at: 0,
            })
        } else if bindings {
            RevocationCommand::Bind(Binding {
                fingerprint,
                who: ScopeKey {
                    sub: format!("user-{:08}", i / 10),
                    org: (i % 20 < 10).then(|| format!("{}", i / 20)),
                    provider: Some("github".into()),
                },
                issued_at: now_unix(),
                expires_at,
            })
        } else {
            RevocationCommand::Token(TokenRule {
                fingerprint,
                expires_at,
            })
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(std::io::Error::other)?;
    let (journal, _, _) = Journal::open(path)?;
    rt.block_on(journal.rewrite(commands))?;
    journal.close();
    Ok(())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "prepare-journal") {
        let (Some(path), Some(n)) = (args.get(at + 1), args.get(at + 2)) else {
            eprintln!("usage: memory prepare-journal PATH N");
            return ExitCode::from(2);
        };
        let Ok(n) = n.parse() else {
            eprintln!("N must be a number");
            return ExitCode::from(2);
        };
        return match prepare(Path::new(path), n) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("prepare-journal: {e}");
                ExitCode::FAILURE
            }
        };
    }

    let n: usize = std::env::var("REVGATE_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tempdir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let full_path = dir.path().join("full.journal");
    let empty_path = dir.path().join("empty.journal");

    let started = std::time::Instant::now();
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("current_exe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = Command::new(exe)
        .arg("prepare-journal")
        .arg(&full_path)
        .arg(n.to_string())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("the child preparing the journal failed: {status:?}");
        return ExitCode::FAILURE;
    }
    let journal_bytes = std::fs::metadata(&full_path).map(|m| m.len()).unwrap_or(0);
    println!(
        "journal: {n} token rules, {:.1} MiB, written by a child in {:.1} s",
        mib(journal_bytes),
        started.elapsed().as_secs_f64()
    );

    trim();
    let rss_start = vm_rss_bytes();
    let empty = match MemoryStore::open(&empty_path, BLOOM_CAPACITY, BLOOM_FP_RATE) {
        Ok((s, _)) => s,
        Err(e) => {
            eprintln!("open empty store: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rss_empty_raw = vm_rss_bytes();
    trim();
    let rss_empty = vm_rss_bytes();

    let opened = std::time::Instant::now();
    let full = match MemoryStore::open(&full_path, BLOOM_CAPACITY, BLOOM_FP_RATE) {
        Ok((s, report)) => {
            let held = if bindings_kind() {
                s.status().bindings as usize
            } else if families_kind() {
                s.family_members()
            } else {
                s.token_count()
            };
            if report.records != n as u64 || held != n {
                eprintln!(
                    "replayed {} records, {} tokens; expected {n}",
                    report.records,
                    s.token_count()
                );
                return ExitCode::FAILURE;
            }
            s
        }
        Err(e) => {
            eprintln!("open full store: {e}");
            return ExitCode::FAILURE;
        }
    };
    let open_secs = opened.elapsed().as_secs_f64();
    let rss_full_raw = vm_rss_bytes();
    trim();
    let rss_full = vm_rss_bytes();

    let bloom = full.cache().bloom();
    let per_token = rss_full.saturating_sub(rss_empty) as f64 / n as f64;
    let per_token_raw = rss_full_raw.saturating_sub(rss_empty_raw) as f64 / n as f64;
    println!(
        "rss: process {:.1} MiB; with the empty store {:.1} MiB (empty store itself: {:.1} MiB); \
         with {n} revoked tokens {:.1} MiB ({:.1} MiB before malloc_trim)",
        mib(rss_start),
        mib(rss_empty),
        mib(rss_empty.saturating_sub(rss_start)),
        mib(rss_full),
        mib(rss_full_raw)
    );
    println!(
        "store: replay + bloom rebuild took {open_secs:.2} s; bloom {} bits = {:.2} MiB, k = {}",
        bloom.bits(),
        mib(bloom.memory_bytes() as u64),
        bloom.hashes()
    );
    if families_kind() {
        println!(
            "RESULT memory_per_family_member: {per_token:.1} B/member after malloc_trim \
             ({per_token_raw:.1} B raw)"
        );
    } else if !bindings_kind() {
        println!(
            "RESULT memory_per_revoked_token: {per_token:.1} B/token after malloc_trim \
             ({per_token_raw:.1} B/token raw), target <= {TARGET_BYTES_PER_TOKEN} B/token: {}",
            if per_token <= TARGET_BYTES_PER_TOKEN {
                "MET"
            } else {
                "MISSED"
            }
        );
    }
    if bindings_kind() {
        println!(
            "RESULT memory_per_binding: {per_token:.1} B/binding after malloc_trim \
             ({per_token_raw:.1} B raw), target <= {TARGET_BYTES_PER_BINDING} B: {}",
            if per_token <= TARGET_BYTES_PER_BINDING {
                "MET"
            } else {
                "MISSED"
            }
        );
    }
    drop(full);
    drop(empty);
    ExitCode::SUCCESS
}
