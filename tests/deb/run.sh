#!/usr/bin/env bash
# The package test (issue 10): builds knockd-onetime from the debug binaries the tests built
# (scripts/build-deb.sh --debug), installs it into this machine with apt-get as an admin would,
# and checks what the package promises:
#
#   1. switching from Debian's knockd: a server with /etc/knockd.conf gets the drop-in that
#      keeps its command doors working as root, Debian's knockd (when installed) is replaced,
#      and without -c and knockd.toml the daemon reads /etc/knockd.conf;
#   2. a fresh installation: files, conffile, man pages, completions, `systemd-analyze verify`
#      and `security` (exposure at most 2.5) on the installed unit; then the installed daemon,
#      run the way the unit runs it (user knockd, CAP_NET_ADMIN and CAP_NET_RAW only, a
#      read-only file system but for its state directory, private /tmp, /dev and /proc),
#      becomes ready (Type=notify) and a knock from the installed client opens, in network
#      namespaces; keys written by root reach the daemon's account; removing the package keeps
#      the ledger and the audit log, purging deletes them and says so.
#
# Run by scripts/test.sh after `cargo test`, alone: it installs into the machine. Whatever
# happens it leaves the machine as it found it: the package purged, the user knockd deleted
# when it did not exist before, /etc/knockd.conf as it was, Debian's knockd reinstalled (from
# target/peers/, where scripts/setup.sh put it) when it was installed before. systemd need not
# be running: the unit is checked offline and emulated with unshare and setpriv (docs/OPERATIONS.md
# says how faithful that is). Addresses: 198.18.9.0/24 only, in namespaces made here.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
PKG=knockd-onetime
TARGET=$(realpath -m "${CARGO_TARGET_DIR:-target}")
TAG="$$"
NS_S="kdeb-s$TAG" NS_C="kdeb-c$TAG"
WORK="/run/knockd-deb-test.$TAG"   # not /tmp: the emulated unit has a private /tmp
PIDS=()

say() { echo "deb test: $*"; }
fail() { echo "deb test: FAILED: $*" >&2; exit 1; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

[ "$(id -u)" = 0 ] || fail "needs root (it installs a package and makes network namespaces)"
installed "$PKG" && fail "$PKG is installed on this machine: this test installs and purges it; remove it first"
for p in /var/lib/knockd /etc/knockd; do
  [ -e "$p" ] && fail "$p exists: this test would install over it and purge it; move it away first"
done
had_user=0; getent passwd knockd >/dev/null && had_user=1
had_debian_knockd=0; installed knockd && had_debian_knockd=1
had_conf=0; [ -e /etc/knockd.conf ] && had_conf=1
peer_deb=$(ls "$TARGET"/peers/knockd_*.deb 2>/dev/null | head -n 1 || true)
if [ "$had_debian_knockd" = 1 ] && [ -z "$peer_deb" ]; then
  fail "Debian's knockd is installed and no copy of its package is in $TARGET/peers to put it back: run scripts/setup.sh"
fi

cleanup() {
  local rc=$?
  set +e
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null; done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null; done
  ip netns del "$NS_S" 2>/dev/null
  ip netns del "$NS_C" 2>/dev/null
  if dpkg-query -W "$PKG" >/dev/null 2>&1; then dpkg --purge "$PKG" >/dev/null 2>&1; fi
  if [ "$had_user" = 0 ] && getent passwd knockd >/dev/null; then
    userdel knockd 2>/dev/null
    getent group knockd >/dev/null && groupdel knockd 2>/dev/null
  fi
  if [ -e "$WORK/knockd.conf.saved" ]; then
    mv -f "$WORK/knockd.conf.saved" /etc/knockd.conf
  elif [ "$had_conf" = 0 ]; then
    rm -f /etc/knockd.conf
  fi
  if [ "$had_debian_knockd" = 1 ] && ! installed knockd; then
    dpkg -i "$peer_deb" >/dev/null 2>&1 || echo "deb test: could not reinstall Debian's knockd from $peer_deb" >&2
  fi
  rm -rf "$WORK"
  [ "$rc" = 0 ] && say "ok" || echo "deb test: failed (exit $rc); the machine is restored" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK"
chmod 755 "$WORK"

say "building the package from the debug binaries"
deb=$(bash scripts/build-deb.sh --debug | tail -n 1)
[ -f "$deb" ] || fail "scripts/build-deb.sh made no package"

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$1" >"$WORK/apt.log" 2>&1 \
    || { cat "$WORK/apt.log" >&2; fail "apt-get install $1"; }
}

# --------------------------------------------------------------------- 1. the switch
say "1. switching from Debian's knockd (/etc/knockd.conf there)"
[ -e /etc/knockd.conf ] || install -m 0600 etc/knockd.conf /etc/knockd.conf
apt_install "$deb"
installed "$PKG" || fail "$PKG is not installed"
if [ "$had_debian_knockd" = 1 ]; then
  installed knockd && fail "Debian's knockd is still installed beside $PKG"
  grep -q "Removing knockd" "$WORK/apt.log" || fail "apt did not say it removed knockd: $(cat "$WORK/apt.log")"
fi
grep -q "/etc/knockd.conf found" "$WORK/apt.log" || fail "postinst did not announce the drop-in: $(cat "$WORK/apt.log")"
dropin=/etc/systemd/system/knockd.service.d/knockd-conf.conf
[ "$(readlink "$dropin")" = /usr/share/knockd-onetime/knockd-conf.conf ] || fail "no drop-in link at $dropin"
[ "$(stat -c %U:%a /var/lib/knockd)" = root:700 ] || fail "with the drop-in the state directory is root's 0700: $(stat -c %U:%a /var/lib/knockd)"
systemd-analyze verify knockd.service >"$WORK/verify.log" 2>&1 \
  || fail "systemd-analyze verify with the drop-in: $(cat "$WORK/verify.log")"
grep -q "^ExecStart=/usr/sbin/knockd -c /etc/knockd.conf" "$dropin" || fail "the drop-in does not run /etc/knockd.conf"
exposure_dropin=$(systemd-analyze security --offline=true knockd.service 2>/dev/null | sed -n 's/.*Overall exposure level for knockd.service: \([0-9.]*\).*/\1/p')
say "   exposure with the knockd.conf drop-in: $exposure_dropin"
# Without -c: knockd.toml when it exists, else knockd.conf, and the daemon says so.
/usr/sbin/knockd check >"$WORK/check.out" 2>&1 || true
grep -q "^/etc/knockd/knockd.toml: configuration is valid" "$WORK/check.out" \
  || fail "without -c knockd.toml comes first: $(cat "$WORK/check.out")"
mv /etc/knockd/knockd.toml "$WORK/knockd.toml.aside"
/usr/sbin/knockd check >"$WORK/check.out" 2>&1 || true
mv "$WORK/knockd.toml.aside" /etc/knockd/knockd.toml
grep -q "configuration /etc/knockd.conf (no -c given and /etc/knockd/knockd.toml does not exist" "$WORK/check.out" \
  || fail "without knockd.toml, knockd.conf is read and said so: $(cat "$WORK/check.out")"
grep -q "^/etc/knockd.conf: configuration is valid" "$WORK/check.out" || fail "knockd.conf not read: $(cat "$WORK/check.out")"
grep -q "run shell commands, which need root" "$WORK/check.out" || fail "check does not name the drop-in: $(cat "$WORK/check.out")"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "$PKG" >"$WORK/purge.log" 2>&1 || fail "purge: $(cat "$WORK/purge.log")"
[ -e "$dropin" ] && fail "purging left the drop-in"
grep -q "$dropin (the drop-in" "$WORK/purge.log" || fail "purge did not say it removed the drop-in: $(cat "$WORK/purge.log")"
[ -e /etc/knockd.conf ] || fail "purging removed /etc/knockd.conf, which is not the package's"

# --------------------------------------------------------------------- 2. a fresh installation
say "2. a fresh installation"
if [ "$had_conf" = 1 ]; then mv /etc/knockd.conf "$WORK/knockd.conf.saved"; else rm -f /etc/knockd.conf; fi
apt_install "$deb"
[ -e "$dropin" ] && fail "a fresh installation got the knockd.conf drop-in"
for f in /usr/sbin/knockd /usr/bin/knock /lib/systemd/system/knockd.service /etc/knockd/knockd.toml \
         /usr/share/knockd-onetime/knockd-conf.conf /usr/share/doc/$PKG/copyright /usr/share/doc/$PKG/OPERATIONS.md \
         /usr/share/bash-completion/completions/knockd /usr/share/bash-completion/completions/knock \
         /usr/share/zsh/vendor-completions/_knockd /usr/share/zsh/vendor-completions/_knock \
         /usr/share/fish/vendor_completions.d/knockd.fish /usr/share/fish/vendor_completions.d/knock.fish; do
  dpkg -S "$f" >/dev/null 2>&1 || fail "$f does not belong to $PKG"
  [ -s "$f" ] || fail "$f is missing or empty"
done
dpkg-query -W -f='${Conffiles}\n' "$PKG" | grep -q "^ /etc/knockd/knockd.toml " || fail "/etc/knockd/knockd.toml is not a conffile"
[ "$(man -w knockd)" = /usr/share/man/man8/knockd.8.gz ] || fail "man -w knockd: $(man -w knockd 2>&1)"
[ "$(man -w knock)" = /usr/share/man/man1/knock.1.gz ] || fail "man -w knock: $(man -w knock 2>&1)"
[ "$(man -w 5 knockd.toml)" = /usr/share/man/man5/knockd.toml.5.gz ] || fail "man -w 5 knockd.toml: $(man -w 5 knockd.toml 2>&1)"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ "$(/usr/sbin/knockd --version)" = "knockd $version" ] || fail "knockd --version: $(/usr/sbin/knockd --version)"
[ "$(/usr/bin/knock --version)" = "knock $version" ] || fail "knock --version: $(/usr/bin/knock --version)"
bash -c 'source /usr/share/bash-completion/completions/knockd && complete -p knockd' >/dev/null \
  || fail "the bash completion does not register for knockd"
grep -q "knockd" /usr/share/zsh/vendor-completions/_knockd || fail "zsh completion"
grep -q "complete -c knockd" /usr/share/fish/vendor_completions.d/knockd.fish || fail "fish completion"
systemd-analyze verify /lib/systemd/system/knockd.service >"$WORK/verify.log" 2>&1 \
  || fail "systemd-analyze verify: $(cat "$WORK/verify.log")"
exposure=$(systemd-analyze security --offline=true /lib/systemd/system/knockd.service 2>/dev/null \
  | sed -n 's/.*Overall exposure level for knockd.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "systemd-analyze security printed no exposure"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.5) }' || fail "exposure $exposure is above 2.5"
say "   systemd-analyze security exposure: $exposure"
getent passwd knockd | grep -q ':/var/lib/knockd:/usr/sbin/nologin$' || fail "user knockd: $(getent passwd knockd)"
[ "$(stat -c %U:%a /var/lib/knockd)" = knockd:700 ] || fail "/var/lib/knockd: $(stat -c %U:%a /var/lib/knockd)"
[ "$(stat -c %U:%a /etc/knockd/keys)" = knockd:700 ] || fail "/etc/knockd/keys: $(stat -c %U:%a /etc/knockd/keys)"

say "   root initialises and adds a client; the daemon's account gets the files"
/usr/sbin/knockd init >/dev/null
/usr/sbin/knockd client add --door ssh --name alice --server-addr 198.18.9.1 --out "$WORK/alice.knock" >/dev/null
for f in /var/lib/knockd/server-id /etc/knockd/keys/ssh/alice.key /etc/knockd/keys/ssh; do
  [ "$(stat -c %U "$f")" = knockd ] || fail "$f belongs to $(stat -c %U "$f"), not to the daemon's account"
done
[ "$(stat -c %a /etc/knockd/keys/ssh/alice.key)" = 600 ] || fail "the key is not 0600"
[ -n "$(find /var/lib/knockd -not -user knockd)" ] && fail "files in /var/lib/knockd not the daemon's: $(find /var/lib/knockd -not -user knockd)"

say "   the installed daemon, run the way the unit runs it, in network namespaces"
ip netns add "$NS_S"
ip netns add "$NS_C"
ip link add "kdeb$TAG" netns "$NS_S" type veth peer name eth0 netns "$NS_C"
ip -n "$NS_S" link set "kdeb$TAG" name eth0   # the example configuration captures on eth0
for ns in "$NS_S" "$NS_C"; do ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up; done
ip -n "$NS_S" addr add 198.18.9.1/24 dev eth0
ip -n "$NS_C" addr add 198.18.9.2/24 dev eth0
ip netns exec "$NS_S" "$TARGET/debug/knock-lab" serve --port 22 --max-seconds 120 >/dev/null &
PIDS+=($!)
# systemd's notification socket, as systemd binds it; every datagram goes to notify.log.
python3 - "$WORK/notify" "$WORK/notify.log" <<'PY' &
import os, socket, sys, time
path, log = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o777)
s.settimeout(1)
end = time.time() + 120
while time.time() < end:
    try:
        msg = s.recv(4096).decode()
    except socket.timeout:
        continue
    with open(log, "a") as f:
        f.write(msg.replace("\n", " ") + "\n")
    if msg.startswith("STOPPING=1"):
        break
PY
PIDS+=($!)
for _ in $(seq 50); do [ -S "$WORK/notify" ] && break; sleep 0.1; done
# The unit's sandbox as far as mounts and credentials go: ProtectSystem=strict (all read-only
# but StateDirectory and ReadWritePaths), ProtectHome, PrivateTmp, PrivateDevices,
# ProtectProc=invisible + ProcSubset=pid, UMask=0077, User=knockd, AmbientCapabilities and
# CapabilityBoundingSet, NoNewPrivileges. Not emulated: the seccomp filters
# (SystemCallFilter, RestrictAddressFamilies, MemoryDenyWriteExecute, RestrictNamespaces...).
ip netns exec "$NS_S" unshare --mount --propagation private sh -ec '
  work=$1
  mkdir -p "$work/dev"
  mount -t tmpfs -o mode=755 tmpfs "$work/dev"
  for n in null zero full random urandom; do touch "$work/dev/$n"; mount --bind "/dev/$n" "$work/dev/$n"; done
  mount --move "$work/dev" /dev
  mount --bind /var/lib/knockd /var/lib/knockd
  mount --bind /etc/knockd/sequences /etc/knockd/sequences
  mount --bind "$work" "$work"
  mount -o bind,remount,ro /
  mount -o bind,remount,ro /sys
  mount -t tmpfs -o ro,mode=755 tmpfs /home
  mount -t tmpfs -o ro,mode=700 tmpfs /root
  mount -t tmpfs -o mode=1777 tmpfs /tmp
  mount -t tmpfs -o mode=1777 tmpfs /var/tmp
  mount -t proc -o hidepid=invisible,subset=pid proc /proc
  umask 0077
  exec setpriv --reuid=knockd --regid=knockd --clear-groups --no-new-privs \
    --inh-caps=-all,+net_admin,+net_raw --ambient-caps=-all,+net_admin,+net_raw \
    --bounding-set=-all,+net_admin,+net_raw \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin NOTIFY_SOCKET="$work/notify" /usr/sbin/knockd run
' sh "$WORK" 2>"$WORK/daemon.log" &
daemon=$!
PIDS+=("$daemon")
wait_for() { # wait_for FILE TEXT SECONDS [COUNT]: until FILE has COUNT (1) lines matching TEXT
  for _ in $(seq $(($3 * 10))); do
    [ "$(grep -c "$2" "$1" 2>/dev/null || true)" -ge "${4:-1}" ] 2>/dev/null && return 0
    sleep 0.1
  done
  fail "no \"$2\" in $1 within $3 s; daemon log: $(cat "$WORK/daemon.log")"
}
wait_for "$WORK/notify.log" "^READY=1" 15
# ip netns exec, unshare, sh, setpriv and env each exec the next: the job is the daemon.
knockd_pid=$daemon
[ "$(cat "/proc/$knockd_pid/comm")" = knockd ] || fail "process $knockd_pid is $(cat "/proc/$knockd_pid/comm"), not knockd"
[ "$(ps -o user= -p "$knockd_pid")" = knockd ] || fail "the daemon does not run as knockd"
grep -q "^CapEff:.*0000000000003000$" "/proc/$knockd_pid/status" || fail "capabilities: $(grep Cap "/proc/$knockd_pid/status")"
grep -q "configuration /etc/knockd/knockd.toml (no -c given)" "$WORK/daemon.log" || fail "the start does not name the configuration"
ip netns exec "$NS_S" nft list table inet knockd >/dev/null || fail "no table inet knockd at READY=1"
client_env=(env XDG_CONFIG_HOME="$WORK/client/config" XDG_STATE_HOME="$WORK/client/state")
ip netns exec "$NS_C" "$TARGET/debug/knock-lab" probe --addr 198.18.9.1 --port 22 --timeout-ms 300 >/dev/null 2>&1 \
  && fail "22 is open before the knock"
ip netns exec "$NS_C" "${client_env[@]}" /usr/bin/knock profile import "$WORK/alice.knock" >/dev/null
ip netns exec "$NS_C" "${client_env[@]}" /usr/bin/knock --profile ssh-alice --wait --wait-timeout 2 --attempts 1 \
  >"$WORK/knock.out" 2>&1 || fail "the knock did not open 22: $(cat "$WORK/knock.out"); daemon: $(cat "$WORK/daemon.log")"
ip netns exec "$NS_C" "$TARGET/debug/knock-lab" probe --addr 198.18.9.1 --port 22 --timeout-ms 1000 >/dev/null \
  || fail "22 is not open after the knock"
# Root's console grant writes the audit log and its key beside the running daemon: the files stay
# the daemon's, and its next knock opens as the first did.
ip netns exec "$NS_S" /usr/sbin/knockd grant 198.18.9.3 --door ssh --for 30s >"$WORK/grant.out" 2>&1 \
  || fail "knockd grant: $(cat "$WORK/grant.out")"
[ -n "$(find /var/lib/knockd -not -user knockd)" ] && fail "after knockd grant, not the daemon's: $(find /var/lib/knockd -not -user knockd)"
ip netns exec "$NS_C" "${client_env[@]}" /usr/bin/knock --profile ssh-alice --wait --wait-timeout 2 --attempts 1 \
  >"$WORK/knock.out" 2>&1 || fail "the knock after knockd grant did not open 22: $(cat "$WORK/knock.out"); daemon: $(cat "$WORK/daemon.log")"
grep -qi "denied" "$WORK/daemon.log" && fail "the daemon was denied a file: $(cat "$WORK/daemon.log")"
kill -HUP "$knockd_pid"
wait_for "$WORK/notify.log" "^RELOADING=1" 5
wait_for "$WORK/notify.log" "^READY=1" 5 2
kill -TERM "$knockd_pid"
wait "$daemon" || fail "the daemon exited with $?: $(cat "$WORK/daemon.log")"
wait_for "$WORK/notify.log" "^STOPPING=1" 5
ledgers=$(find /var/lib/knockd/ledger -name '*.ledger' | wc -l)
[ "$ledgers" -ge 1 ] || fail "no ledger in /var/lib/knockd/ledger"
grep -q '"event":"grant"' /var/lib/knockd/audit.log || fail "no grant in the audit log"
[ -n "$(find /var/lib/knockd -not -user knockd)" ] && fail "the daemon left files not its own: $(find /var/lib/knockd -not -user knockd)"

say "   removing keeps the ledger and the audit log; purging deletes them"
cp /var/lib/knockd/audit.log "$WORK/audit.before"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -q "$PKG" >"$WORK/remove.log" 2>&1 || fail "remove: $(cat "$WORK/remove.log")"
[ -e /usr/sbin/knockd ] && fail "remove left /usr/sbin/knockd"
[ "$(find /var/lib/knockd/ledger -name '*.ledger' | wc -l)" = "$ledgers" ] || fail "remove deleted ledgers"
cmp -s /var/lib/knockd/audit.log "$WORK/audit.before" || fail "remove changed the audit log"
[ -e /etc/knockd/keys/ssh/alice.key ] || fail "remove deleted the keys"
grep -q "kept /var/lib/knockd" "$WORK/remove.log" || fail "remove did not say what it kept: $(cat "$WORK/remove.log")"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "$PKG" >"$WORK/purge.log" 2>&1 || fail "purge: $(cat "$WORK/purge.log")"
for p in "/var/lib/knockd (the state directory" "/etc/knockd/keys (the clients' keys)"; do
  grep -qF "  $p" "$WORK/purge.log" || fail "purge did not say it deletes $p: $(cat "$WORK/purge.log")"
done
for p in /var/lib/knockd /etc/knockd; do [ -e "$p" ] && fail "purge left $p"; done
sed -n '/purging deletes/,$p' "$WORK/purge.log" | sed 's/^/deb test:   | /'
exit 0
