# Shared by the tests that run narcache-server against the real Nix client
# (server_nix.sh, server_upload_nix.sh); sourced, after `set -euo pipefail`.
# Sets: server, cli (from $1 $2), TMP (removed on exit), pids (servers
# started, killed on exit), NIX, NIXOPTS (Nix as root without a daemon).
# Provides: start_server, substitute, stop_servers. substitute reads
# P_BUILT and CLOSURE, which the test sets.
server=$1
cli=$2
unset NIX_REMOTE
TMP=$(mktemp -d "${TMPDIR:-/tmp}/narcache-$(basename "$0" .sh).XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
NIX=(nix --extra-experimental-features nix-command)
NIXOPTS=(--option sandbox false --option build-users-group '' --option substituters '')

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_server NAME ARGS...: start narcache-server on a free port ($PORT),
# log to $TMP/NAME.log, wait until /healthz answers 200.
start_server() {
    local name=$1
    shift
    PORT=$(free_port)
    "$server" --listen "127.0.0.1:$PORT" "$@" 2>"$TMP/$name.log" &
    pids+=($!)
    for _ in $(seq 1 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && return 0
        sleep 0.1
    done
    echo "narcache-server ($name) did not become healthy:" >&2
    cat "$TMP/$name.log" >&2
    return 1
}

# substitute NAME PUBKEY: nix copy the closure of $P_BUILT from the server
# on $PORT into a fresh store, signatures required, and compare every NAR
# with the original.
substitute() {
    local name=$1 pk=$2 root=$TMP/root-$1
    XDG_CACHE_HOME=$TMP/xdg-$name "${NIX[@]}" copy "${NIXOPTS[@]}" --option require-sigs true \
        --option trusted-public-keys "$pk" --from "http://127.0.0.1:$PORT" \
        --to "local?root=$root" "$P_BUILT"
    for p in "${CLOSURE[@]}"; do
        a=$(nix-store --dump "$p" | sha256sum)
        b=$(nix-store --dump "$root$p" | sha256sum)
        [[ $a == "$b" ]] || { echo "$name: substituted $p differs" >&2; exit 1; }
    done
    echo "$name: nix substituted ${#CLOSURE[@]} paths with require-sigs, NARs identical"
}

# stop_servers: SIGTERM every server started; each must exit with 0.
stop_servers() {
    for p in "${pids[@]}"; do kill -TERM "$p"; done
    for p in "${pids[@]}"; do
        wait "$p" || { echo "narcache-server $p exited with $?" >&2; exit 1; }
    done
    pids=()
}
