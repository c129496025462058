#!/usr/bin/env bash
# Several stateless narcache-server processes in front of one bucket of a
# real Ceph RADOS Gateway (started by run.sh: S3_ENDPOINT, S3_ACCESS_KEY,
# S3_SECRET_KEY, RGW_DIR), driven by the real Nix 2.8 client:
#  1. `narcache cache add --to s3://...` fills a bucket; two servers on
#     different ports serve it; Nix substitutes the closure through each,
#     signatures required, NARs identical; and through a third that sends
#     NARs by 307 to presigned URLs. A bucket holding what `nix copy --to
#     file://` wrote (xz NARs, listings) is served the same way. A server
#     with virtual-host addressing redirects Nix to BUCKET.localhost.
#  2. `nix copy --to http://A` uploads through one server; Nix substitutes it
#     back through another; two servers taking the same upload at once end
#     consistent.
#  3. Faults: radosgw stopped while a NAR downloads (the download is cut,
#     not completed short; 503 and /healthz 503 afterwards, never 404;
#     recovery when it returns); a wrong secret key (a clear error at start),
#     and the right one from --s3-credentials-file winning over it;
#     a wedged gateway (SIGSTOP: requests answer 503 within the store
#     timeout while /healthz answers at once).
# Usage: s3_nix.sh NARCACHE_SERVER NARCACHE_CLI
set -euo pipefail
source "$(dirname "$0")/../server_nix_lib.sh"
rgw=$(dirname "$0")/rgw_cluster.py
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
unset AWS_SESSION_TOKEN AWS_PROFILE

# ---- a closure: a built path referring to a file and a tree (3 MB of noise,
# several body pieces and a streamed PUT), plus a 96 MiB path for the faults
# (more than the socket buffers between the gateway and a client can hold)
SRC=$TMP/src
mkdir -p "$SRC/tree" "$SRC/big"
printf 'narcache s3 test input %s %s\n' "$$" "$(date +%s%N)" > "$SRC/input"
printf 'a\n' > "$SRC/tree/a"
head -c 3000000 /dev/urandom > "$SRC/tree/noise"
head -c 100663296 /dev/urandom > "$SRC/big/noise"
cat > "$SRC/default.nix" <<'NIXEOF'
{
  demo = derivation {
    name = "narcache-s3-demo";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir $out; echo ${./input} > $out/ref; /bin/cp -r ${./tree} $out/tree; /bin/ln -s ${./tree} $out/tree-link" ];
  };
  upload = derivation {
    name = "narcache-s3-upload";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "/bin/mkdir $out; echo ${./input} up > $out/ref; /bin/cp -r ${./tree} $out/tree" ];
  };
}
NIXEOF
P_DEMO=$(nix-build "${NIXOPTS[@]}" --no-out-link -A demo "$SRC/default.nix" 2>"$TMP/build.log") || {
    cat "$TMP/build.log" >&2; exit 1; }
P_UPLOAD=$(nix-build "${NIXOPTS[@]}" --no-out-link -A upload "$SRC/default.nix" 2>>"$TMP/build.log") || {
    cat "$TMP/build.log" >&2; exit 1; }
P_BIG=$(nix-store --add "$SRC/big")
trap 'cleanup; nix-store --delete "$P_BIG" >/dev/null 2>&1 || true' EXIT # 96 MiB of noise

"$cli" key generate s3-cache-1 "$TMP/cache.sk" "$TMP/cache.pk"
"$cli" key generate s3-client-1 "$TMP/client.sk" "$TMP/client.pk"
TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
printf 'ci write %s\n' "$TOKEN" > "$TMP/tokens"
printf 'machine 127.0.0.1 login ci password %s\n' "$TOKEN" > "$TMP/netrc"

# ---- 1. cache add to a bucket, two servers, Nix through each
python3 "$rgw" bucket "$RGW_DIR" nix-cache
URL_A="s3://nix-cache/cache?endpoint=$S3_ENDPOINT&region=$S3_REGION"
"$cli" cache add --to "$URL_A" --key-file "$TMP/cache.sk" --closure "$P_DEMO" "$P_BIG"
P_BUILT=$P_DEMO
mapfile -t CLOSURE < <(nix-store -qR "$P_DEMO")
[[ ${#CLOSURE[@]} -ge 3 ]]
start_server one --s3 "$URL_A" --access-log
substitute one "$(cat "$TMP/cache.pk")"
PORT_ONE=$PORT
start_server two --s3 "$URL_A" --access-log
substitute two "$(cat "$TMP/cache.pk")"
PORT_TWO=$PORT
grep -q 'route=nar status=200' "$TMP/one.log"
grep -q 'route=nar status=200' "$TMP/two.log"
# NARs by 307 to presigned URLs: Nix follows them to the gateway; a Range
# goes along to the object store
start_server redirect --s3 "$URL_A" --s3-redirect --access-log
substitute redirect "$(cat "$TMP/cache.pk")"
grep -q 'route=nar status=307' "$TMP/redirect.log" || { cat "$TMP/redirect.log" >&2; exit 1; }
if grep -q 'route=nar status=200' "$TMP/redirect.log"; then
    echo "a NAR was served through the redirecting server" >&2; exit 1
fi
h=$(basename "$P_DEMO" | cut -c1-32)
nar=$(curl -sf "http://127.0.0.1:$PORT/$h.narinfo" | sed -n 's/^URL: //p')
[[ $(curl -sfL -r 1000-1999 "http://127.0.0.1:$PORT/$nar" | sha256sum) == \
   $(curl -sf -r 1000-1999 "http://127.0.0.1:$PORT_ONE/$nar" | sha256sum) ]]
# The same with virtual-host addressing. The gateway calls itself
# localhost, and libcurl (Nix's too) sends every *.localhost name to the
# loopback address: Nix follows redirects to http://nix-cache.localhost:PORT/.
start_server vhost --access-log --s3-redirect \
    --s3 "s3://nix-cache/cache?endpoint=http://localhost:${S3_ENDPOINT##*:}&region=$S3_REGION&addressing=virtual"
substitute vhost "$(cat "$TMP/cache.pk")"
grep -q 'route=nar status=307' "$TMP/vhost.log" || { cat "$TMP/vhost.log" >&2; exit 1; }
curl -sf -o /dev/null -w '%{redirect_url}\n' "http://127.0.0.1:$PORT/$nar" | grep -q '^http://nix-cache\.localhost:'

# ---- 1b. a bucket laid out by Nix itself: Debian's Nix has no s3:// store,
# so `nix copy --to file://` (xz, signed, with listings) and every file put
# into a bucket as it is, as an `aws s3 sync` would
"${NIX[@]}" copy "${NIXOPTS[@]}" \
    --to "file://$TMP/nixcache?secret-key=$TMP/cache.sk&write-nar-listing=true" "$P_DEMO"
python3 "$rgw" bucket "$RGW_DIR" nix-written
files=()
while IFS= read -r f; do files+=(-T "$TMP/nixcache/$f" "$S3_ENDPOINT/nix-written/$f"); done \
    < <(cd "$TMP/nixcache" && find . -type f -printf '%P\n')
curl -sf --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "${files[@]}" > /dev/null
start_server nixwritten --s3 "s3://nix-written?endpoint=$S3_ENDPOINT" --access-log
P_BUILT=$P_DEMO
mapfile -t CLOSURE < <(nix-store -qR "$P_DEMO")
substitute nixwritten "$(cat "$TMP/cache.pk")"
grep -q 'route=nar status=200' "$TMP/nixwritten.log"

# ---- 2. uploads through one server, substitution through another
python3 "$rgw" bucket "$RGW_DIR" nix-upload
URL_B="s3://nix-upload?endpoint=$S3_ENDPOINT"
upload_server() {
    start_server "$1" --s3 "$URL_B" --upload-token-file "$TMP/tokens" \
        --trusted-key "$(cat "$TMP/client.pk")" --access-log
}
push() { # push NAME PORT
    XDG_CACHE_HOME=$TMP/xdg-push-$1 "${NIX[@]}" copy "${NIXOPTS[@]}" --option netrc-file "$TMP/netrc" \
        --to "http://127.0.0.1:$2?compression=zstd&write-nar-listing=true&secret-key=$TMP/client.sk" \
        "$P_UPLOAD"
}
upload_server up1
PORT_UP1=$PORT
upload_server up2
PORT_UP2=$PORT
# the same closure through two servers at once: both succeed
push up1 "$PORT_UP1" & push1=$!
push up2 "$PORT_UP2" & push2=$!
wait "$push1"
wait "$push2"
grep -q 'upload_stored' "$TMP/up1.log"
grep -q 'upload_stored' "$TMP/up2.log"
start_server reader --s3 "$URL_B"
P_BUILT=$P_UPLOAD
mapfile -t CLOSURE < <(nix-store -qR "$P_UPLOAD")
substitute reader "$(cat "$TMP/client.pk")"
# every narinfo names a NAR that is there (what a client sees is consistent)
for p in "${CLOSURE[@]}"; do
    h=$(basename "$p" | cut -c1-32)
    nar=$(curl -sf "http://127.0.0.1:$PORT/$h.narinfo" | sed -n 's/^URL: //p')
    [[ $(curl -s -o /dev/null -w '%{http_code}' -I "http://127.0.0.1:$PORT/$nar") == 200 ]] || {
        echo "narinfo of $p names $nar, which is missing" >&2; exit 1; }
done
echo "uploads through two servers at once, substituted through a third: consistent"
# a NAR refused after all its bytes arrived (not named by its hash) leaves
# no object behind, though it streamed to the bucket as it came
nix-store --dump "$SRC/tree" | zstd -q > "$TMP/tree.nar.zst"
wrong=0000000000000000000000000000000000000000000000000000
code=$(curl -s -o "$TMP/refused.txt" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    -T "$TMP/tree.nar.zst" "http://127.0.0.1:$PORT_UP1/nar/$wrong.nar.zst")
[[ $code == 400 ]] || { echo "a misnamed NAR got $code: $(cat "$TMP/refused.txt")" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -I --aws-sigv4 "aws:amz:$S3_REGION:s3" \
    --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
    "$S3_ENDPOINT/nix-upload/nar/$wrong.nar.zst")
[[ $code == 404 ]] || { echo "the refused NAR is in the bucket ($code)" >&2; exit 1; }
echo "a refused $(stat -c %s "$TMP/tree.nar.zst")-byte NAR: 400, nothing in the bucket"

# ---- 3a. the gateway goes away while a NAR downloads
PORT=$PORT_ONE
h=$(basename "$P_BIG" | cut -c1-32)
nar=$(curl -sf "http://127.0.0.1:$PORT/$h.narinfo" | sed -n 's/^URL: //p')
size=$(curl -sf "http://127.0.0.1:$PORT/$h.narinfo" | sed -n 's/^FileSize: //p')
set +e
# a slow client with a small receive buffer (slow_get.py): curl's socket
# may autotune its buffer up to net.ipv4.tcp_rmem's maximum (32 MiB on some
# kernels), and with the server's own it could hold the whole NAR
python3 "$(dirname "$0")/slow_get.py" "http://127.0.0.1:$PORT/$nar" "$TMP/big.nar" 1000000 \
    > "$TMP/big.curl" 2>/dev/null &
download=$!
sleep 1.5
python3 "$rgw" stop-rgw "$RGW_DIR"
wait "$download"
curl_status=$?
set -e
result=$(cat "$TMP/big.curl") # "HTTP_CODE BYTES", no newline
code=${result% *} got=${result#* }
echo "download with the gateway gone: client exit $curl_status, HTTP $code, $got of $size bytes"
[[ $code == 200 && $curl_status != 0 && $got -lt $size ]] || {
    echo "the download was not cut off cleanly" >&2; exit 1; }
# absent from the cache and the gateway down: 503, never 404
missing=00000000000000000000000000000000
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/$missing.narinfo") == 503 ]]
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/$nar") == 503 ]]
for _ in $(seq 1 100); do # the next health probe notices
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz") == 503 ]] && break
    sleep 0.1
done
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz") == 503 ]]
python3 "$rgw" start-rgw "$RGW_DIR"
for _ in $(seq 1 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz") == 200 ]] && break
    sleep 0.1
done
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz") == 200 ]]
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/$missing.narinfo") == 404 ]]
[[ $(curl -s "http://127.0.0.1:$PORT/$nar" | sha256sum | cut -c1-64) == \
   $(curl -s "http://127.0.0.1:$PORT_TWO/$nar" | sha256sum | cut -c1-64) ]]
echo "gateway stopped: download cut, 503 and unhealthy; back: healthy, 404 and full NARs again"

# ---- 3b. a wrong secret key: a clear error at start
if AWS_SECRET_ACCESS_KEY=not-the-secret-key "$server" --s3 "$URL_A" --listen 127.0.0.1:0 \
    2>"$TMP/wrong.log"; then
    echo "narcache-server started with a wrong secret key" >&2; exit 1
fi
grep -q 'credentials were refused' "$TMP/wrong.log" || { cat "$TMP/wrong.log" >&2; exit 1; }
echo "wrong secret key: $(grep -o 'credentials were refused[^(]*' "$TMP/wrong.log")"
# credentials from a file named on the command line win over the
# environment's (wrong ones here), for the server and for cache add
printf '[ci]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$S3_ACCESS_KEY" "$S3_SECRET_KEY" \
    > "$TMP/aws-credentials"
AWS_SECRET_ACCESS_KEY=not-the-secret-key start_server credfile --s3 "$URL_A&profile=ci" \
    --s3-credentials-file "$TMP/aws-credentials"
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/$h.narinfo") == 200 ]]
AWS_SECRET_ACCESS_KEY=not-the-secret-key "$cli" cache add --to "$URL_A&profile=ci" \
    --s3-credentials-file "$TMP/aws-credentials" --key-file "$TMP/cache.sk" "$P_DEMO"
echo "credentials from --s3-credentials-file: server and cache add"

# ---- 3c. a wedged gateway: answers within the store timeout, loop responsive
start_server wedge --s3 "$URL_A" --store-timeout 1000
rgw_pid=$(cat "$RGW_DIR/pids/rgw")
kill -STOP "$rgw_pid"
t0=$(date +%s%N)
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/11111111111111111111111111111111.narinfo")
t1=$(date +%s%N)
health=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT/healthz")
kill -CONT "$rgw_pid"
ms=$(( (t1 - t0) / 1000000 ))
echo "wedged gateway: HTTP $code after $ms ms; /healthz answered in ${health}s"
[[ $code == 503 && $ms -lt 3000 ]]
python3 -c "import sys; sys.exit(0 if float('$health') < 0.5 else 1)"
for _ in $(seq 1 200); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/$missing.narinfo") == 404 ]] && break
    sleep 0.1
done
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/$missing.narinfo") == 404 ]]

stop_servers
echo "s3: all passed"
