//! Fuzz target: knockd::fuzz_entry::netlink_ack (invariants in server/src/fuzz_entry.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knockd::fuzz_entry::netlink_ack(data));
