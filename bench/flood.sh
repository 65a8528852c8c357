#!/usr/bin/env bash
# End-to-end flood benchmark: the real knockd, knock and knock-lab in three network namespaces
# (demo/lab.sh), a spoofed-source flood from the outsider, and a legitimate client knocking
# during it. For each flood rate (none, ~50k pps, max) it measures:
#   - the client's knock-to-open time (`knock --wait`: "answered X s after the first knock"),
#   - the daemon's own decision time (`decided_us` in its "door opened" log line: capture of the
#     last knock -> ledger + audit fdatasync -> firewall grant returned),
#   - the daemon's CPU time over the case (utime+stime from /proc/PID/stat) / wall time,
#   - knocks the daemon dropped (its consumer was behind), sequences burned by the flood,
#   - whether the client got in.
# Prints a table and appends it, with date and machine info, to bench/RESULTS.md.
#
# Needs root. Only 198.18.0.0/15 and 2001:db8::/32 are used. Cleans up after itself (trap),
# killing only the processes it started, by PID.
#
#   sudo bench/flood.sh          # env: FLOOD_COUNT, FLOOD_SECONDS, MID_RATE; NO_BUILD=1 uses the
#                                # binaries already built; KEEP=1 keeps the work dir (daemon.log)
#   CASES="none r100k r250k" bench/flood.sh   # cases to run (default: none mid max); rNNNk: a
#                                # flood paced to NNN thousand pps, split over ceil(NNN/100)
#                                # knock-lab senders (SENDERS=n overrides), for FLOOD_SECONDS
#   FLOOD_SOURCES=2001:db8::/32  # spoofed sources (default 198.18.0.0/15); IPv6 ones flood
#                                # 2001:db8::1 (about one distinct source per packet)
#   KNOCKD_BIN=path              # another knockd binary (a before/after comparison)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

[ "$(id -u)" = 0 ] || { echo "bench/flood.sh: needs root (network namespaces, nftables)" >&2; exit 1; }

FLOOD_COUNT=${FLOOD_COUNT:-1000000}    # packets of the max-rate flood (knock-lab caps it at 5M)
FLOOD_SECONDS=${FLOOD_SECONDS:-10}     # time limit of every flood
MID_RATE=${MID_RATE:-50000}            # target of the paced flood, packets per second
BURST=10000                            # packets per burst of the paced flood (knock-lab starts in ~50 ms)
WARMUP=0.5                             # seconds of flood before the client knocks
SOURCES=${FLOOD_SOURCES:-198.18.0.0/15}
CASES=${CASES:-none mid max}
case $SOURCES in *:*) FLOOD_DST=2001:db8::1 ;; *) FLOOD_DST=198.18.0.1 ;; esac
PORTS=40000-42047
RESULTS=$REPO/bench/RESULTS.md

if [ -z "${NO_BUILD:-}" ]; then
  echo "== building (release)" >&2
  cargo build --workspace --release >&2
fi
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
for b in knockd knock knock-lab; do [ -x "$BIN/$b" ] || { echo "missing $BIN/$b" >&2; exit 1; }; done
KNOCKD_BIN=${KNOCKD_BIN:-$BIN/knockd}

# shellcheck source=demo/lab.sh
source "$REPO/demo/lab.sh"
TAG="fb$(( $$ % 100000 ))"              # interface names: v2-fbNNNNN (< 15 chars)
WORK=$(mktemp -d /tmp/knock-flood.XXXXXX)
PIDS=()
PACER=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$PACER" ]; then
    pkill -P "$PACER" 2>/dev/null || true     # its current knock-lab burst, by parent PID
    kill "$PACER" 2>/dev/null || true
  fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  lab_down
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== lab $TAG in $WORK" >&2
lab_up "$TAG"
in_ns() { local ns=$1; shift; ip netns exec "$ns" env XDG_CONFIG_HOME="$WORK/$ns/config" XDG_STATE_HOME="$WORK/$ns/state" "$@"; }

cd "$WORK"
cat > knockd.toml <<EOF
[server]
state_dir = "state"
interfaces = ["br0"]

[[door]]
name = "ssh"
mode = "hotp"
open = ["22/tcp"]
keys = "keys/ssh"
knock_ports = "$PORTS"
open_for = "5s"
EOF
"$BIN/knockd" -c knockd.toml init >&2
"$BIN/knockd" -c knockd.toml client add --door ssh --name alice --server-addr 198.18.0.1 --out alice.knock >&2
in_ns "$CLIENT_NS" "$BIN/knock" profile import alice.knock >&2
PROFILE=ssh-alice

ip netns exec "$SERVER_NS" "$KNOCKD_BIN" -c knockd.toml 2> daemon.log > /dev/null &
KNOCKD=$!
PIDS+=("$KNOCKD")
ip netns exec "$SERVER_NS" "$BIN/knock-lab" serve --port 22 --max-seconds 600 > /dev/null 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do grep -q "knockd started" daemon.log && break; sleep 0.1; done
grep -q "knockd started" daemon.log || { cat daemon.log >&2; echo "knockd did not start" >&2; exit 1; }
sleep 1
mib() { awk -v k="$(sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$KNOCKD/status")" 'BEGIN { printf "%.1f", k / 1024 }'; }
IDLE_RSS=$(mib VmRSS)
echo "== idle RSS $IDLE_RSS MiB" >&2

SRC_MAC=$(ip netns exec "$OUTSIDER_NS" cat /sys/class/net/eth0/address)
DST_MAC=$(ip netns exec "$SERVER_NS" cat /sys/class/net/br0/address)
HZ=$(getconf CLK_TCK)

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$KNOCKD/stat"; }
now_ns() { date +%s%N; }
plain_log() { sed 's/\x1b\[[0-9;]*m//g' daemon.log; }
flood() { # COUNT SECONDS -> "sent N packets in T s (R pps)"
  ip netns exec "$OUTSIDER_NS" "$BIN/knock-lab" flood --iface eth0 --dst "$FLOOD_DST" --dst-mac "$DST_MAC" \
    --src-mac "$SRC_MAC" --ports "$PORTS" --count "$1" --max-seconds "$2" --sources "$SOURCES" "${@:3}"
}
# Paced flood of RATE pps over n senders for $FLOOD_SECONDS (each bounded by count and time).
rate_flood() {
  local rate=$1 out=$2 n=${SENDERS:-$(( ($1 + 99999) / 100000 ))} pids=()
  for _ in $(seq "$n"); do
    flood $(( rate / n * FLOOD_SECONDS )) $(( FLOOD_SECONDS + 2 )) --pps $(( rate / n )) >> "$out" 2>&1 & pids+=("$!")
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
}
kernel_drops() { sed 's/\x1b\[[0-9;]*m//g' <<< "$1" | sed -n 's/.*dropped by the kernel.* total=\([0-9]*\).*/\1/p' \
  | awk '$1 > m { m = $1 } END { print m + 0 }'; }
drop_total() { sed 's/\x1b\[[0-9;]*m//g' <<< "$1" | sed -n 's/.*knocks dropped.* total=\([0-9]*\).*/\1/p; s/.* total=\([0-9]*\).*knocks dropped.*/\1/p' \
  | awk '$1 > m { m = $1 } END { print m + 0 }'; }
sum_sent() { awk '/^sent/ { n += $2 } END { print n + 0 }' "$1"; }

# Paced flood: bursts of $BURST packets, spaced to average $MID_RATE pps, for $FLOOD_SECONDS.
paced_flood() {
  local out=$1 period_ns=$(( BURST * 1000000000 / MID_RATE ))
  local end=$(( $(now_ns) + FLOOD_SECONDS * 1000000000 )) next
  next=$(now_ns)
  while [ "$(now_ns)" -lt "$end" ]; do
    flood "$BURST" 1 >> "$out" 2>&1 || true
    next=$(( next + period_ns ))
    local left=$(( next - $(now_ns) ))
    if [ "$left" -gt 0 ]; then sleep "$(awk -v n="$left" 'BEGIN { printf "%.3f", n / 1e9 }')"; fi
  done
}

wait_closed() {
  for _ in $(seq 60); do
    in_ns "$CLIENT_NS" "$BIN/knock-lab" probe --addr 198.18.0.1 --port 22 --timeout-ms 300 >/dev/null 2>&1 || return 0
    sleep 0.2
  done
}

ROWS=()
run_case() { # NAME
  local name=$1 fout="$WORK/flood-$1.out" lines0 c0 t0 c1 t1 fpid=""
  : > "$fout"
  wait_closed
  lines0=$(wc -l < daemon.log)
  c0=$(cpu_ticks); t0=$(now_ns)
  case $name in
    none) ;;
    mid) paced_flood "$fout" & PACER=$!; fpid=$PACER ;;
    max) flood "$FLOOD_COUNT" "$FLOOD_SECONDS" > "$fout" 2>&1 & fpid=$!; PIDS+=("$fpid") ;;
    r*k) rate_flood $(( ${name//[rk]/} * 1000 )) "$fout" & fpid=$!; PIDS+=("$fpid") ;;
    *) echo "unknown case $name (none, mid, max, rNNNk)" >&2; exit 2 ;;
  esac
  [ -n "$fpid" ] && sleep "$WARMUP"
  local kout kt0 kt1 ok=no answered="-" tries
  kt0=$(now_ns)
  if kout=$(in_ns "$CLIENT_NS" "$BIN/knock" --profile "$PROFILE" --wait --wait-timeout 2 --attempts 3 2>&1); then ok=yes; fi
  kt1=$(now_ns)
  local during=no
  if [ -n "$fpid" ] && kill -0 "$fpid" 2>/dev/null; then during=yes; fi
  [ "$name" = none ] && during=-
  if [ -n "$fpid" ]; then wait "$fpid" 2>/dev/null || true; fi
  PACER=""
  c1=$(cpu_ticks); t1=$(now_ns)
  echo "$kout" | sed "s/^/  [$name] /" >&2
  tries=$(( $(grep -c "did not answer" <<< "$kout" || true) + 1 ))
  [ $ok = yes ] || tries=$((tries - 1))
  if [ $ok = yes ]; then
    answered=$(echo "$kout" | sed -n 's/.* answered \([0-9.]*\) s after.*/\1/p' | tail -1)
  fi
  local new decided drops burns alerts sent wall fsecs pps cpu ktotal
  ktotal=$(awk -v a="$kt0" -v b="$kt1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  new=$(plain_log | tail -n +"$((lines0 + 1))")
  decided=$(echo "$new" | sed -n '/door opened/s/.*decided_us=\([0-9]*\).*/\1/p' | tail -1)
  # The capture threads log a running total at most once a second; the last second may be missing.
  drops=$(( $(drop_total "$(cat daemon.log)") - $(drop_total "$(head -n "$lines0" daemon.log)") ))
  burns=$(echo "$new" | grep -c "sequence burned" || true)
  alerts=$(echo "$new" | grep -c "ALERT" || true)
  sent=$(sum_sent "$fout")
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
  fsecs=$(awk '/^sent/ { s += $5 } END { printf "%.2f", s }' "$fout")
  if [ "$name" != max ] && [ "$name" != none ]; then fsecs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'); fi
  local kdrops spoofed hwm load
  kdrops=$(( $(kernel_drops "$(cat daemon.log)") - $(kernel_drops "$(head -n "$lines0" daemon.log)") ))
  spoofed=$(echo "$new" | grep "door opened" | grep -vc "source=198.18.0.2 " || true)
  hwm=$(mib VmHWM)
  load=$(cut -d' ' -f1 /proc/loadavg)
  pps=$(awk -v n="$sent" -v s="$fsecs" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print 0 }')
  cpu=$(awk -v c="$((c1 - c0))" -v hz="$HZ" -v w="$wall" 'BEGIN { printf "%.0f", 100 * c / hz / w }')
  ROWS+=("$(printf '| %-4s | %9s | %7s | %8s | %6s | %15s | %7s | %10s | %5s | %10s | %11s | %7s | %6s | %6s | %6s | %6s | %6s | %7s | %4s |' \
    "$name" "$sent" "$fsecs" "$pps" "$during" "$answered" "$ktotal" "${decided:--}" "$tries" "$cpu%" "$wall" \
    "$drops" "$burns" "$alerts" "$ok" "$kdrops" "$spoofed" "$hwm" "$load")")
  grep -i "error\|refused" <<< "$new" | head -5 >&2 || true
}

for c in $CASES; do
  echo "== case $c" >&2
  run_case "$c"
done

HEADER='| rate | sent pkts | flood s | sent pps | during | knock-to-open s | knock s | decided_us | tries | knockd CPU | case wall s | dropped | burned | alerts | got in | kernel drops | spoofed grants | HWM MiB | load |'
SEP='|------|----------:|--------:|---------:|--------|----------------:|--------:|-----------:|------:|-----------:|------------:|--------:|-------:|-------:|--------|-------------:|---------------:|--------:|-----:|'
TABLE=$(printf '%s\n%s\n' "$HEADER" "$SEP"; printf '%s\n' "${ROWS[@]}")
echo
echo "$TABLE"

if [ ! -f "$RESULTS" ]; then
  cat > "$RESULTS" <<'EOF'
# Benchmark results

Recorded by `cargo bench --bench matcher` (pasted by hand) and `bench/flood.sh` (appended
automatically). Numbers are from the machine named in each section; compare like with like.

## Columns of `bench/flood.sh`

- **rate**: `none` (no flood), `mid` (knock-lab flood in bursts paced to ~50k pps), `max`
  (one knock-lab flood at its top speed; on a veth the receiving side's kernel path, bridge,
  conntrack and capture ring, runs inside the sender's send call, so this is the limit of one
  core doing both, not the daemon's). Flood: TCP SYNs from random spoofed sources in
  198.18.0.0/15 to random ports of the door's whole knock range 40000-42047, sent from the
  outsider namespace; the daemon's BPF filter passes all of them.
- **sent pkts / flood s / sent pps**: what knock-lab reported sending (not what the daemon saw).
- **during**: whether the flood was still running when the client's `knock --wait` finished.
- **knock-to-open s**: `knock --wait`'s "answered X s after the first knock": includes the
  client's own 7 × 20 ms inter-knock delay and its connect polling; it times the attempt that
  opened only. **knock s**: the whole `knock --wait` command (all its attempts).
- **decided_us**: from the daemon's `door opened` log line: microseconds from the capture of the
  last knock to the firewall grant returning (ledger fdatasync + audit fdatasync + nftables).
- **tries**: sequences `knock --wait` sent (1 = the first one opened; it gives up after 3).
- **knockd CPU**: knockd's utime+stime (all threads, /proc/PID/stat) over the case / case wall time
  (100% = one core).
- **case wall s**: the measured interval: flood start (or knock start) to flood end. The client
  knocks 0.5 s after the flood starts.
- **dropped**: knocks the daemon's capture threads dropped because its matcher loop was behind
  (from the running total it logs at most once a second, so a last second's drops may be
  missing; drops inside the kernel's capture buffer are not counted).
- **burned / alerts**: sequences the daemon burned (`incomplete knock: sequence burned`) and
  second-source alerts during the case: flood attempts that happened to match 2 knocks.
- **got in**: `knock --wait` succeeded (port 22 answered within its 3 attempts).
EOF
fi
{
  echo
  echo "## bench/flood.sh, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Build: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') plus the working tree at the time."
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r)." \
    "Door: hotp, length 8, window 10, misses 2, seq_timeout 10 s, open_for 5 s, 1 client." \
    "Max flood: --count $FLOOD_COUNT --max-seconds $FLOOD_SECONDS; paced: $BURST-packet bursts to ~$MID_RATE pps for $FLOOD_SECONDS s;" \
    "rNNNk: knock-lab --pps over ceil(NNN/100) senders. Sources $SOURCES. Daemon $KNOCKD_BIN, idle RSS $IDLE_RSS MiB."
  echo
  echo "$TABLE"
} >> "$RESULTS"
echo "appended to $RESULTS" >&2
