#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian/Ubuntu machine, and only what is
# missing. Elsewhere it names the packages and stops. Sourced or run by test.sh, demo/run.sh
# and .ci/run.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
pkg_missing() { ! dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (it installs packages; the tests make network namespaces and nftables rules)" >&2
  exit 1
fi

packages=(libpcap-dev nftables iproute2 tcpdump pkg-config build-essential python3)
if have dpkg-query && have apt-get; then
  for p in "${packages[@]}"; do pkg_missing "$p" && need_pkgs+=("$p"); done
  if [ "${#need_pkgs[@]}" -gt 0 ]; then
    echo "setup: installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  fi
else
  for c in nft ip tcpdump python3 pkg-config cc; do have "$c" || need_pkgs+=("$c"); done
  if [ "${#need_pkgs[@]}" -gt 0 ]; then
    echo "setup: this is not a Debian/Ubuntu system; install by hand: libpcap (with headers), nftables, iproute2, tcpdump, pkg-config, a C compiler, python3 (missing here: ${need_pkgs[*]})" >&2
    exit 1
  fi
fi

if ! have cargo; then
  for d in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
  done
fi
have cargo || { echo "setup: cargo not found; install the stable Rust toolchain (https://rustup.rs), then run this again" >&2; exit 1; }
