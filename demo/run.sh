#!/usr/bin/env bash
# The demonstration (the README's first command):   sudo bash demo/run.sh
#
# Installs what is missing (apt-get on Debian/Ubuntu), builds the workspace, then tells the
# whole story in three network namespaces on this machine: a server with an nftables ruleset,
# an SSH-like service on port 22 and knockd; a client that knocks with a one-time sequence and
# gets in; an outsider that cannot, not even by replaying the captured knock. The grant expires
# by itself, a session opened during it survives, and the audit log shows all of it.
#
# Everything it creates (namespaces, processes, the temporary directory) is removed on exit,
# including on failure or Ctrl-C. Only 198.18.0.0/15 and 2001:db8::/32 addresses are used.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=demo/lab.sh
. "$SCRIPT_DIR/lab.sh"
OPEN_FOR=5      # seconds a grant lasts (the door's open_for)
HOLD_MS=9000    # how long the session opened during the first grant is held

# shellcheck source=demo/story.sh
. "$SCRIPT_DIR/story.sh"

# on HOST CMD...: runs CMD on "host" (this machine) or in the server/client/outsider namespace.
on() {
  local host=$1; shift
  case $host in
    host) "$@" ;;
    server) ip netns exec "$SERVER_NS" "$@" ;;
    client) ip netns exec "$CLIENT_NS" "$@" ;;
    outsider) ip netns exec "$OUTSIDER_NS" "$@" ;;
  esac
}

# show HOST CMD...: prints the command, runs it, prints its output (stdout and stderr)
# indented; returns its exit status. SHOW_AS=... overrides how the command is displayed.
show() {
  local host=$1; shift
  printf '   %s[%s]%s $ %s\n' "$BOLD" "$host" "$RESET" "${SHOW_AS:-$*}"
  local rc=0
  on "$host" "$@" 2>&1 | indent || rc=$?
  return "$rc"
}

# ----------------------------------------------------------------------------- cleanup
BG_PIDS=()        # every background process this script started, killed by PID on exit
LAB_STARTED=0
WORK=''
SERVER_NS='' CLIENT_NS='' OUTSIDER_NS=''

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_background
  [ "$LAB_STARTED" = 1 ] && lab_down
  end_story "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bg NAME HOST LOG CMD...: starts CMD in the background on HOST, output to LOG; sets BG_PID.
# `ip netns exec` execs CMD, so the PID is the command's own.
bg() {
  local name=$1 host=$2 log=$3; shift 3
  case $host in
    server) ip netns exec "$SERVER_NS" "$@" >"$log" 2>&1 & ;;
    client) ip netns exec "$CLIENT_NS" "$@" >"$log" 2>&1 & ;;
    outsider) ip netns exec "$OUTSIDER_NS" "$@" >"$log" 2>&1 & ;;
  esac
  BG_PID=$!
  BG_PIDS+=("$BG_PID")
  printf '   %s[%s]%s $ %s &   %s(%s, pid %s)%s\n' "$BOLD" "$host" "$RESET" "${SHOW_AS:-$*}" \
    "$DIM" "$name" "$BG_PID" "$RESET"
}


# ----------------------------------------------------------------------------- preflight
if [ "$(uname -s)" != Linux ]; then
  die "This demonstration needs Linux (network namespaces and nftables)."
fi
if [ "$(id -u)" -ne 0 ]; then
  die "This demonstration must run as root: it creates network namespaces, an nftables table and raw sockets.
   Run it as:  sudo bash demo/run.sh"
fi

title "Preparing"
# Packages: the same script the tests use installs what is missing (apt-get), or names it.
source "$REPO/scripts/setup.sh"
say "Packages present: ${packages[*]}"

# cargo: root's own, or (under sudo) the invoking user's rustup toolchain, building as that user
# so target/ stays theirs. The binaries always land in the repository's own target/.
unset CARGO_TARGET_DIR
as_user() { sudo -u "$SUDO_USER" -H bash -lc 'export PATH="$HOME/.cargo/bin:$PATH"; cd "$1" && shift && "$@"' bash "$REPO" "$@"; }
BUILD=()
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && command -v sudo >/dev/null 2>&1 \
  && [ "$(stat -c %U "$REPO")" = "$SUDO_USER" ] \
  && as_user cargo --version >/dev/null 2>&1; then
  BUILD=(as_user cargo)
  say "Building as $SUDO_USER with their Rust toolchain ($(as_user cargo --version))"
elif command -v cargo >/dev/null 2>&1; then
  BUILD=(cargo)
elif [ -x "$HOME/.cargo/bin/cargo" ]; then
  BUILD=("$HOME/.cargo/bin/cargo")
else
  die "cargo (Rust) was not found. Install Rust with rustup (https://rustup.rs):
     curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
   then open a new shell and run this again (this workspace needs Rust 1.89 or newer)."
fi
say "Building: cargo build --workspace --release   (in $REPO)"
BUILD_START=$SECONDS
rc=0
(cd "$REPO" && "${BUILD[@]}" build --workspace --release) 2>&1 | indent || rc=$?
if [ "$rc" -ne 0 ]; then
  die "The build failed (see above). Note that this workspace needs Rust 1.89 or newer (\`rustup update stable\`)."
fi
say "Built in $((SECONDS - BUILD_START)) s."
BIN="$REPO/target/release"
for b in knockd knock knock-lab; do [ -x "$BIN/$b" ] || die "$BIN/$b is missing after the build"; done
export PATH="$BIN:$PATH"

# ----------------------------------------------------------------------------- the story
DEMO_START=$SECONDS
TAG="demo$$"
TAG=${TAG:0:11} # interface names (v2-TAG) must stay under 15 characters
for ns in "kd-srv-$TAG" "kd-cli-$TAG" "kd-out-$TAG"; do
  if ip netns list | grep -qw -- "$ns"; then die "network namespace $ns already exists; remove it with: ip netns del $ns"; fi
done
WORK=$(mktemp -d /tmp/knock-demo.XXXXXX)
cd "$WORK"
# The client's profile store (knock honours XDG_CONFIG_HOME and XDG_STATE_HOME).
export XDG_CONFIG_HOME="$WORK/client/config" XDG_STATE_HOME="$WORK/client/state"

title "The one-time port knocker, end to end"
say "Three hosts, each a network namespace on this machine, joined by a bridge:"
say "  server    198.18.0.1  2001:db8::1   SSH-like service on port 22, knockd guarding it"
say "  client    198.18.0.2  2001:db8::2   holds a knock profile (a secret key)"
say "  outsider  198.18.0.3  2001:db8::3   sees the network, has no key"
say "\`[server] \$ cmd\` means \`ip netns exec kd-srv-$TAG cmd\` (likewise kd-cli-, kd-out-); [host] is this"
say "machine. Binaries come from $BIN; files live in the temporary directory $WORK."

# 1 --------------------------------------------------------------------------------------------
step "Set up the lab: server, client and outsider; the service on port 22 and knockd" \
  "knockd drops new connections to port 22 unless the source has knocked a valid one-time sequence."
SERVER_NS="kd-srv-$TAG" CLIENT_NS="kd-cli-$TAG" OUTSIDER_NS="kd-out-$TAG"
LAB_STARTED=1
lab_up "$TAG"
note "namespaces $SERVER_NS, $CLIENT_NS, $OUTSIDER_NS are up (bridge br0 in the server)"
cat >knockd.toml <<EOF
[server]
state_dir = "state"
interfaces = ["br0"]

[[door]]
name = "ssh"
mode = "hotp"
open = ["22/tcp"]
keys = "keys/ssh"
open_for = "${OPEN_FOR}s"
seq_timeout = "3s"
EOF
show host cat knockd.toml
show host knockd -c knockd.toml init
show host knockd -c knockd.toml audit init-key --out auditor.key
note "(auditor.key is the audit chain's first key: in real life it leaves this host, for the auditor)"
show host knockd -c knockd.toml client add --door ssh --name alice --server-addr 198.18.0.1 --out alice.knock
note "(the bundle goes to the client; here both sides share this machine)"
show host knock profile import alice.knock
rm -f alice.knock
bg "SSH-like service" server serve.log knock-lab serve --port 22 --max-seconds 300
SERVE_PID=$BG_PID
SHOW_AS="knockd -c knockd.toml 2>daemon.log" bg knockd server daemon.log knockd -c knockd.toml
KNOCKD_PID=$BG_PID
if ! wait_for 10 grep -q "knockd started" daemon.log; then
  indent <daemon.log
  die "knockd did not start (its log is above)"
fi
wait_for 5 on server knock-lab probe --addr 127.0.0.1 --port 22 --timeout-ms 200 >/dev/null 2>&1 \
  || die "the service on port 22 did not start: $(cat serve.log)"
indent <daemon.log
show server nft list table inet knockd
ok "knockd runs (pid $KNOCKD_PID); its table drops new connections to tcp/22 from sources not in grants4/grants6"

# 2 --------------------------------------------------------------------------------------------
step "Before knocking, the client cannot reach port 22" \
  "the service is invisible: its SYNs are dropped, so it looks like nothing listens at all."
if show client knock-lab probe --addr 198.18.0.1 --port 22 --timeout-ms 800; then
  die "the client connected to port 22 without knocking"
fi
ok "no answer from port 22 for the client"

# 3 --------------------------------------------------------------------------------------------
step "The client knocks with its profile, the door opens, the client gets in" \
  "each knock is a fresh one-time sequence of SYNs derived from the client's key; we capture it on the way."
SHOW_AS="tcpdump -i br0 -w knocks.pcap -U --immediate-mode 'tcp dst portrange 40000-42047'" \
  bg "capture of the knocks" server tcpdump.log tcpdump -i br0 -w knocks.pcap -U --immediate-mode 'tcp dst portrange 40000-42047'
TCPDUMP_PID=$BG_PID
wait_for 5 grep -q "listening on" tcpdump.log || die "tcpdump did not start: $(cat tcpdump.log)"
sleep 0.3
show client knock --profile ssh-alice --wait -v || die "the knock did not open the door"
sleep 0.3
kill -INT "$TCPDUMP_PID"
wait "$TCPDUMP_PID" || true
forget_pid "$TCPDUMP_PID"
note "stopped the capture (SIGINT to pid $TCPDUMP_PID):"
grep -v "^tcpdump: listening" tcpdump.log | indent
show host tcpdump -nn -q -r knocks.pcap
show server nft list set inet knockd grants4
show client knock-lab probe --addr 198.18.0.1 --port 22 --timeout-ms 800 || die "the client could not connect after knocking"
SHOW_AS="bash -c 'head -n1 </dev/tcp/198.18.0.1/22'   # the service's banner" \
  show client timeout 3 bash -c 'head -n1 </dev/tcp/198.18.0.1/22 | tr -d "\r"' \
  || die "no banner from the service"
bg "a session held open" client hold.log knock-lab probe --addr 198.18.0.1 --port 22 --timeout-ms 800 --hold-ms "$HOLD_MS"
HOLD_PID=$BG_PID
ok "the door opened for 198.18.0.2 only, for ${OPEN_FOR} s; a session stays open in the background"

# 4 --------------------------------------------------------------------------------------------
step "The outsider still cannot connect" \
  "the grant is for the client's address alone (a set element keyed by source address)."
if show outsider knock-lab probe --addr 198.18.0.1 --port 22 --timeout-ms 800; then
  die "the outsider connected to port 22"
fi
if show outsider knock-lab probe --addr 2001:db8::1 --port 22 --timeout-ms 800; then
  die "the outsider connected to port 22 over IPv6"
fi
ok "nothing for the outsider, over IPv4 or IPv6"

# 5 --------------------------------------------------------------------------------------------
step "The outsider replays the captured knock: nothing opens" \
  "a sequence works once; the server remembers it was used, so a sniffed knock is worthless."
note "waiting for the client's grant to expire (open_for = ${OPEN_FOR} s) ..."
grants_empty() { local out; out=$(on server nft list set inet knockd grants4) && [[ $out != *elements* ]]; }
wait_for $((OPEN_FOR + 5)) grants_empty || die "the grant did not expire after ${OPEN_FOR} s"
show server nft list set inet knockd grants4
note "byte-exact, spoofing the client's address:"
show outsider knock-lab replay --pcap knocks.pcap --iface eth0 || die "the replay failed"
OUT_MAC=$(on outsider cat /sys/class/net/eth0/address)
note "rewritten to the outsider's own address and MAC ($OUT_MAC):"
show outsider knock-lab replay --pcap knocks.pcap --iface eth0 --src 198.18.0.3 --src-mac "$OUT_MAC" \
  || die "the replay failed"
replays_logged() { [ "$(grep -c replayed daemon.log)" -ge 2 ]; }
wait_for 3 replays_logged || true
show server nft list set inet knockd grants4
if show client knock-lab probe --addr 198.18.0.1 --port 22 --timeout-ms 800; then
  die "port 22 opened for the client after the replay"
fi
if show outsider knock-lab probe --addr 198.18.0.1 --port 22 --timeout-ms 800; then
  die "port 22 opened for the outsider after the replay"
fi
SHOW_AS="grep replayed daemon.log" show host grep replayed daemon.log || die "knockd logged no replay"
grep -q 'replayed.*source=198.18.0.2' daemon.log || die "knockd did not log the spoofed replay"
grep -q 'replayed.*source=198.18.0.3' daemon.log || die "knockd did not log the outsider's replay"
ok "both replays recognised as already used; nothing opened for anyone"

# 6 --------------------------------------------------------------------------------------------
step "The grant expired by itself, yet the session opened during it lives on" \
  "a grant is an nftables set element with a kernel timeout (it expires even if knockd dies); established connections always pass."
if show client knock-lab probe --addr 198.18.0.1 --port 22 --timeout-ms 800; then
  die "the client made a new connection after its grant expired"
fi
ok "no new connection for the client without a new knock"
note "the session held since step 3 (knock-lab probe --hold-ms $HOLD_MS, pid $HOLD_PID), echoing a line every 200 ms:"
rc=0
wait "$HOLD_PID" || rc=$?
forget_pid "$HOLD_PID"
indent <hold.log
[ "$rc" -eq 0 ] || die "the session opened during the grant broke (exit status $rc)"
ok "the session outlived its grant by $(((HOLD_MS / 1000) - OPEN_FOR)) s or so without breaking"

# 7 --------------------------------------------------------------------------------------------
step "The client knocks again, with the next one-time sequence, and gets in" \
  "the client keeps its own counter: every knock is new, none can be reused."
show client knock --profile ssh-alice --wait -v || die "the second knock did not open the door"
show client knock-lab probe --addr 198.18.0.1 --port 22 --timeout-ms 800 || die "the client could not connect after knocking again"
ok "in again"

# 8 --------------------------------------------------------------------------------------------
step "The audit log" \
  "every start, grant, replay and stop is recorded (grants are synced to disk before the door opens)."
show host knockd -c knockd.toml audit || die "knockd audit failed"
GRANTS=$(knockd -c knockd.toml audit | awk '$3 == "grant"' | wc -l)
REPLAYS=$(knockd -c knockd.toml audit --replays | awk '$3 == "replay"' | wc -l)
[ "$GRANTS" -eq 2 ] || die "expected 2 grant records, found $GRANTS"
[ "$REPLAYS" -eq 2 ] || die "expected 2 replay records, found $REPLAYS"
ok "2 grants to alice at 198.18.0.2 (sequences 0 and 1); 2 replays of the captured sequence (spoofed from .2, and from .3), nothing opened"
show host knockd -c knockd.toml audit --verify --key auditor.key || die "the audit chain did not verify"
ok "every record is chained and MACed with a key that moves forward; with the first key the auditor checks them all"

# 9 --------------------------------------------------------------------------------------------
step "Stop knockd" \
  "SIGTERM stops it cleanly; its table stays, so port 22 stays closed (grants still listed expire on their own)."
note "kill -TERM $KNOCKD_PID"
kill -TERM "$KNOCKD_PID"
stopped() { ! kill -0 "$KNOCKD_PID" 2>/dev/null; }
wait_for 5 stopped || die "knockd (pid $KNOCKD_PID) did not stop within 5 s of SIGTERM"
rc=0
wait "$KNOCKD_PID" || rc=$?
forget_pid "$KNOCKD_PID"
[ "$rc" -eq 0 ] || die "knockd exited with status $rc on SIGTERM"
show host tail -n 1 daemon.log
show server nft list tables
kill -TERM "$SERVE_PID" 2>/dev/null || true

title "What you saw"
say "  - Port 22 was invisible to everyone until a valid knock: no answer, not even a refusal."
say "  - The client's one-time knock opened it for the client's address alone, for ${OPEN_FOR} s."
say "  - The outsider, replaying the captured knock byte-exact (spoofing the client) or from its"
say "    own address, opened nothing: both replays were recognised and logged."
say "  - The grant expired by itself in the kernel; the session opened during it kept working."
say "  - The next knock used the next sequence and opened the door again."
say "  - The audit log recorded the grants and the replays."
say ""
say "The story took $((SECONDS - DEMO_START)) s. Cleaning up: namespaces, processes and $WORK are removed."
