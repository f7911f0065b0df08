//! Fuzz target `jwt_verify`: the body is `revgate_fuzz::jwt_verify` (fuzz/targets.rs),
//! shared with the corpus replay test (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| revgate_fuzz::jwt_verify(data));
