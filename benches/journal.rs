//! The embedded store's journal at scale (issue 10): file size, replay time
//! and compaction time for 1M and 10M token rules.
//!
//! For each size it writes a journal of N token rules (keyed fingerprints,
//! one expiry a month away) through the compaction path (mark, snapshot,
//! install: the way the gateway writes a compacted journal), then measures:
//!
//! - **size**: bytes on disk and bytes per rule;
//! - **decode**: [`Journal::open_with`] counting records (framing, CRC and
//!   record decoding only);
//! - **replay**: [`MemoryStore::open`], what the gateway does at start
//!   (decode, insert into the map, rebuild the bloom filter);
//! - **compact**: one [`MemoryStore::maintain`] of the loaded store;
//! - **upgrade**: the first start after the format change, on a JSON
//!   (version 1) journal of the same rules: decode it and rewrite it binary.
//!
//! Wall time and the process's CPU time (user + system) are both printed:
//! on a shared machine the second shows the work, the first what it took.
//!
//! The file is read from the page cache (it was just written): the figures
//! are CPU cost, not disk speed. Each measurement is the median of
//! `REVGATE_BENCH_RUNS` runs (default 3 up to 1M rules, 1 above).
//!
//! Run: `cargo bench --bench journal` (about 2 minutes; needs ~3 GB of RAM
//! and ~1 GB of disk at 10M). Sizes: `REVGATE_BENCH_JOURNAL_N=1000000,10000000`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use revgate::credentials::FingerprintKey;
use revgate::store::journal::Journal;
use revgate::store::memory::MemoryStore;
use revgate::store::{now_unix, RevocationCommand, TokenRule};

/// CPU seconds (user + system) this process has used: beside wall time,
/// it tells the work done from time lost to other processes on a shared
/// machine.
fn cpu_s() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Wall and CPU seconds of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (t, c) = (Instant::now(), cpu_s());
    let out = f();
    (out, t.elapsed().as_secs_f64(), cpu_s() - c)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn write_journal(path: &Path, n: usize) -> std::io::Result<()> {
    let key = FingerprintKey::from_bytes([7; 32]);
    let expires_at = now_unix() + 30 * 24 * 3600;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(std::io::Error::other)?;
    let (journal, _, _) = Journal::open(path)?;
    let mark = rt.block_on(journal.mark())?;
    let mut snapshot = journal.snapshot(mark)?;
    for i in 0..n {
        snapshot.push(&RevocationCommand::Token(TokenRule {
            fingerprint: key.fingerprint(format!("bench-journal-{i:012}").as_bytes()),
            expires_at,
        }))?;
    }
    rt.block_on(journal.install(snapshot))?;
    journal.close();
    Ok(())
}

/// Writes the same rules as a version-1 (JSON) journal, as revgate wrote
/// it before issue 10: `[len][crc][JSON]` records, no header.
fn write_v1_journal(path: &Path, n: usize) -> std::io::Result<()> {
    use std::io::Write as _;
    let key = FingerprintKey::from_bytes([7; 32]);
    let expires_at = now_unix() + 30 * 24 * 3600;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for i in 0..n {
        let cmd = RevocationCommand::Token(TokenRule {
            fingerprint: key.fingerprint(format!("bench-journal-{i:012}").as_bytes()),
            expires_at,
        });
        let payload = serde_json::to_vec(&cmd).map_err(std::io::Error::other)?;
        out.write_all(&(payload.len() as u32).to_le_bytes())?;
        out.write_all(&crc32fast::hash(&payload).to_le_bytes())?;
        out.write_all(&payload)?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The first start after the upgrade: replaying a JSON journal of `n`
/// rules and rewriting it in the binary format.
fn upgrade(n: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("v1.journal");
    write_v1_journal(&path, n).map_err(|e| format!("write v1: {e}"))?;
    let before = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
    let mut count = 0usize;
    let (opened, wall, cpu) = timed(|| Journal::open_with(&path, |_| count += 1));
    let (j, report) = opened.map_err(|e| e.to_string())?;
    drop(j);
    if count != n || report.upgraded_from != Some(1) {
        return Err(format!("upgraded {count} of {n}: {report:?}"));
    }
    let after = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
    println!(
        "RESULT journal upgrade n={n}: JSON {:.1} MiB -> binary {:.1} MiB in {wall:.3} s wall ({cpu:.3} s cpu), \
         decode of the JSON included",
        before as f64 / (1024.0 * 1024.0),
        after as f64 / (1024.0 * 1024.0),
    );
    Ok(())
}

fn run(n: usize, runs: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("bench.journal");
    let t = Instant::now();
    write_journal(&path, n).map_err(|e| format!("write: {e}"))?;
    let write_s = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();

    let (mut decode, mut decode_cpu) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let mut count = 0usize;
        let (opened, wall, cpu) = timed(|| Journal::open_with(&path, |_| count += 1));
        let (j, report) = opened.map_err(|e| e.to_string())?;
        decode.push(wall);
        decode_cpu.push(cpu);
        drop(j);
        if count != n || report.torn_bytes != 0 {
            return Err(format!(
                "decoded {count} of {n}, torn {}",
                report.torn_bytes
            ));
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .map_err(|e| e.to_string())?;
    let (mut replay, mut replay_cpu) = (Vec::new(), Vec::new());
    let (mut compact, mut compact_cpu) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (opened, wall, cpu) = timed(|| MemoryStore::open(&path, 1_000_000, 0.01));
        let (store, _) = opened.map_err(|e| format!("open: {e}"))?;
        replay.push(wall);
        replay_cpu.push(cpu);
        if store.token_count() != n {
            return Err(format!("replayed {} of {n}", store.token_count()));
        }
        let (m, wall, cpu) = timed(|| rt.block_on(store.maintain()));
        let m = m.map_err(|e| format!("maintain: {e}"))?;
        compact.push(wall);
        compact_cpu.push(cpu);
        if m.live != n {
            return Err(format!("compacted {} of {n}", m.live));
        }
    }
    let after = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
    println!(
        "RESULT journal n={n}: size {:.1} MiB ({:.1} B/rule; {:.1} MiB after compaction); \
         wall (cpu) seconds: decode {:.3} ({:.3}), replay into the store {:.3} ({:.3}), \
         compaction {:.3} ({:.3}), first write {:.2}; median of {runs}",
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / n as f64,
        after as f64 / (1024.0 * 1024.0),
        median(decode),
        median(decode_cpu),
        median(replay),
        median(replay_cpu),
        median(compact),
        median(compact_cpu),
        write_s,
    );
    Ok(())
}

fn main() -> ExitCode {
    let sizes: Vec<usize> = std::env::var("REVGATE_BENCH_JOURNAL_N")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: Option<usize> = std::env::var("REVGATE_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok());
    for n in sizes {
        let runs = runs.unwrap_or(if n <= 1_000_000 { 3 } else { 1 }).max(1);
        if let Err(e) = run(n, runs).and_then(|()| upgrade(n)) {
            eprintln!("journal bench, n={n}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
