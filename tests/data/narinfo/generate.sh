#!/usr/bin/env bash
# Generate golden narinfo / signature test data from REAL Nix (tested: Nix 2.8.0).
#
# Writes only into the directory containing this script plus a temp dir that
# is removed on exit. Needs no network and no nix-daemon (runs as root
# against the local /nix/store with NIX_REMOTE unset).
#
# Usage: tests/data/narinfo/generate.sh [--new-keys]
#   --new-keys  regenerate keys/ (otherwise existing keys are reused, so a
#               re-run reproduces every file byte for byte).
#
# NOTE: signatures added with `nix store sign` live in the local Nix DB and
# persist. If keys are regenerated, old test-cache-1 signatures stay attached
# to the store paths and would leak into the caches; the self-check below
# detects that (every Sig must verify) and aborts.
set -euo pipefail

OUT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NEW_KEYS=0
[[ "${1:-}" == "--new-keys" ]] && NEW_KEYS=1

unset NIX_REMOTE
TMP="$(mktemp -d "${TMPDIR:-/tmp}/narinfo-gen.XXXXXX")"
cleanup() { chmod -R u+w "$TMP" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
# Fresh client-side narinfo/sqlite cache (~/.cache/nix/binary-cache-v6.sqlite).
export XDG_CACHE_HOME="$TMP/xdg-cache"
mkdir -p "$XDG_CACHE_HOME"

NIX=(nix --extra-experimental-features nix-command)
# No daemon, no sandbox, no build users, never talk to cache.nixos.org.
NIXOPTS=(--option sandbox false --option build-users-group '' --option substituters '')

log() { printf '== %s\n' "$*" >&2; }

# ---------------------------------------------------------------- 1. keys
mkdir -p "$OUT/keys"
for k in test-cache-1 other-cache-2; do
    if [[ $NEW_KEYS == 1 || ! -s "$OUT/keys/$k.sec" || ! -s "$OUT/keys/$k.pub" ]]; then
        log "generating key $k"
        rm -f "$OUT/keys/$k.sec" "$OUT/keys/$k.pub"
        nix-store --generate-binary-cache-key "$k" "$OUT/keys/$k.sec" "$OUT/keys/$k.pub"
    fi
done
SK1="$OUT/keys/test-cache-1.sec"; PK1="$(cat "$OUT/keys/test-cache-1.pub")"
SK2="$OUT/keys/other-cache-2.sec"; PK2="$(cat "$OUT/keys/other-cache-2.pub")"

# ---------------------------------------------------------- 2. store paths
SRC="$TMP/src"
mkdir -p "$SRC/tree/sub" "$SRC/flat"
printf 'hello' > "$SRC/f1"                      # same content as spec §3.1 f1
printf 'hello' > "$SRC/flat/f1"
printf 'file a\n' > "$SRC/tree/a.txt"
printf 'file b\n' > "$SRC/tree/sub/b.txt"
printf '#!/bin/sh\necho hi\n' > "$SRC/tree/exe.sh"
chmod 0755 "$SRC/tree/exe.sh"
ln -s a.txt "$SRC/tree/link"

log "adding content-addressed paths"
P_F1="$(nix-store --add "$SRC/f1")"                       # CA fixed:r:sha256 (file)
P_TREE="$(nix-store --add "$SRC/tree")"                   # CA fixed:r:sha256 (dir)
P_FLAT="$(nix-store --add-fixed sha256 "$SRC/flat/f1")"   # CA fixed:sha256 (flat)

# The expression lives in derivations.nix (committed); it refers to ./f1
# and ./tree, so it is evaluated from inside $SRC.
cp "$OUT/derivations.nix" "$SRC/default.nix"
log "building derivations"
declare -A P
for a in t1 tref; do   # toFile yields a string, not a derivation: evaluate it
    P[$a]="$(nix-instantiate "${NIXOPTS[@]}" --eval --read-write-mode --json "$SRC/default.nix" -A "$a" | tr -d '"')"
    [[ -e "${P[$a]}" ]]
done
for a in noref ref self dep; do
    P[$a]="$(nix-build "${NIXOPTS[@]}" --no-out-link "$SRC/default.nix" -A "$a" 2>"$TMP/build-$a.log")" || {
        cat "$TMP/build-$a.log" >&2; exit 1; }
done
PATHS=("$P_F1" "$P_TREE" "$P_FLAT" "${P[t1]}" "${P[tref]}" "${P[noref]}" "${P[ref]}" "${P[self]}" "${P[dep]}")

# ------------------------------------------------- 3. sign + copy to caches
log "signing in local store with test-cache-1"
"${NIX[@]}" store sign --key-file "$SK1" "${PATHS[@]}"

C="$TMP/caches"
mkdir -p "$C"
# none: uncompressed, signed by test-cache-1 (sig from DB + secret-key, identical)
"${NIX[@]}" copy "${NIXOPTS[@]}" --to "file://$C/none?compression=none&secret-key=$SK1" "${PATHS[@]}"
# xz: default compression (xz), same signatures
"${NIX[@]}" copy "${NIXOPTS[@]}" --to "file://$C/xz?secret-key=$SK1" "${PATHS[@]}"
# multisig: uncompressed, test-cache-1 (from DB) + other-cache-2 (added at upload)
"${NIX[@]}" copy "${NIXOPTS[@]}" --to "file://$C/multisig?compression=none&secret-key=$SK2" "${PATHS[@]}"

log "collecting golden files"
rm -rf "$OUT/golden" "$OUT/caches"
for c in none xz multisig; do
    mkdir -p "$OUT/golden/$c"
    cp "$C/$c"/*.narinfo "$C/$c/nix-cache-info" "$OUT/golden/$c/"
done
# Full uncompressed cache (narinfos + NARs) so C tests can re-verify NarHash.
mkdir -p "$OUT/caches"
cp -r "$C/none" "$OUT/caches/none"
chmod -R u+w,go+r "$OUT/golden" "$OUT/caches"

# map of store paths used
{
    printf '# role\tstore path\n'
    printf 'f1 (nix-store --add, CA fixed:r)\t%s\n' "$P_F1"
    printf 'tree (nix-store --add dir, CA fixed:r)\t%s\n' "$P_TREE"
    printf 'f1-flat (nix-store --add-fixed sha256, CA fixed flat)\t%s\n' "$P_FLAT"
    printf 't1 (builtins.toFile, CA text, no refs)\t%s\n' "${P[t1]}"
    printf 't-ref (builtins.toFile, CA text, ref f1)\t%s\n' "${P[tref]}"
    printf 'noref-demo (derivation, no refs)\t%s\n' "${P[noref]}"
    printf 'ref-demo (derivation, refs f1 + self)\t%s\n' "${P[ref]}"
    printf 'self-demo (derivation, self ref only)\t%s\n' "${P[self]}"
    printf 'dep-demo (derivation dir, refs tree + noref-demo)\t%s\n' "${P[dep]}"
} > "$OUT/paths.tsv"

# ------------------------------- 4. fingerprints + independent verification
log "computing fingerprints and verifying signatures with python cryptography"
python3 - "$OUT" "$PK1" "$PK2" <<'PY'
import base64, os, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
out, pks = sys.argv[1], sys.argv[2:]
keys = {}
for pk in pks:
    name, b = pk.split(':', 1)
    keys[name] = Ed25519PublicKey.from_public_key_bytes(base64.b64decode(b)) \
        if hasattr(Ed25519PublicKey, 'from_public_key_bytes') else \
        Ed25519PublicKey.from_public_bytes(base64.b64decode(b))
rows = ["# narinfo\tfingerprint\tsig\n"]
n = 0
for cache in ("none", "xz", "multisig"):
    d = os.path.join(out, "golden", cache)
    for fn in sorted(f for f in os.listdir(d) if f.endswith(".narinfo")):
        raw = open(os.path.join(d, fn), "rb").read().decode()
        assert raw.endswith("\n") and "\r" not in raw and "\n\n" not in raw, fn
        f, sigs = {}, []
        for line in raw[:-1].split("\n"):
            k, v = line.split(": ", 1) if ": " in line else (line.rstrip(":"), "")
            if k == "Sig": sigs.append(v)
            else: f[k] = v
        sp = f["StorePath"]; sd = os.path.dirname(sp)
        assert f["NarHash"].startswith("sha256:") and len(f["NarHash"]) == 7 + 52
        refs = sorted(sd + "/" + r for r in f.get("References", "").split(" ") if r)
        fp = "1;%s;%s;%s;%s" % (sp, f["NarHash"], f["NarSize"], ",".join(refs))
        assert sigs, fn
        for s in sigs:
            name, b = s.split(":", 1)
            assert name in keys, "unexpected key %r in %s/%s" % (name, cache, fn)
            keys[name].verify(base64.b64decode(b), fp.encode())  # raises if bad
            rows.append("%s/%s\t%s\t%s\n" % (cache, fn, fp, s)); n += 1
open(os.path.join(out, "fingerprints.tsv"), "w").write("".join(rows))
print("verified %d signatures" % n, file=sys.stderr)
PY

# -------------------------- 5. verification with the real Nix client
log "verifying caches with nix store verify"
V="$OUT/nix-verify.txt"
REF_HASH="$(basename "${P[ref]}" | cut -d- -f1)"
REF_NI="$REF_HASH.narinfo"

# run LABEL EXPECT CMD... : run in a fresh XDG_CACHE_HOME, record cmd/exit/output
run() {
    local label="$1" expect="$2"; shift 2
    local xdg rc=0
    xdg="$(mktemp -d "$TMP/xdg.XXXXXX")"
    XDG_CACHE_HOME="$xdg" "$@" >"$TMP/run.raw" 2>&1 || rc=$?
    # verify checks paths in parallel: with --all the line order varies, so sort
    if [[ " $* " == *" --all "* ]]; then LC_ALL=C sort "$TMP/run.raw"; else cat "$TMP/run.raw"; fi >"$TMP/run.out"
    {
        printf -- '--- %s\n' "$label"
        printf '$'; printf ' %q' "$@" | sed -e "s#$TMP#\$TMP#g" -e "s#$OUT#tests/data/narinfo#g"; printf '\n'
        sed -e "s#$TMP#\$TMP#g" -e 's/^/  | /' "$TMP/run.out"
        printf 'exit code: %d (expected %s)\n\n' "$rc" "$expect"
    } >> "$V"
    case "$expect" in
        0) [[ $rc == 0 ]] ;;
        nonzero) [[ $rc != 0 ]] ;;
    esac || { echo "UNEXPECTED exit $rc for: $label" >&2; cat "$TMP/run.out" >&2; exit 1; }
}
mk_bad() {  # mk_bad NAME SEDEXPR : copy of cache none with ref-demo narinfo edited
    rm -rf "$C/$1"; cp -r "$C/none" "$C/$1"
    sed -i -e "$2" "$C/$1/$REF_NI"
    mkdir -p "$OUT/golden/bad"; cp "$C/$1/$REF_NI" "$OUT/golden/bad/$1.narinfo"
}

SIG1="$(sed -n 's/^Sig: //p' "$C/none/$REF_NI")"
# signature over the same fingerprint, but made by other-cache-2
SIG2="$(sed -n 's/^Sig: \(other-cache-2:.*\)/\1/p' "$C/multisig/$REF_NI")"
# corrupt one base64 char (flip the 10th char of the signature payload)
SIG1B64="${SIG1#test-cache-1:}"; c="${SIG1B64:9:1}"; [[ $c == A ]] && r=B || r=A
SIG1CORRUPT="test-cache-1:${SIG1B64:0:9}$r${SIG1B64:10}"

mk_bad sig-other-key        "s#^Sig: .*#Sig: $SIG2#"
mk_bad sig-other-key-relabeled "s#^Sig: .*#Sig: test-cache-1:${SIG2#other-cache-2:}#"
mk_bad sig-corrupt-char     "s#^Sig: .*#Sig: $SIG1CORRUPT#"
mk_bad sig-missing          "/^Sig: /d"
mk_bad narsize-changed      's/^NarSize: \([0-9]*\)/NarSize: 1\1/'
mk_bad references-changed   "s#^References: .*#References: $REF_HASH-ref-demo#"
NH_F1="$(sed -n 's/^NarHash: //p' "$C/none/$(basename "$P_F1" | cut -d- -f1).narinfo")"
mk_bad narhash-changed      "s#^NarHash: .*#NarHash: $NH_F1#"
mk_bad sig-good-plus-corrupt "s#^Sig: .*#Sig: $SIG1CORRUPT\nSig: $SIG1#"
mk_bad sig-truncated        "s#^Sig: .*#Sig: ${SIG1:0:60}#"
# NAR file corrupted (narinfo untouched): flip the last content byte of the NAR
rm -rf "$C/nar-corrupt"; cp -r "$C/none" "$C/nar-corrupt"
NARF="$C/nar-corrupt/$(sed -n 's/^URL: //p' "$C/none/$REF_NI")"
python3 - "$NARF" <<'PY'
import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read())
i = b.index(b"\n", b.index(b"/nix/store/")) ; b[i - 1] ^= 0x01  # change a char of the contents
open(p, "wb").write(bytes(b))
PY

cat > "$V" <<EOF
How to make the real Nix client (tested: $(nix --version)) verify a file:// binary cache
==========================================================================

Working command (per path or --all; both work on a file:// cache in 2.8):

  XDG_CACHE_HOME=\$(mktemp -d) \\
  nix --extra-experimental-features nix-command store verify \\
      --store file:///ABS/PATH/TO/CACHE \\
      --trusted-public-keys "\$(cat tests/data/narinfo/keys/test-cache-1.pub)" \\
      --sigs-needed 1 --all          # or: ... --sigs-needed 1 /nix/store/<hash>-<name> ...

Notes:
* --store selects the cache as the store being verified; paths are read from
  <hash>.narinfo (--all lists *.narinfo in the directory).
* --trusted-public-keys is the ordinary nix.conf setting passed as a flag; it
  REPLACES the default (cache.nixos.org-1). Several keys: space separated.
* --sigs-needed 1: at least one Sig must verify against a trusted key.
  Without --sigs-needed, verify still requires 1 valid signature unless the
  path is "ultimate" (never true for a binary cache).
* CA paths (narinfo has a CA: line whose recomputed path matches StorePath)
  count as trusted with NO valid signature, so signature failures only show
  up on input-addressed paths (ref-demo below).
* Contents are checked too (NAR fetched, decompressed, its sha256 compared
  with NarHash -> "was modified! expected hash ..."). NarSize is NOT compared
  by verify (narsize-changed only fails as "untrusted", exit 2, because the
  signature no longer matches). --no-contents checks only signatures,
  --no-trust only contents.
* Exit code: bit 1 = corrupted contents, bit 2 = untrusted (no valid sig),
  bit 4 = other failure (e.g. invalid signature format); 0 = all OK.
* --option require-sigs is irrelevant to 'nix store verify' (it governs
  substitution/copy into a store): with require-sigs false, or with the
  store URL given as file://...?trusted=true, or with no --sigs-needed,
  an unsigned input-addressed path is still reported untrusted (exit 2).
  Without --trusted-public-keys the default key (cache.nixos.org-1) is used,
  so our paths are untrusted. See transcript entries marked [flags].
* XDG_CACHE_HOME pointed at a fresh directory keeps the client's
  ~/.cache/nix/binary-cache-v6.sqlite out of the picture. Observed with 2.8:
  for a file:// store the narinfo disk cache is not used at all (no
  \$XDG_CACHE_HOME/nix directory is even created, and editing a narinfo
  between two runs sharing one XDG_CACHE_HOME is seen immediately); it matters
  for http(s):// caches, so keep setting it.
* Output of --all runs below is sorted (paths are checked in parallel, so
  the raw line order varies from run to run).
* NIX_REMOTE must be unset (no daemon); running as root on the local store.

Transcript (generated by generate.sh; \$TMP is a temp dir, caches/none is
a copy of the cache, the bad-* caches are copies of it with the ref-demo
narinfo ($REF_NI) edited as in golden/bad/<name>.narinfo):

EOF

VERIFY=("${NIX[@]}" store verify)
run "good cache, --all" 0 "${VERIFY[@]}" --store "file://$C/none" --trusted-public-keys "$PK1" --sigs-needed 1 --all
run "good cache (xz), --all" 0 "${VERIFY[@]}" --store "file://$C/xz" --trusted-public-keys "$PK1" --sigs-needed 1 --all
run "good cache, explicit path" 0 "${VERIFY[@]}" --store "file://$C/none" --trusted-public-keys "$PK1" --sigs-needed 1 "${P[ref]}"
run "multisig cache, only other-cache-2 trusted" 0 "${VERIFY[@]}" --store "file://$C/multisig" --trusted-public-keys "$PK2" --sigs-needed 1 --all
run "multisig cache, both keys trusted, --sigs-needed 2" 0 "${VERIFY[@]}" --store "file://$C/multisig" --trusted-public-keys "$PK1 $PK2" --sigs-needed 2 "${P[ref]}"
run "good cache but only other-cache-2 trusted (wrong key)" nonzero "${VERIFY[@]}" --store "file://$C/none" --trusted-public-keys "$PK2" --sigs-needed 1 "${P[ref]}"
run "good cache, CA path f1, wrong key trusted (CA => still OK)" 0 "${VERIFY[@]}" --store "file://$C/none" --trusted-public-keys "$PK2" --sigs-needed 1 "$P_F1"
for b in sig-other-key sig-other-key-relabeled sig-corrupt-char sig-missing narsize-changed references-changed; do
    run "bad: $b" nonzero "${VERIFY[@]}" --store "file://$C/$b" --trusted-public-keys "$PK1" --sigs-needed 1 "${P[ref]}"
    run "bad: $b, --all" nonzero "${VERIFY[@]}" --store "file://$C/$b" --trusted-public-keys "$PK1" --sigs-needed 1 --all
done
run "bad: narhash-changed (untrusted + corrupted)" nonzero "${VERIFY[@]}" --store "file://$C/narhash-changed" --trusted-public-keys "$PK1" --sigs-needed 1 "${P[ref]}"
run "one corrupt + one good test-cache-1 Sig (=> OK)" 0 "${VERIFY[@]}" --store "file://$C/sig-good-plus-corrupt" --trusted-public-keys "$PK1" --sigs-needed 1 "${P[ref]}"
run "bad: sig-truncated (known key, sig length != 64)" nonzero "${VERIFY[@]}" --store "file://$C/sig-truncated" --trusted-public-keys "$PK1" --sigs-needed 1 "${P[ref]}"
run "bad: NAR file contents corrupted, narinfo intact" nonzero "${VERIFY[@]}" --store "file://$C/nar-corrupt" --trusted-public-keys "$PK1" --sigs-needed 1 "${P[ref]}"
run "[flags] sig-missing, --option require-sigs false (still untrusted)" nonzero "${VERIFY[@]}" --option require-sigs false --store "file://$C/sig-missing" --trusted-public-keys "$PK1" --sigs-needed 1 "${P[ref]}"
run "[flags] sig-missing, no --sigs-needed (still untrusted)" nonzero "${VERIFY[@]}" --store "file://$C/sig-missing" --trusted-public-keys "$PK1" "${P[ref]}"
run "[flags] sig-missing, ?trusted=true store param (still untrusted)" nonzero "${VERIFY[@]}" --store "file://$C/sig-missing?trusted=true" --trusted-public-keys "$PK1" --sigs-needed 1 "${P[ref]}"
run "[flags] good cache, no --trusted-public-keys (default key only => untrusted)" nonzero "${VERIFY[@]}" --store "file://$C/none" "${P[ref]}"
run "bad: narsize-changed, --no-contents (signature check only)" nonzero "${VERIFY[@]}" --store "file://$C/narsize-changed" --trusted-public-keys "$PK1" --sigs-needed 1 --no-contents "${P[ref]}"
run "bad: sig-corrupt-char, --no-trust (contents only => OK)" 0 "${VERIFY[@]}" --store "file://$C/sig-corrupt-char" --trusted-public-keys "$PK1" --sigs-needed 1 --no-trust "${P[ref]}"

log "done: $(find "$OUT" -type f | wc -l) files in $OUT"
