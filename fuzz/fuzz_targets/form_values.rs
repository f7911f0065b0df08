//! Fuzz target `form_values`: the body is `revgate_fuzz::form_values` (fuzz/targets.rs),
//! shared with the corpus replay test (tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| revgate_fuzz::form_values(data));
