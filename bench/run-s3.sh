#!/usr/bin/env bash
# The s3 backend against its anchor, curl fetching the same objects from the
# object store directly, in the same run: a throwaway Ceph RADOS Gateway on
# 127.0.0.1 (tests/s3/rgw_cluster.py), narcache-server --s3 in front of it.
#
# usage: bench/run-s3.sh [BUILD_DIR] [ROUNDS] [NARINFOS] [NAR_MIB]
#   BUILD_DIR  build tree, relative to the repo root      (default build/bench-serve)
#   ROUNDS     timed rounds; medians are reported          (default 5)
#   NARINFOS   narinfo objects fetched per round           (default 200)
#   NAR_MIB    size of the NAR object                      (default 256)
#
# Per round, server and direct back to back (the first alternating):
#   narinfo    NARINFOS narinfo GETs, one at a time on one kept-alive
#              connection (curl), each object fetched for the first time by
#              this server (a fresh server per round, a fresh set of names
#              per round): p50 and p99 of curl's time_total. The direct
#              fetch is a SigV4-signed GET (curl --aws-sigv4).
#   narinfo-warm  the same names again through the server (its cache).
#   nar c1     the NAR, one download: MiB/s
#   nar c8     the NAR, 8 downloads at once (curl --parallel): MiB/s total
# and the server's peak RSS (VmHWM): NARs pass through bounded buffers.
# Ratios: narinfo latency server/direct and NAR time server/direct (the
# overhead factor; the issue's goal is <= 1.2).
# S3_BENCH_TLS=1: both go to the gateway's https port instead (libcurl
# carries the server's GETs then; plain http uses the store's own
# connections, spliced to the client).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/bench-serve}
rounds=${2:-5}
n_narinfo=${3:-200}
nar_mib=${4:-256}

die() { echo "run-s3.sh: $*" >&2; exit 1; }
for tool in radosgw ceph-mon ceph-osd python3 curl; do
  command -v "$tool" > /dev/null || die "needs $tool (scripts/install-deps installs it)"
done

echo "== build ($build, Release)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DNARCACHE_BUILD_TESTS=OFF > /dev/null
cmake --build "$build" -j "$(nproc)" --target narcache_server > /dev/null
server=$PWD/$build/examples/narcache-server/narcache-server

base=${TMPDIR:-/tmp}
[[ -z ${TMPDIR:-} && -d /dev/shm && -w /dev/shm ]] && base=/dev/shm
tmp=$(mktemp -d "$base/narcache-run-s3.XXXXXX")
server_pid=
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2> /dev/null
  python3 tests/s3/rgw_cluster.py stop "$tmp/rgw" || true
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== a Ceph RADOS Gateway"
memstore=$(( nar_mib * 2 + 512 ))
eval "$(python3 tests/s3/rgw_cluster.py start "$tmp/rgw" --memstore-mib "$memstore")"
python3 tests/s3/rgw_cluster.py bucket "$tmp/rgw" bench
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
sign=(--aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY"
      -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD')
endpoint=$S3_ENDPOINT store_args=
if [[ ${S3_BENCH_TLS:-0} == 1 ]]; then
  # the gateway's https port (self-signed), for the server and for curl
  endpoint=$S3_TLS_ENDPOINT store_args="&ca-file=$S3_CA_FILE"
  sign+=(--cacert "$S3_CA_FILE")
fi
direct=$endpoint/bench

echo "== fixture: $(( n_narinfo * rounds )) narinfos, a $nar_mib MiB NAR"
python3 - "$tmp" "$n_narinfo" "$rounds" <<'EOF'
import random, sys
tmp, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
digits = "0123456789abcdfghijklmnpqrsvwxyz"
rng = random.Random(42)
with open(f"{tmp}/names", "w") as names:
    for r in range(rounds):
        for i in range(n):
            h = "".join(rng.choice(digits) for _ in range(32))
            names.write(f"{r} {h}\n")
# A narinfo of the usual size (~600 bytes), as Nix writes it.
refs = " ".join("".join(rng.choice(digits) for _ in range(32)) + "-ref" for _ in range(6))
with open(f"{tmp}/narinfo", "w") as f:
    f.write("StorePath: /nix/store/" + "x" * 32 + "-bench\nURL: nar/" + "y" * 52 + ".nar.zst\n"
            "Compression: zstd\nFileHash: sha256:" + "y" * 52 + "\nFileSize: 123456\n"
            "NarHash: sha256:" + "z" * 52 + "\nNarSize: 456789\nReferences: " + refs + "\n"
            "Sig: bench-1:" + "A" * 86 + "==\n")
EOF
printf 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n' > "$tmp/nix-cache-info"
curl -sf "${sign[@]}" -T "$tmp/nix-cache-info" "$direct/nix-cache-info" > /dev/null
# every narinfo in one curl process (kept-alive connection)
args=()
while read -r _ h; do args+=(-T "$tmp/narinfo" "$direct/$h.narinfo"); done < "$tmp/names"
curl -sf "${sign[@]}" "${args[@]}" > /dev/null
head -c $(( nar_mib * 1048576 )) /dev/urandom > "$tmp/nar"
curl -sf "${sign[@]}" -T "$tmp/nar" "$direct/nar/bench.nar" > /dev/null
rm "$tmp/nar"

results=$tmp/results
: > "$results"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
start_server() {
  port=$(free_port)
  "$server" --s3 "s3://bench?endpoint=$endpoint&region=$S3_REGION$store_args" \
    --listen "127.0.0.1:$port" ${S3_BENCH_SERVER_ARGS:-} 2> "$tmp/server.log" &
  server_pid=$!
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && return 0
    sleep 0.1
  done
  cat "$tmp/server.log" >&2
  die "narcache-server did not start"
}
stop_server() {
  # peak resident memory of this server: the NARs went through bounded rings
  echo "rss server $(awk '/VmHWM/ {print $2}' "/proc/$server_pid/status")" >> "$results"
  kill "$server_pid"
  wait "$server_pid" || true
  server_pid=
}

# times URL_BASE ROUND [curl args...]: time_total of each narinfo of ROUND
times() {
  local url=$1 round=$2
  shift 2
  local args=()
  while read -r r h; do
    [[ $r == "$round" ]] && args+=(-o /dev/null "$url/$h.narinfo")
  done < "$tmp/names"
  curl -sf "$@" -w '%{time_total}\n' "${args[@]}"
}
# nar_seconds URL_BASE PARALLEL [curl args...]: wall seconds of PARALLEL
# simultaneous downloads of the NAR
nar_seconds() {
  local url=$1 parallel=$2
  shift 2
  local t0 t1 args=()
  for _ in $(seq 1 "$parallel"); do args+=(-o /dev/null "$url/nar/bench.nar"); done
  t0=$(date +%s%N)
  curl -sf --no-progress-meter --parallel --parallel-max "$parallel" "$@" "${args[@]}"
  t1=$(date +%s%N)
  python3 -c "print(($t1 - $t0) / 1e9)"
}

for r in $(seq 0 $(( rounds - 1 ))); do
  echo "== round $(( r + 1 ))/$rounds"
  start_server
  order=(server direct)
  (( r % 2 )) && order=(direct server)
  for who in "${order[@]}"; do
    if [[ $who == server ]]; then
      times "http://127.0.0.1:$port" "$r" | sed 's/^/narinfo server /' >> "$results"
      times "http://127.0.0.1:$port" "$r" | sed 's/^/narinfo-warm server /' >> "$results"
      echo "nar1 server $(nar_seconds "http://127.0.0.1:$port" 1)" >> "$results"
      echo "nar8 server $(nar_seconds "http://127.0.0.1:$port" 8)" >> "$results"
    else
      times "$direct" "$r" "${sign[@]}" | sed 's/^/narinfo direct /' >> "$results"
      echo "nar1 direct $(nar_seconds "$direct" 1 "${sign[@]}")" >> "$results"
      echo "nar8 direct $(nar_seconds "$direct" 8 "${sign[@]}")" >> "$results"
    fi
  done
  stop_server
done

python3 - "$results" "$nar_mib" "$rounds" <<'EOF'
import os, statistics, sys
path, mib, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [l.split() for l in open(path)]
def vals(kind, who):
    return [float(v) for k, w, v in rows if k == kind and w == who]
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]
print(f"\nrun-s3.sh: {rounds} rounds; medians; direct = curl --aws-sigv4 to the gateway"
      + (" (https)" if os.environ.get("S3_BENCH_TLS") == "1" else ""))
print("| measure | narcache-server --s3 | direct | server/direct |")
print("|---|--:|--:|--:|")
for p in (50, 99):
    s, d = pct(vals("narinfo", "server"), p) * 1e3, pct(vals("narinfo", "direct"), p) * 1e3
    print(f"| narinfo p{p}, first fetch (ms) | {s:.2f} | {d:.2f} | {s / d:.2f} |")
w = pct(vals("narinfo-warm", "server"), 50) * 1e3
print(f"| narinfo p50, cached by the server (ms) | {w:.2f} | | |")
paired = []
for kind, n in (("nar1", 1), ("nar8", 8)):
    s, d = statistics.median(vals(kind, "server")), statistics.median(vals(kind, "direct"))
    print(f"| NAR {mib} MiB x{n} (MiB/s) | {n * mib / s:.0f} | {n * mib / d:.0f} | {s / d:.2f} (time) |")
    # each round's server time over the direct time measured next to it
    ratios = [a / b for a, b in zip(vals(kind, "server"), vals(kind, "direct"))]
    paired.append(f"x{n} {statistics.median(ratios):.2f} "
                  f"(rounds: {' '.join(f'{r:.2f}' for r in ratios)})")
print(f"| server peak RSS (KiB), max over rounds | {max(vals('rss', 'server')):.0f} | | |")
print("NAR time ratio per round (server/direct, back to back), median: " + "; ".join(paired))
EOF
