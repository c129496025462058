#!/usr/bin/env bash
# Nix-client load from narcache-load against narcache-server and nginx
# serving the same cache directory, in the same run.
#
# usage: bench/run-load.sh [BUILD_DIR] [ROUNDS] [SECONDS] [PATHS]
#   BUILD_DIR  build tree, relative to the repo root   (default build/bench-serve)
#   ROUNDS     timed rounds; medians are reported       (default 3)
#   SECONDS    length of one narcache-load run          (default 10)
#   PATHS      store paths in the fixture closure       (default 100)
# About ROUNDS x 6 x SECONDS plus a minute of set-up (the first run builds
# the closure with nix-build; the paths stay in the store).
#
# Runs as root without a Nix daemon. The fixture: a closure of PATHS store
# paths (each refers to the one before and the one at half its index; 8 KiB
# to 1 MiB, every tenth 4 MiB), built by nix-build and written by
# `narcache cache add --compression none --closure` into a cache directory.
# Servers, each on a free port of 127.0.0.1: nginx (worker_processes 1,
# sendfile, access_log off; the anchor) with root at the cache, and
# narcache-server --cache (defaults). Workloads, narcache-load each time:
#   storm      25 narinfo clients, 10% of hashes in the cache (nix build's
#              queries; 25 is Nix's http-connections): requests/s, p99
#   closure    25 closure clients (narinfo, then NAR, of random closures):
#              requests/s, MiB/s, p99
#   slowloris  4 narinfo clients while 1000 connections send their heads at
#              a byte a second: p99 of the 4, and their errors
# Within a round each workload runs on both servers back to back, the first
# alternating from round to round. The table gives the medians and the
# ratio narcache/nginx (above 1: narcache does better; for p99 the ratio is
# nginx/narcache, so above 1 is better there too).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/bench-serve}
rounds=${2:-3}
secs=${3:-10}
npaths=${4:-100}

die() { echo "run-load.sh: $*" >&2; exit 1; }
for tool in nginx nix-build nix-store python3 curl; do
  command -v "$tool" > /dev/null || die "needs $tool (scripts/install-deps installs it)"
done
[[ $(id -u) == 0 ]] || die "run as root (Nix without a daemon)"

echo "== build ($build, Release)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DNARCACHE_BUILD_TESTS=OFF > /dev/null
cmake --build "$build" -j "$(nproc)" --target narcache_server narcache_load narcache_cli > /dev/null
server=$PWD/$build/examples/narcache-server/narcache-server
load=$PWD/$build/examples/narcache-load/narcache-load
cli=$PWD/$build/examples/narcache/narcache

tmp=$(mktemp -d "${TMPDIR:-/tmp}/narcache-run-load.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== fixture: a closure of $npaths store paths"
unset NIX_REMOTE
top=$(nix-build --option sandbox false --option build-users-group '' --option substituters '' \
  --max-jobs "$(nproc)" --no-out-link --arg n "$npaths" --arg bigEvery 10 --arg smallSteps 128 \
  --argstr tag load-bench tests/reliability/closure.nix 2> "$tmp/build.log") ||
  { cat "$tmp/build.log"; die "nix-build"; }
nix-store -qR "$top" > "$tmp/paths"
"$cli" key generate bench-load-1 "$tmp/sk" "$tmp/pk" > /dev/null
"$cli" cache add --to "$tmp/cache" --key-file "$tmp/sk" --compression none --closure "$top" > /dev/null
echo "   $(wc -l < "$tmp/paths") paths, $(du -sm "$tmp/cache" | cut -f1) MiB in the cache"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

echo "== servers"
ng_port=$(free_port)
nc_port=$(free_port)
mkdir -p "$tmp/nginx-tmp"
cat > "$tmp/nginx.conf" << EOF
worker_processes 1;
daemon off;
user root;
pid $tmp/nginx.pid;
error_log $tmp/nginx.error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65s;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path $tmp/nginx-tmp;
  proxy_temp_path $tmp/nginx-tmp;
  fastcgi_temp_path $tmp/nginx-tmp;
  uwsgi_temp_path $tmp/nginx-tmp;
  scgi_temp_path $tmp/nginx-tmp;
  server { listen 127.0.0.1:$ng_port; root $tmp/cache; }
}
EOF
nginx -p "$tmp" -c "$tmp/nginx.conf" > "$tmp/nginx.out" 2>&1 &
pids+=($!)
"$server" --cache "$tmp/cache" --listen "127.0.0.1:$nc_port" 2> "$tmp/narcache.log" &
pids+=($!)
for port in "$ng_port" "$nc_port"; do
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/nix-cache-info" && break
    sleep 0.1
  done
  curl -sf -o /dev/null "http://127.0.0.1:$port/nix-cache-info" || die "no server on :$port"
done
echo "   nginx $(nginx -v 2>&1 | sed 's|.*/||') on :$ng_port, narcache-server on :$nc_port"

# run WORKLOAD SIDE ROUND: one narcache-load run, its JSON kept.
run() {
  local workload=$1 side=$2 round=$3 port
  [[ $side == nginx ]] && port=$ng_port || port=$nc_port
  local args=(--paths "$tmp/paths" --duration "$secs" --timeout 30 --no-progress)
  case $workload in
    storm) args+=(--clients narinfo=25 --hit-ratio 0.1) ;;
    closure) args+=(--clients closure=25) ;;
    slowloris) args+=(--clients narinfo=4 --clients slow-headers=1000 --hit-ratio 0.5) ;;
  esac
  "$load" "http://127.0.0.1:$port" "${args[@]}" --json "$tmp/$workload-$side-$round.json" \
    > "$tmp/$workload-$side-$round.txt"
}

workloads=(storm closure slowloris)
echo "== warm-up"
for w in "${workloads[@]}"; do
  for side in nginx narcache; do secs=2 run "$w" "$side" warm; done
done
for ((r = 1; r <= rounds; r++)); do
  echo "== round $r/$rounds"
  for w in "${workloads[@]}"; do
    if ((r % 2)); then order=(narcache nginx); else order=(nginx narcache); fi
    for side in "${order[@]}"; do run "$w" "$side" "$r"; done
  done
done

python3 - "$tmp" "$rounds" << 'EOF'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def get(w, side, r):
    with open("%s/%s-%s-%d.json" % (tmp, w, side, r)) as f:
        return json.load(f)["normal"]
rows = [("storm", "requests/s", lambda s: s["requests_per_s"], False),
        ("storm", "p99 ms", lambda s: s["latency_ms"]["p99"], True),
        ("closure", "requests/s", lambda s: s["requests_per_s"], False),
        ("closure", "MiB/s", lambda s: s["bytes_in_per_s"] / 1048576, False),
        ("closure", "p99 ms", lambda s: s["latency_ms"]["p99"], True),
        ("slowloris", "p99 ms of 4 normal clients", lambda s: s["latency_ms"]["p99"], True),
        ("slowloris", "errors of 4 normal clients", lambda s: s["errors"], None)]
print("| workload | measure | nginx | narcache | ratio |")
print("|---|---|--:|--:|--:|")
for w, name, f, lower_better in rows:
    med = {side: statistics.median(f(get(w, side, r)) for r in range(1, rounds + 1))
           for side in ("nginx", "narcache")}
    if lower_better is None:
        ratio = "-"
    elif lower_better:
        ratio = "%.2f" % (med["nginx"] / med["narcache"]) if med["narcache"] else "-"
    else:
        ratio = "%.2f" % (med["narcache"] / med["nginx"]) if med["nginx"] else "-"
    print("| %s | %s | %.2f | %.2f | %s |" % (w, name, med["nginx"], med["narcache"], ratio))
errors = {side: sum(get(w, side, r)["errors"] for w in ("storm", "closure")
                    for r in range(1, rounds + 1)) for side in ("nginx", "narcache")}
print("\nerrors of storm and closure runs: nginx %(nginx)d, narcache %(narcache)d" % errors)
EOF
