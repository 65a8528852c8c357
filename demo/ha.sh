#!/usr/bin/env bash
# Two bastions, one door:   sudo bash demo/ha.sh
#
# Installs what is missing (scripts/setup.sh, which also unpacks Debian's etcd under
# target/peers/), builds the workspace, then tells the two-node story in network namespaces on
# this machine: a three-member etcd cluster with TLS (certificates made here with openssl), two
# knockd nodes A and B sharing one door through it, a virtual address that moves from A to B as
# keepalived would move it, a client with one profile, and an outsider. A knock used through A
# and replayed to B opens nothing; the client's next knock opens B; with one etcd member killed
# knocks still open; with two killed both nodes fail closed while `always_allow` still passes;
# with the members back knocks open again. docs/OPERATIONS.md, "Two bastions, one door", explains it.
#
# Everything it creates (namespaces, processes, the temporary directory) is removed on exit,
# including on failure or Ctrl-C. Only 198.18.0.0/15 addresses are used. It takes about a minute
# once built.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
OPEN_FOR=3 # seconds a grant lasts (the door's open_for)
VIP=198.18.0.100
ETCD_IPS=(198.18.0.11 198.18.0.12 198.18.0.13)

# shellcheck source=demo/story.sh
. "$SCRIPT_DIR/story.sh"

# ----------------------------------------------------------------------------- cleanup
BG_PIDS=() # every background process this script started, ended by its PID on exit
NAMESPACES=()
WORK=''

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_background 10 # an etcd member left without quorum takes seconds to shut down
  for ns in ${NAMESPACES[@]+"${NAMESPACES[@]}"}; do ip netns del "$ns" 2>/dev/null; done
  end_story "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# short HOST: the letters naming a, b, client, outsider, e0, e1, e2 or sw (the switch).
short() { case $1 in client) echo c ;; outsider) echo o ;; *) echo "$1" ;; esac; }
# ns HOST: its namespace.
ns() { printf 'ha-%s-%s' "$(short "$1")" "$TAG"; }
# on HOST CMD...: runs CMD in HOST's namespace.
on() { local host=$1; shift; ip netns exec "$(ns "$host")" "$@"; }
# show HOST CMD...: prints the command, runs it, prints its output indented; its exit status.
show() {
  local host=$1; shift
  printf '   %s[%s]%s $ %s\n' "$BOLD" "$host" "$RESET" "${SHOW_AS:-$*}"
  local rc=0
  on "$host" "$@" 2>&1 | indent || rc=$?
  return "$rc"
}
# bg HOST LOG CMD...: starts CMD in HOST's namespace in the background; sets BG_PID (`ip netns
# exec` execs CMD, so the PID is the command's own).
bg() {
  local host=$1 log=$2; shift 2
  ip netns exec "$(ns "$host")" "$@" >>"$log" 2>&1 &
  BG_PID=$!
  BG_PIDS+=("$BG_PID")
}

# ----------------------------------------------------------------------------- preflight
[ "$(uname -s)" = Linux ] || die "This demonstration needs Linux (network namespaces and nftables)."
[ "$(id -u)" -eq 0 ] || die "This demonstration must run as root (namespaces, nftables, raw sockets): sudo bash demo/ha.sh"

title "Preparing"
source "$REPO/scripts/setup.sh" # packages (openssl, curl, iputils-arping among them) and etcd
ETCD="$peers_dir/etcd/usr/bin/etcd"
[ -x "$ETCD" ] || die "$ETCD is missing: scripts/setup.sh should have unpacked Debian's etcd-server there"
unset CARGO_TARGET_DIR
as_user() { sudo -u "$SUDO_USER" -H bash -lc 'export PATH="$HOME/.cargo/bin:$PATH"; cd "$1" && shift && "$@"' bash "$REPO" "$@"; }
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && command -v sudo >/dev/null 2>&1 \
  && [ "$(stat -c %U "$REPO")" = "$SUDO_USER" ] && as_user cargo --version >/dev/null 2>&1; then
  BUILD=(as_user cargo)
else
  require_cargo
  BUILD=(cargo)
fi
say "Building: cargo build --workspace --release   (in $REPO)"
rc=0
(cd "$REPO" && "${BUILD[@]}" build --workspace --release) 2>&1 | tail -n 3 | indent || rc=$?
[ "$rc" -eq 0 ] || die "the build failed (this workspace needs Rust 1.89 or newer)"
BIN="$REPO/target/release"
for b in knockd knock knock-lab; do [ -x "$BIN/$b" ] || die "$BIN/$b is missing after the build"; done
export PATH="$BIN:$PATH"

# ----------------------------------------------------------------------------- the network
DEMO_START=$SECONDS
TAG="$$"
TAG=${TAG:0:7} # bridge ports (p-e0-TAG) must stay under 15 characters
for h in sw a b client outsider e0 e1 e2; do
  ip netns list | grep -qw -- "$(ns "$h")" && die "network namespace $(ns "$h") already exists; remove it with: ip netns del $(ns "$h")"
done
WORK=$(mktemp -d /tmp/knock-ha.XXXXXX)
cd "$WORK"
export XDG_CONFIG_HOME="$WORK/client/config" XDG_STATE_HOME="$WORK/client/state"

title "Two bastions, one door"
say "Eight network namespaces on one bridge:"
say "  node A    198.18.0.1    knockd + an SSH-like service on 22; holds the virtual address $VIP at first"
say "  node B    198.18.0.4    the same door, the same server id, its own state directory"
say "  client    198.18.0.2    one profile, knocking at $VIP"
say "  outsider  198.18.0.3    sees the network, has no key (but is in always_allow, for step 6)"
say "  etcd      ${ETCD_IPS[*]}   three members, TLS with client certificates"
say "Files live in $WORK."

step "The network and the etcd cluster, with TLS" \
  "the shared ledger must be a store that keeps quorum through the loss of one member, and only knockd may write it."
NAMESPACES+=("$(ns sw)")
ip netns add "$(ns sw)"
on sw ip link add br0 type bridge
on sw ip link set br0 up
plug() { # plug HOST ADDRESS: a namespace on the bridge
  local host=$1 addr=$2
  NAMESPACES+=("$(ns "$host")")
  ip netns add "$(ns "$host")"
  on "$host" ip link set lo up
  local port="p-$(short "$host")-$TAG"
  ip link add "$port" netns "$(ns sw)" type veth peer name eth0 netns "$(ns "$host")"
  on sw ip link set "$port" master br0 up
  on "$host" ip link set eth0 up
  on "$host" ip addr add "$addr/24" dev eth0
}
plug a 198.18.0.1
plug b 198.18.0.4
plug client 198.18.0.2
plug outsider 198.18.0.3
for i in 0 1 2; do plug "e$i" "${ETCD_IPS[$i]}"; done
on a ip addr add "$VIP/24" dev eth0
note "namespaces $(ns sw) (the bridge), $(ns a), $(ns b), $(ns client), $(ns outsider), $(ns e0) .. $(ns e2)"

mkdir -p pki && cd pki
ssl() { openssl "$@" >/dev/null 2>&1 || die "openssl $*"; }
ssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 1 -subj "/CN=demo etcd CA"
issue() { # issue NAME USAGE [IP]: a key and a certificate signed by the CA
  ssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1"
  { [ -n "${3:-}" ] && echo "subjectAltName=IP:$3"; echo "extendedKeyUsage=$2"; } >"$1.ext"
  ssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" -days 1 -extfile "$1.ext"
}
for i in 0 1 2; do issue "m$i" serverAuth,clientAuth "${ETCD_IPS[$i]}"; done
issue knockd-a clientAuth
issue knockd-b clientAuth
chmod 600 ./*.key
cd "$WORK"
note "pki/: ca.pem (the cluster's CA), m0..m2 (each member's certificate, for its IP address, server and peer),"
note "      knockd-a, knockd-b (a client certificate per knockd node; keys mode 0600)"

CLUSTER="m0=https://${ETCD_IPS[0]}:2380,m1=https://${ETCD_IPS[1]}:2380,m2=https://${ETCD_IPS[2]}:2380"
MEMBER_PIDS=('' '' '')
start_member() { # start_member I new|existing
  local i=$1 url="https://${ETCD_IPS[$1]}"
  bg "e$i" "$WORK/etcd-m$i.log" "$ETCD" --name "m$i" --data-dir "$WORK/m$i.data" \
    --listen-client-urls "$url:2379" --advertise-client-urls "$url:2379" \
    --listen-peer-urls "$url:2380" --initial-advertise-peer-urls "$url:2380" \
    --initial-cluster "$CLUSTER" --initial-cluster-token knock-demo --initial-cluster-state "$2" \
    --cert-file "pki/m$i.pem" --key-file "pki/m$i.key" --client-cert-auth --trusted-ca-file pki/ca.pem \
    --peer-cert-file "pki/m$i.pem" --peer-key-file "pki/m$i.key" --peer-client-cert-auth \
    --peer-trusted-ca-file pki/ca.pem --heartbeat-interval 50 --election-timeout 500
  MEMBER_PIDS[$i]=$BG_PID
}
kill_member() { # kill_member I: SIGKILL, as a crash
  local pid=${MEMBER_PIDS[$1]}
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
  MEMBER_PIDS[$1]=''
}
# etcd_ready: a linearizable read, from node A with its certificate, answered by some member.
etcd_ready() {
  local ip
  for ip in "${ETCD_IPS[@]}"; do
    on a curl -sf --max-time 1 --cacert pki/ca.pem --cert pki/knockd-a.pem --key pki/knockd-a.key \
      --data '{"key":"L3JlYWR5"}' "https://$ip:2379/v3/kv/range" 2>/dev/null | grep -q '"header"' && return 0
  done
  return 1
}
for i in 0 1 2; do start_member "$i" new; done
wait_for 20 etcd_ready || { tail -n 20 etcd-m*.log | indent; die "the etcd cluster did not answer within 20 s"; }
ok "etcd m0, m1, m2 answer (pids ${MEMBER_PIDS[*]}), client certificates required (--client-cert-auth)"

# ----------------------------------------------------------------------------- the nodes
step "Two knockd nodes, one door, the ledger in etcd" \
  "a sequence used through A must be used on B: each use is one etcd transaction, committed before the door opens."
endpoints="\"https://${ETCD_IPS[0]}:2379\", \"https://${ETCD_IPS[1]}:2379\", \"https://${ETCD_IPS[2]}:2379\""
for node in a b; do
  cat >"$node.toml" <<EOF
[server]
state_dir = "state-$node"
interfaces = ["eth0"]

[ledger]
backend = "etcd"
endpoints = [$endpoints]
prefix = "/knockd/"
ca_file = "pki/ca.pem"
cert_file = "pki/knockd-$node.pem"
key_file = "pki/knockd-$node.key"
timeout = "500ms"
node = "$node"

[[door]]
name = "ssh"
mode = "hotp"
open = ["22/tcp"]
keys = "keys/ssh"
open_for = "${OPEN_FOR}s"
seq_timeout = "2s"
always_allow = ["198.18.0.3"]
EOF
done
SHOW_AS="cat a.toml" show a cat a.toml
show a knockd -c a.toml init
show a knockd -c a.toml client add --door ssh --name alice --server-addr "$VIP" --out alice.knock
show client knock profile import alice.knock
rm -f alice.knock
note "node B gets A's server id (one identity for the pair) and shares keys/ and pki/; its state directory holds nothing else:"
install -d -m 700 state-b
cp state-a/server-id state-b/server-id
show b ls -A state-b
for node in a b; do
  bg "$node" "$WORK/serve-$node.log" knock-lab serve --port 22 --max-seconds 600
  bg "$node" "$WORK/$node.log" knockd -c "$node.toml"
  wait_for 10 grep -qs "knockd started" "$node.log" || { indent <"$node.log"; die "knockd on $node did not start"; }
done
sleep 0.3
show b knockd -c b.toml ledger export
ok "knockd runs on A and B; B reads alice's ledger from etcd, which \`client add\` on A wrote"

# ----------------------------------------------------------------------------- helpers
# move_vip NODE: the virtual address moves to NODE, announced by a gratuitous ARP (keepalived's job).
VIP_ON=a
move_vip() {
  [ "$VIP_ON" = "$1" ] && return 0
  on "$VIP_ON" ip addr del "$VIP/24" dev eth0
  on "$1" ip addr add "$VIP/24" dev eth0
  on "$1" arping -q -U -c 1 -w 1 -I eth0 "$VIP" || true
  VIP_ON=$1
  note "the virtual address $VIP moved to node ${1^^}"
}
# open_for_client NODE: whether the client reaches port 22 at NODE's own address.
node_ip() { case $1 in a) echo 198.18.0.1 ;; b) echo 198.18.0.4 ;; esac; }
open_for_client() { on client knock-lab probe --addr "$(node_ip "$1")" --port 22 --timeout-ms 500 >/dev/null 2>&1; }
closed_for_client() { ! open_for_client "$1"; }
# knock_through NODE [ATTEMPTS]: the client knocks at the virtual address, now on NODE.
knock_through() {
  move_vip "$1"
  wait_for $((OPEN_FOR * 2)) closed_for_client "$1" || die "port 22 of $1 stayed open"
  show client knock --profile ssh-alice --wait --wait-timeout 1 --attempts "${2:-1}"
}
count() { grep -c -- "$1" "$2" || true; }

# ----------------------------------------------------------------------------- the story
step "The client knocks through A; the door opens" \
  "the sequence is used in etcd before the grant; A's audit record carries the etcd revision that made it."
bg a "$WORK/tcpdump.log" tcpdump -i eth0 -w knock.pcap -U --immediate-mode "tcp dst portrange 40000-42047 and dst host $VIP"
TCPDUMP_PID=$BG_PID
wait_for 5 grep -qs "listening on" tcpdump.log || die "tcpdump did not start: $(cat tcpdump.log)"
knock_through a || die "the knock through A did not open"
sleep 0.3
kill -INT "$TCPDUMP_PID"; wait "$TCPDUMP_PID" || true; forget_pid "$TCPDUMP_PID"
open_for_client a || die "port 22 of A is closed after the knock"
show a knockd -c a.toml audit
ok "A opened port 22 for 198.18.0.2; the knock's packets are in knock.pcap"

step "A fails over: the outsider replays the knock, byte for byte, to B" \
  "with ledgers of their own, B would take the sniffed sequence as fresh; the shared ledger says it is used."
move_vip b
wait_for $((OPEN_FOR * 2)) closed_for_client a || die "A's grant did not expire"
replays=$(count "replayed knock sequence" b.log)
OUT_MAC=$(on outsider cat /sys/class/net/eth0/address)
B_MAC=$(on b cat /sys/class/net/eth0/address)
show outsider knock-lab replay --pcap knock.pcap --iface eth0 --src-mac "$OUT_MAC" --dst-mac "$B_MAC" \
  || die "the replay failed"
replayed() { [ "$(count "replayed knock sequence" b.log)" -gt "$replays" ]; }
wait_for 5 replayed || die "B did not see the replay: $(tail -n 5 b.log)"
open_for_client b && die "the replay opened B"
SHOW_AS="grep replayed b.log" show b grep "replayed" b.log
show b knockd -c b.toml audit --replays
ok "B refused the replay and audited it; nothing opened"

step "The client's next knock opens B" \
  "the client moves on to its next sequence; either node accepts it, once."
knock_through b || die "the next knock did not open B"
open_for_client b || die "port 22 of B is closed after the knock"
ok "B opened port 22 for the client with sequence 1"

step "Kill one etcd member: knocks still open" \
  "three members keep quorum with two; etcd elects a new leader within about a second."
note "kill -KILL ${MEMBER_PIDS[0]}   (m0)"
kill_member 0
wait_for 10 etcd_ready || die "the two remaining members did not answer"
knock_through a || die "a knock through A failed with one member down"
knock_through b || die "a knock through B failed with one member down"
ok "A and B opened, one after the other, with m0 dead"

step "Kill a second member: both nodes fail closed, always_allow still passes" \
  "without quorum nothing can be used for certain, so nothing opens by a knock; always_allow asks no ledger."
note "kill -KILL ${MEMBER_PIDS[1]}   (m1)"
kill_member 1
for node in b a; do
  said=$(count "knock refused" "$node.log")
  if knock_through "$node"; then die "a knock opened $node without quorum"; fi
  saw_it() { [ "$(count "knock refused" "$node.log")" -gt "$said" ]; }
  wait_for 5 saw_it || die "$node did not log the refusal: $(tail -n 3 "$node.log")"
  open_for_client "$node" && die "port 22 of $node opened without quorum"
  grep "knock refused" "$node.log" | tail -n 1 | sed 's/.*knock refused/knock refused/' | cut -c 1-150 | indent
  show outsider knock-lab probe --addr "$(node_ip "$node")" --port 22 --timeout-ms 500 \
    || die "always_allow no longer passes at $node"
done
show a knockd -c a.toml audit
ok "both nodes refused the client's knocks and audited the refusals; the outsider (always_allow) still got in"

step "Bring the members back: knocks open again" \
  "nothing to do on the nodes: once etcd answers (and a 2 s pause after a failed call is over), they decide again."
start_member 0 existing
start_member 1 existing
wait_for 20 etcd_ready || die "the cluster did not come back"
note "m0 and m1 run again (pids ${MEMBER_PIDS[0]}, ${MEMBER_PIDS[1]}); the cluster has its quorum"
knock_through b 4 || die "a knock through B failed after the members came back"
knock_through a 4 || die "a knock through A failed after the members came back"
ok "A and B open again"

step "Side by side: the two audit logs" \
  "each node keeps its own audit log; the etcd revision in each grant's record (store_revision) orders them in one history."
for node in a b; do
  note "node ${node^^}:"
  knockd -c "$node.toml" audit | indent
done
note "the grants of both, in etcd's order:"
for node in a b; do knockd -c "$node.toml" audit --json | sed "s/^/$node /"; done | python3 -c '
import json, sys
grants = []
for line in sys.stdin:
    node, text = line.split(" ", 1)
    r = json.loads(text)
    if r.get("event") == "grant":
        grants.append((r["store_revision"], node.upper(), r["sequence"]))
for revision, node, sequence in sorted(grants):
    print(f"etcd revision {revision}: node {node} granted {sequence}")
' | indent

title "What you saw"
say "  - A knock used through A, replayed byte for byte to B after a failover, opened nothing: B"
say "    found it used in etcd, logged and audited the replay."
say "  - The client's next knock opened B; knocks opened through either node."
say "  - One etcd member down: the cluster kept quorum and knocks opened."
say "  - Two down: both nodes refused every knock (fail closed) and said so; always_allow still passed."
say "  - Members back: knocks opened again, with nothing done on the nodes."
say ""
say "The story took $((SECONDS - DEMO_START)) s. Cleaning up: namespaces, processes and $WORK are removed."
