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
//! - **compact**: one [`MemoryStore::maintain`] of the loaded store.
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

fn run(n: usize, runs: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("bench.journal");
    let t = Instant::now();
    write_journal(&path, n).map_err(|e| format!("write: {e}"))?;
    let write_s = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();

    let mut decode = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut count = 0usize;
        let (j, report) = Journal::open_with(&path, |_| count += 1).map_err(|e| e.to_string())?;
        decode.push(t.elapsed().as_secs_f64());
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
    let mut replay = Vec::new();
    let mut compact = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let (store, _) =
            MemoryStore::open(&path, 1_000_000, 0.01).map_err(|e| format!("open: {e}"))?;
        replay.push(t.elapsed().as_secs_f64());
        if store.token_count() != n {
            return Err(format!("replayed {} of {n}", store.token_count()));
        }
        let t = Instant::now();
        let m = rt
            .block_on(store.maintain())
            .map_err(|e| format!("maintain: {e}"))?;
        compact.push(t.elapsed().as_secs_f64());
        if m.live != n {
            return Err(format!("compacted {} of {n}", m.live));
        }
    }
    let after = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
    println!(
        "RESULT journal n={n}: size {:.1} MiB ({:.1} B/rule; {:.1} MiB after compaction), \
         decode {:.3} s ({:.0} ns/rule), replay into the store {:.3} s, compaction {:.3} s, \
         first write {:.2} s (runs: {runs})",
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / n as f64,
        after as f64 / (1024.0 * 1024.0),
        median(decode.clone()),
        median(decode) * 1e9 / n as f64,
        median(replay),
        median(compact),
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
        if let Err(e) = run(n, runs) {
            eprintln!("journal bench, n={n}: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
