#!/usr/bin/env bash
# narinfo signing and verification: narcache_narinfo_sign / _verify
# (bench_sign) against raw libsodium crypto_sign_detached /
# crypto_sign_verify_detached on the same fingerprints, in the same process.
#
# usage: bench/run-sign.sh [BUILD_DIR] [ROUNDS] [SECONDS] [REFS]
#   BUILD_DIR  build tree, relative to the repo root          (default build/bench)
#   ROUNDS     timed rounds; medians are reported             (default 7)
#   SECONDS    time of the raw side of one loop, per round    (default 0.5)
#   REFS       references of the synthetic narinfo            (default 50)
#
# Builds bench_sign in Release mode with the benchmarks on and runs it on
# two narinfo files written by Nix 2.8 (tests/data/narinfo/golden/none:
# noref-demo, no references; ref-demo, two references), signed with
# keys/test-cache-1.sec, plus a synthetic narinfo with REFS references that
# bench_sign builds through the API. The trusted-key list for verification
# is other-cache-2.pub, test-cache-1.pub (the match is the second entry).
# See bench/bench_sign.c for what each loop does and how rounds interleave.
#
# The check: for each case, the median over rounds of the per-round ratio
# narcache/raw (both sides of a round are interleaved in 64 short slices)
# must be >= 0.9 for sign and for verify. The ratio of the medians is
# printed too.
#
# Exit status: 0 if every ratio meets the target; 1 if one does not, or a
# build, check or run fails; 2 on bad usage.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C # '.' as the decimal point in awk

usage() {
  echo "usage: $0 [BUILD_DIR] [ROUNDS] [SECONDS] [REFS]" >&2
  exit 2
}

[[ $# -le 4 ]] || usage
build_dir=${1:-build/bench}
rounds=${2:-7}
seconds=${3:-0.5}
refs=${4:-50}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || usage
[[ $seconds =~ ^[0-9]*\.?[0-9]+$ ]] || usage
[[ $refs =~ ^[1-9][0-9]*$ ]] || usage
target_ratio=0.9

for tool in cmake awk; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done

# Work from the repository root whatever the caller's directory.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/narcache-sign-bench.XXXXXX")
cleanup() { rm -rf -- "$tmpdir"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build -------------------------------------------------------------------
echo "== building in $build_dir (Release)"
log=$tmpdir/build.log
if ! { cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
         -DNARCACHE_BUILD_BENCH=ON -DNARCACHE_BUILD_TESTS=OFF \
         -DNARCACHE_BUILD_EXAMPLES=OFF &&
       cmake --build "$build_dir" --target bench_sign --parallel 2; } \
     >"$log" 2>&1; then
  cat "$log" >&2
  echo "error: build failed" >&2
  exit 1
fi
bench=$build_dir/bench/bench_sign
[[ -x $bench ]] || { echo "error: $bench was not built" >&2; exit 1; }

# ---- run ---------------------------------------------------------------------
data=tests/data/narinfo
cmd=("$bench" -r "$rounds" -t "$seconds" -n "$refs"
     -s "$data/keys/test-cache-1.sec"
     -p "$data/keys/other-cache-2.pub" -p "$data/keys/test-cache-1.pub"
     "$data/golden/none/pmwirphq5m2jaxbb6dxgl37sinsgaib7.narinfo"  # noref-demo
     "$data/golden/none/dyfyrpszi87hixnk6as80dh2j3vy31yh.narinfo") # ref-demo
echo "== ${cmd[*]}"
out=$tmpdir/bench.out
if ! "${cmd[@]}" | tee "$out"; then
  echo "error: bench_sign failed" >&2
  exit 1
fi

# ---- summary -----------------------------------------------------------------
echo
echo "== summary: medians of $rounds rounds, operations per second;"
echo "   ratio = narcache/raw of the medians; paired = median of per-round ratios"
echo "   (the check, target >= $target_ratio); +us = median microseconds narcache adds"
rc=0
awk -v target="$target_ratio" '
  function field(name,   i) {
    for (i = 2; i <= NF; i++)
      if (index($i, name "=") == 1) return substr($i, length(name) + 2)
    return ""
  }
  $1 != "result" { next }
  field("op") == "fingerprint" { fp[field("case")] = field("us"); next }
  {
    n++
    c[n] = field("case"); refs[n] = field("refs"); msg[n] = field("msg")
    op[n] = field("op"); raw[n] = field("raw"); nc[n] = field("narcache")
    ratio[n] = field("ratio"); paired[n] = field("paired"); extra[n] = field("overhead_us")
  }
  END {
    if (n == 0) { print "error: no results" > "/dev/stderr"; exit 1 }
    printf "%-14s %4s %6s %-6s %9s %11s %6s %7s %6s %7s %s\n", "case", "refs", "msg_B",
           "op", "raw/s", "narcache/s", "ratio", "paired", "+us", "fp_us", "result"
    bad = 0
    for (i = 1; i <= n; i++) {
      ok = paired[i] + 0 >= target
      if (!ok) bad++
      printf "%-14s %4s %6s %-6s %9s %11s %6.3f %7.3f %6.2f %7.3f %s\n", c[i], refs[i],
             msg[i], op[i], raw[i], nc[i], ratio[i], paired[i], extra[i], fp[c[i]],
             ok ? "met" : "NOT met"
    }
    exit bad ? 3 : 0
  }' "$out" || rc=$?
case $rc in
  0) status=0; echo "== target met: every paired ratio >= $target_ratio" ;;
  3) status=1; echo "== target NOT met (a paired ratio < $target_ratio)" ;;
  *) echo "error: could not read the results" >&2; exit 1 ;;
esac
echo "== command: bench/run-sign.sh $build_dir $rounds $seconds $refs"
echo "   (runs: ${cmd[*]})"
exit "$status"
