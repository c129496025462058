#!/usr/bin/env bash
# narinfo lookup latency of the nixstore backend (bench_nixstore) on a
# synthetic Nix database with PATHS registered paths, against the raw
# SQLite queries the backend runs and a raw libsodium signature, in the
# same process.
#
# usage: bench/run-nixstore.sh [BUILD_DIR] [ROUNDS] [SECONDS] [PATHS]
#   BUILD_DIR  build tree, relative to the repo root          (default build/bench)
#   ROUNDS     timed rounds; medians are reported             (default 7)
#   SECONDS    time of one case in one round                  (default 0.3)
#   PATHS      ValidPaths rows of the synthetic database      (default 20000)
#
# Builds bench_nixstore in Release mode, writes the database into a
# temporary directory (removed on exit) with `bench_nixstore gen`: Nix's
# exact schema, copied from /nix/var/nix/db/db.sqlite (opened read-only;
# nothing is written there), WAL mode, PATHS paths with ~5 references each,
# the same contents on every run (fixed seed). Then `bench_nixstore run`
# checks hits and misses and times every case in ROUNDS interleaved rounds;
# see bench/bench_nixstore.c for the cases.
#
# No target is given for this benchmark: the results are only recorded.
# Exit status: 0 on success; 1 if a build, check or run fails; 2 on bad usage.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C # '.' as the decimal point in awk

usage() {
  echo "usage: $0 [BUILD_DIR] [ROUNDS] [SECONDS] [PATHS]" >&2
  exit 2
}

[[ $# -le 4 ]] || usage
build_dir=${1:-build/bench}
rounds=${2:-7}
seconds=${3:-0.3}
n_paths=${4:-20000}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || usage
[[ $seconds =~ ^[0-9]*\.?[0-9]+$ ]] || usage
[[ $n_paths =~ ^[1-9][0-9]*$ ]] || usage
schema_db=/nix/var/nix/db/db.sqlite

for tool in cmake awk; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done
[[ -x /usr/bin/time ]] || {
  echo "error: /usr/bin/time not found (GNU time; Debian package 'time')" >&2; exit 1; }
[[ -r $schema_db ]] || { echo "error: $schema_db not readable (Nix's schema is copied from it)" >&2; exit 1; }

# Work from the repository root whatever the caller's directory.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/narcache-nixstore-bench.XXXXXX")
cleanup() { rm -rf -- "$tmpdir"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build -------------------------------------------------------------------
echo "== building in $build_dir (Release)"
log=$tmpdir/build.log
if ! { cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
         -DNARCACHE_BUILD_BENCH=ON -DNARCACHE_BUILD_TESTS=OFF &&
       cmake --build "$build_dir" --target bench_nixstore --parallel 2; } \
     >"$log" 2>&1; then
  cat "$log" >&2
  echo "error: build failed" >&2
  exit 1
fi
bench=$build_dir/bench/bench_nixstore
[[ -x $bench ]] || { echo "error: $bench was not built" >&2; exit 1; }

# ---- database ----------------------------------------------------------------
db=$tmpdir/db.sqlite
echo "== $bench gen -n $n_paths -s $schema_db DB"
"$bench" gen -n "$n_paths" -s "$schema_db" "$db"
echo "   $(stat -c %s "$db") bytes"

# ---- run ---------------------------------------------------------------------
cmd=("$bench" run -r "$rounds" -t "$seconds" "$db")
echo "== ${cmd[*]}"
out=$tmpdir/bench.out
# Busy CPU time of the whole machine (user, nice, system, irq, softirq,
# steal), in clock ticks: what other processes used meanwhile is reported.
busy_ticks() {
  local _cpu u n s _idle _iow irq sirq steal _rest
  read -r _cpu u n s _idle _iow irq sirq steal _rest </proc/stat
  echo $((u + n + s + irq + sirq + steal))
}
b0=$(busy_ticks) t0=$EPOCHREALTIME
if ! /usr/bin/time -f '%U %S' -o "$tmpdir/time.out" "${cmd[@]}" | tee "$out"; then
  echo "error: bench_nixstore failed" >&2
  exit 1
fi
t1=$EPOCHREALTIME b1=$(busy_ticks)
others=$(awk -v a="$t0" -v b="$t1" -v b0="$b0" -v b1="$b1" -v hz="$(getconf CLK_TCK)" \
             -v cpu="$(tail -n 1 "$tmpdir/time.out")" 'BEGIN {
  split(cpu, c, " "); o = ((b1 - b0) / hz - c[1] - c[2]) / (b - a); if (o < 0) o = 0
  printf "%.2f", o }')

# ---- summary -----------------------------------------------------------------
echo
echo "== summary: medians of $rounds rounds; us = wall microseconds per lookup of all"
echo "   threads together (1/throughput); lat = per lookup as one thread sees it"
awk '
  function field(name,   i) {
    for (i = 2; i <= NF; i++)
      if (index($i, name "=") == 1) return substr($i, length(name) + 2)
    return ""
  }
  $1 != "result" { next }
  {
    k = field("case") "/" field("lookup") "/" field("threads")
    us[k] = field("us"); lat[k] = field("lat_us"); ps[k] = field("per_s")
    order[++n] = k
  }
  END {
    if (n == 0) { print "error: no results" > "/dev/stderr"; exit 1 }
    printf "%-10s %-6s %7s %9s %9s %11s\n", "case", "lookup", "threads", "us", "lat_us", "per_s"
    for (i = 1; i <= n; i++) {
      split(order[i], p, "/")
      printf "%-10s %-6s %7s %9.2f %9.2f %11.0f\n", p[1], p[2], p[3], us[order[i]],
             lat[order[i]], ps[order[i]]
    }
    print ""
    print "where the time of one lookup goes (single thread, medians):"
    printf "  hit:  SQLite (raw-sql) %.2f us; narinfo building and formatting (nc - raw-sql) %.2f us;\n",
           us["raw-sql/hit/1"], us["nc/hit/1"] - us["raw-sql/hit/1"]
    printf "        signing with 1 key (nc-key - nc) %.2f us, of which raw crypto_sign_detached of 200 bytes %.2f us\n",
           us["nc-key/hit/1"] - us["nc/hit/1"], us["raw-sign/-/1"]
    printf "  miss: SQLite (raw-sql) %.2f us; nc %.2f us; nc-key %.2f us\n",
           us["raw-sql/miss/1"], us["nc/miss/1"], us["nc-key/miss/1"]
    printf "two threads, throughput / one thread: raw-sql %.2fx (own connections), nc %.2fx, nc-key %.2fx (one shared store)\n",
           us["raw-sql/hit/1"] / us["raw-sql/hit/2"], us["nc/hit/1"] / us["nc/hit/2"],
           us["nc-key/hit/1"] / us["nc-key/hit/2"]
  }' "$out"
echo "other processes used $others cores on average during the run ($(getconf _NPROCESSORS_ONLN) CPUs)"
echo "== command: bench/run-nixstore.sh $build_dir $rounds $seconds $n_paths"
echo "   (runs: ${cmd[*]})"
