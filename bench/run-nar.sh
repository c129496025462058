#!/usr/bin/env bash
# NAR throughput and memory: `narcache nar` against Nix 2.8's nix-store /
# nix-hash.
#
# usage: bench/run-nar.sh [BUILD_DIR] [RUNS]
#   BUILD_DIR  build tree, relative to the repo root  (default build/bench)
#   RUNS       timed rounds per measurement; medians   (default 5)
#
# Builds the project in Release mode with the CLI, then generates in a
# temporary directory (removed on exit):
#   (a) "large": 100 files of 1-10 MiB (550 MiB) of AES-CTR keystream in
#       4 subdirectories;
#   (b) "small": 20,000 files of 0-4096 bytes in 20 directories (two
#       levels), every 10th one executable, plus 20 symlinks.
# For each tree, with the page cache warm, it times RUNS rounds, alternating
# which tool goes first, wall clock per process (start-up included):
#   dump>null  narcache nar dump T >/dev/null   | nix-store --dump T >/dev/null
#   dump|cat   narcache nar dump T | cat        | nix-store --dump T | cat
#   hash       narcache nar hash T              | nix-hash --type sha256 T
#   restore    narcache nar restore D <NAR      | nix-store --restore D <NAR
# (D is fresh each run; truncating its files and syncing afterwards is not
# timed; the inodes are removed at exit). Rates are
# MB/s (10^6 bytes) of NAR bytes; the ratio is narcache/nix, so above 1
# means narcache is faster. Once per tree it checks that both tools write
# the same NAR, print the same hash, and restore trees that dump to the
# original NAR.
# Finally it builds a 2 GiB tree (2 files of 1 GiB) and records the peak
# RSS (/usr/bin/time -f %M) of dump, hash, `nar ls --json` and restore of
# its NAR, for both tools (nix's `nar ls` reads the whole NAR into memory;
# it is skipped when less than 6 GiB is available).
#
# On an ext4 without a journal, wait about 6 minutes after a run (or after
# deleting many files) before the next one: see "Restore destinations" in
# bench/README.md.
#
# Exit status: 0 on success; 1 if the tools disagree or anything fails;
# 2 on bad usage. Targets are reported, not enforced: timings on a shared
# machine are noisy.
set -euo pipefail
shopt -s inherit_errexit # a failure inside $(...) ends the script too
export LC_ALL=C # '.' as the decimal point in EPOCHREALTIME and awk

usage() {
  echo "usage: $0 [BUILD_DIR] [RUNS]" >&2
  exit 2
}

[[ $# -le 2 ]] || usage
build_dir=${1:-build/bench}
runs=${2:-5}
[[ $runs =~ ^[1-9][0-9]*$ ]] || usage
rss_target_kib=$((32 * 1024))

for tool in cmake openssl awk head perl sha256sum nix-store nix-hash; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done
[[ -x /usr/bin/time ]] || {
  echo "error: /usr/bin/time not found (GNU time; Debian package 'time')" >&2; exit 1; }

# Work from the repository root whatever the caller's directory.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/narcache-nar-bench.XXXXXX")
cleanup() { chmod -R u+w -- "$tmpdir" 2>/dev/null || true; rm -rf -- "$tmpdir"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build -------------------------------------------------------------------
echo "== building in $build_dir (Release)"
log=$tmpdir/build.log
if ! { cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
         -DNARCACHE_BUILD_BENCH=ON -DNARCACHE_BUILD_TESTS=OFF \
         -DNARCACHE_BUILD_EXAMPLES=ON &&
       cmake --build "$build_dir" --target narcache_cli --parallel 2; } \
     >"$log" 2>&1; then
  cat "$log" >&2
  echo "error: build failed" >&2
  exit 1
fi
narcache=$build_dir/examples/narcache/narcache
[[ -x $narcache ]] || { echo "error: $narcache was not built" >&2; exit 1; }
narcache=$(cd "$(dirname "$narcache")" && pwd)/narcache

# ---- inputs ------------------------------------------------------------------
# keystream FILE BYTES PASS: pseudo-random bytes. CTR mode is a stream
# cipher, so the output is exactly as long as the input and no process in
# the pipeline is killed by SIGPIPE.
keystream() {
  head -c "$2" /dev/zero |
    openssl enc -aes-128-ctr -pbkdf2 -pass "pass:$3" -nosalt >"$1"
}

mib=$((1024 * 1024))

make_large_tree() { # 100 files, (i % 10 + 1) MiB each: 550 MiB
  local root=$1 i
  mkdir "$root" "$root"/a{0..3}
  for ((i = 0; i < 100; i++)); do
    keystream "$root/a$((i % 4))/blob$(printf %03d "$i")" $(((i % 10 + 1) * mib)) "large$i"
  done
}

make_small_tree() { # 20,000 files of 0-4096 bytes, 20 symlinks
  local root=$1 ks=$tmpdir/small.keystream
  keystream "$ks" $((8 * mib)) small
  perl -e '
    use strict; use warnings;
    my ($root, $ks) = @ARGV;
    open(my $k, "<:raw", $ks) or die "$ks: $!";
    my $data = do { local $/; <$k> };
    close $k;
    srand(20261126);
    my ($off, $n) = (0, 0);
    mkdir $root or die "$root: $!";
    for my $t (0 .. 3) {
      mkdir "$root/t$t" or die $!;
      for my $s (0 .. 4) {
        my $dir = "$root/t$t/s$s";
        mkdir $dir or die "$dir: $!";
        for my $f (0 .. 999) {
          my $size = int(rand(4097));
          $off = 0 if $off + $size > length $data;
          my $path = sprintf "%s/f%04d", $dir, $f;
          open(my $out, ">:raw", $path) or die "$path: $!";
          print $out substr($data, $off, $size);
          close $out or die "$path: $!";
          chmod(($n % 10 == 0) ? 0755 : 0644, $path) or die "$path: $!";
          $off += $size;
          $n++;
        }
        symlink("f0000", "$dir/link") or die $!;
      }
    }' "$root" "$ks"
  rm -f -- "$ks"
}

# ---- timing ------------------------------------------------------------------
# time_cmd NAME IN OUT CMD...: run CMD with stdin IN and stdout OUT; print
# the seconds it took. Any failure ends the script.
time_cmd() {
  local name=$1 in=$2 out=$3 t0 t1
  shift 3
  t0=$EPOCHREALTIME
  if ! "$@" <"$in" >"$out" 2>"$tmpdir/err"; then
    cat "$tmpdir/err" >&2
    echo "error: $name failed" >&2
    exit 1
  fi
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }'
}

to_cat() { "$@" | cat >/dev/null; }

median() {
  printf '%s\n' "$@" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) m = v[(NR + 1) / 2];
                              else m = (v[NR / 2] + v[NR / 2 + 1]) / 2;
                              printf "%.4f", m }'
}

mbps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", n / s / 1e6 }'; }

# Every restore goes to a fresh directory under $restored. After the run
# (not timed) its files are truncated to 0 bytes, which gives their page
# cache back, and the file system is synced; the inodes stay until exit.
# Deleting them instead would slow down every later restore of both tools
# on an ext4 without a journal, where the inode allocator skips (and
# rescans on each creation) inodes deleted in the last 60-360 s; see
# "Restore destinations" in bench/README.md.
restored=$tmpdir/restored
restore_n=0
next_dest() { restore_n=$((restore_n + 1)); dest=$restored/$restore_n; }
after_restore() {
  find "$1" -type f -exec truncate -s 0 -- {} +
  sync -f "$tmpdir"
}

# One measurement of tool $2 (narcache|nix) for operation $1 on tree $3
# ($4: its NAR, $5: where to restore it). Prints seconds.
measure() {
  local op=$1 who=$2 tree=$3 nar=$4 dest=$5 s
  case $op/$who in
    dump-null/narcache) s=$(time_cmd "$op" /dev/null /dev/null "$narcache" nar dump "$tree") ;;
    dump-null/nix) s=$(time_cmd "$op" /dev/null /dev/null nix-store --dump "$tree") ;;
    dump-pipe/narcache) s=$(time_cmd "$op" /dev/null /dev/null to_cat "$narcache" nar dump "$tree") ;;
    dump-pipe/nix) s=$(time_cmd "$op" /dev/null /dev/null to_cat nix-store --dump "$tree") ;;
    hash/narcache) s=$(time_cmd "$op" /dev/null "$tmpdir/hash.narcache" "$narcache" nar hash "$tree") ;;
    hash/nix) s=$(time_cmd "$op" /dev/null "$tmpdir/hash.nix" nix-hash --type sha256 "$tree") ;;
    restore/narcache)
      s=$(time_cmd "$op" "$nar" /dev/null "$narcache" nar restore "$dest")
      after_restore "$dest" ;;
    restore/nix)
      s=$(time_cmd "$op" "$nar" /dev/null nix-store --restore "$dest")
      after_restore "$dest" ;;
  esac
  echo "$s"
}

ops=(dump-null dump-pipe hash restore)
declare -A op_label=([dump-null]='dump >/dev/null' [dump-pipe]='dump | cat'
                     [hash]='NAR hash' [restore]='restore')
declare -A results # "$op/$tree" -> "narcache_s nix_s narcache_MBps nix_MBps ratio"

# ---- checks (once per tree) ---------------------------------------------------
check_tree() {
  local tree=$1 nar=$2 a b
  a=$("$narcache" nar dump "$tree" | sha256sum | cut -d' ' -f1)
  b=$(nix-store --dump "$tree" | sha256sum | cut -d' ' -f1)
  [[ $a == "$b" ]] || { echo "error: NARs differ: narcache $a, nix-store $b" >&2; exit 1; }
  echo "   NAR sha256 (both tools): $a"
  a=$("$narcache" nar hash "$tree")
  b=sha256:$(nix-hash --type sha256 --to-base32 "$(nix-hash --type sha256 "$tree")")
  [[ $a == "$b" ]] || { echo "error: NAR hashes differ: narcache $a, nix-hash $b" >&2; exit 1; }
  echo "   NAR hash (both tools):   $a"
  local want got
  want=$(sha256sum <"$nar" | cut -d' ' -f1)
  next_dest
  "$narcache" nar restore "$dest" <"$nar"
  got=$(nix-store --dump "$dest" | sha256sum | cut -d' ' -f1)
  after_restore "$dest"
  [[ $got == "$want" ]] || { echo "error: narcache nar restore: tree dumps to $got, NAR is $want" >&2; exit 1; }
  next_dest
  nix-store --restore "$dest" <"$nar"
  got=$("$narcache" nar dump "$dest" | sha256sum | cut -d' ' -f1)
  after_restore "$dest"
  [[ $got == "$want" ]] || { echo "error: nix-store --restore: tree dumps to $got, NAR is $want" >&2; exit 1; }
  echo "   restored trees of both tools dump to the original NAR"
}

bench_tree() {
  local name=$1 tree=$2 nar=$tmpdir/$1.nar size op i n_s x_s order dest
  nix-store --dump "$tree" >"$nar"
  size=$(wc -c <"$nar")
  echo "== tree $name: $(find "$tree" -type f | wc -l) files, NAR $size bytes"
  # Warm the page cache (file contents, dentries, inodes) with both tools.
  "$narcache" nar dump "$tree" >/dev/null
  nix-store --dump "$tree" >/dev/null
  check_tree "$tree" "$nar"
  printf '   %-16s %-4s %-13s %10s %10s\n' op run order narcache_s nix_s
  for op in "${ops[@]}"; do
    # One untimed round of each so both start from the same state.
    next_dest
    measure "$op" narcache "$tree" "$nar" "$dest" >/dev/null
    next_dest
    measure "$op" nix "$tree" "$nar" "$dest" >/dev/null
    local n_all=() x_all=() n_rates=() x_rates=()
    for ((i = 1; i <= runs; i++)); do
      if ((i % 2)); then
        order=nix,narcache
        next_dest
        x_s=$(measure "$op" nix "$tree" "$nar" "$dest")
        next_dest
        n_s=$(measure "$op" narcache "$tree" "$nar" "$dest")
      else
        order=narcache,nix
        next_dest
        n_s=$(measure "$op" narcache "$tree" "$nar" "$dest")
        next_dest
        x_s=$(measure "$op" nix "$tree" "$nar" "$dest")
      fi
      if [[ $op == hash ]]; then # every round: the same hash
        local h_n h_x
        h_n=$(cat "$tmpdir/hash.narcache")
        h_x=sha256:$(nix-hash --type sha256 --to-base32 "$(cat "$tmpdir/hash.nix")")
        [[ $h_n == "$h_x" ]] || { echo "error: hashes differ: $h_n vs $h_x" >&2; exit 1; }
      fi
      n_all+=("$n_s") x_all+=("$x_s")
      n_rates+=("$(mbps "$size" "$n_s")") x_rates+=("$(mbps "$size" "$x_s")")
      printf '   %-16s %-4s %-13s %10.4f %10.4f\n' "${op_label[$op]}" "$i" "$order" "$n_s" "$x_s"
    done
    local n_med x_med n_rate x_rate ratio
    n_med=$(median "${n_all[@]}") x_med=$(median "${x_all[@]}")
    n_rate=$(median "${n_rates[@]}") x_rate=$(median "${x_rates[@]}")
    ratio=$(awk -v n="$n_rate" -v x="$x_rate" 'BEGIN { printf "%.2f", n / x }')
    results[$op/$name]="$n_med $x_med $n_rate $x_rate $ratio"
  done
}

# target OP TREE: the minimum ratio the issue asks for.
target() {
  case $1/$2 in
    dump-*/small | hash/small) echo 2.0 ;;
    *) echo 1.0 ;;
  esac
}

echo "== generating trees in $tmpdir"
mkdir "$restored"
make_large_tree "$tmpdir/large"
make_small_tree "$tmpdir/small"
sync -f "$tmpdir"

bench_tree large "$tmpdir/large"
bench_tree small "$tmpdir/small"
rm -f -- "$tmpdir"/{large,small}.nar

# ---- peak RSS on a 2 GiB NAR --------------------------------------------------
echo "== peak RSS: 2 GiB tree (2 files of 1 GiB)"
rm -rf -- "$tmpdir/large"
huge=$tmpdir/huge
mkdir "$huge"
keystream "$huge/one" $((1024 * mib)) huge1
keystream "$huge/two" $((1024 * mib)) huge2
huge_nar=$tmpdir/huge.nar
"$narcache" nar dump "$huge" >"$huge_nar"
sync -f "$tmpdir"
huge_size=$(wc -c <"$huge_nar")

# rss NAME IN CMD...: peak RSS in KiB of CMD (stdout discarded).
rss() {
  local name=$1 in=$2
  shift 2
  if ! /usr/bin/time -f %M -o "$tmpdir/rss" "$@" <"$in" >/dev/null 2>"$tmpdir/err"; then
    cat "$tmpdir/err" >&2
    echo "error: $name failed" >&2
    exit 1
  fi
  tail -n 1 "$tmpdir/rss"
}

declare -A rss_n rss_x
rss_n[dump]=$(rss dump /dev/null "$narcache" nar dump "$huge")
rss_x[dump]=$(rss dump /dev/null nix-store --dump "$huge")
rss_n[hash]=$(rss hash /dev/null "$narcache" nar hash "$huge")
rss_x[hash]=$(rss hash /dev/null nix-hash --type sha256 "$huge")
rss_n[ls]=$(rss ls "$huge_nar" "$narcache" nar ls --json)
# nix nar ls (experimental in 2.8) reads the whole NAR into memory.
avail_kib=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
if ((avail_kib >= 6 * 1024 * 1024)); then
  rss_x[ls]=$(rss ls /dev/null nix --extra-experimental-features nix-command \
                nar ls --json -R "$huge_nar" /)
else
  rss_x[ls]=skipped
fi
next_dest
rss_n[restore]=$(rss restore "$huge_nar" "$narcache" nar restore "$dest")
got=$(stat -c %s "$dest/one" "$dest/two" | awk '{ s += $1 } END { printf "%.0f", s }')
[[ $got -eq $((2048 * mib)) ]] || { echo "error: restored $got bytes of 2 GiB" >&2; exit 1; }
after_restore "$dest"
next_dest
rss_x[restore]=$(rss restore "$huge_nar" nix-store --restore "$dest")
after_restore "$dest"

# ---- summary -------------------------------------------------------------------
echo
echo "== summary: medians of $runs runs; MB/s = 10^6 NAR bytes per second;"
echo "   ratio = narcache/nix (above 1: narcache faster)"
printf '%-16s %-6s %10s %10s %13s %10s %6s %7s %s\n' operation tree narcache_s nix_s \
  narcache_MB/s nix_MB/s ratio target result
for name in large small; do
  for op in "${ops[@]}"; do
    read -r n_med x_med n_rate x_rate ratio <<<"${results[$op/$name]}"
    t=$(target "$op" "$name")
    met=$(awk -v r="$ratio" -v t="$t" 'BEGIN { print (r >= t) ? "met" : "NOT met" }')
    printf '%-16s %-6s %10.3f %10.3f %13.1f %10.1f %6s %7s %s\n' "${op_label[$op]}" "$name" \
      "$n_med" "$x_med" "$n_rate" "$x_rate" "$ratio" ">=$t" "$met"
  done
done
echo
echo "== peak RSS, 2 GiB NAR ($huge_size bytes), KiB (target < $rss_target_kib for narcache)"
printf '%-12s %12s %12s %s\n' operation narcache nix result
declare -A nix_name=([dump]='nix-store --dump' [hash]='nix-hash'
                     [ls]='nix nar ls --json -R' [restore]='nix-store --restore')
for op in dump hash ls restore; do
  met=$( ((rss_n[$op] < rss_target_kib)) && echo met || echo "NOT met")
  printf '%-12s %12s %12s %-8s (nix: %s)\n' "$op" "${rss_n[$op]}" "${rss_x[$op]}" "$met" \
    "${nix_name[$op]}"
done
