#!/usr/bin/env bash
# Uploads from the real Nix 2.8 client: `nix copy --to 'http://...?compression=zstd&secret-key=SK'`
# with the token in a netrc file pushes a closure with references into
# narcache-server (--cache, a trusted key); a second, empty store then
# substitutes it back from the same server with signatures required, NARs
# identical. Without a token the push fails and leaves nothing; a server
# that signs uploads itself (--sign-uploads) takes unsigned pushes.
# Runs as root without a daemon, like the other Nix-driven tests.
# Usage: server_upload_nix.sh NARCACHE_SERVER NARCACHE_CLI
set -euo pipefail
source "$(dirname "$0")/server_nix_lib.sh"

# ---- a built path (input-addressed: its signature matters) referring to
# a file and a tree, with a file large enough for several body pieces
SRC=$TMP/src
mkdir -p "$SRC/tree"
printf 'narcache upload test input %s\n' "$$" > "$SRC/input"
printf 'a\n' > "$SRC/tree/a"
head -c 3000000 /dev/urandom > "$SRC/tree/big"
cat > "$SRC/default.nix" <<'NIXEOF'
derivation {
  name = "narcache-upload-demo";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir $out; echo ${./input} > $out/ref; /bin/cp -r ${./tree} $out/tree; /bin/ln -s ${./tree} $out/tree-link" ];
}
NIXEOF
P_BUILT=$(nix-build "${NIXOPTS[@]}" --no-out-link "$SRC/default.nix" 2>"$TMP/build.log") || {
    cat "$TMP/build.log" >&2; exit 1; }
mapfile -t CLOSURE < <(nix-store -qR "$P_BUILT")
echo "closure of $P_BUILT: ${#CLOSURE[@]} paths"
[[ ${#CLOSURE[@]} -ge 3 ]]

"$cli" key generate upload-client-1 "$TMP/client.sk" "$TMP/client.pk"
"$cli" key generate upload-server-1 "$TMP/server.sk" "$TMP/server.pk"
TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
printf '# test tokens\nci write %s\nreader read r-%s\n' "$TOKEN" "$TOKEN" > "$TMP/tokens"
printf 'machine 127.0.0.1 login ci password %s\n' "$TOKEN" > "$TMP/netrc"

# push NAME URL [NIX OPTIONS...]: nix copy the closure to the server
push() {
    local name=$1 url=$2
    shift 2
    XDG_CACHE_HOME=$TMP/xdg-push-$name "${NIX[@]}" copy "${NIXOPTS[@]}" "$@" --to "$url" "$P_BUILT"
}
# ---- a trusted client key
CACHE=$TMP/cache
mkdir -p "$CACHE"
start_server trusted --cache "$CACHE" --upload-token-file "$TMP/tokens" \
    --trusted-key "$(cat "$TMP/client.pk")" --max-upload-size 64M
# without a token: refused, nothing published
if push notoken "http://127.0.0.1:$PORT?compression=zstd&secret-key=$TMP/client.sk" \
    2>"$TMP/notoken.err"; then
    echo "a push without a token was accepted" >&2; exit 1
fi
grep -q 'access_denied' "$TMP/trusted.log" || { cat "$TMP/notoken.err" "$TMP/trusted.log" >&2; exit 1; }
[[ -z $(find "$CACHE" -name '*.narinfo') ]] || { echo "a refused push left narinfo files" >&2; exit 1; }
# with the token from netrc (and the .ls listings Nix writes on request)
push trusted "http://127.0.0.1:$PORT?compression=zstd&write-nar-listing=true&secret-key=$TMP/client.sk" \
    --option netrc-file "$TMP/netrc"
n=$(find "$CACHE" -name '*.narinfo' | wc -l)
[[ $n == "${#CLOSURE[@]}" ]] || { echo "expected ${#CLOSURE[@]} narinfo files, found $n" >&2; exit 1; }
n=$(find "$CACHE" -name '*.ls' | wc -l)
[[ $n == "${#CLOSURE[@]}" ]] || { echo "expected ${#CLOSURE[@]} .ls files, found $n" >&2; exit 1; }
[[ -z $(find "$CACHE" -name '.tmp-*') ]] || { echo "temporary files left" >&2; exit 1; }
substitute trusted "$(cat "$TMP/client.pk")"
# pushing again changes nothing and succeeds (the paths are there)
push again "http://127.0.0.1:$PORT?compression=zstd&secret-key=$TMP/client.sk" \
    --option netrc-file "$TMP/netrc"
# SIGHUP reloads the token file: the old token stops working, the new one works
echo 'a build log' > "$TMP/build.log.txt"
put_log() { # (a build log: any content is taken; -T FILE sends Content-Length)
    curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" -T "$TMP/build.log.txt" \
        "http://127.0.0.1:$PORT/log/ba703j8axyq4wqbbwjh4vw23rslsrwhw-test.drv"
}
[[ $(put_log "$TOKEN") == 200 ]]
NEW_TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
printf 'ci write %s\n' "$NEW_TOKEN" > "$TMP/tokens.new"
mv "$TMP/tokens.new" "$TMP/tokens"
kill -HUP "${pids[0]}"
for _ in $(seq 1 50); do
    grep -q 'tokens_loaded.*tokens=1' "$TMP/trusted.log" && [[ $(grep -c tokens_loaded "$TMP/trusted.log") -ge 2 ]] && break
    sleep 0.1
done
[[ $(put_log "$TOKEN") == 401 ]] || { echo "the old token still works after SIGHUP" >&2; exit 1; }
[[ $(put_log "$NEW_TOKEN") == 200 ]] || { echo "the new token does not work after SIGHUP" >&2; exit 1; }
echo "SIGHUP: token file reloaded (old token 401, new token 200)"
TOKEN=$NEW_TOKEN
printf 'machine 127.0.0.1 login ci password %s\n' "$TOKEN" > "$TMP/netrc"
# a key the server does not trust: the narinfo uploads are refused
"$cli" key generate stranger-1 "$TMP/stranger.sk" "$TMP/stranger.pk"
CACHE2=$TMP/cache2
mkdir -p "$CACHE2"
start_server untrusted --cache "$CACHE2" --upload-token-file "$TMP/tokens" \
    --trusted-key "$(cat "$TMP/client.pk")"
if push untrusted "http://127.0.0.1:$PORT?compression=zstd&secret-key=$TMP/stranger.sk" \
    --option netrc-file "$TMP/netrc" 2>"$TMP/untrusted.err"; then
    echo "a push signed by an untrusted key was accepted" >&2; exit 1
fi
grep -q '403' "$TMP/untrusted.err" || { cat "$TMP/untrusted.err" >&2; exit 1; }
[[ -z $(find "$CACHE2" -name '*.narinfo') ]] || { echo "untrusted narinfo published" >&2; exit 1; }
echo "untrusted key: narinfo refused (403), none published"

# ---- the server signs uploads itself
CACHE3=$TMP/cache3
mkdir -p "$CACHE3"
start_server signing --cache "$CACHE3" --upload-token-file "$TMP/tokens" \
    --key-file "$TMP/server.sk" --sign-uploads
push signing "http://127.0.0.1:$PORT?compression=none" --option netrc-file "$TMP/netrc"
substitute signing "$(cat "$TMP/server.pk")"

stop_servers
echo "server_upload_nix: ok"
