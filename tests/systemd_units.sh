#!/usr/bin/env bash
# The systemd units as installed: ExecStart names the installed daemon,
# `systemd-analyze verify` finds nothing to say about either unit, and the
# service's sandbox rates at most 2.0 in `systemd-analyze security` ("OK").
# Usage: systemd_units.sh BUILD_DIR
set -euo pipefail
build=$1
TMP=$(mktemp -d "${TMPDIR:-/tmp}/narcache-units.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$TMP/prefix" > "$TMP/install.log"
units=$TMP/prefix/lib/systemd/system
[[ -f $units/narcache-server.service && -f $units/narcache-server.socket ]] ||
    fail "units not installed under lib/systemd/system"
grep -qx "ExecStart=$TMP/prefix/bin/narcache-server --cache /srv/nix-cache" \
    "$units/narcache-server.service" || fail "ExecStart does not name the installed daemon"
[[ -x $TMP/prefix/bin/narcache-server ]] || fail "no installed daemon"
grep -qx 'ListenStream=5000' "$units/narcache-server.socket" || fail "socket: no ListenStream=5000"
cd "$units"
systemd-analyze verify ./narcache-server.service ./narcache-server.socket > "$TMP/verify" 2>&1 ||
    { cat "$TMP/verify" >&2; fail "systemd-analyze verify failed"; }
[[ ! -s $TMP/verify ]] || { cat "$TMP/verify" >&2; fail "systemd-analyze verify complained"; }
systemd-analyze security --offline=true --threshold=20 ./narcache-server.service \
    > "$TMP/security" 2>&1 || { cat "$TMP/security" >&2; fail "sandbox exposure above 2.0"; }
tail -1 "$TMP/security"
echo "systemd units: ok"
