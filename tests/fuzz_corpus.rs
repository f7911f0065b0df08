//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`)
//! through the same code as its fuzz target (`fuzz/targets.rs`, included
//! here), on the stable toolchain and on every `cargo test`: a parser change
//! that panics on, hangs on or breaks a property of an input the fuzzer once
//! found is caught without nightly or libFuzzer.

#[path = "../fuzz/targets.rs"]
#[allow(dead_code)]
mod targets;

use std::path::Path;

/// The corpus files of one target, sorted (so a failure names the same file
/// every run).
fn corpus(target: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, body) = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no target {target}"));
    let files = corpus(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
    for file in &files {
        let data = std::fs::read(file).expect("read corpus file");
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", file.display());
    }
    println!("{target}: {} corpus files replayed", files.len());
}

#[test]
fn every_target_has_a_replay_test_and_a_corpus() {
    let names: Vec<_> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut bins: Vec<String> = std::fs::read_dir(dir)
        .expect("fuzz_targets")
        .map(|e| {
            let p = e.expect("entry").path();
            p.file_stem().expect("stem").to_string_lossy().into_owned()
        })
        .collect();
    bins.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(bins, sorted, "fuzz_targets/ and TARGETS differ");
    // This file has one test per target below; keep them in step.
    let me = include_str!("fuzz_corpus.rs");
    for n in names {
        assert!(me.contains(&format!("fn {n}()")), "no replay test for {n}");
    }
}

#[test]
fn h1_chunks() {
    replay("h1_chunks");
}

#[test]
fn h1_request() {
    replay("h1_request");
}

#[test]
fn h1_response() {
    replay("h1_response");
}

#[test]
fn credentials() {
    replay("credentials");
}

#[test]
fn jwt_peek() {
    replay("jwt_peek");
}

#[test]
fn dialects() {
    replay("dialects");
}

#[test]
fn form_values() {
    replay("form_values");
}

#[test]
fn journal() {
    replay("journal");
}

#[test]
fn redis_snapshot() {
    replay("redis_snapshot");
}

#[test]
fn config() {
    replay("config");
}

#[test]
fn jwt_verify() {
    replay("jwt_verify");
}
