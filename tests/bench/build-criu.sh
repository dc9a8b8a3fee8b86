#!/usr/bin/env bash
# Optional helper for the benchmark (tests/bench/bench.py compares dmtcp-rs with
# CRIU >= 4 when `criu` is on PATH, and skips that section otherwise). Debian 12
# ships CRIU 3.17 only, so this builds CRIU 4.x from Debian trixie's source
# tarball and installs the binary as /usr/local/bin/criu. Never run by CI.
# Needs root and network access to deb.debian.org. Usage:
#   sudo tests/bench/build-criu.sh
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "build-criu.sh: must be run as root" >&2
	exit 1
fi

src_list=/etc/apt/sources.list.d/trixie-src.sources
work="$(mktemp -d /tmp/build-criu.XXXXXX)"
cleanup() {
	rm -f "$src_list"
	apt-get update -qq >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

cat >"$src_list" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt-get update

cd "$work"
# The .dsc / .debian.tar may 404 (mirror layout), making apt-get exit non-zero,
# but the upstream tarball is fetched: check for it rather than the exit code.
apt-get source --download-only criu || true
shopt -s nullglob
tarballs=(criu_4*.orig.tar.*)
shopt -u nullglob
if [ "${#tarballs[@]}" -eq 0 ]; then
	echo "build-criu.sh: no criu_4*.orig.tar.* downloaded" >&2
	exit 1
fi
tarball="${tarballs[0]}"
echo "build-criu.sh: building from $tarball"

DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	libbsd-dev libcap-dev libgnutls28-dev libnet1-dev libnftables-dev libnl-3-dev \
	libprotobuf-c-dev libprotobuf-dev pkg-config protobuf-c-compiler protobuf-compiler \
	python3-protobuf uuid-dev libaio-dev

mkdir src
tar -xf "$tarball" -C src --strip-components=1
make -C src -j"$(nproc)" criu
install -m 0755 src/criu/criu /usr/local/bin/criu

cd /
cleanup
trap - EXIT

/usr/local/bin/criu --version
/usr/local/bin/criu check
