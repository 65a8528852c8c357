#!/usr/bin/env bash
# Runs every test: unit tests, protocol vectors (checked against an independent Python
# implementation), and the end-to-end tests that run the real binaries in network namespaces
# with real packets and nftables. Needs root; installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
require_cargo
cargo build --workspace --all-targets
cargo test --workspace
