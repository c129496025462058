#!/usr/bin/env bash
# The nixstore backend against the real Nix 2.8 store on this machine:
# make store paths (added files, a directory, a built derivation with
# references), let Nix write a file:// cache of them with listings, then
# compare what the backend serves with what Nix wrote, and look paths up
# while Nix writes to its database. Runs as root without a daemon, like the
# other Nix-driven tests. Usage: store_nixstore.sh TEST_STORE_NIXSTORE
set -euo pipefail
checker=$1
unset NIX_REMOTE
TMP=$(mktemp -d "${TMPDIR:-/tmp}/narcache-nixstore.XXXXXX")
hammer_pid=
cleanup() {
    [[ -n $hammer_pid ]] && kill "$hammer_pid" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
export XDG_CACHE_HOME=$TMP/xdg
NIX=(nix --extra-experimental-features nix-command)
NIXOPTS=(--option sandbox false --option build-users-group '' --option substituters '')

# Fixed contents: re-runs reuse the same store paths.
SRC=$TMP/src
mkdir -p "$SRC/tree/sub"
printf 'narcache nixstore backend test\n' > "$SRC/input"
printf 'a\n' > "$SRC/tree/a"
printf '#!/bin/sh\necho b\n' > "$SRC/tree/sub/b.sh"
chmod +x "$SRC/tree/sub/b.sh"
ln -s a "$SRC/tree/link"
P_FILE=$(nix-store "${NIXOPTS[@]}" --add "$SRC/input")
P_TREE=$(nix-store "${NIXOPTS[@]}" --add "$SRC/tree")
cat > "$SRC/default.nix" <<'NIXEOF'
derivation {
  name = "narcache-nixstore-demo";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir $out; echo ${./input} > $out/ref; echo $out > $out/self; /bin/cp -r ${./tree} $out/tree" ];
}
NIXEOF
P_BUILT=$(nix-build "${NIXOPTS[@]}" --no-out-link "$SRC/default.nix" 2>"$TMP/build.log") || {
    cat "$TMP/build.log" >&2; exit 1; }
paths=("$P_FILE" "$P_TREE" "$P_BUILT")
echo "store paths: ${paths[*]}"

"${NIX[@]}" copy "${NIXOPTS[@]}" \
    --to "file://$TMP/cache?compression=none&write-nar-listing=true" "${paths[@]}"
hashes=()
for p in "${paths[@]}"; do hashes+=("$(basename "$p" | cut -c1-32)"); done

"$checker" compare "$TMP/cache" "${hashes[@]}"

# Nix adds paths (database writes) while we look up, for a few seconds.
(
    for i in $(seq 1 40); do
        printf 'concurrent %s %s\n' "$i" "$$" > "$TMP/c$i"
        nix-store "${NIXOPTS[@]}" --add "$TMP/c$i" >/dev/null
    done
) &
hammer_pid=$!
"$checker" hammer 4 "${hashes[@]}"
wait "$hammer_pid"
hammer_pid=
