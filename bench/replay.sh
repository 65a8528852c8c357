#!/usr/bin/env bash
# Throughput of `knockd replay` (issue 12, target 5): a generated capture of N packets (default
# 5 000 000: TCP SYNs from random sources of 198.18.0.0/15 to random ports of the door's knock
# range, with one valid sequence of a known client woven in, written by `knock-lab pcap`) is
# replayed RUNS times by the release build; for each run the wall time and the CPU time
# (user + sys) are taken. The figure is frames per second of CPU time on one core (the replay
# is single-threaded; CPU time, unlike wall time, does not count the time other processes on a
# shared machine take the core), and of wall time. Checks the valid sequence is reported opened.
# Appends a dated section (command, machine, load average) to bench/RESULTS.md.
#
# Needs no root and no network: it only writes and reads files in a temporary directory.
#
#   bench/replay.sh            # env: PACKETS (default 5000000), RUNS (default 3), NO_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PACKETS=${PACKETS:-5000000}
RUNS=${RUNS:-3}
RESULTS=$REPO/bench/RESULTS.md

if [ -z "${NO_BUILD:-}" ]; then
  echo "== building (release)" >&2
  cargo build --release -p knockd -p knock -p knock-lab >&2
fi
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
for b in knockd knock knock-lab; do [ -x "$BIN/$b" ] || { echo "missing $BIN/$b" >&2; exit 1; }; done

WORK=$(mktemp -d /tmp/knockd-replay-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/knockd.toml" <<TOML
[server]
state_dir = "$WORK/state"
[[door]]
name = "ssh"
mode = "hotp"
open = ["22/tcp"]
keys = "$WORK/keys"
knock_ports = "40000-42047"
TOML
export XDG_CONFIG_HOME=$WORK/client-config XDG_STATE_HOME=$WORK/client-state
"$BIN/knockd" -c "$WORK/knockd.toml" init >/dev/null
"$BIN/knockd" -c "$WORK/knockd.toml" client add --door ssh --name alice --server-addr 198.18.0.1 \
  --out "$WORK/alice.knock" >/dev/null
"$BIN/knock" profile import "$WORK/alice.knock" >/dev/null
# `knock --dry-run` prints "SERVER PORT:PROTO ... (next sequence N, not consumed)".
SEQ=$("$BIN/knock" --profile ssh-alice --dry-run | awk '{for (i = 2; i <= NF && $i !~ /^\(/; i++) printf "%s%s", (i > 2 ? "," : ""), $i}')
echo "== generating $PACKETS packets (valid sequence $SEQ)" >&2
"$BIN/knock-lab" pcap --out "$WORK/flood.pcap" --packets "$PACKETS" --ports 40000-42047 \
  --sources 198.18.0.0/15 --knocks "$SEQ" --client 198.18.0.2 --seed 12 >&2
FRAMES=$((PACKETS + $(echo "$SEQ" | tr ',' '\n' | wc -l)))
SIZE=$(stat -c %s "$WORK/flood.pcap")
cat "$WORK/flood.pcap" > /dev/null   # in the page cache, like every run after it

CMD="knockd -c knockd.toml replay --pcap flood.pcap --json"
ROWS=""
BEST_CPU=0
for run in $(seq "$RUNS"); do
  LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
  /usr/bin/time -f "%e %U %S" -o "$WORK/time" "$BIN/knockd" -c "$WORK/knockd.toml" replay \
    --pcap "$WORK/flood.pcap" --json > "$WORK/out.json"
  read -r WALL USER SYS < "$WORK/time"
  OPENED=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(len(d['opened']))" "$WORK/out.json")
  GOT=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['capture']['frames'])" "$WORK/out.json")
  [ "$GOT" = "$FRAMES" ] || { echo "replayed $GOT frames, expected $FRAMES" >&2; exit 1; }
  [ "$OPENED" = 1 ] || { echo "the valid sequence was not reported opened ($OPENED)" >&2; exit 1; }
  CPU=$(python3 -c "print(f'{$USER + $SYS:.2f}')")
  CPU_PPS=$(python3 -c "print(round($FRAMES / max($USER + $SYS, 0.001)))")
  WALL_PPS=$(python3 -c "print(round($FRAMES / max($WALL, 0.001)))")
  BEST_CPU=$(( CPU_PPS > BEST_CPU ? CPU_PPS : BEST_CPU ))
  ROWS+=$(printf '%4s %10s %8s %8s %12s %12s %8s   %s' "$run" "$FRAMES" "$WALL" "$CPU" "$CPU_PPS" "$WALL_PPS" "$OPENED" "$LOAD")$'\n'
done
HEADER=$(printf '%4s %10s %8s %8s %12s %12s %8s   %s' run frames "wall s" "cpu s" "frames/cpu-s" "frames/wall-s" opened "load average before")
TABLE="$HEADER"$'\n'"$ROWS"
echo "$TABLE"
echo "best: $BEST_CPU frames per CPU second (target: 5000000)"

{
  echo
  echo "## bench/replay.sh, $(date -u '+%Y-%m-%d %H:%M UTC'): knockd replay throughput"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), kernel $(uname -r),"
  echo "$(rustc --version 2>/dev/null || echo rustc ?), release profile. Command: \`bench/replay.sh\` (PACKETS=$PACKETS,"
  echo "RUNS=$RUNS); each run \`$CMD\` on a $((SIZE / 1000000)) MB file of $FRAMES frames (one hotp door,"
  echo "one client, knock range 40000-42047, flood from 198.18.0.0/15 at a capture rate of 100k pps, the"
  echo "file in the page cache). CPU = user + sys of the process; the machine is shared, so wall time"
  echo "includes waits for a core (see the load average)."
  echo
  echo '```'
  echo "$TABLE"
  echo "best: $BEST_CPU frames per CPU second"
  echo '```'
} >> "$RESULTS"
echo "appended to $RESULTS" >&2
