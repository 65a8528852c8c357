//! Fuzz target: knock_core::fuzz_entry::sequence_file (invariants in src/fuzz_entry.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knock_core::fuzz_entry::sequence_file(data));
