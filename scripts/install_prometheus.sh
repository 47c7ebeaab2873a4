#!/usr/bin/env bash
# Puts Debian's Prometheus server under DEST (default .tools/prometheus) for the end-to-end metrics
# test. The package is downloaded and unpacked, not installed: no root-owned service, no systemd,
# and nothing outside the project folder changes. The test starts it on loopback and stops it.
set -euo pipefail
dest="${1:-.tools/prometheus}"
binary="$dest/usr/bin/prometheus"
if [ -x "$binary" ]; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# apt-get download needs current package lists; refresh them only when the first try fails.
if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
  apt-get update -qq >/dev/null
  (cd "$work" && apt-get download prometheus >/dev/null)
fi
mkdir -p "$dest"
dpkg-deb -x "$work"/prometheus_*.deb "$dest"
"$binary" --version | head -1
