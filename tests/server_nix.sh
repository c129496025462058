#!/usr/bin/env bash
# narcache-server against the real Nix 2.8 client on 127.0.0.1: Nix
# substitutes a closure with references into a separate store with
# signatures required, from both backends (a cache written by `narcache
# cache add`, and the live Nix store with NARs made on the fly, plain and
# zstd), and the NARs it installs are the originals. A narinfo that was
# tampered with is refused by the client, and a truncated NAR is detected.
# Runs as root without a daemon, like the other Nix-driven tests.
# Usage: server_nix.sh NARCACHE_SERVER NARCACHE_CLI
set -euo pipefail
source "$(dirname "$0")/server_nix_lib.sh"

# ---- store paths: a file, a tree, and a built path referring to both
SRC=$TMP/src
mkdir -p "$SRC/tree/sub"
printf 'narcache server test input\n' > "$SRC/input"
printf 'a\n' > "$SRC/tree/a"
printf '#!/bin/sh\necho b\n' > "$SRC/tree/sub/b.sh"
chmod +x "$SRC/tree/sub/b.sh"
ln -s a "$SRC/tree/link"
head -c 3000000 /dev/zero | tr '\0' 'z' > "$SRC/tree/big" # several pump rounds
cat > "$SRC/default.nix" <<'NIXEOF'
derivation {
  name = "narcache-server-demo";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo building; /bin/mkdir $out; echo ${./input} > $out/ref; /bin/cp -r ${./tree} $out/tree; /bin/ln -s ${./tree} $out/tree-link" ];
}
NIXEOF
P_BUILT=$(nix-build "${NIXOPTS[@]}" --no-out-link "$SRC/default.nix" 2>"$TMP/build.log") || {
    cat "$TMP/build.log" >&2; exit 1; }
mapfile -t CLOSURE < <(nix-store -qR "$P_BUILT")
echo "closure of $P_BUILT: ${#CLOSURE[@]} paths"
[[ ${#CLOSURE[@]} -ge 3 ]]

"$cli" key generate server-test-1 "$TMP/sk" "$TMP/pk"
PK=$(cat "$TMP/pk")

# ---- dir backend: a cache written by `narcache cache add`
CACHE=$TMP/cache
"$cli" cache add --to "$CACHE" --key-file "$TMP/sk" --compression zstd --closure "$P_BUILT"
start_server dir --cache "$CACHE"
substitute dir "$PK"
# Range with curl -r, and HEAD, against the file the cache holds
h=$(basename "$P_BUILT" | cut -c1-32)
nar=$(sed -n 's/^URL: //p' "$CACHE/$h.narinfo")
curl -sf -r 100-1099 "http://127.0.0.1:$PORT/$nar" | cmp - <(tail -c +101 "$CACHE/$nar" | head -c 1000)
curl -sf -r -500 "http://127.0.0.1:$PORT/$nar" | cmp - <(tail -c 500 "$CACHE/$nar")
len=$(curl -sfI "http://127.0.0.1:$PORT/$nar" | tr -d '\r' | sed -n 's/^Content-Length: //Ip')
[[ $len == "$(stat -c %s "$CACHE/$nar")" ]]
# An upload to this read-only server: refused at once (405), without
# waiting for the body that Expect: 100-continue holds back.
start=$EPOCHREALTIME
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Expect: 100-continue' -T "$CACHE/$nar" \
       "http://127.0.0.1:$PORT/nar/upload.nar")
[[ $code == 405 ]] || { echo "PUT answered $code" >&2; exit 1; }
awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { exit !(b - a < 0.9) }' ||
    { echo "PUT with Expect: 100-continue was not refused at once" >&2; exit 1; }
echo "dir: curl -r ranges, HEAD and a refused 100-continue upload: ok"

# ---- nixstore backend, NARs made on the fly, plain and zstd
start_server nixstore --nix-store --key-file "$TMP/sk"
substitute nixstore "$PK"
# nix-serve's and harmonia's NAR URL forms name the same NAR
h=$(basename "$P_BUILT" | cut -c1-32)
url=$(python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
      "http://127.0.0.1:$PORT/$h.narinfo" | sed -n 's/^URL: //p')
nh=$(basename "$url" .nar | cut -c34-)
nix-store --dump "$P_BUILT" > "$TMP/built.nar"
for form in "$url" "nar/$h.nar" "nar/$nh.nar?hash=$h"; do
    python3 -c 'import sys,urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())' \
        "http://127.0.0.1:$PORT/$form" | cmp - "$TMP/built.nar"
done
echo "nixstore: NAR URL forms $url, nar/$h.nar, nar/$nh.nar?hash=$h serve the same NAR"
start_server nixstore-zstd --nix-store --key-file "$TMP/sk" --compression zstd
substitute nixstore-zstd "$PK"

# ---- a tampered narinfo is refused by the client
BAD=$TMP/bad
cp -r "$CACHE" "$BAD"
h=$(basename "$P_BUILT" | cut -c1-32)
sed -i 's/^NarSize: \([0-9]*\)$/NarSize: 1\1/' "$BAD/$h.narinfo"
grep -q '^NarSize: 1' "$BAD/$h.narinfo"
start_server tampered --cache "$BAD"
if XDG_CACHE_HOME=$TMP/xdg-tampered "${NIX[@]}" copy "${NIXOPTS[@]}" --option require-sigs true \
    --option trusted-public-keys "$PK" --from "http://127.0.0.1:$PORT" \
    --to "local?root=$TMP/root-tampered" "$P_BUILT" 2>"$TMP/tampered.err"; then
    echo "nix accepted a tampered narinfo" >&2; exit 1
fi
grep -qi 'signature' "$TMP/tampered.err" || { cat "$TMP/tampered.err" >&2; exit 1; }
echo "tampered narinfo: refused by the client"

# ---- a truncated NAR is detected (uncompressed cache, NAR cut short)
CUT=$TMP/cut
"$cli" cache add --to "$CUT" --key-file "$TMP/sk" --compression none --closure "$P_BUILT"
nar=$(sed -n 's/^URL: //p' "$CUT/$h.narinfo")
size=$(stat -c %s "$CUT/$nar")
truncate -s $((size / 2)) "$CUT/$nar"
start_server truncated --cache "$CUT"
if XDG_CACHE_HOME=$TMP/xdg-cut "${NIX[@]}" copy "${NIXOPTS[@]}" --option require-sigs true \
    --option trusted-public-keys "$PK" --from "http://127.0.0.1:$PORT" \
    --to "local?root=$TMP/root-cut" "$P_BUILT" 2>"$TMP/cut.err"; then
    echo "nix accepted a truncated NAR" >&2; exit 1
fi
# (Nix may leave a partial tree behind, but never registers the path.)
if "${NIX[@]}" path-info --store "local?root=$TMP/root-cut" "$P_BUILT" >/dev/null 2>&1; then
    echo "truncated NAR: the path was registered as valid" >&2; exit 1
fi
echo "truncated NAR: detected: $(grep -m1 -i "error" "$TMP/cut.err")"
grep -qi "error" "$TMP/cut.err"

# ---- the servers stop cleanly on SIGTERM
stop_servers
grep -q 'stopped' "$TMP/dir.log"
echo "server_nix: ok"
