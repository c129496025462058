#!/usr/bin/env bash
# examples/embed/embed.c built against an *installed* libnarcache through
# pkg-config (narcache, plus libuv which it uses itself), then run: it
# serves the golden cache on a free port from its own loop, its own timer
# keeps ticking, and SIGTERM stops everything with a clean exit (no handle
# left on the loop; under ASan, no leak).
# Usage: embed_installed.sh BUILD_DIR C_COMPILER "EXTRA_FLAGS" EMBED_C CACHE_DIR
set -euo pipefail
build=$1
cc=$2
extra=${3:-}
source=$4
cache=$5
TMP=$(mktemp -d "${TMPDIR:-/tmp}/narcache-embed.XXXXXX")
pid=
cleanup() {
    [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; cat "$TMP/out" "$TMP/err" >&2 2>/dev/null; exit 1; }

cmake --install "$build" --prefix "$TMP/prefix" > "$TMP/install.log"
libdir=$(dirname "$(find "$TMP/prefix" -name narcache.pc)")/..
export PKG_CONFIG_PATH=$libdir/pkgconfig
export LD_LIBRARY_PATH=$libdir
# shellcheck disable=SC2046,SC2086
"$cc" $extra -Wall -Wextra -Werror -o "$TMP/embed" "$source" $(pkg-config --cflags --libs narcache libuv)
# ldd's output goes to a file first: `ldd | grep -q` under pipefail fails
# whenever grep exits before ldd has written its last line (SIGPIPE).
ldd "$TMP/embed" > "$TMP/ldd"
if ! grep -q "$TMP/prefix/.*libnarcache.so" "$TMP/ldd"; then
    fail "embed does not load the installed libnarcache: $(cat "$TMP/ldd")"
fi

"$TMP/embed" "$cache" 127.0.0.1:0 > "$TMP/out" 2> "$TMP/err" &
pid=$!
port=
for _ in $(seq 1 100); do
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$TMP/out")
    [[ -n $port ]] && break
    sleep 0.1
done
[[ -n $port ]] || fail "embed did not say where it listens"
curl -sS -f -o "$TMP/info" "http://127.0.0.1:$port/nix-cache-info" || fail "GET /nix-cache-info"
cmp "$TMP/info" "$cache/nix-cache-info" || fail "nix-cache-info differs"
# The program's own timer runs on the same loop as the server.
for _ in $(seq 1 50); do
    grep -q '^tick 2: server healthy$' "$TMP/out" && break
    sleep 0.1
done
grep -q '^tick 2: server healthy$' "$TMP/out" || fail "the program's timer did not tick"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[[ $rc -eq 0 ]] || fail "exit status $rc after SIGTERM"
grep -q '^signal 15: stopping$' "$TMP/out" || fail "SIGTERM not seen by the program's uv_signal"
grep -q '^stopped cleanly after [0-9]* ticks$' "$TMP/out" || fail "no clean stop"
echo "embed: ok"
