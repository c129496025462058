#!/usr/bin/env bash
# Serving a binary cache: narcache-server against nginx (worker_processes 1,
# sendfile on) serving the same files, load from wrk, in the same run.
#
# usage: bench/run-serve.sh [BUILD_DIR] [ROUNDS] [SECONDS] [IDLE_CONNS] [STREAM_SECONDS]
#   BUILD_DIR       build tree, relative to the repo root     (default build/bench-serve)
#   ROUNDS          timed rounds; medians are reported        (default 5)
#   SECONDS         length of one wrk run                     (default 5)
#   IDLE_CONNS      idle keep-alive connections for the RSS test (default 10000)
#   STREAM_SECONDS  length of the 1 MB/s download of the 4 GiB NAR (default 20)
# About 7 minutes with the defaults: ROUNDS x 12 wrk runs of SECONDS, plus
# about 1.5 minutes of setup and memory tests.
#
# Runs as root without a Nix daemon, like bench/run-cache-add.sh. Builds
# narcache-server in Release mode, then into a temporary directory (removed
# on exit):
#   cache/  `nix copy --to file://cache?compression=none&secret-key=SK` of
#           the store paths of large real trees (`nix-store --add` of
#           /usr/share/doc, /usr/include, libLLVM-15.so.1, /usr/lib/python3.11;
#           those with a NAR of 50-200 MB are kept) and of 256 tiny
#           generated files (so there are ~260 narinfos to cycle over);
#           nix-store --add is idempotent, the paths are left in the store.
#           Plus one sparse 4 GiB file nar/<nix32>.nar for the memory test.
#   dump/   the same large paths as `nix-store --dump` files, at the URLs
#           the --nix-store server gives them (nar/<hash>-<narhash>.nar).
# Servers, each on a free port of 127.0.0.1, all running through the rounds:
#   nginx (one instance, worker_processes 1, sendfile, tcp_nopush,
#          tcp_nodelay, keepalive_requests 1000000, access_log off), one
#          server block with root cache/, one with root dump/;
#   narcache-server --cache cache/                 (defaults: 4 pool threads)
#   narcache-server --nix-store --compression none (NARs dumped on the fly)
# Before timing, every NAR and narinfo is fetched from both servers and
# compared byte for byte with its file.
#
# Measurements (wrk -t1, one Lua script, bench/serve_urls.lua, cycling over
# a URL list; --timeout 60s; the client is the same for both servers):
#   narinfo-c1   narinfo URLs, 1 keep-alive connection:  us per request
#   narinfo-c64  narinfo URLs, 64 connections:           requests/s
#   nar-c1       large NARs of cache/, 1 connection:     MiB/s
#   nar-c16      the same, 16 connections:                MiB/s
#   store-c1     --nix-store NARs made on the fly against nginx serving
#                the pre-dumped files of dump/, 1 connection: MiB/s
#   store-c16    the same, 16 connections:                MiB/s
# One untimed warm-up run of each, then ROUNDS rounds; within a round each
# measurement runs on both servers back to back, the first alternating from
# round to round. Per run the script also records the CPU time of the
# server (all its processes/threads), of wrk, and the CPU used by other
# processes meanwhile (from /proc/stat), in cores. Nothing is pinned.
#
# Memory (VmHWM/VmRSS of /proc/PID/status), each on a fresh server:
#   idle   IDLE_CONNS connections (bench/serve_idle_conns.py), one narinfo
#          request each, then idle; narcache-server (--max-connections
#          raised) and, for reference, an nginx worker.
#   stream the sparse 4 GiB NAR through narcache-server to curl
#          --limit-rate 1M for STREAM_SECONDS (RSS sampled every second),
#          then once at full speed to /dev/null.
#
# Targets (from the issue), ratios narcache/nginx of the medians:
#   narinfo-c1 us/request <= 1.0; narinfo-c64 requests/s >= 1.0;
#   nar-c1, nar-c16 >= 0.9; store-c1, store-c16 >= 0.8;
#   memory: no fixed number, but RSS must not grow with the NAR: the peak
#   during the streams at most 32 MiB above the idle peak, and no growth
#   (> 4 MiB) between the 5th second of the slow stream and its end.
#
# Exit status: 0 if every target is met; 1 if one is not, or a tool is
# missing, or a check, a request (non-2xx, socket error) or a server fails;
# 2 on bad usage.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C # '.' as the decimal point in EPOCHREALTIME and awk

usage() {
  echo "usage: $0 [BUILD_DIR] [ROUNDS] [SECONDS] [IDLE_CONNS] [STREAM_SECONDS]" >&2
  exit 2
}

[[ $# -le 5 ]] || usage
build_dir=${1:-build/bench-serve}
rounds=${2:-5}
seconds=${3:-5}
idle_conns=${4:-10000}
stream_seconds=${5:-20}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || usage
[[ $seconds =~ ^[1-9][0-9]*$ ]] || usage
[[ $idle_conns =~ ^[1-9][0-9]*$ ]] || usage
[[ $stream_seconds =~ ^[1-9][0-9]*$ ]] || usage

die() { echo "error: $*" >&2; exit 1; }

# ---- tools -------------------------------------------------------------------
need() { # need TOOL WHY
  command -v "$1" >/dev/null || die "$1 not found ($2; scripts/install-deps installs it)"
}
need cmake "build"
need nix "Debian package nix-bin"
need nix-store "Debian package nix-bin"
need nix-hash "Debian package nix-bin"
need nginx "the anchor; Debian package nginx-light"
need wrk "the load generator; Debian package wrk"
need curl "Debian package curl"
need python3 "the idle-connection client; Debian package python3"
for tool in awk sha256sum cmp truncate pgrep; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (GNU time; Debian package 'time')"
[[ $(id -u) == 0 ]] || die "run as root (Nix without a daemon, nginx as root)"
[[ -r /nix/var/nix/db/db.sqlite ]] || die "/nix/var/nix/db/db.sqlite not readable"

# Descriptors: the idle test needs IDLE_CONNS in the client and in each
# server. Take the hard limit (it cannot be raised without CAP_SYS_RESOURCE).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_limit=$(ulimit -n)
[[ $fd_limit == unlimited ]] || ((fd_limit >= idle_conns + 200)) ||
  die "open-file limit $fd_limit (hard) is below IDLE_CONNS + 200 = $((idle_conns + 200)); run with a higher 'ulimit -Hn' or a smaller IDLE_CONNS"

# Work from the repository root whatever the caller's directory.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
lua=$repo/bench/serve_urls.lua
idle_client=$repo/bench/serve_idle_conns.py
[[ -r $lua && -r $idle_client ]] || die "bench/serve_urls.lua or bench/serve_idle_conns.py missing"

tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/narcache-serve-bench.XXXXXX")
pids=() # every server and client this script started
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf -- "$tmpdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build -------------------------------------------------------------------
echo "== building in $build_dir (Release)"
log=$tmpdir/build.log
if ! { cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
         -DNARCACHE_BUILD_BENCH=ON -DNARCACHE_BUILD_TESTS=OFF \
         -DNARCACHE_BUILD_EXAMPLES=ON &&
       cmake --build "$build_dir" --target narcache_server --parallel 2; } \
     >"$log" 2>&1; then
  cat "$log" >&2
  die "build failed"
fi
server_bin=$build_dir/examples/narcache-server/narcache-server
[[ -x $server_bin ]] || die "$server_bin was not built"
server_bin=$(cd "$(dirname "$server_bin")" && pwd)/narcache-server
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain -- libnarcache include examples 2>/dev/null | wc -l)

# ---- Nix without a daemon, as bench/run-cache-add.sh drives it -----------------
unset NIX_REMOTE
export XDG_CACHE_HOME=$tmpdir/xdg
NIX=(nix --extra-experimental-features nix-command)
NIXOPTS=(--option sandbox false --option build-users-group '' --option substituters '')

cache=$tmpdir/cache dump=$tmpdir/dump
mkdir -p "$dump/nar"
echo "== store paths (nix-store --add; reused when the tree is unchanged)"
sources=(/usr/share/doc /usr/include /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1
         /usr/lib/python3.11 /usr/lib/python3/dist-packages /usr/share/perl)
large=()
for src in "${sources[@]}"; do
  [[ -e $src ]] || { echo "   skipped (absent): $src"; continue; }
  p=$(nix-store "${NIXOPTS[@]}" --add "$src")
  size=$(nix-store -q --size "$p")
  if ((size < 50000000 || size > 200000000)); then
    printf '   %-64s %10d bytes NAR: not 50-200 MB, not used\n' "$p" "$size"
    continue
  fi
  printf '   %-64s %10d bytes NAR  (%s)\n' "$p" "$size" "$src"
  large+=("$p")
done
((${#large[@]} >= 2)) || die "fewer than 2 store paths with a NAR of 50-200 MB"
mkdir -p "$tmpdir/small"
for i in $(seq -w 1 256); do
  echo "narcache bench-serve small path $i" >"$tmpdir/small/narcache-bench-serve-$i"
done
mapfile -t small < <(nix-store "${NIXOPTS[@]}" --add "$tmpdir"/small/*)
echo "   + ${#small[@]} tiny store paths (narcache-bench-serve-NNN) for the narinfo runs"
nix-store --generate-binary-cache-key narcache-bench-serve-1 "$tmpdir/sk" "$tmpdir/pk"
if ! "${NIX[@]}" copy "${NIXOPTS[@]}" --to "file://$cache?compression=none&secret-key=$tmpdir/sk" \
       "${large[@]}" "${small[@]}" >"$tmpdir/copy.log" 2>&1; then
  cat "$tmpdir/copy.log" >&2
  die "nix copy failed"
fi
find "$cache" -maxdepth 1 -name '*.narinfo' -printf '/%f\n' | sort >"$tmpdir/narinfo.urls"
: >"$tmpdir/nar.urls"
for p in "${large[@]}"; do
  h=$(basename "$p" | cut -c1-32)
  sed -n 's|^URL: |/|p' "$cache/$h.narinfo" >>"$tmpdir/nar.urls"
done
n_narinfo=$(wc -l <"$tmpdir/narinfo.urls")
nar_bytes=$(while read -r u; do stat -c %s "$cache$u"; done <"$tmpdir/nar.urls" |
            awk '{ s += $1 } END { printf "%.0f", s }')
echo "   cache: $n_narinfo narinfo files, ${#large[@]} large NARs of $nar_bytes bytes"

# The 4 GiB NAR of the memory test: a sparse file (its bytes are not a NAR;
# the dir backend serves files under nar/ as they are).
big_hex=$(printf 'narcache-bench-serve-4GiB' | sha256sum | cut -c1-64)
big_name=$(nix-hash --type sha256 --to-base32 "$big_hex").nar
big_size=$((4 << 30))
truncate -s "$big_size" "$cache/nar/$big_name"

# ---- servers -------------------------------------------------------------------
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_http URL: until it answers 200 (10 s at most).
wait_http() {
  local i
  for ((i = 0; i < 100; i++)); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  return 1
}

# write_nginx_conf FILE WORKER_CONNECTIONS PORT ROOT [PORT ROOT]
write_nginx_conf() {
  local f=$1 wc=$2
  shift 2
  mkdir -p "$tmpdir/nginx-tmp"
  {
    echo "worker_processes 1;"
    echo "daemon off;"
    echo "user root;"
    echo "pid ${f%.conf}.pid;"
    echo "error_log ${f%.conf}.error.log warn;"
    echo "worker_rlimit_nofile $fd_limit;"
    echo "events { worker_connections $wc; }"
    echo "http {"
    echo "  access_log off;"
    echo "  sendfile on;"
    echo "  tcp_nopush on;"
    echo "  tcp_nodelay on;"
    echo "  keepalive_timeout 65s;"
    echo "  keepalive_requests 1000000;"
    echo "  default_type application/octet-stream;"
    for t in client_body proxy fastcgi uwsgi scgi; do
      echo "  ${t}_temp_path $tmpdir/nginx-tmp;"
    done
    while (($# >= 2)); do
      echo "  server { listen 127.0.0.1:$1; root $2; }"
      shift 2
    done
    echo "}"
  } >"$f"
}

# start_nginx NAME CONF: sets nginx_pid (master) and nginx_worker.
start_nginx() {
  nginx -p "$tmpdir" -c "$2" >"$tmpdir/$1.out" 2>&1 &
  nginx_pid=$!
  pids+=("$nginx_pid")
  local i
  nginx_worker=
  for ((i = 0; i < 100; i++)); do
    nginx_worker=$(pgrep -P "$nginx_pid" | head -n 1 || true)
    [[ -n $nginx_worker ]] && break
    sleep 0.1
  done
  [[ -n $nginx_worker ]] || { cat "$tmpdir/$1.out" >&2; die "nginx did not start"; }
}

# start_narcache NAME ARGS...: sets nc_pid; logs to $tmpdir/NAME.log.
start_narcache() {
  local name=$1
  shift
  "$server_bin" "$@" >"$tmpdir/$name.log" 2>&1 &
  nc_pid=$!
  pids+=("$nc_pid")
}

# stop PID: TERM and wait.
stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

echo "== servers"
ng_port=$(free_port) ng_dump_port=$(free_port)
nc_port=$(free_port) ns_port=$(free_port)
write_nginx_conf "$tmpdir/nginx.conf" 1024 "$ng_port" "$cache" "$ng_dump_port" "$dump"
start_nginx nginx "$tmpdir/nginx.conf"
ng_master=$nginx_pid ng_worker=$nginx_worker
start_narcache narcache-dir --cache "$cache" --listen "127.0.0.1:$nc_port"
nc_dir_pid=$nc_pid
start_narcache narcache-store --nix-store --compression none --listen "127.0.0.1:$ns_port"
nc_store_pid=$nc_pid
for u in "http://127.0.0.1:$ng_port/nix-cache-info" "http://127.0.0.1:$nc_port/nix-cache-info" \
         "http://127.0.0.1:$ns_port/nix-cache-info"; do
  wait_http "$u" || { cat "$tmpdir"/*.log "$tmpdir"/*.out >&2 || true; die "no answer from $u"; }
done
echo "   nginx $(nginx -v 2>&1 | sed 's|.*/||') on :$ng_port (cache) and :$ng_dump_port (dump), pids $ng_master/$ng_worker"
echo "   narcache-server --cache on :$nc_port (pid $nc_dir_pid), --nix-store on :$ns_port (pid $nc_store_pid)"

# The --nix-store server's NAR URLs, and the same NARs dumped for nginx.
: >"$tmpdir/store.urls"
for p in "${large[@]}"; do
  h=$(basename "$p" | cut -c1-32)
  ni=$(curl -sf "http://127.0.0.1:$ns_port/$h.narinfo") ||
    die "--nix-store server: no narinfo for $p"
  url=$(sed -n 's/^URL: //p' <<<"$ni")
  [[ $url == nar/*.nar && $(sed -n 's/^Compression: //p' <<<"$ni") == none ]] ||
    die "--nix-store narinfo of $p: unexpected URL/Compression: $url"
  [[ $(sed -n 's/^NarSize: //p' <<<"$ni") == "$(nix-store -q --size "$p")" ]] ||
    die "--nix-store narinfo of $p: NarSize differs from nix-store -q --size"
  nix-store --dump "$p" >"$dump/$url"
  echo "/$url" >>"$tmpdir/store.urls"
done

# ---- checks --------------------------------------------------------------------
echo "== checks: every URL from both servers, byte for byte"
# check_urls PORT ROOT LIST: GET each URL of LIST and compare with ROOT/URL.
check_urls() {
  local port=$1 root=$2 list=$3 u
  while read -r u; do
    curl -sf "http://127.0.0.1:$port$u" | cmp -s - "$root$u" ||
      die "GET :$port$u: not a 200 with the bytes of $root$u ($(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$u"))"
  done <"$list"
}
check_urls "$ng_port" "$cache" "$tmpdir/narinfo.urls"
check_urls "$nc_port" "$cache" "$tmpdir/narinfo.urls"
check_urls "$ng_port" "$cache" "$tmpdir/nar.urls"
check_urls "$nc_port" "$cache" "$tmpdir/nar.urls"
check_urls "$ng_dump_port" "$dump" "$tmpdir/store.urls"
check_urls "$ns_port" "$dump" "$tmpdir/store.urls"
echo "   $n_narinfo narinfo and ${#large[@]} NARs (cache), ${#large[@]} NARs (--nix-store vs nix-store --dump): identical"

# ---- timed runs ------------------------------------------------------------------
hz=$(getconf CLK_TCK)
cpus=$(getconf _NPROCESSORS_ONLN)
# User, nice and system ticks of the whole machine. Not irq/softirq: the
# loopback traffic's softirq work is not charged to any process, so it
# would show up as "other load".
busy_ticks() {
  local _cpu u n s _rest
  read -r _cpu u n s _rest </proc/stat
  echo $((u + n + s))
}
# proc_ticks PID...: utime + stime of the processes (all their threads).
proc_ticks() {
  local p t=0 f
  for p in "$@"; do
    f=$(cat "/proc/$p/stat" 2>/dev/null) || die "server process $p is gone (crashed?)"
    f=${f##*) }
    t=$((t + $(awk '{ print $12 + $13 }' <<<"$f")))
  done
  echo "$t"
}

tests=(narinfo-c1 narinfo-c64 nar-c1 nar-c16 store-c1 store-c16)
declare -A t_list t_conns t_target t_unit
t_list=([narinfo-c1]=narinfo.urls [narinfo-c64]=narinfo.urls [nar-c1]=nar.urls
        [nar-c16]=nar.urls [store-c1]=store.urls [store-c16]=store.urls)
t_conns=([narinfo-c1]=1 [narinfo-c64]=64 [nar-c1]=1 [nar-c16]=16 [store-c1]=1 [store-c16]=16)
t_target=([narinfo-c1]=1.0 [narinfo-c64]=1.0 [nar-c1]=0.9 [nar-c16]=0.9 [store-c1]=0.8 [store-c16]=0.8)
t_unit=([narinfo-c1]=us/req [narinfo-c64]=req/s [nar-c1]=MiB/s [nar-c16]=MiB/s
        [store-c1]=MiB/s [store-c16]=MiB/s)
errors=0
err_log=$tmpdir/errors.txt
: >"$err_log"

# run_wrk TEST SIDE DURATION: runs wrk; sets r_value (in the test's unit),
# _r_rate (requests/s or MiB/s), r_srv (server cores), r_cli (wrk cores),
# r_oth (other processes' cores), r_srvper (server CPU us per request, or
# CPU s per GiB).
run_wrk() {
  local test=$1 side=$2 dur=$3 port spids out b0 b1 s0 s1 t0 t1
  case $test:$side in
    store-*:nginx) port=$ng_dump_port spids=("$ng_master" "$ng_worker") ;;
    *:nginx) port=$ng_port spids=("$ng_master" "$ng_worker") ;;
    store-*:narcache) port=$ns_port spids=("$nc_store_pid") ;;
    *:narcache) port=$nc_port spids=("$nc_dir_pid") ;;
  esac
  out=$tmpdir/wrk.out
  s0=$(proc_ticks "${spids[@]}")
  b0=$(busy_ticks)
  t0=$EPOCHREALTIME
  if ! BENCH_URLS=$tmpdir/${t_list[$test]} /usr/bin/time -f '%U %S' -o "$tmpdir/time.out" \
         wrk -t1 -c"${t_conns[$test]}" -d"${dur}s" --timeout 60s -s "$lua" \
         "http://127.0.0.1:$port" >"$out" 2>&1; then
    cat "$out" >&2
    die "wrk failed ($test, $side)"
  fi
  t1=$EPOCHREALTIME
  b1=$(busy_ticks)
  s1=$(proc_ticks "${spids[@]}")
  local res
  res=$(grep '^RESULT ' "$out") || { cat "$out" >&2; die "wrk printed no RESULT ($test, $side)"; }
  # shellcheck disable=SC2086 # word splitting intended
  local requests bytes secs connect read write status timeout
  eval "$(sed 's/^RESULT //; s/lat_mean_us=[^ ]*//; s/lat_p99_us=[^ ]*//; s/seconds=/secs=/' <<<"$res" |
          tr ' ' '\n' | grep -E '^(requests|bytes|secs|connect|read|write|status|timeout)=[0-9.]+$')"
  if ((connect + read + write + status + timeout > 0)) || [[ $bytes == 0 ]]; then
    errors=$((errors + 1))
    echo "$test $side: requests=$requests non-2xx=$status connect=$connect read=$read write=$write timeout=$timeout" |
      tee -a "$err_log" >&2
  fi
  read -r r_value _r_rate r_srv r_cli r_oth r_srvper < <(
    awk -v test="$test" -v n="$requests" -v by="$bytes" -v s="$secs" -v a="$t0" -v b="$t1" \
        -v b0="$b0" -v b1="$b1" -v s0="$s0" -v s1="$s1" -v hz="$hz" \
        -v cpu="$(tail -n 1 "$tmpdir/time.out")" 'BEGIN {
      split(cpu, c, " "); wall = b - a; cli = c[1] + c[2]; srv = (s1 - s0) / hz
      oth = ((b1 - b0) / hz - cli - srv) / wall; if (oth < 0) oth = 0
      if (n == 0) n = 1
      if (test ~ /^narinfo/) { rate = n / s; per = srv / n * 1e6 }
      else { rate = by / s / 1048576; per = srv / (by / 1073741824) }
      value = (test == "narinfo-c1") ? s / n * 1e6 : rate
      printf "%.3f %.3f %.2f %.2f %.2f %.3f\n", value, rate, srv / wall, cli / wall, oth, per }')
}

median() {
  printf '%s\n' "$@" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) m = v[(NR + 1) / 2];
                              else m = (v[NR / 2] + v[NR / 2 + 1]) / 2;
                              printf "%.3f", m }'
}

echo "== warm-up (untimed, 1 s each)"
for t in "${tests[@]}"; do
  for side in nginx narcache; do run_wrk "$t" "$side" 1; done
done

echo "== $rounds rounds of ${seconds}s runs (srv/wrk = cores used by the server/by wrk,"
echo "   oth = cores used by other processes meanwhile; $cpus CPUs)"
declare -A vals srvc clic othc srvper ratios
for ((r = 0; r < rounds; r++)); do
  echo "   round $((r + 1)):"
  for t in "${tests[@]}"; do
    if ((r % 2)); then order=(narcache nginx); else order=(nginx narcache); fi
    line=$(printf '     %-12s' "$t")
    declare -A this=()
    for side in "${order[@]}"; do
      run_wrk "$t" "$side" "$seconds"
      this[$side]=$r_value
      vals[$t:$side]+="$r_value " srvc[$t:$side]+="$r_srv " clic[$t:$side]+="$r_cli "
      othc[$t:$side]+="$r_oth " srvper[$t:$side]+="$r_srvper "
      line+=$(printf ' %-8s %10.1f %-6s (srv %.2f wrk %.2f oth %.2f)' \
                "$side" "$r_value" "${t_unit[$t]}" "$r_srv" "$r_cli" "$r_oth")
    done
    ratios[$t]+="$(awk -v a="${this[narcache]}" -v b="${this[nginx]}" 'BEGIN { printf "%.3f", a / b }') "
    unset this
    echo "$line"
  done
done

# ---- memory ----------------------------------------------------------------------
# status_kib PID FIELD: VmRSS / VmHWM in KiB.
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
narinfo1=$(head -n 1 "$tmpdir/narinfo.urls")

# idle_test NAME PORT PID: IDLE_CONNS idle connections; sets m_base_hwm,
# m_idle_hwm, m_idle_rss, m_alive, m_ok.
idle_test() {
  local name=$1 port=$2 pid=$3 out=$tmpdir/idle-$1.out i cpid
  curl -sf -o /dev/null "http://127.0.0.1:$port$narinfo1" || die "$name: narinfo request failed"
  sleep 0.5
  m_base_hwm=$(status_kib "$pid" VmHWM)
  : >"$out"
  python3 "$idle_client" 127.0.0.1 "$port" "$idle_conns" "$narinfo1" 8 >>"$out" 2>&1 &
  cpid=$!
  pids+=("$cpid")
  for ((i = 0; i < 900; i++)); do
    grep -q '^READY' "$out" && break
    kill -0 "$cpid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q '^READY' "$out" || { cat "$out" >&2; die "$name: the idle client did not get its responses"; }
  sleep 1
  m_idle_rss=$(status_kib "$pid" VmRSS) m_idle_hwm=$(status_kib "$pid" VmHWM)
  wait "$cpid" || { cat "$out" >&2; die "$name: the idle client failed"; }
  m_ok=$(sed -n 's/^READY ok=\([0-9]*\) bad=\([0-9]*\) failed=\([0-9]*\).*/\1 \2 \3/p' "$out")
  m_alive=$(sed -n 's/^CLOSED alive=//p' "$out")
  echo "   $name: $(grep '^READY' "$out"); still open after 8 s idle: $m_alive"
  read -r ok bad failed <<<"$m_ok"
  if ((ok != idle_conns || m_alive != idle_conns)); then
    errors=$((errors + 1))
    echo "$name idle: $idle_conns connections: ok=$ok bad=$bad failed=$failed alive=$m_alive" |
      tee -a "$err_log" >&2
  fi
}

echo "== memory: $idle_conns idle keep-alive connections (fresh servers)"
stop "$nc_dir_pid"
stop "$nc_store_pid"
stop "$ng_master"
port=$(free_port)
start_narcache narcache-idle --cache "$cache" --listen "127.0.0.1:$port" \
  --max-connections $((idle_conns + 100))
wait_http "http://127.0.0.1:$port/nix-cache-info" || die "narcache-server (idle test) did not start"
idle_test narcache-server "$port" "$nc_pid"
nc_base_hwm=$m_base_hwm nc_idle_hwm=$m_idle_hwm nc_idle_rss=$m_idle_rss
stop "$nc_pid"
port=$(free_port)
# nginx closes idle keep-alive connections once fewer than 1/16 of its
# worker_connections are free: leave it enough.
write_nginx_conf "$tmpdir/nginx-idle.conf" $((idle_conns + idle_conns / 8 + 100)) "$port" "$cache"
start_nginx nginx-idle "$tmpdir/nginx-idle.conf"
wait_http "http://127.0.0.1:$port/nix-cache-info" || die "nginx (idle test) did not start"
idle_test "nginx worker" "$port" "$nginx_worker"
ng_base_hwm=$m_base_hwm ng_idle_hwm=$m_idle_hwm ng_idle_rss=$m_idle_rss
stop "$nginx_pid"

echo "== memory: the 4 GiB NAR ($big_size bytes, sparse) through narcache-server"
port=$(free_port)
start_narcache narcache-stream --cache "$cache" --listen "127.0.0.1:$port"
st_pid=$nc_pid
wait_http "http://127.0.0.1:$port/nix-cache-info" || die "narcache-server (stream test) did not start"
curl -sf -o /dev/null "http://127.0.0.1:$port$narinfo1" || die "narinfo request failed"
sleep 0.5
st_base_rss=$(status_kib "$st_pid" VmRSS) st_base_hwm=$(status_kib "$st_pid" VmHWM)
curl -s -o /dev/null --limit-rate 1M --max-time $((stream_seconds + 1)) \
  -w '%{http_code} %{size_download}\n' "http://127.0.0.1:$port/nar/$big_name" >"$tmpdir/slow.out" 2>&1 &
slow_pid=$!
pids+=("$slow_pid")
slow_rss=()
for ((i = 1; i <= stream_seconds; i++)); do
  sleep 1
  slow_rss+=("$(status_kib "$st_pid" VmRSS)")
done
wait "$slow_pid" 2>/dev/null || true # curl --max-time ends it (exit 28)
slow_bytes=$(awk '{ print $2 }' "$tmpdir/slow.out")
slow_code=$(awk '{ print $1 }' "$tmpdir/slow.out")
st_slow_hwm=$(status_kib "$st_pid" VmHWM)
echo "   curl --limit-rate 1M --max-time $((stream_seconds + 1)): HTTP ${slow_code:-?}, ${slow_bytes:-?} bytes received"
echo "   VmRSS each second (KiB): ${slow_rss[*]}"
if [[ $slow_code != 200 ]]; then
  errors=$((errors + 1))
  echo "slow stream: HTTP status '${slow_code:-none}' (want 200)" | tee -a "$err_log" >&2
fi
# Full speed, RSS sampled every 0.2 s meanwhile.
fast_max=0
curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total}\n' \
  "http://127.0.0.1:$port/nar/$big_name" >"$tmpdir/fast.out" 2>&1 &
fast_pid=$!
pids+=("$fast_pid")
while kill -0 "$fast_pid" 2>/dev/null; do
  v=$(status_kib "$st_pid" VmRSS)
  ((v > fast_max)) && fast_max=$v
  sleep 0.2
done
wait "$fast_pid" || true
read -r fast_code fast_bytes fast_time <"$tmpdir/fast.out" || true
st_fast_hwm=$(status_kib "$st_pid" VmHWM)
echo "   full speed to /dev/null: HTTP ${fast_code:-?}, ${fast_bytes:-?} bytes in ${fast_time:-?} s; peak sampled VmRSS $fast_max KiB"
if [[ $fast_code != 200 || $fast_bytes != "$big_size" ]]; then
  errors=$((errors + 1))
  echo "fast stream: HTTP ${fast_code:-none}, ${fast_bytes:-0} of $big_size bytes" | tee -a "$err_log" >&2
fi
kill -0 "$st_pid" 2>/dev/null || die "narcache-server died during the stream test"
stop "$st_pid"

# ---- server logs ---------------------------------------------------------------
log_errors=$(cat "$tmpdir"/narcache-*.log | grep -Ec ' (error|warning) ' || true)
if ((log_errors > 0)); then
  echo "== narcache-server logged $log_errors error/warning lines:"
  cat "$tmpdir"/narcache-*.log | grep -E ' (error|warning) ' | sort | uniq -c | sort -rn | head -n 20
fi
ng_errs=$(cat "$tmpdir"/nginx*.error.log 2>/dev/null | grep -c '\[\(error\|crit\|alert\|emerg\)\]' || true)
((ng_errs == 0)) || { echo "== nginx logged $ng_errs errors:"; cat "$tmpdir"/nginx*.error.log | head -n 20; }

# ---- summary -------------------------------------------------------------------
echo
echo "== summary: medians of $rounds rounds of ${seconds}s; wrk -t1; $cpus CPUs;" \
     "library at $commit$( ((dirty)) && echo " + $dirty uncommitted files in libnarcache/include/examples")"
echo "   $n_narinfo narinfo files; ${#large[@]} NARs of $nar_bytes bytes"
printf '%-12s %-7s %11s %11s %7s %7s %-8s %-8s %s\n' test unit nginx narcache ratio paired target result \
  "server CPU (nginx / narcache)"
missed=0
for t in "${tests[@]}"; do
  # shellcheck disable=SC2086 # word splitting intended
  ng=$(median ${vals[$t:nginx]}) nc=$(median ${vals[$t:narcache]})
  # shellcheck disable=SC2086
  paired=$(median ${ratios[$t]})
  ratio=$(awk -v a="$nc" -v b="$ng" 'BEGIN { printf "%.3f", a / b }')
  if [[ $t == narinfo-c1 ]]; then # time per request: lower is better
    cmpop="<="
    ok=$(awk -v r="$ratio" -v t="${t_target[$t]}" 'BEGIN { print (r <= t) ? 1 : 0 }')
    per_unit="us CPU/req"
  else
    cmpop=">="
    ok=$(awk -v r="$ratio" -v t="${t_target[$t]}" 'BEGIN { print (r >= t) ? 1 : 0 }')
    [[ $t == narinfo-* ]] && per_unit="us CPU/req" || per_unit="CPU s/GiB"
  fi
  ((ok)) && res=met || { res="NOT met"; missed=$((missed + 1)); }
  # shellcheck disable=SC2086
  printf '%-12s %-7s %11.1f %11.1f %7.3f %7.3f %-8s %-8s %s / %s %s (cores %s / %s; wrk %s / %s; others %s / %s)\n' \
    "$t" "${t_unit[$t]}" "$ng" "$nc" "$ratio" "$paired" "$cmpop ${t_target[$t]}" "$res" \
    "$(median ${srvper[$t:nginx]})" "$(median ${srvper[$t:narcache]})" "$per_unit" \
    "$(median ${srvc[$t:nginx]})" "$(median ${srvc[$t:narcache]})" \
    "$(median ${clic[$t:nginx]})" "$(median ${clic[$t:narcache]})" \
    "$(median ${othc[$t:nginx]})" "$(median ${othc[$t:narcache]})"
done
echo "ratio = narcache/nginx of the medians (us/req for narinfo-c1, rates otherwise);"
echo "paired = median of the per-round ratios"
echo
slow_max=$(printf '%s\n' "${slow_rss[@]}" | sort -n | tail -n 1)
slow_5=${slow_rss[$((stream_seconds >= 5 ? 4 : 0))]}
slow_last=${slow_rss[$((stream_seconds - 1))]}
awk -v n="$idle_conns" -v nb="$nc_base_hwm" -v ni="$nc_idle_hwm" -v nr="$nc_idle_rss" \
    -v gb="$ng_base_hwm" -v gi="$ng_idle_hwm" -v gr="$ng_idle_rss" 'BEGIN {
  printf "memory, %d idle connections (KiB):  VmHWM before  VmHWM with  VmRSS with  per connection\n", n
  printf "  narcache-server                     %12d %11d %11d  %.2f KiB\n", nb, ni, nr, (ni - nb) / n
  printf "  nginx worker (reference)            %12d %11d %11d  %.2f KiB\n", gb, gi, gr, (gi - gb) / n }'
echo "memory, 4 GiB NAR through narcache-server (KiB): idle VmRSS $st_base_rss, VmHWM $st_base_hwm;"
echo "  1 MB/s reader ${stream_seconds}s: VmRSS max $slow_max (5th s $slow_5, last $slow_last), VmHWM $st_slow_hwm;"
echo "  full speed: sampled VmRSS max $fast_max, VmHWM $st_fast_hwm"
mem_ok=$(awk -v b="$st_base_hwm" -v h="$st_fast_hwm" -v s5="$slow_5" -v sl="$slow_last" \
  'BEGIN { print (h - b <= 32768 && sl - s5 <= 4096) ? 1 : 0 }')
if ((mem_ok)); then
  echo "  RSS does not grow with the NAR: met (peak $(( (st_fast_hwm - st_base_hwm) / 1024 )) MiB above idle)"
else
  echo "  RSS grows with the NAR: NOT met"
  missed=$((missed + 1))
fi
echo "== command: bench/run-serve.sh $build_dir $rounds $seconds $idle_conns $stream_seconds"
if ((errors > 0)); then
  echo "== $errors runs with failed requests or other errors:"
  cat "$err_log"
fi
if ((missed == 0 && errors == 0)); then
  echo "== all targets met"
  exit 0
fi
echo "== $missed targets NOT met, $errors runs with errors"
exit 1
