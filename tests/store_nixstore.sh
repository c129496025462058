#!/usr/bin/env bash
# The nixstore backend against the real Nix 2.8 store on this machine:
# make store paths (added files, a directory, a built derivation with
# references), let Nix write a file:// cache of them with listings, then
# compare what the backend serves with what Nix wrote, and look paths up
# while Nix writes to its database. Runs as root without a daemon, like the
# other Nix-driven tests. Then `narcache cache add` writes a cache of the
# same paths that the real client verifies and substitutes from with
# signatures required.
# Usage: store_nixstore.sh TEST_STORE_NIXSTORE NARCACHE_CLI
set -euo pipefail
checker=$1
cli=$2
unset NIX_REMOTE
TMP=$(mktemp -d "${TMPDIR:-/tmp}/narcache-nixstore.XXXXXX")
hammer_pid=
# A path the Nix database does not know (made by hand in the store dir).
UNREG=/nix/store/0000000000000000000000000000000z-narcache-unregistered
cleanup() {
    [[ -n $hammer_pid ]] && kill "$hammer_pid" 2>/dev/null || true
    rm -rf "$TMP" "$UNREG"
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
  args = [ "-c" "echo building narcache demo; /bin/mkdir $out; echo ${./input} > $out/ref; echo $out > $out/self; /bin/cp -r ${./tree} $out/tree" ];
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

# ... and field by field against `nix path-info --json` (NarHash, NarSize,
# References, Deriver, CA; every signature Nix holds is passed through).
"$checker" show "${hashes[@]}" > "$TMP/ours.txt"
"${NIX[@]}" path-info --json "${paths[@]}" > "$TMP/path-info.json"
while read -r nh; do
    printf '%s %s\n' "$nh" "$("${NIX[@]}" hash to-sri "$nh")"
done < <(sed -n 's/^NarHash: //p' "$TMP/ours.txt") > "$TMP/sri.txt"
python3 - "$TMP/ours.txt" "$TMP/path-info.json" "$TMP/sri.txt" <<'PY'
import json, os, sys
sri = dict(line.split() for line in open(sys.argv[3]))
ours = {}
for block in open(sys.argv[1]).read().split("----\n"):
    if block.strip():
        fields = {}
        for line in block.splitlines():
            key, value = line.split(": ", 1)
            fields.setdefault(key, []).append(value)
        ours[fields["StorePath"][0]] = fields
info = json.load(open(sys.argv[2]))
assert len(info) == len(ours) == 3, (len(info), len(ours))
for p in info:
    o = ours[p["path"]]
    assert sri[o["NarHash"][0]] == p["narHash"], (p["path"], o["NarHash"], p["narHash"])
    assert int(o["NarSize"][0]) == p["narSize"], p["path"]
    refs = o.get("References", [""])[0].split()
    assert sorted(refs) == sorted(os.path.basename(r) for r in p["references"]), p["path"]
    assert o.get("Deriver", [None])[0] == (os.path.basename(p["deriver"]) if "deriver" in p else None), p["path"]
    assert o.get("CA", [None])[0] == p.get("ca"), p["path"]
    assert set(p.get("signatures", [])) <= set(o.get("Sig", [])), p["path"]
    assert any(sig.startswith("narcache-nixstore-test-1:") for sig in o["Sig"]), p["path"]
print("narinfo fields equal nix path-info --json for", len(info), "paths")
PY

# ---------------------------------------------------------------- build logs
# The log Nix kept of the build (bzip2 in /nix/var/log/nix), as Nix reads it.
DRV=$(nix-store -q --deriver "$P_BUILT")
nix-store -l "$DRV" > "$TMP/nix.log"
grep -q 'building narcache demo' "$TMP/nix.log"
"$checker" log /nix/var/log/nix "$(basename "$DRV")" "$TMP/nix.log"
# A log directory of our own: plain and bzip2 logs, and what must not be served.
L=$TMP/logs
mkdir -p "$L/drvs/ab" "$L/drvs/.."
rest=cccccccccccccccccccccccccccccc
printf 'a plain log\n' > "$L/drvs/ab/$rest-plain.drv"
"$checker" log "$L" "ab$rest-plain.drv" "$L/drvs/ab/$rest-plain.drv"
head -c 400000 /dev/urandom | base64 > "$TMP/big.log"
bzip2 -c "$TMP/big.log" > "$L/drvs/ab/$rest-packed.drv.bz2"
"$checker" log "$L" "ab$rest-packed.drv" "$TMP/big.log"
head -c 1000 "$L/drvs/ab/$rest-packed.drv.bz2" > "$L/drvs/ab/$rest-cut.drv.bz2"
"$checker" log "$L" "ab$rest-cut.drv" error
printf 'not bzip2 at all' > "$L/drvs/ab/$rest-junk.drv.bz2"
"$checker" log "$L" "ab$rest-junk.drv" error
ln -s "$rest-plain.drv" "$L/drvs/ab/$rest-link.drv"
"$checker" log "$L" "ab$rest-link.drv" absent
mkdir "$L/drvs/ab/$rest-dir.drv"
"$checker" log "$L" "ab$rest-dir.drv" absent
printf 'x\n' > "$L/drvs/ab/$rest-plain"
"$checker" log "$L" "ab$rest-plain" absent      # not a derivation
"$checker" log "$L" "ab$rest-none.drv" absent
"$checker" log "$L" "../etc/passwd.drv" absent

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

# ---------------------------------------------------------------- cache add
"$cli" key generate cache-add-test-1 "$TMP/sk" "$TMP/pk"
nix-store --generate-binary-cache-key other-key-1 "$TMP/other.sk" "$TMP/other.pk"
OURS=$TMP/ours
"$cli" cache add --to "$OURS" --key-file "$TMP/sk" --jobs 2 --closure "$P_BUILT" "$P_TREE"
for h in "${hashes[@]}"; do
    [[ -s $OURS/$h.narinfo && -s $OURS/$h.ls ]] || { echo "missing $h in cache add output" >&2; exit 1; }
    grep -q '^Compression: zstd$' "$OURS/$h.narinfo"
    # the same listing as Nix's
    cmp "$OURS/$h.ls" "$TMP/cache/$h.ls"
done
# Nix checks every signature and every NAR (decompressed and hashed).
"${NIX[@]}" store verify --store "file://$OURS" --trusted-public-keys "$(cat "$TMP/pk")" \
    --sigs-needed 1 --all
# ... and the check can fail: with another trusted key the built path is untrusted.
if "${NIX[@]}" store verify --store "file://$OURS" --trusted-public-keys "$(cat "$TMP/other.pk")" \
    --sigs-needed 1 "$P_BUILT" 2>/dev/null; then
    echo "nix store verify accepted a cache signed by an untrusted key" >&2; exit 1
fi
# Substitution into a fresh store with signatures required.
ROOT=$TMP/root
"${NIX[@]}" copy "${NIXOPTS[@]}" --option require-sigs true \
    --option trusted-public-keys "$(cat "$TMP/pk")" \
    --from "file://$OURS" --to "local?root=$ROOT" "$P_BUILT" "$P_TREE"
for p in "$P_BUILT" "$P_FILE" "$P_TREE"; do
    a=$(nix-store --dump "$p" | sha256sum)
    b=$(nix-store --dump "$ROOT$p" | sha256sum)
    [[ $a == "$b" ]] || { echo "substituted $p differs" >&2; exit 1; }
done
echo "nix substituted ${#hashes[@]} paths from the cache add output with require-sigs"
# A second run has nothing to do and changes nothing.
before=$(cd "$OURS" && find . -type f -printf '%P %s %T@\n' | sort)
"$cli" cache add --to "$OURS" --key-file "$TMP/sk" --closure "$P_BUILT" "$P_TREE"
after=$(cd "$OURS" && find . -type f -printf '%P %s %T@\n' | sort)
[[ $before == "$after" ]] || { echo "second cache add changed the cache" >&2; exit 1; }
# A path Nix does not know is an error.
if "$cli" cache add --to "$OURS" --key-file "$TMP/sk" /nix/store/00000000000000000000000000000000-nothing 2>/dev/null; then
    echo "cache add accepted an unknown path" >&2; exit 1
fi

# A path Nix does not list: NAR from the tree, references by scanning it.
rm -rf "$UNREG"
mkdir -p "$UNREG/sub"
printf 'see %s and %s\n' "$P_FILE" "$UNREG" > "$UNREG/sub/refs"
# A hash part split across two reads must still be found: cache add reads
# the NAR in 256 KiB pieces, so put one across NAR offset 262144.
: > "$UNREG/big"
off=$("$cli" nar dump "$UNREG" | "$cli" nar ls --json |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["root"]["entries"]["big"]["narOffset"])')
head -c $((262144 - off - 10)) /dev/zero > "$UNREG/big"
printf '%s' "$(basename "$P_TREE" | cut -c1-32)" >> "$UNREG/big"
head -c 300000 /dev/zero >> "$UNREG/big"
"$cli" cache add --to "$OURS" --key-file "$TMP/sk" "$UNREG"
ni=$OURS/0000000000000000000000000000000z.narinfo
want="References: $(printf '%s\n' "$(basename "$UNREG")" "$(basename "$P_FILE")" "$(basename "$P_TREE")" | sort | tr '\n' ' ' | sed 's/ $//')"
grep -qx "$want" "$ni" || { echo "unregistered path: want '$want', got:" >&2; cat "$ni" >&2; exit 1; }
grep -qx "NarHash: sha256:$(nix-hash --type sha256 --base32 "$UNREG")" "$ni"
"${NIX[@]}" store verify --store "file://$OURS" --trusted-public-keys "$(cat "$TMP/pk")" \
    --sigs-needed 1 "$UNREG"
echo "cache add: ok"
