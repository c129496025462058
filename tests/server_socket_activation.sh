#!/usr/bin/env bash
# narcache-server under socket activation, with systemd's own
# systemd-socket-activate passing the listening sockets (LISTEN_FDS,
# LISTEN_PID, LISTEN_FDNAMES): it serves the golden cache from them, logs
# each with its name, adds explicit --listen addresses but not the default
# 127.0.0.1:5000, serves a unix socket without removing it, ignores sockets
# meant for another pid, refuses a socket it cannot serve on, and stops
# cleanly on SIGTERM.
# Usage: server_socket_activation.sh NARCACHE_SERVER CACHE_DIR
set -euo pipefail
server=$1
cache=$2
TMP=$(mktemp -d "${TMPDIR:-/tmp}/narcache-activation.XXXXXX")
pid=
cleanup() {
    [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
unset NOTIFY_SOCKET WATCHDOG_USEC WATCHDOG_PID LISTEN_FDS LISTEN_PID LISTEN_FDNAMES
fail() { echo "FAIL: $*" >&2; [[ -f $TMP/log ]] && cat "$TMP/log" >&2; exit 1; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# GET http://127.0.0.1:PORT/PATH into FILE, retrying while the port is not up yet.
fetch() {
    local port=$1 path=$2 out=$3
    for _ in $(seq 1 100); do
        if curl -sS -f -o "$out" "http://127.0.0.1:$port/$path" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    fail "GET :$port/$path failed"
}
stop() {
    kill -TERM "$pid"
    local rc=0
    wait "$pid" || rc=$?
    pid=
    [[ $rc -eq 0 ]] || fail "exit status $rc after SIGTERM"
}
narinfo=2x2rbnxcyn2hnpphfd0zsvbidgfij8s0.narinfo
[[ -f $cache/$narinfo ]] || fail "no $narinfo in $cache"

echo "== two named sockets from systemd-socket-activate, plus an explicit --listen"
p1=$(free_port) p2=$(free_port) p3=$(free_port)
systemd-socket-activate -l "127.0.0.1:$p1" -l "127.0.0.1:$p2" --fdname=web:alt \
    "$server" --cache "$cache" --listen "127.0.0.1:$p3" 2> "$TMP/log" &
pid=$!
fetch "$p1" nix-cache-info "$TMP/info"   # the first connection starts the daemon
cmp "$TMP/info" "$cache/nix-cache-info" || fail "nix-cache-info differs"
fetch "$p1" "$narinfo" "$TMP/n1"
fetch "$p2" "$narinfo" "$TMP/n2"
fetch "$p3" "$narinfo" "$TMP/n3"
for f in n1 n2 n3; do cmp "$TMP/$f" "$cache/$narinfo" || fail "$f differs from $narinfo"; done
curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p1/00000000000000000000000000000000.narinfo" \
    > "$TMP/code"
[[ $(cat "$TMP/code") == 404 ]] || fail "absent narinfo: $(cat "$TMP/code")"
grep -q "socket_activated: .*fd=3 name=web address=127.0.0.1:$p1\$" "$TMP/log" ||
    fail "no log line for fd 3 (web)"
grep -q "socket_activated: .*fd=4 name=alt address=127.0.0.1:$p2\$" "$TMP/log" ||
    fail "no log line for fd 4 (alt)"
grep -q " listening: .*address=127.0.0.1:$p3\$" "$TMP/log" || fail "--listen not added"
[[ $(grep -c ' listening: ' "$TMP/log") -eq 3 ]] || fail "not exactly three listeners"
stop

echo "== one unnamed socket, no --listen: no default 127.0.0.1:5000"
p1=$(free_port)
systemd-socket-activate -l "127.0.0.1:$p1" "$server" --cache "$cache" 2> "$TMP/log" &
pid=$!
fetch "$p1" "$narinfo" "$TMP/n1"
cmp "$TMP/n1" "$cache/$narinfo" || fail "narinfo differs"
grep -q "socket_activated: .*fd=3 name=unknown address=127.0.0.1:$p1\$" "$TMP/log" ||
    fail "no log line for the unnamed socket"
[[ $(grep -c ' listening: ' "$TMP/log") -eq 1 ]] || fail "a listener besides the passed socket"
if grep -q '127.0.0.1:5000' "$TMP/log"; then fail "the default listener was added"; fi
stop

echo "== a unix socket: served, and left in place for systemd"
systemd-socket-activate -l "$TMP/http.sock" --fdname=local "$server" --cache "$cache" \
    2> "$TMP/log" &
pid=$!
for _ in $(seq 1 100); do [[ -S $TMP/http.sock ]] && break; sleep 0.1; done
curl -sS -f --unix-socket "$TMP/http.sock" -o "$TMP/n1" "http://localhost/$narinfo" ||
    fail "GET over the unix socket"
cmp "$TMP/n1" "$cache/$narinfo" || fail "narinfo differs"
grep -q "socket_activated: .*fd=3 name=local address=unix:$TMP/http.sock\$" "$TMP/log" ||
    fail "no log line for the unix socket"
stop
[[ -S $TMP/http.sock ]] || fail "the daemon removed the socket file systemd made"

echo "== LISTEN_PID of another process: ignored"
p3=$(free_port)
LISTEN_FDS=1 LISTEN_PID=1 LISTEN_FDNAMES=web "$server" --cache "$cache" \
    --listen "127.0.0.1:$p3" 2> "$TMP/log" 3< /dev/null &
pid=$!
fetch "$p3" nix-cache-info "$TMP/info"
grep -q 'socket_activation: LISTEN_FDS is meant for another process: ignored LISTEN_PID=1$' \
    "$TMP/log" || fail "no warning about LISTEN_PID"
if grep -q socket_activated "$TMP/log"; then fail "adopted a socket meant for pid 1"; fi
stop

echo "== a datagram socket is refused"
p1=$(free_port)
systemd-socket-activate --datagram -l "127.0.0.1:$p1" "$server" --cache "$cache" 2> "$TMP/log" &
pid=$!
sleep 0.3
printf x > "/dev/udp/127.0.0.1/$p1"   # a datagram starts the daemon
rc=0
timeout 30 tail --pid="$pid" -f /dev/null || fail "the daemon did not exit on a datagram socket"
wait "$pid" || rc=$?
pid=
[[ $rc -eq 1 ]] || fail "exit status $rc with a datagram socket (want 1)"
grep -q 'socket_activation_failed: .*fd=3' "$TMP/log" || fail "no socket_activation_failed line"
echo "socket activation: ok"
