#!/usr/bin/env bash
# zstd throughput: the narcache codec API (bench_codec) against the zstd CLI
# at the same level, one thread, in the same run.
#
# usage: bench/run-codec.sh [BUILD_DIR] [RUNS] [SIZE_MIB] [SLICE_MIB] [DEC_MIB]
#   BUILD_DIR  build tree, relative to the repo root           (default build/bench)
#   RUNS       timed rounds per measurement; medians            (default 5)
#   SIZE_MIB   size of input A (a prefix of its NAR)           (default 64)
#   SLICE_MIB  input size for level 19 (first SLICE_MIB of A/B) (default 4)
#   DEC_MIB    least output of a decompression run             (default 256)
# The defaults take about 4 to 4.5 minutes on the 2-core VM of README.md
# (level 9 on A and level 19 are most of it); larger inputs or more rounds
# cost in proportion.
#
# Builds bench_codec in Release mode, then writes to a temporary directory
# (removed on exit) two NARs made by `nix-store --dump`:
#   A  "lib": the first SIZE_MIB MiB of the NAR of $CODEC_BENCH_DIR_A
#      (default /usr/lib/x86_64-linux-gnu: shared libraries, binaries, data);
#   B  "man": the NAR of $CODEC_BENCH_DIR_B (default /usr/share/man: mostly
#      gzip'ed man pages, so much less compressible), cut to SIZE_MIB too
#      (it is ~41 MiB here, so the default takes all of it).
# Levels 1, 3 (Nix's default for zstd) and 9 run on the whole inputs, level
# 19 on their first SLICE_MIB MiB.
#
# Compression, per input and level; every tool writes to /dev/null:
#   narcache   bench_codec compress L FILE   (one thread; pledged size = file
#              size, content checksum, 128 KiB reads; see bench_codec.c)
#   zstd-T1    zstd -q -T1 -L -c FILE        (the CLI's usual form; NOT one
#              thread: a compression worker beside the main thread, plus
#              the CLI's asynchronous read and write threads)
#   zstd-1t    zstd -q --single-thread --no-asyncio -L -c FILE  (compression
#              and I/O on the main thread only, like bench_codec; its frame
#              is byte for byte narcache's)
# Decompression, of the frame written by `zstd -T1 -L` concatenated k times
# so that at least DEC_MIB MiB come out (decoding runs at 0.4-2.8 GB/s
# here, so a run lasts 0.1 s or more and start-up stays a small part):
#   narcache   bench_codec decompress Z
#   zstd       zstd -q -d -c Z               (the CLI's default: reads and
#              writes on two more threads, "asyncio")
#   zstd-1t    zstd -q -d --no-asyncio -c Z  (one thread)
# Before timing a case, one untimed run of each tool writes its frame to a
# file: the sizes are reported, every frame must say "Check: XXH64" in
# `zstd -lv`, the zstd CLI must decode narcache's frame to the input and
# bench_codec the CLI's. Inputs are read once beforehand (page cache).
#
# Each round runs every tool of a case once, rotating which one goes first.
# Times are wall clock per process, start-up included for every tool (the
# same $EPOCHREALTIME clock); CPU is user+sys of the process (bash `times`).
# Start-up alone (decoding a 1-byte frame, median of 21) is printed first:
# bench_codec loads libnarcache and its dependencies (libcrypto, SQLite,
# libsodium, ...), the zstd CLI is one static binary. "others" is the CPU
# that other processes used meanwhile, in cores (from /proc/stat, whole
# machine, minus the tool's own CPU): above ~0.1 the machine was not idle.
# Rates are MB/s (10^6 bytes) of uncompressed data; "ratio" is narcache/CLI
# of the median rates, "paired" the median of the per-round ratios (each
# round's runs are within a second or so of each other, so a slow spell of
# the machine hits both); above 1 means narcache is faster. "cpu_pr" is the
# median of the per-round CPU-time ratios CLI/narcache: both one-thread
# tools do the same work, so it stays near its idle value when the tools
# merely wait for a CPU that another process holds, and tells that case
# apart from narcache doing more work.
#
# Target (from the issue: "codec throughput vs the zstd CLI at the same
# level, single thread: >= 0.9x"): paired ratio >= 0.9 against the
# one-thread CLI (zstd-1t) in every case. Paired, as in bench/run-sign.sh:
# on this shared machine timings jump between two levels for seconds at a
# time, which can move two medians apart while every round is even. The
# ratios against the CLI's default forms (zstd-T1, zstd) are printed too
# but do not count, because those spread the work over more than one CPU
# when one is free (the "cores" columns show it); with
# CODEC_BENCH_GATE_ALL=1 they count as well. Also checked: narcache's frame
# at most 1% larger than each CLI's (and reported: whether it is byte for
# byte the zstd-1t frame).
#
# Exit status: 0 if every target is met; 1 if one is not, or anything fails
# or disagrees; 2 on bad usage.
set -euo pipefail
shopt -s inherit_errexit # a failure inside $(...) ends the script too
export LC_ALL=C # '.' as the decimal point in EPOCHREALTIME, times and awk

usage() {
  echo "usage: $0 [BUILD_DIR] [RUNS] [SIZE_MIB] [SLICE_MIB] [DEC_MIB]" >&2
  exit 2
}

[[ $# -le 5 ]] || usage
build_dir=${1:-build/bench}
runs=${2:-5}
size_mib=${3:-64}
slice_mib=${4:-4}
dec_mib=${5:-256}
[[ $runs =~ ^[1-9][0-9]*$ ]] || usage
[[ $size_mib =~ ^[1-9][0-9]*$ ]] || usage
[[ $slice_mib =~ ^[1-9][0-9]*$ ]] || usage
[[ $dec_mib =~ ^[1-9][0-9]*$ ]] || usage
dir_a=${CODEC_BENCH_DIR_A:-/usr/lib/x86_64-linux-gnu}
dir_b=${CODEC_BENCH_DIR_B:-/usr/share/man}
levels=(1 3 9 19)
slice_level=19
target_ratio=0.9
size_tolerance=1.01 # narcache's frame / CLI frame
gate_all=${CODEC_BENCH_GATE_ALL:-0}

for tool in cmake zstd nix-store awk head cmp sort paste sha256sum getconf; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done
for d in "$dir_a" "$dir_b"; do
  [[ -d $d ]] || { echo "error: input directory $d not found" >&2; exit 1; }
done

# Work from the repository root whatever the caller's directory.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/narcache-codec-bench.XXXXXX")
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
       cmake --build "$build_dir" --target bench_codec --parallel 2; } \
     >"$log" 2>&1; then
  cat "$log" >&2
  echo "error: build failed" >&2
  exit 1
fi
bench=$build_dir/bench/bench_codec
[[ -x $bench ]] || { echo "error: $bench was not built" >&2; exit 1; }
bench=$(cd "$(dirname "$bench")" && pwd)/bench_codec

echo "== machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
     "Linux $(uname -r)"
echo "== zstd CLI: $(zstd --version | sed 's/^\*\*\* //; s/ \*\*\*$//')," \
     "libzstd: $(pkg-config --modversion libzstd 2>/dev/null || echo '?')"
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
     "(working tree $( [[ -z $(git status --porcelain -- libnarcache include bench 2>/dev/null) ]] \
       && echo clean || echo modified))"
echo "== load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" \
     "(other work on the machine slows both sides unevenly; see bench/README.md)"

# ---- inputs ------------------------------------------------------------------
size_bytes=$((size_mib * 1024 * 1024))
slice_bytes=$((slice_mib * 1024 * 1024))
dec_bytes=$((dec_mib * 1024 * 1024))

# make_input OUT DIR: the NAR of DIR, cut to SIZE_MIB. head closes the pipe
# early, so nix-store may die of SIGPIPE: only the result's size is checked.
make_input() {
  local out=$1 dir=$2 n
  (set +o pipefail; nix-store --dump "$dir" 2>/dev/null | head -c "$size_bytes" >"$out")
  n=$(wc -c <"$out")
  if ((n < slice_bytes)); then
    echo "error: the NAR of $dir has only $n bytes (need at least $slice_bytes)" >&2
    exit 1
  fi
}

echo "== writing inputs to $tmpdir"
make_input "$tmpdir/lib.nar" "$dir_a"
make_input "$tmpdir/man.nar" "$dir_b"
for name in lib man; do
  head -c "$slice_bytes" "$tmpdir/$name.nar" >"$tmpdir/$name-slice.nar"
done
for f in "$tmpdir"/*.nar; do
  printf '   %-16s %12d bytes  sha256 %s\n' "$(basename "$f")" "$(wc -c <"$f")" \
    "$(sha256sum <"$f" | cut -c1-16)"
done

# ---- timing ------------------------------------------------------------------
# cpu_seconds FILE: user+sys seconds of finished children in the output of
# `times` saved in FILE (its second line: "0m1.234s 0m0.056s").
cpu_seconds() {
  awk 'NR == 2 { n = split($0, f, /[ms ]+/);
                 printf "%.6f\n", f[1] * 60 + f[2] + f[3] * 60 + f[4] }' "$1"
}

# read_busy: sets $busy to the busy CPU time of the whole machine (user,
# nice, system, irq, softirq, steal) in clock ticks. Builtins only, so it
# forks nothing.
read_busy() {
  local _cpu u n s _idle _iow irq sirq steal _rest
  read -r _cpu u n s _idle _iow irq sirq steal _rest </proc/stat
  busy=$((u + n + s + irq + sirq + steal))
}
hz=$(getconf CLK_TCK)

# time_cmd NAME CMD...: run CMD (stdout to /dev/null); sets $wall and $cpu
# (seconds) and $busy_s (busy CPU seconds of the whole machine meanwhile).
# `times` must run in this shell, not in a subshell, and nothing but
# builtins may run between the two snapshots.
time_cmd() {
  local name=$1 t0 t1 b0
  shift
  read_busy
  b0=$busy
  times >"$tmpdir/times0"
  t0=$EPOCHREALTIME
  if ! "$@" >/dev/null 2>"$tmpdir/err"; then
    cat "$tmpdir/err" >&2
    echo "error: $name failed: $*" >&2
    exit 1
  fi
  t1=$EPOCHREALTIME
  times >"$tmpdir/times1"
  read_busy
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
  cpu=$(awk -v a="$(cpu_seconds "$tmpdir/times0")" -v b="$(cpu_seconds "$tmpdir/times1")" \
          'BEGIN { printf "%.3f", b - a }')
  busy_s=$(awk -v a="$b0" -v b="$busy" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')
}

# others BUSY_S OWN_S WALL_S: cores' worth of CPU that other processes used
# (never below 0; /proc/stat counts in ticks of 1/CLK_TCK s).
others() {
  awk -v b="$1" -v o="$2" -v w="$3" 'BEGIN { x = (b - o) / w; printf "%.2f", (x < 0 ? 0 : x) }'
}

median() {
  printf '%s\n' "$@" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) m = v[(NR + 1) / 2];
                              else m = (v[NR / 2] + v[NR / 2 + 1]) / 2;
                              printf "%.4f", m }'
}

# paired_ratio "A1 A2 ..." "B1 B2 ...": median of the per-round ratios Ai/Bi.
paired_ratio() {
  # shellcheck disable=SC2086
  paste -d' ' <(printf '%s\n' $1) <(printf '%s\n' $2) |
    awk '{ printf "%.4f\n", ($2 > 0 ? $1 / $2 : 0) }' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) m = v[(NR + 1) / 2];
           else m = (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f", m }'
}

# cores CPU_S BYTES RATE: CPU seconds over the wall seconds of BYTES at RATE
# MB/s, i.e. how many CPUs the process kept busy on average.
cores() { awk -v c="$1" -v n="$2" -v r="$3" 'BEGIN { printf "%.2f", c / (n / r / 1e6) }'; }

# The command line of tool $1 for direction $2 at level $3 on file $4.
tool_cmd() {
  case $2/$1 in
    c/narcache) cmd=("$bench" compress "$3" "$4") ;;
    c/zstd-T1) cmd=(zstd -q -T1 "-$3" -c "$4") ;;
    c/zstd-1t) cmd=(zstd -q --single-thread --no-asyncio "-$3" -c "$4") ;;
    d/narcache) cmd=("$bench" decompress "$4") ;;
    d/zstd) cmd=(zstd -q -d -c "$4") ;;
    d/zstd-1t) cmd=(zstd -q -d --no-asyncio -c "$4") ;;
    *) echo "internal error: tool $1 direction $2" >&2; exit 1 ;;
  esac
}

# checked_frame FRAME INPUT WHO: FRAME has a content checksum and both
# decoders turn it back into INPUT.
checked_frame() {
  local frame=$1 input=$2 who=$3
  if ! zstd -lv "$frame" 2>/dev/null | grep 'Check: XXH64' > /dev/null; then
    echo "error: $who's frame has no XXH64 content checksum" >&2; exit 1
  fi
  if ! zstd -q -d -c "$frame" | cmp -s - "$input"; then
    echo "error: zstd -d of $who's frame is not the input" >&2; exit 1
  fi
  if ! "$bench" decompress "$frame" 2>/dev/null | cmp -s - "$input"; then
    echo "error: bench_codec decompress of $who's frame is not the input" >&2; exit 1
  fi
}

summary=() # one line per case and anchor, printed at the end
failed=0
failed_busy=0 # a counted case failed while others used >= 0.25 cores

# measure CASE BYTES DIR LEVEL FILE TOOLS...: RUNS rotating rounds; the first
# tool is narcache, the others are anchors. BYTES: uncompressed bytes.
measure() {
  local label=$1 bytes=$2 direction=$3 level=$4 file=$5
  shift 5
  local tools=("$@") k=$# r j t i
  local sum_busy=0 sum_own=0 sum_wall=0 r_busy r_own r_wall case_others
  declare -A rates=() cpus=()
  printf '%-3s %-22s' run order
  for t in "${tools[@]}"; do printf ' %10s %8s %6s' "${t}_s" MB/s cpu_s; done
  printf ' %6s\n' others
  for ((r = 1; r <= runs; r++)); do
    local walls=() order=()
    r_busy=0 r_own=0 r_wall=0
    for ((j = 0; j < k; j++)); do
      i=$(((r - 1 + j) % k))
      t=${tools[i]}
      order+=("$t")
      tool_cmd "$t" "$direction" "$level" "$file"
      time_cmd "$t" "${cmd[@]}"
      walls[i]=$wall
      rates[$t]+="$(awk -v n="$bytes" -v s="$wall" 'BEGIN { printf "%.2f", n / s / 1e6 }') "
      cpus[$t]+="$cpu "
      cpu_of[i]=$cpu
      read -r r_busy r_own r_wall < <(awk -v a="$r_busy $r_own $r_wall" \
        -v b="$busy_s" -v o="$cpu" -v w="$wall" \
        'BEGIN { split(a, x, " "); printf "%.2f %.3f %.4f\n", x[1] + b, x[2] + o, x[3] + w }')
    done
    printf '%-3s %-22s' "$r" "$(IFS=,; echo "${order[*]/zstd-/}")"
    for ((i = 0; i < k; i++)); do
      printf ' %10s %8s %6s' "${walls[i]}" \
        "$(awk -v n="$bytes" -v s="${walls[i]}" 'BEGIN { printf "%.2f", n / s / 1e6 }')" \
        "${cpu_of[i]}"
    done
    printf ' %6s\n' "$(others "$r_busy" "$r_own" "$r_wall")"
    read -r sum_busy sum_own sum_wall < <(awk -v a="$sum_busy $sum_own $sum_wall" \
      -v b="$r_busy" -v o="$r_own" -v w="$r_wall" \
      'BEGIN { split(a, x, " "); printf "%.2f %.3f %.4f\n", x[1] + b, x[2] + o, x[3] + w }')
  done
  case_others=$(others "$sum_busy" "$sum_own" "$sum_wall")
  echo "   other processes used $case_others cores on average during these runs"
  # Medians and ratios against each anchor.
  local n_med n_cpu n_cores a a_med a_cpu a_cores ratio paired cpu_paired ok
  # shellcheck disable=SC2086
  n_med=$(median ${rates[narcache]})
  # shellcheck disable=SC2086
  n_cpu=$(median ${cpus[narcache]})
  n_cores=$(cores "$n_cpu" "$bytes" "$n_med")
  for a in "${tools[@]:1}"; do
    # shellcheck disable=SC2086
    a_med=$(median ${rates[$a]})
    # shellcheck disable=SC2086
    a_cpu=$(median ${cpus[$a]})
    a_cores=$(cores "$a_cpu" "$bytes" "$a_med")
    ratio=$(awk -v n="$n_med" -v o="$a_med" 'BEGIN { printf "%.3f", n / o }')
    paired=$(paired_ratio "${rates[narcache]}" "${rates[$a]}")
    # The same per round for CPU time (CLI/narcache: above 1 means narcache
    # used less CPU), which waiting for a busy CPU does not inflate.
    cpu_paired=$(paired_ratio "${cpus[$a]}" "${cpus[narcache]}")
    ok=$(awk -v r="$paired" -v t="$target_ratio" 'BEGIN { print (r >= t) ? "met" : "NOT met" }')
    if [[ $a == *-1t || $gate_all == 1 ]]; then
      if [[ $ok != met ]]; then
        failed=1
        awk -v o="$case_others" 'BEGIN { exit !(o >= 0.25) }' && failed_busy=1
      fi
    else
      ok="($ok, not counted)"
    fi
    summary+=("$(printf '%-8s %-10s %-8s %9.2f %9.2f %6s %6s %6s %6s %7s %7s  %s' \
      "$label" "$([[ $direction == c ]] && echo compress || echo decompress)" "$a" \
      "$n_med" "$a_med" "$n_cores" "$a_cores" "$case_others" "$ratio" "$paired" \
      "$cpu_paired" "$ok")")
    printf '   median MB/s narcache %.2f (%s cores), %s %.2f (%s cores): ratio %s (paired %s; CPU time %s/narcache paired %s) %s\n' \
      "$n_med" "$n_cores" "$a" "$a_med" "$a_cores" "$ratio" "$paired" "$a" "$cpu_paired" "$ok"
  done
}

declare -a cpu_of=()
size_lines=()

# Start-up and exit alone: each tool decoding a 1-byte frame.
printf 'x' >"$tmpdir/one"
zstd -q -c "$tmpdir/one" >"$tmpdir/one.zst"
startup=()
for t in narcache zstd-1t zstd; do
  tool_cmd "$t" d 0 "$tmpdir/one.zst"
  walls_ms=()
  for ((j = 0; j < 21; j++)); do
    time_cmd "$t" "${cmd[@]}"
    walls_ms+=("$(awk -v w="$wall" 'BEGIN { printf "%.2f", w * 1000 }')")
  done
  startup+=("$t $(median "${walls_ms[@]}" | awk '{ printf "%.1f", $1 }') ms")
done
echo
startup_line=$(printf '%s, ' "${startup[@]}")
echo "== start-up + exit (decoding a 1-byte frame, median of 21): ${startup_line%, }"

for name in lib man; do
  full=$tmpdir/$name.nar
  for level in "${levels[@]}"; do
    input=$full
    [[ $level == "$slice_level" ]] && input=$tmpdir/$name-slice.nar
    bytes=$(wc -c <"$input")
    label="$name-$level"
    [[ $level == "$slice_level" ]] && label="$name-$level (first $slice_mib MiB)"
    cat "$input" >/dev/null # page cache

    # Untimed: each tool's frame, checked, with its size.
    "$bench" compress "$level" "$input" >"$tmpdir/narcache.zst" 2>/dev/null
    zstd -q -T1 "-$level" -c "$input" >"$tmpdir/zstd-T1.zst"
    zstd -q --single-thread --no-asyncio "-$level" -c "$input" >"$tmpdir/zstd-1t.zst"
    for who in narcache zstd-T1 zstd-1t; do
      checked_frame "$tmpdir/$who.zst" "$input" "$who"
    done
    s_n=$(wc -c <"$tmpdir/narcache.zst")
    s_t=$(wc -c <"$tmpdir/zstd-T1.zst")
    s_s=$(wc -c <"$tmpdir/zstd-1t.zst")
    size_ok=$(awk -v n="$s_n" -v t="$s_t" -v s="$s_s" -v tol="$size_tolerance" \
      'BEGIN { print (n <= t * tol && n <= s * tol) ? "ok" : "LARGER" }')
    [[ $size_ok == ok ]] || failed=1
    same=no
    cmp -s "$tmpdir/narcache.zst" "$tmpdir/zstd-1t.zst" && same=yes
    size_lines+=("$(awk -v c="$name-$level" -v b="$bytes" -v n="$s_n" -v t="$s_t" -v s="$s_s" \
      -v ok="$size_ok" -v same="$same" 'BEGIN {
        printf "%-8s %11d %11d %11d %11d %+8.3f%% %+8.3f%% %6.3f %8s  %s",
        c, b, n, t, s, (n / t - 1) * 100, (n / s - 1) * 100, b / n, same, ok }')")

    echo
    echo "== $label: $bytes bytes, compress at level $level"
    echo "   sizes: narcache $s_n, zstd-T1 $s_t, zstd-1t $s_s ($size_ok;" \
         "same bytes as zstd-1t: $same)"
    measure "$name-$level" "$bytes" c "$level" "$input" narcache zstd-T1 zstd-1t

    # Decompression input: the -T1 frame, repeated to at least DEC_MIB.
    reps=$(((dec_bytes + bytes - 1) / bytes))
    frame=$tmpdir/zstd-T1.zst dframe=$tmpdir/decode.zst
    : >"$dframe"
    for ((j = 0; j < reps; j++)); do cat "$frame" >>"$dframe"; done
    if ! "$bench" decompress "$dframe" 2>/dev/null | cmp -s - <(for ((j = 0; j < reps; j++)); do cat "$input"; done); then
      echo "error: bench_codec decompress of $reps concatenated frames is wrong" >&2; exit 1
    fi
    out_bytes=$((bytes * reps))
    echo "== $label: decompress the zstd -T1 frame x$reps ($(wc -c <"$dframe") -> $out_bytes bytes)"
    measure "$name-$level" "$out_bytes" d "$level" "$dframe" narcache zstd zstd-1t
  done
done

# ---- summary -----------------------------------------------------------------
echo
echo "== load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== compressed sizes (bytes; narcache vs each CLI frame; ratio = input/narcache;"
echo "   1t-equal: narcache's frame is byte for byte zstd-1t's)"
printf '%-8s %11s %11s %11s %11s %9s %9s %6s %8s\n' case input narcache zstd-T1 zstd-1t \
  vs-T1 vs-1t ratio 1t-equal
printf '%s\n' "${size_lines[@]}"
echo
echo "== medians of $runs rounds, MB/s of uncompressed data; ratio = narcache/CLI of"
echo "   the medians; paired = median of per-round ratios (the check: >= $target_ratio"
echo "   against zstd-1t); cores = median CPU seconds (user+sys) / median wall seconds;"
echo "   others = cores used by other processes during the case's runs; cpu_pr ="
echo "   median of per-round CPU seconds CLI/narcache (above 1: narcache used less CPU)"
printf '%-8s %-10s %-8s %9s %9s %6s %6s %6s %6s %7s %7s  %s\n' case direction anchor \
  narcache CLI n_core CLI_co others ratio paired cpu_pr result
printf '%s\n' "${summary[@]}"
if ((failed)); then
  echo "== target NOT met (a counted paired ratio < $target_ratio or a frame > 1% larger)"
  if ((failed_busy)); then
    echo "   (a failed case ran while other processes used >= 0.25 cores: see its"
    echo "   others and cpu_pr columns, and run again on an idle machine)"
  fi
else
  echo "== target met: every counted paired ratio >= $target_ratio, every frame within 1%"
fi
prefix=
[[ $gate_all == 1 ]] && prefix='CODEC_BENCH_GATE_ALL=1 '
echo "== command: ${prefix}bench/run-codec.sh $build_dir $runs $size_mib $slice_mib $dec_mib"
echo "   (input A: $dir_a, input B: $dir_b)"
exit "$failed"
