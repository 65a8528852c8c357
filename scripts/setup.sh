#!/usr/bin/env bash
# Installs what building, testing and the demonstration need on a fresh Debian/Ubuntu machine,
# and only what is missing. Elsewhere it names the packages and stops. Sourced by test.sh,
# demo/run.sh and .ci/run; `require_cargo` then finds the Rust toolchain.
#
# Every program a test runs comes from a package below: libpcap, nftables, iptables and ipset
# (firewall backends), iproute2 (namespaces), tcpdump (captures), python3 (the protocol's
# reference implementation), procps (kill, sysctl), mount; man-db and groff-base (the man
# pages render), zsh and fish (their completions load); and for the package test
# (tests/deb/run.sh): dpkg-dev (with build-essential), systemd (systemd-analyze) and adduser
# (the package's postinst); for the shared ledger's tests in namespaces (tests/e2e/ha): curl (is
# the etcd cluster there ready?) and iputils-arping (the virtual address moves with a gratuitous
# ARP). Debian's knockd 0.8, the real peer of the
# compatibility tests, is not installed: it is unpacked under target/peers/ (below), because
# the package test installs this project's package, which replaces Debian's knockd.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
pkg_missing() { ! dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (it installs packages; the tests make network namespaces and nftables rules)" >&2
  exit 1
fi

packages=(libpcap-dev nftables iptables ipset iproute2 tcpdump pkg-config build-essential python3 procps mount
  systemd man-db groff-base zsh fish adduser openssl curl iputils-arping)
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
    echo "setup: this is not a Debian/Ubuntu system (no apt-get), and these are missing: ${need_pkgs[*]}." >&2
    echo "  Needed: libpcap with its headers, nftables, iproute2, tcpdump, pkg-config, a C compiler, python3." >&2
    echo "  Fedora/RHEL: libpcap-devel nftables iproute tcpdump pkgconf-pkg-config gcc make python3" >&2
    echo "  Arch: libpcap nftables iproute2 tcpdump pkgconf base-devel python" >&2
    exit 1
  fi
fi

# Real peers the tests run but nothing installs (so no service of theirs starts on this
# machine): fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
# <target>/peers/NAME/. Debian's knockd 0.8 for the compatibility tests
# (tests/e2e/knockd_compat.rs; libpcap0.8 comes with libpcap-dev), and etcd for the shared
# ledger's tests (etcd/tests, tests/e2e; a static binary).
peers_dir="${CARGO_TARGET_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target}/peers"
# fetch_peer PACKAGE DIR BINARY...: unpacks PACKAGE into $peers_dir/DIR unless its BINARYs are there.
fetch_peer() {
  local package=$1 dir=$2; shift 2
  local bin missing=0
  for bin in "$@"; do [ -x "$peers_dir/$dir/$bin" ] || missing=1; done
  [ "$missing" = 0 ] && return 0
  if have apt-get && have dpkg-deb; then
    echo "setup: fetching Debian's $package (a peer the tests run) into $peers_dir/$dir"
    mkdir -p "$peers_dir"
    rm -f "$peers_dir/${package}"_*.deb
    if ! (cd "$peers_dir" && apt-get download -q "$package" >/dev/null 2>&1); then
      apt-get update -qq
      (cd "$peers_dir" && apt-get download -q "$package" >/dev/null)
    fi
    rm -rf "${peers_dir:?}/$dir"
    dpkg-deb -x "$peers_dir/${package}"_*.deb "$peers_dir/$dir"
  else
    echo "setup: the tests need Debian's $package unpacked in $peers_dir/$dir ($*), e.g. with dpkg-deb -x" >&2
    exit 1
  fi
}
fetch_peer knockd knockd usr/sbin/knockd usr/bin/knock
fetch_peer etcd-server etcd usr/bin/etcd

# require_cargo: puts a rustup cargo on PATH if it is not there, or stops with the fix.
require_cargo() {
  if ! have cargo; then
    for d in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
      [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
    done
  fi
  have cargo || { echo "setup: cargo not found; install the stable Rust toolchain (https://rustup.rs, Rust 1.89 or newer), then run this again" >&2; exit 1; }
}
