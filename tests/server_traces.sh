#!/usr/bin/env bash
# narcache-server writes the stack of every thread before dying on SIGQUIT
# and on SIGABRT (what systemd sends when the watchdog fires): a section per
# thread -- the main thread (in uv_run, under daemon_run) and each libuv
# threadpool worker, each with frames -- and the process still dies by that
# signal.
# Usage: server_traces.sh NARCACHE_SERVER CACHE_DIR
set -euo pipefail
server=$1
cache=$2
TMP=$(mktemp -d "${TMPDIR:-/tmp}/narcache-traces.XXXXXX")
pid=
cleanup() {
    [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
unset NOTIFY_SOCKET WATCHDOG_USEC WATCHDOG_PID LISTEN_FDS LISTEN_PID LISTEN_FDNAMES
# Under ASan: let our SIGABRT handler run, and skip the leak check of a
# process that is being killed.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0:handle_abort=0
fail() { echo "FAIL: $*" >&2; [[ -f $TMP/log ]] && cat "$TMP/log" >&2; exit 1; }

# SIG NAME EXIT_STATUS
check_signal() {
    local sig=$1 want=$2
    echo "== SIG$sig"
    "$server" --cache "$cache" --listen 127.0.0.1:0 --threads 3 2> "$TMP/log" &
    pid=$!
    # Wait until it serves: the first probe has started the threadpool.
    local port=
    for _ in $(seq 1 100); do
        port=$(sed -n 's/.* listening: .*address=127\.0\.0\.1:\([0-9]*\)$/\1/p' "$TMP/log")
        [[ -n $port ]] && curl -s -f -o /dev/null "http://127.0.0.1:$port/healthz" && break
        sleep 0.1
    done
    [[ -n $port ]] || fail "the daemon did not start"
    kill "-$sig" "$pid"
    local rc=0
    wait "$pid" || rc=$?
    pid=
    [[ $rc -eq $want ]] || fail "exit status $rc after SIG$sig (want $want: killed by it)"
    grep -q "^narcache-server: SIG$sig: stack traces of every thread" "$TMP/log" ||
        fail "no trace header"
    grep -q '^narcache-server: end of stack traces (4 threads)$' "$TMP/log" ||
        fail "no trace footer for 4 threads (main + 3 workers)"
    # Each thread section with its frames (lines until the next section).
    awk '/^--- thread /{name=$0; next} /^narcache-server: end/{name=""} name!="" && /\[0x[0-9a-f]+\]$/{n[name]++}
         END{for (k in n) print n[k] "\t" k}' "$TMP/log" > "$TMP/sections"
    [[ $(wc -l < "$TMP/sections") -eq 4 ]] || { cat "$TMP/sections" >&2; fail "not 4 thread sections with frames"; }
    grep -q '(main)' "$TMP/sections" || fail "no main thread section"
    # The main thread is in libuv's loop, called from daemon_run.
    awk '/^--- thread .*\(main\)/{m=1; next} /^--- thread /{m=0} m' "$TMP/log" > "$TMP/main"
    grep -q 'uv_run' "$TMP/main" || fail "main thread trace without uv_run"
    grep -q '(daemon_run+0x' "$TMP/main" || fail "main thread trace without daemon_run"
    # Every thread is in libuv: the loop, or workers waiting for tasks.
    awk '/^--- thread /{name=$0; next} /^narcache-server: end/{name=""} name!="" && /libuv/{n[name]=1}
         END{print length(n)}' "$TMP/log" > "$TMP/in_libuv"
    [[ $(cat "$TMP/in_libuv") -eq 4 ]] || fail "$(cat "$TMP/in_libuv") of 4 traces show libuv frames"
    if grep -q 'no answer' "$TMP/log"; then fail "a thread did not answer"; fi
}
check_signal QUIT 131
check_signal ABRT 134
echo "traces: ok"
