#!/usr/bin/env bash
# Writing a binary cache: `narcache cache add --compression zstd` against
# Nix 2.8's `nix copy --to 'file://DIR?compression=zstd&...'`, same store
# paths, both signing.
#
# usage: bench/run-cache-add.sh [BUILD_DIR] [ROUNDS]
#   BUILD_DIR  build tree, relative to the repo root   (default build/bench)
#   ROUNDS     timed rounds; medians are reported      (default 7)
#
# Runs as root without a Nix daemon, like tests/store_nixstore.sh. Builds
# the CLI in Release mode, then adds real trees of this machine to the Nix
# store with `nix-store --add` (idempotent: an unchanged tree gives the same
# store path, so reruns reuse the paths; they are left in the store):
#   /usr/share/doc, /usr/lib/python3/dist-packages, /usr/share/perl,
#   /usr/include, /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1 (one large
#   file), /usr/lib/python3.11
# (sources that do not exist are skipped). One secret key (made with
# nix-store --generate-binary-cache-key) signs for both tools.
#
# Variants, each writing into a fresh, empty directory:
#   nix    nix copy --to 'file://D?compression=zstd&secret-key=SK&write-nar-listing=true' PATHS
#          (the anchor; zstd at libarchive's default level, which is 3)
#   nc     narcache cache add --to D --key-file SK --compression zstd PATHS
#          (level 3, --jobs default = number of CPUs)
#   nc-j1  the same with --jobs 1
# One untimed warm-up round of each reads every source into the page cache
# (nothing is dropped from it afterwards: both tools read warm files); its
# outputs are checked: `nix store verify --all --sigs-needed 1` against the
# public key for both directories, the same NarHash/NarSize/References for
# every path, byte-identical .ls listings. Then ROUNDS rounds, rotating which
# variant goes first; `sync` (untimed) before every command so no one pays
# for another's write-back. Wall clock (EPOCHREALTIME) of the whole process,
# CPU time (GNU time), and the CPU used by other processes during the command
# (from /proc/stat) are recorded.
#
# Target (from the issue): median nix wall time / median nc wall time >= 2.
#
# Exit status: 0 if the target is met; 1 if it is not, or a check or
# command fails; 2 on bad usage.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C # '.' as the decimal point in EPOCHREALTIME and awk

usage() {
  echo "usage: $0 [BUILD_DIR] [ROUNDS]" >&2
  exit 2
}

[[ $# -le 2 ]] || usage
build_dir=${1:-build/bench}
rounds=${2:-7}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || usage
target_ratio=2

for tool in cmake nix nix-store awk sync find cmp; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done
[[ -x /usr/bin/time ]] || {
  echo "error: /usr/bin/time not found (GNU time; Debian package 'time')" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "error: run as root (Nix without a daemon)" >&2; exit 1; }

# Work from the repository root whatever the caller's directory.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/narcache-cache-add-bench.XXXXXX")
cleanup() { rm -rf -- "$tmpdir"; }
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

# ---- Nix without a daemon, as tests/store_nixstore.sh drives it --------------
unset NIX_REMOTE
export XDG_CACHE_HOME=$tmpdir/xdg
NIX=(nix --extra-experimental-features nix-command)
NIXOPTS=(--option sandbox false --option build-users-group '' --option substituters '')

# ---- store paths ---------------------------------------------------------------
sources=(/usr/share/doc /usr/lib/python3/dist-packages /usr/share/perl /usr/include
         /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1 /usr/lib/python3.11)
echo "== store paths (nix-store --add; reused when the tree is unchanged)"
paths=()
nar_total=0
for src in "${sources[@]}"; do
  [[ -e $src ]] || { echo "   skipped (absent): $src"; continue; }
  p=$(nix-store "${NIXOPTS[@]}" --add "$src")
  size=$(nix-store -q --size "$p")
  files=$(find "$p" -type f | wc -l)
  printf '   %-70s %11d bytes NAR, %5d files  (%s)\n' "$p" "$size" "$files" "$src"
  paths+=("$p")
  nar_total=$((nar_total + size))
done
[[ ${#paths[@]} -gt 0 ]] || { echo "error: no store paths" >&2; exit 1; }
echo "   total: ${#paths[@]} paths, $nar_total bytes of NAR"
hashes=()
for p in "${paths[@]}"; do hashes+=("$(basename "$p" | cut -c1-32)"); done

nix-store --generate-binary-cache-key narcache-bench-1 "$tmpdir/sk" "$tmpdir/pk"
sk=$tmpdir/sk
cpus=$(getconf _NPROCESSORS_ONLN)

# ---- variants ------------------------------------------------------------------
variants=(nix nc nc-j1)
# set_cmd NAME DEST: the command line of a variant, in the array `cmd`.
set_cmd() {
  case $1 in
    nix) cmd=("${NIX[@]}" copy "${NIXOPTS[@]}"
              --to "file://$2?compression=zstd&secret-key=$sk&write-nar-listing=true" "${paths[@]}") ;;
    nc) cmd=("$narcache" cache add --to "$2" --key-file "$sk" --compression zstd "${paths[@]}") ;;
    nc-j1) cmd=("$narcache" cache add --to "$2" --key-file "$sk" --compression zstd --jobs 1
                "${paths[@]}") ;;
    *) echo "error: unknown variant $1" >&2; exit 1 ;;
  esac
}

# Busy CPU time of the whole machine (user, nice, system, irq, softirq,
# steal), in clock ticks.
busy_ticks() {
  local _cpu u n s _idle _iow irq sirq steal _rest
  read -r _cpu u n s _idle _iow irq sirq steal _rest </proc/stat
  echo $((u + n + s + irq + sirq + steal))
}
hz=$(getconf CLK_TCK)

# timed NAME DEST: sets t_wall (s), t_cpu (user+sys s of the command) and
# t_others (cores' worth of CPU used by other processes meanwhile).
timed() {
  local name=$1 dest=$2 b0 b1 t0 t1 n
  set_cmd "$name" "$dest"
  rm -rf -- "$dest"
  sync
  b0=$(busy_ticks)
  t0=$EPOCHREALTIME
  if ! /usr/bin/time -f '%U %S' -o "$tmpdir/time.out" "${cmd[@]}" >"$tmpdir/$name.log" 2>&1; then
    cat "$tmpdir/$name.log" >&2
    echo "error: $name failed: ${cmd[*]}" >&2
    exit 1
  fi
  t1=$EPOCHREALTIME
  b1=$(busy_ticks)
  n=$(find "$dest" -maxdepth 1 -name '*.narinfo' | wc -l)
  [[ $n == "${#paths[@]}" ]] || { echo "error: $name wrote $n narinfo files" >&2; exit 1; }
  read -r t_wall t_cpu t_others < <(
    awk -v a="$t0" -v b="$t1" -v b0="$b0" -v b1="$b1" -v hz="$hz" \
        -v cpu="$(tail -n 1 "$tmpdir/time.out")" 'BEGIN {
      split(cpu, c, " "); wall = b - a; own = c[1] + c[2]
      others = ((b1 - b0) / hz - own) / wall; if (others < 0) others = 0
      printf "%.3f %.2f %.2f\n", wall, own, others }')
}

median() {
  printf '%s\n' "$@" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) m = v[(NR + 1) / 2];
                              else m = (v[NR / 2] + v[NR / 2 + 1]) / 2;
                              printf "%.3f", m }'
}

# ---- warm-up and checks --------------------------------------------------------
echo "== warm-up round (untimed) and checks"
for v in nix nc; do timed "$v" "$tmpdir/warm-$v"; done
pub=$(cat "$tmpdir/pk")
for v in nc nix; do
  if ! "${NIX[@]}" store verify --store "file://$tmpdir/warm-$v" --trusted-public-keys "$pub" \
         --sigs-needed 1 --all >"$tmpdir/verify.log" 2>&1; then
    cat "$tmpdir/verify.log" >&2
    echo "error: nix store verify failed on the $v output" >&2
    exit 1
  fi
  echo "   nix store verify --sigs-needed 1 --all: $v output ok"
done
field() { sed -n "s/^$1: //p" "$2"; }
for h in "${hashes[@]}"; do
  a=$tmpdir/warm-nix/$h.narinfo b=$tmpdir/warm-nc/$h.narinfo
  for f in StorePath NarHash NarSize References Compression; do
    [[ $(field "$f" "$a") == "$(field "$f" "$b")" ]] || {
      echo "error: $h.narinfo: $f differs between nix and narcache" >&2; exit 1; }
  done
  cmp -s "$tmpdir/warm-nix/$h.ls" "$tmpdir/warm-nc/$h.ls" || {
    echo "error: $h.ls differs between nix and narcache" >&2; exit 1; }
done
echo "   narinfo StorePath/NarHash/NarSize/References/Compression equal, .ls identical"
zst_bytes() { find "$1/nar" -type f -name '*.nar.zst' -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s }'; }
dir_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s }'; }
nix_zst=$(zst_bytes "$tmpdir/warm-nix") nc_zst=$(zst_bytes "$tmpdir/warm-nc")
nix_all=$(dir_bytes "$tmpdir/warm-nix") nc_all=$(dir_bytes "$tmpdir/warm-nc")
rm -rf -- "$tmpdir/warm-nix" "$tmpdir/warm-nc"

# ---- timed rounds --------------------------------------------------------------
echo "== $rounds timed rounds (wall s, CPU s = user+sys, others = cores busy with other processes)"
declare -A walls cpus_used others
ratios=()
nv=${#variants[@]}
for ((r = 0; r < rounds; r++)); do
  line="   round $((r + 1)):"
  declare -A this=()
  for ((k = 0; k < nv; k++)); do
    v=${variants[$(((r + k) % nv))]}
    # A new directory name every time: Nix's narinfo disk cache is keyed by URI.
    timed "$v" "$tmpdir/out-$r-$v"
    w=$t_wall c=$t_cpu o=$t_others
    rm -rf -- "$tmpdir/out-$r-$v"
    this[$v]=$w
    walls[$v]+="$w " cpus_used[$v]+="$c " others[$v]+="$o "
    line+=$(printf ' %s %.2fs (cpu %.2f, others %.2f)' "$v" "$w" "$c" "$o")
  done
  ratios+=("$(awk -v n="${this[nix]}" -v x="${this[nc]}" 'BEGIN { printf "%.3f", n / x }')")
  echo "$line"
  unset this
done

# ---- summary -------------------------------------------------------------------
echo
echo "== summary: medians of $rounds rounds; $cpus CPUs; ${#paths[@]} paths, $nar_total bytes of NAR"
printf '%-7s %9s %9s %9s %9s\n' variant wall_s MB/s cpu_s others
declare -A med
for v in "${variants[@]}"; do
  # shellcheck disable=SC2086 # word splitting intended
  med[$v]=$(median ${walls[$v]})
  # shellcheck disable=SC2086
  printf '%-7s %9s %9.1f %9s %9s\n' "$v" "${med[$v]}" \
    "$(awk -v n="$nar_total" -v s="${med[$v]}" 'BEGIN { print n / s / 1e6 }')" \
    "$(median ${cpus_used[$v]})" "$(median ${others[$v]})"
done
ratio=$(awk -v n="${med[nix]}" -v x="${med[nc]}" 'BEGIN { printf "%.2f", n / x }')
ratio1=$(awk -v n="${med[nix]}" -v x="${med[nc-j1]}" 'BEGIN { printf "%.2f", n / x }')
echo "ratio nix/nc (wall medians):    $ratio   (target >= $target_ratio)"
echo "ratio nix/nc-j1 (wall medians): $ratio1"
echo "per-round nix/nc ratios:        ${ratios[*]} (median $(median "${ratios[@]}"))"
awk -v n="$nar_total" -v a="$nix_zst" -v b="$nc_zst" -v c="$nix_all" -v d="$nc_all" 'BEGIN {
  printf "output: nix %d bytes of .nar.zst (NAR/zst %.3f), %d bytes in all files\n", a, n / a, c
  printf "        nc  %d bytes of .nar.zst (NAR/zst %.3f), %d bytes in all files\n", b, n / b, d }'
echo "== command: bench/run-cache-add.sh $build_dir $rounds"
if awk -v r="$ratio" -v t="$target_ratio" 'BEGIN { exit !(r >= t) }'; then
  echo "== target met: nix/nc = $ratio >= $target_ratio"
  exit 0
fi
echo "== target NOT met: nix/nc = $ratio < $target_ratio"
exit 1
