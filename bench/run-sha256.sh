#!/usr/bin/env bash
# SHA-256 throughput: narcache_hasher (bench_sha256) against `openssl dgst`.
#
# usage: bench/run-sha256.sh [BUILD_DIR] [SIZE_MIB] [RUNS]
#   BUILD_DIR  build tree, relative to the repo root  (default build/bench)
#   SIZE_MIB   size of the pseudo-random input file   (default 1024)
#   RUNS       timed rounds; medians are reported     (default 5)
#
# Builds the project in Release mode with the benchmarks on, writes SIZE_MIB
# of pseudo-random data (AES-128-CTR keystream) to a temporary file, warms the
# page cache, then times both programs RUNS times in alternating order,
# wall clock per process (start-up included for both). Each round checks that
# both print the same "<hex> *FILE" line.
#
# Exit status: 0 on success; 1 if the digests differ or anything fails;
# 2 on bad usage. The throughput target (ratio >= 0.9) is reported, not
# enforced, because timings on a shared machine are noisy.
set -euo pipefail
export LC_ALL=C # '.' as the decimal point in EPOCHREALTIME and awk

usage() {
  echo "usage: $0 [BUILD_DIR] [SIZE_MIB] [RUNS]" >&2
  exit 2
}

[[ $# -le 3 ]] || usage
build_dir=${1:-build/bench}
size_mib=${2:-1024}
runs=${3:-5}
[[ $size_mib =~ ^[1-9][0-9]*$ ]] || usage
[[ $runs =~ ^[1-9][0-9]*$ ]] || usage
size_bytes=$((size_mib * 1024 * 1024))
target_ratio=0.9

for tool in cmake openssl awk head cmp; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done

# Work from the repository root whatever the caller's directory.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/narcache-bench.XXXXXX")
cleanup() { rm -rf -- "$tmpdir"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build -----------------------------------------------------------------
echo "== building in $build_dir (Release)"
log=$tmpdir/build.log
if ! { cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
         -DNARCACHE_BUILD_BENCH=ON -DNARCACHE_BUILD_TESTS=OFF \
         -DNARCACHE_BUILD_EXAMPLES=OFF &&
       cmake --build "$build_dir" --target bench_sha256 --parallel 2; } \
     >"$log" 2>&1; then
  cat "$log" >&2
  echo "error: build failed" >&2
  exit 1
fi
bench=$build_dir/bench/bench_sha256
[[ -x $bench ]] || { echo "error: $bench was not built" >&2; exit 1; }

# ---- input -----------------------------------------------------------------
data=$tmpdir/data.bin
echo "== writing $size_mib MiB of pseudo-random data to $data"
# CTR mode is a stream cipher: the output is exactly as long as the input,
# so no process in this pipeline is killed by SIGPIPE.
head -c "$size_bytes" /dev/zero |
  openssl enc -aes-128-ctr -pbkdf2 -pass pass:x -nosalt >"$data"
actual=$(wc -c <"$data")
[[ $actual -eq $size_bytes ]] || {
  echo "error: wrote $actual bytes, expected $size_bytes" >&2; exit 1; }
cat "$data" >/dev/null # warm the page cache

# ---- timing ----------------------------------------------------------------
# time_cmd NAME OUTFILE CMD...: run CMD with stdout to OUTFILE, print seconds.
time_cmd() {
  local name=$1 out=$2 t0 t1
  shift 2
  t0=$EPOCHREALTIME
  if ! "$@" >"$out" 2>"$out.err"; then
    cat "$out.err" >&2
    echo "error: $name failed" >&2
    exit 1
  fi
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }'
}

run_openssl() { time_cmd openssl "$tmpdir/openssl.out" openssl dgst -sha256 -r "$data"; }
run_narcache() { time_cmd bench_sha256 "$tmpdir/narcache.out" "$bench" "$data"; }

gbps() { awk -v n="$size_bytes" -v s="$1" 'BEGIN { printf "%.3f", n / s / 1e9 }'; }

median() {
  printf '%s\n' "$@" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) m = v[(NR + 1) / 2];
                              else m = (v[NR / 2] + v[NR / 2 + 1]) / 2;
                              printf "%.3f", m }'
}

check_digests() {
  if ! cmp -s "$tmpdir/openssl.out" "$tmpdir/narcache.out"; then
    echo "error: digests differ" >&2
    echo "  openssl:  $(cat "$tmpdir/openssl.out")" >&2
    echo "  narcache: $(cat "$tmpdir/narcache.out")" >&2
    exit 1
  fi
}

# One untimed round so that both programs and their libraries are loaded
# from the page cache before the first measurement.
run_openssl >/dev/null
run_narcache >/dev/null
check_digests
echo "== digest: $(cat "$tmpdir/openssl.out")"

echo "== $runs runs, $size_mib MiB each (GB = 10^9 bytes)"
printf '%-4s %-18s %10s %10s %10s %10s\n' run order openssl_s openssl_GB/s \
  narcache_s narcache_GB/s
o_rates=() n_rates=()
for ((i = 1; i <= runs; i++)); do
  if ((i % 2)); then
    order=openssl,narcache
    o_s=$(run_openssl)
    n_s=$(run_narcache)
  else
    order=narcache,openssl
    n_s=$(run_narcache)
    o_s=$(run_openssl)
  fi
  check_digests
  o_rate=$(gbps "$o_s") n_rate=$(gbps "$n_s")
  o_rates+=("$o_rate") n_rates+=("$n_rate")
  printf '%-4s %-18s %10s %10s %10s %10s\n' "$i" "$order" "$o_s" "$o_rate" \
    "$n_s" "$n_rate"
done

o_med=$(median "${o_rates[@]}")
n_med=$(median "${n_rates[@]}")
ratio=$(awk -v n="$n_med" -v o="$o_med" 'BEGIN { printf "%.3f", n / o }')
met=$(awk -v r="$ratio" -v t="$target_ratio" 'BEGIN { print (r >= t) ? "met" : "NOT met" }')

echo "== medians"
echo "openssl  median GB/s: $o_med"
echo "narcache median GB/s: $n_med"
echo "ratio narcache/openssl: $ratio (target >= $target_ratio: $met)"
