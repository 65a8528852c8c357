#!/usr/bin/env bash
# Runs every test: unit tests, protocol vectors (checked against an independent Python
# implementation), the end-to-end tests that run the real binaries in network namespaces
# with real packets and nftables, a smoke run of the side-by-side benchmark (bench/compare.sh
# --smoke: a few knocks, one short flood, one matcher size; it proves the harness still runs,
# its figures mean nothing), and the package test (tests/deb/run.sh: the .deb built,
# installed, run and removed). Needs root; installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
require_cargo
cargo build --workspace --all-targets
cargo test --workspace
NO_BUILD=1 bash bench/compare.sh --smoke > /dev/null
# Alone, after the rest: it installs the package into this machine (and leaves it as it was).
bash tests/deb/run.sh
