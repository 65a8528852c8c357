//! Fuzz target: knockd::fuzz_entry::nft_watch (invariants in server/src/fuzz_entry.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knockd::fuzz_entry::nft_watch(data));
