#!/usr/bin/env bash
# Builds the Debian package knockd-onetime from this workspace:
#
#   bash scripts/build-deb.sh            # release build, then target/debian/knockd-onetime_<version>_<arch>.deb
#   bash scripts/build-deb.sh --debug    # packages the debug binaries the tests ran (tests/deb/run.sh)
#
# Only dpkg-deb and dpkg-shlibdeps (dpkg-dev, with build-essential) are needed: the package is
# laid out here, file by file, so what it holds is plain to read. It installs
#   /usr/sbin/knockd, /usr/bin/knock
#   /lib/systemd/system/knockd.service (etc/knockd.service), and the drop-in for knockd.conf
#     doors /usr/share/knockd-onetime/knockd-conf.conf (etc/knockd-conf.conf)
#   /etc/knockd/knockd.toml, the example configuration, as a conffile
#   man pages knockd(8), knock(1) (`--generate man`) and knockd.toml(5) (docs/knockd.toml.5)
#   bash, zsh and fish completions (`--generate bash|zsh|fish`)
#   /usr/share/doc/knockd-onetime/: README.md, docs/*.md, examples
# and replaces Debian's knockd (Conflicts, Replaces, Provides): `apt install ./<file>.deb`
# switches. Maintainer scripts: pkg/deb/. docs/OPERATIONS.md, "The package", says what they do.
# DEB_MAINTAINER="Name <address>" sets the Maintainer field.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
case "${1:-}" in
  --debug) profile=debug ;;
  "") ;;
  *) echo "usage: $0 [--debug]" >&2; exit 2 ;;
esac

die() { echo "build-deb: $*" >&2; exit 1; }
for tool in dpkg-deb dpkg-shlibdeps dpkg gzip install; do
  command -v "$tool" >/dev/null || die "$tool is missing (Debian/Ubuntu: apt-get install dpkg-dev)"
done
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi

target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
bin="$target/$profile"
if [ "$profile" = release ]; then
  cargo build --release -p knockd -p knock
else
  # The binaries the tests ran, as they are (a build with other packages' features would differ).
  for b in knockd knock; do
    [ -x "$bin/$b" ] || die "$bin/$b is missing: run \`cargo build --workspace\` first (the README's test command does)"
  done
fi

name=knockd-onetime
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
[ -n "$version" ] || die "no version in Cargo.toml's [workspace.package]"
out="$target/debian"
stage="$out/${name}_${version}_${arch}"
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"

# generate BINARY KIND: what `BINARY --generate KIND` prints, or a stop that says why.
generate() {
  local text
  if ! text=$("$bin/$1" --generate "$2" 2>&1) || [ -z "$text" ]; then
    die "\`$1 --generate $2\` failed: the man pages and completions come from the binaries' hidden --generate flag (issue 10). It said: ${text:0:300}"
  fi
  printf '%s\n' "$text"
}

# Programs, stripped: the debug build too, so the package stays small.
install -D -m 0755 "$bin/knockd" "$stage/usr/sbin/knockd"
install -D -m 0755 "$bin/knock" "$stage/usr/bin/knock"
if command -v strip >/dev/null; then
  strip --strip-unneeded "$stage/usr/sbin/knockd" "$stage/usr/bin/knock"
fi

# The service, its drop-in for knockd.conf doors, the example configuration (a conffile).
install -D -m 0644 etc/knockd.service "$stage/lib/systemd/system/knockd.service"
install -D -m 0644 etc/knockd-conf.conf "$stage/usr/share/$name/knockd-conf.conf"
install -D -m 0644 etc/knockd.toml "$stage/etc/knockd/knockd.toml"

# Man pages.
man="$stage/usr/share/man"
mkdir -p "$man/man1" "$man/man5" "$man/man8"
generate knockd man > "$man/man8/knockd.8"
generate knock man > "$man/man1/knock.1"
[ -f docs/knockd.toml.5 ] || die "docs/knockd.toml.5 is missing: the configuration's man page (issue 10)"
install -m 0644 docs/knockd.toml.5 "$man/man5/knockd.toml.5"
gzip -9n "$man/man8/knockd.8" "$man/man1/knock.1" "$man/man5/knockd.toml.5"

# Completions, where bash-completion, zsh and fish look for them.
for prog in knockd knock; do
  install -d "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
    "$stage/usr/share/fish/vendor_completions.d"
  generate "$prog" bash > "$stage/usr/share/bash-completion/completions/$prog"
  generate "$prog" zsh > "$stage/usr/share/zsh/vendor-completions/_$prog"
  generate "$prog" fish > "$stage/usr/share/fish/vendor_completions.d/$prog.fish"
done

# Documentation and examples.
doc="$stage/usr/share/doc/$name"
install -D -m 0644 README.md "$doc/README.md"
for f in docs/*.md; do install -m 0644 "$f" "$doc/$(basename "$f")"; done
install -m 0644 pkg/deb/copyright "$doc/copyright"
install -D -m 0644 etc/knockd.conf "$doc/examples/knockd.conf"
install -m 0644 etc/knock-profile.example.toml "$doc/examples/knock-profile.example.toml"
install -m 0644 etc/knockd.toml "$doc/examples/knockd.toml"

# Control files.
for script in postinst prerm postrm; do install -m 0755 "pkg/deb/$script" "$stage/DEBIAN/$script"; done
install -m 0644 pkg/deb/conffiles "$stage/DEBIAN/conffiles"
shlibs=$(
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  mkdir "$scratch/debian"
  printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$name" "$name" > "$scratch/debian/control"
  cd "$scratch" && dpkg-shlibdeps -O "$stage/usr/sbin/knockd" "$stage/usr/bin/knock" 2>/dev/null
)
shlibs=${shlibs#shlibs:Depends=}
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no libraries for the binaries"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: ${DEB_MAINTAINER:-knockd-onetime packagers <packagers@knockd-onetime.invalid>}
Installed-Size: $size
Depends: $shlibs, nftables, adduser
Suggests: iptables, ipset
Conflicts: knockd
Replaces: knockd
Provides: knockd
Section: net
Priority: optional
Description: port knocking where every knock sequence works once
 knockd opens a firewall port (an nftables set element with a kernel timeout) only
 for the address that knocked a valid, never-used sequence. Sequences are derived from a
 per-client secret and a counter or the time, or listed once each in a sequence file, and
 every one is consumed on disk before anything opens: a sniffed knock, replayed, opens
 nothing. Every decision goes to a hash-chained, MACed audit log.
 .
 knock is the client. Both read knockd 0.8's configuration and command lines: this
 package replaces Debian's knockd, and a server's /etc/knockd.conf keeps working.
EOF
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
  > "$stage/DEBIAN/md5sums"

deb="$out/${name}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
