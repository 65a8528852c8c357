#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 300), one after the other
# (the machine has two cores), with the nightly toolchain and overflow checks on, and prints
# the executions and crashes of each. libFuzzer runs in fork mode and keeps going after a
# crash, so one known crash does not end a target's run; every crash is saved. Outside CI: needs `rustup toolchain install nightly` and
# `cargo install cargo-fuzz`. Crashes land in fuzz/artifacts/<target>/ (see fuzz/README.md).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
secs=${1:-300}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(packet_frame knockd_toml knockd_conf sequence_file profile audit_chain ledger_replay netlink_ack nft_watch)
fi
cd "$(dirname "$0")/../fuzz"
cargo +nightly run --quiet --bin write_seeds
for t in "${targets[@]}"; do
    log="artifacts/$t.log"
    mkdir -p artifacts
    cargo +nightly fuzz run --debug-assertions "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
        -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 >"$log" 2>&1 && rc=0 || rc=$?
    last=$(grep -E '^#[0-9]+: cov' "$log" | tail -1 || true)
    runs=$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$last")
    cov=$(grep -Eo 'cov: [0-9]+' <<<"$last" || true)
    failures=$(grep -Eo 'oom/timeout/crash: [0-9/]+' <<<"$last" || true)
    echo "$t: ${runs:-?} executions in ${secs} s, ${cov:-cov ?}, ${failures:-oom/timeout/crash ?} (exit $rc, log fuzz/$log)"
done
