#!/usr/bin/env bash
# The narcache key / narinfo CLI against the real Nix client (tested: Nix
# 2.8.0): keys and signatures made by one side must be accepted by the
# other, and the checks must be able to fail.
#
#  0. golden data (tests/data/narinfo, made by Nix): the CLI verifies every
#     committed signature, prints the committed fingerprints, agrees with
#     Nix on every golden/bad case and on "first trusted key of a name wins";
#  a. our `key generate` + our `narinfo sign` -> `nix store verify` accepts
#     the cache with our public key and refuses it with another key;
#  b. our secret key used by `nix copy ...?secret-key=` -> our `narinfo
#     verify` and `nix store verify` accept the result;
#  c. a Nix-made key: our verify accepts Nix's signatures, our `key public`
#     equals Nix's public key file, and our signatures are byte-identical to
#     Nix's (ed25519 is deterministic; whole narinfo files compared);
#  d. negative cases: edited NarHash, untrusted key, key files never
#     overwritten, file modes, malformed files left alone, no key material in
#     error messages.
#
# Runs as root against the local /nix/store without a daemon (NIX_REMOTE
# unset), like tests/data/narinfo/generate.sh. It adds two small store paths
# (fixed content, so re-runs reuse them) and writes nothing else outside its
# temp dir.
# Usage: narinfo_cli_nix.sh NARCACHE_CLI
set -euo pipefail

cli=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
data=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/data/narinfo

unset NIX_REMOTE
TMP=$(mktemp -d "${TMPDIR:-/tmp}/narinfo-cli-nix.XXXXXX")
cleanup() { chmod -R u+w "$TMP" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
export XDG_CACHE_HOME=$TMP/xdg-cache
mkdir -p "$XDG_CACHE_HOME"

NIX=(nix --extra-experimental-features nix-command)
# No daemon, no sandbox, no build users, never talk to cache.nixos.org.
NIXOPTS=(--option sandbox false --option build-users-group '' --option substituters '')
VERIFY=("${NIX[@]}" store verify)

fail() { echo "FAIL: $*" >&2; exit 1; }
section() { printf '\n== %s\n' "$*"; }

# expect LABEL STATUS CMD... : run CMD, require exit status STATUS (a number
# or "nonzero"); its stdout/stderr are left in $TMP/out and $TMP/err.
expect() {
    local label=$1 want=$2 rc=0
    shift 2
    "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
    case $want in
        nonzero) [[ $rc != 0 ]] ;;
        *) [[ $rc == "$want" ]] ;;
    esac || {
        sed 's/^/  | /' "$TMP/out" "$TMP/err" >&2
        fail "$label: exit $rc, expected $want"
    }
    printf '  exit %-3s (want %-7s) %s\n' "$rc" "$want" "$label"
}
# out_has TEXT / err_has TEXT / err_lacks TEXT : grep -F in the last output
out_has() { grep -qF -- "$1" "$TMP/out" || { cat "$TMP/out" >&2; fail "stdout lacks '$1'"; }; }
err_has() { grep -qF -- "$1" "$TMP/err" || { cat "$TMP/err" >&2; fail "stderr lacks '$1'"; }; }
err_lacks() { ! grep -qF -- "$1" "$TMP/err" || fail "stderr shows '$1'"; }
same() { [[ "$1" == "$2" ]] || fail "$3: '$1' != '$2'"; }
mode_of() { stat -c %a "$1"; }
strip_sigs() { sed -i '/^Sig: /d' "$@"; }

PK1=$(cat "$data/keys/test-cache-1.pub")
PK2=$(cat "$data/keys/other-cache-2.pub")

# ----------------------------------------------------------------------------
section "0. committed golden data (made by Nix 2.8)"
shopt -s nullglob
golden_none=("$data"/golden/none/*.narinfo)
golden_multi=("$data"/golden/multisig/*.narinfo)
[[ ${#golden_none[@]} -ge 9 && ${#golden_multi[@]} -ge 9 ]] || fail "golden narinfos missing"
expect "verify golden/none, test-cache-1" 0 "$cli" narinfo verify --trusted-key "$PK1" "${golden_none[@]}"
[[ $(grep -c ': ok (test-cache-1)$' "$TMP/out") == "${#golden_none[@]}" ]] || fail "not all ok"
expect "verify golden/multisig, test-cache-1" 0 "$cli" narinfo verify --trusted-key "$PK1" "${golden_multi[@]}"
expect "verify golden/multisig, other-cache-2 (key file)" 0 \
    "$cli" narinfo verify --trusted-key-file "$data/keys/other-cache-2.pub" "${golden_multi[@]}"
[[ $(grep -c ': ok (other-cache-2)$' "$TMP/out") == "${#golden_multi[@]}" ]] || fail "not all ok"
expect "verify golden/none, only other-cache-2 trusted" 1 \
    "$cli" narinfo verify --trusted-key "$PK2" "${golden_none[@]}"
out_has "no signature by a trusted key"

for f in "${golden_none[@]}"; do
    want=$(awk -F'\t' -v n="none/${f##*/}" '$1 == n { print $2; exit }' "$data/fingerprints.tsv")
    [[ -n $want ]] || fail "no fingerprint row for ${f##*/}"
    same "$("$cli" narinfo fingerprint "$f")" "$want" "fingerprint of ${f##*/}"
done
echo "  fingerprints of ${#golden_none[@]} narinfos equal fingerprints.tsv"

# golden/bad: Nix refuses all but sig-good-plus-corrupt (see nix-verify.txt)
for f in "$data"/golden/bad/*.narinfo; do
    case ${f##*/} in
        sig-good-plus-corrupt.narinfo) want=0 ;;
        *) want=1 ;;
    esac
    expect "golden/bad/${f##*/}" "$want" "$cli" narinfo verify --trusted-key "$PK1" "$f"
done

# First trusted key of a name wins, in Nix and in narcache: a fake
# "test-cache-1" key (other-cache-2's bytes) listed first hides the real one.
FAKE1="test-cache-1:${PK2#other-cache-2:}"
REF=$data/golden/none/dyfyrpszi87hixnk6as80dh2j3vy31yh.narinfo   # ref-demo (no CA)
expect "narcache: fake test-cache-1 first" 1 \
    "$cli" narinfo verify --trusted-key "$FAKE1" --trusted-key "$PK1" "$REF"
out_has "bad signature (test-cache-1)"
expect "narcache: real test-cache-1 first" 0 \
    "$cli" narinfo verify --trusted-key "$PK1" --trusted-key "$FAKE1" "$REF"
cp -r "$data/caches/none" "$TMP/golden-cache"
chmod -R u+w "$TMP/golden-cache"
REF_PATH=/nix/store/dyfyrpszi87hixnk6as80dh2j3vy31yh-ref-demo
expect "nix: fake test-cache-1 first" nonzero "${VERIFY[@]}" --store "file://$TMP/golden-cache" \
    --trusted-public-keys "$FAKE1 $PK1" --sigs-needed 1 "$REF_PATH"
expect "nix: real test-cache-1 first" 0 "${VERIFY[@]}" --store "file://$TMP/golden-cache" \
    --trusted-public-keys "$PK1 $FAKE1" --sigs-needed 1 "$REF_PATH"

# Stripped golden narinfos re-signed by narcache with the committed keys are
# byte-identical to what Nix wrote.
mkdir "$TMP/resign-none" "$TMP/resign-multi"
cp "${golden_none[@]}" "$TMP/resign-none/"
cp "${golden_multi[@]}" "$TMP/resign-multi/"
strip_sigs "$TMP"/resign-none/*.narinfo "$TMP"/resign-multi/*.narinfo
expect "re-sign golden/none" 0 "$cli" narinfo sign --key-file "$data/keys/test-cache-1.sec" \
    "$TMP"/resign-none/*.narinfo
expect "re-sign golden/multisig (2 keys)" 0 "$cli" narinfo sign \
    --key-file "$data/keys/test-cache-1.sec" --key-file "$data/keys/other-cache-2.sec" \
    "$TMP"/resign-multi/*.narinfo
for f in "${golden_none[@]}"; do cmp "$f" "$TMP/resign-none/${f##*/}"; done
for f in "${golden_multi[@]}"; do cmp "$f" "$TMP/resign-multi/${f##*/}"; done
echo "  re-signed files are byte-identical to Nix's (none + multisig)"

# ----------------------------------------------------------------------------
section "a. narcache key + narcache sign -> nix store verify"
expect "key generate" 0 "$cli" key generate narcache-test-1 "$TMP/our.sec" "$TMP/our.pub"
same "$(mode_of "$TMP/our.sec")" 600 "secret key file mode"
[[ $(wc -l <"$TMP/our.sec") == 0 && $(wc -l <"$TMP/our.pub") == 0 ]] ||
    fail "key files must not end in a newline (Nix's format)"
[[ $(cat "$TMP/our.pub") == narcache-test-1:* && $(cat "$TMP/our.sec") == narcache-test-1:* ]] ||
    fail "key files must start with the key name"
OURPK=$(cat "$TMP/our.pub")
same "$("${NIX[@]}" key convert-secret-to-public <"$TMP/our.sec")" "$OURPK" \
    "nix key convert-secret-to-public of our secret key"
expect "key public" 0 "$cli" key public "$TMP/our.sec"
same "$(cat "$TMP/out")" "$OURPK" "narcache key public"
nix-store --generate-binary-cache-key nixkey-1 "$TMP/nix.sec" "$TMP/nix.pub"
NIXPK=$(cat "$TMP/nix.pub")

C=$TMP/cache
cp -r "$data/caches/none" "$C"
chmod -R u+w "$C"
strip_sigs "$C"/*.narinfo
! grep -q '^Sig:' "$C"/*.narinfo || fail "Sig lines left"

# The input-addressed paths (no CA line) are the ones whose acceptance
# depends on a signature; Nix accepts CA paths unsigned.
ia=()
while IFS=$'\t' read -r role path; do
    [[ $role == \#* ]] && continue
    ni=$C/$(basename "$path" | cut -c1-32).narinfo
    [[ -f $ni ]] || fail "$role: $ni missing from the cache"
    grep -q '^CA: ' "$ni" || ia+=("$path")
done <"$data/paths.tsv"
[[ ${#ia[@]} -ge 4 ]] || fail "expected the 4 input-addressed paths of paths.tsv, got ${#ia[@]}"
echo "  input-addressed paths in the cache: ${#ia[@]}"

expect "nix: unsigned cache, our key trusted" nonzero "${VERIFY[@]}" --store "file://$C" \
    --trusted-public-keys "$OURPK" --sigs-needed 1 --all
chmod 0640 "$C/dyfyrpszi87hixnk6as80dh2j3vy31yh.narinfo"
expect "narcache sign --key-file our.sec (all narinfos)" 0 \
    "$cli" narinfo sign --key-file "$TMP/our.sec" "$C"/*.narinfo
same "$(mode_of "$C/dyfyrpszi87hixnk6as80dh2j3vy31yh.narinfo")" 640 "mode kept by sign"
for f in "$C"/*.narinfo; do
    if [[ $(grep -c '^Sig: ' "$f") != 1 ]] || ! grep -q '^Sig: narcache-test-1:' "$f"; then
        fail "${f##*/}: expected exactly one Sig by narcache-test-1"
    fi
done
expect "nix store verify --all, our key trusted" 0 "${VERIFY[@]}" --store "file://$C" \
    --trusted-public-keys "$OURPK" --sigs-needed 1 --all
expect "nix store verify --all, Nix-made key trusted instead" nonzero "${VERIFY[@]}" \
    --store "file://$C" --trusted-public-keys "$NIXPK" --sigs-needed 1 --all
for p in "${ia[@]}"; do
    expect "nix: ${p#/nix/store/*-}, our key" 0 "${VERIFY[@]}" --store "file://$C" \
        --trusted-public-keys "$OURPK" --sigs-needed 1 "$p"
    expect "nix: ${p#/nix/store/*-}, wrong key" nonzero "${VERIFY[@]}" --store "file://$C" \
        --trusted-public-keys "$NIXPK" --sigs-needed 1 "$p"
done
expect "narcache verify of the signed cache" 0 \
    "$cli" narinfo verify --trusted-key-file "$TMP/our.pub" "$C"/*.narinfo

# ----------------------------------------------------------------------------
section "b. our secret key used by nix copy"
SRC=$TMP/src
mkdir -p "$SRC"
printf 'narcache narinfo CLI test input\n' >"$SRC/narcache-cli-input"
P_ADD=$(nix-store "${NIXOPTS[@]}" --add "$SRC/narcache-cli-input")
# input-addressed, refers to P_ADD and to itself
cat >"$SRC/default.nix" <<'EOF'
derivation {
  name = "narcache-cli-demo";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo ${./narcache-cli-input} > $out; echo $out >> $out" ];
}
EOF
P_IA=$(nix-build "${NIXOPTS[@]}" --no-out-link "$SRC/default.nix" 2>"$TMP/build.log") || {
    cat "$TMP/build.log" >&2; fail "nix-build"; }
echo "  store paths: $P_ADD $P_IA"
hash_of() { basename "$1" | cut -c1-32; }
C2=$TMP/c2
"${NIX[@]}" copy "${NIXOPTS[@]}" --to "file://$C2?compression=none&secret-key=$TMP/our.sec" "$P_IA" \
    2>"$TMP/copy.log" || { cat "$TMP/copy.log" >&2; fail "nix copy"; }
IA_NI=$C2/$(hash_of "$P_IA").narinfo
ADD_NI=$C2/$(hash_of "$P_ADD").narinfo
[[ -f $IA_NI && -f $ADD_NI ]] || fail "nix copy wrote no narinfo"
grep -q '^CA: ' "$IA_NI" && fail "$P_IA should be input-addressed"
grep -q "^References: .*$(basename "$P_ADD")" "$IA_NI" || fail "$P_IA should refer to $P_ADD"
expect "narcache verify of Nix's upload, our key" 0 \
    "$cli" narinfo verify --trusted-key "$OURPK" "$IA_NI" "$ADD_NI"
out_has "$IA_NI: ok (narcache-test-1)"
expect "nix store verify --all of the upload, our key" 0 "${VERIFY[@]}" --store "file://$C2" \
    --trusted-public-keys "$OURPK" --sigs-needed 1 --all
expect "nix store verify of the input-addressed path, wrong key" nonzero "${VERIFY[@]}" \
    --store "file://$C2" --trusted-public-keys "$NIXPK" --sigs-needed 1 "$P_IA"
mkdir "$TMP/c2-resigned"
cp "$C2"/*.narinfo "$TMP/c2-resigned/"
strip_sigs "$TMP"/c2-resigned/*.narinfo
expect "narcache sign of the stripped upload, our key" 0 \
    "$cli" narinfo sign --key-file "$TMP/our.sec" "$TMP"/c2-resigned/*.narinfo
for f in "$C2"/*.narinfo; do cmp "$f" "$TMP/c2-resigned/${f##*/}"; done
echo "  Nix's and narcache's signatures with our key are byte-identical"

# ----------------------------------------------------------------------------
section "c. Nix-made key in narcache"
expect "narcache key public of Nix's secret key" 0 "$cli" key public "$TMP/nix.sec"
same "$(cat "$TMP/out")" "$NIXPK" "narcache key public vs nix-store's public key file"
C3=$TMP/c3
"${NIX[@]}" copy "${NIXOPTS[@]}" --to "file://$C3?compression=none&secret-key=$TMP/nix.sec" "$P_IA" \
    2>"$TMP/copy.log" || { cat "$TMP/copy.log" >&2; fail "nix copy"; }
expect "narcache verify of Nix's upload, Nix's key" 0 \
    "$cli" narinfo verify --trusted-key "$NIXPK" "$C3"/*.narinfo
out_has ": ok (nixkey-1)"
expect "narcache verify of Nix's upload, our key only" 1 \
    "$cli" narinfo verify --trusted-key "$OURPK" "$C3/$(hash_of "$P_IA").narinfo"
mkdir "$TMP/c3-resigned"
cp "$C3"/*.narinfo "$TMP/c3-resigned/"
strip_sigs "$TMP"/c3-resigned/*.narinfo
expect "narcache sign with Nix's secret key" 0 \
    "$cli" narinfo sign --key-file "$TMP/nix.sec" "$TMP"/c3-resigned/*.narinfo
for f in "$C3"/*.narinfo; do
    same "$(grep '^Sig: ' "$TMP/c3-resigned/${f##*/}")" "$(grep '^Sig: ' "$f")" "Sig of ${f##*/}"
    cmp "$f" "$TMP/c3-resigned/${f##*/}"
done
echo "  Sig lines (and whole files) byte-identical to Nix's"

# ----------------------------------------------------------------------------
section "d. negative checks"
cp "$IA_NI" "$TMP/narhash-edited.narinfo"
OTHER_HASH=$(sed -n 's/^NarHash: //p' "$ADD_NI")
sed -i "s#^NarHash: .*#NarHash: $OTHER_HASH#" "$TMP/narhash-edited.narinfo"
cmp -s "$IA_NI" "$TMP/narhash-edited.narinfo" && fail "NarHash edit did nothing"
expect "verify, NarHash edited" 1 "$cli" narinfo verify --trusted-key "$OURPK" "$TMP/narhash-edited.narinfo"
out_has "bad signature (narcache-test-1)"
cp -r "$C2" "$TMP/c2-edited"
cp "$TMP/narhash-edited.narinfo" "$TMP/c2-edited/${IA_NI##*/}"
expect "nix store verify, NarHash edited" nonzero "${VERIFY[@]}" --store "file://$TMP/c2-edited" \
    --trusted-public-keys "$OURPK" --sigs-needed 1 "$P_IA"
expect "verify, untrusted key only" 1 "$cli" narinfo verify --trusted-key "$NIXPK" "$IA_NI"
out_has "no signature by a trusted key"
expect "verify, one good and one edited file" 1 \
    "$cli" narinfo verify --trusted-key "$OURPK" "$IA_NI" "$TMP/narhash-edited.narinfo"
out_has "$IA_NI: ok (narcache-test-1)"

# key files are never overwritten
sum_sec=$(sha256sum <"$TMP/our.sec")
sum_pub=$(sha256sum <"$TMP/our.pub")
expect "key generate onto an existing secret key file" 1 \
    "$cli" key generate clobber-1 "$TMP/our.sec" "$TMP/new.pub"
err_has "already exists"
[[ ! -e $TMP/new.pub ]] || fail "public key file created although the secret one exists"
expect "key generate onto an existing public key file" 1 \
    "$cli" key generate clobber-1 "$TMP/new.sec" "$TMP/our.pub"
[[ ! -e $TMP/new.sec ]] || fail "secret key file left behind"
ln -s "$TMP/nowhere" "$TMP/dangling.sec"
expect "key generate onto a dangling symlink" 1 \
    "$cli" key generate clobber-1 "$TMP/dangling.sec" "$TMP/new.pub"
[[ ! -e $TMP/nowhere && ! -e $TMP/new.pub ]] || fail "followed a dangling symlink"
same "$(sha256sum <"$TMP/our.sec")" "$sum_sec" "existing secret key file changed"
same "$(sha256sum <"$TMP/our.pub")" "$sum_pub" "existing public key file changed"
expect "key generate, public key in a missing directory" 1 \
    "$cli" key generate half-1 "$TMP/half.sec" "$TMP/no-such-dir/half.pub"
[[ ! -e $TMP/half.sec ]] || fail "secret key file kept although the public one failed"
[[ -z $(find "$TMP" -maxdepth 2 -name '.narcache-tmp-*') ]] || fail "temp files left behind"

# a key name that cannot appear in a Sig line is refused
expect "key generate with a space in the name" 2 "$cli" key generate 'bad name' "$TMP/bn.sec" "$TMP/bn.pub"
[[ ! -e $TMP/bn.sec && ! -e $TMP/bn.pub ]] || fail "key files created for a bad name"

# modes: secret 0600 whatever the umask; public 0644 less the umask
(umask 000 && "$cli" key generate mode-1 "$TMP/m0.sec" "$TMP/m0.pub")
same "$(mode_of "$TMP/m0.sec") $(mode_of "$TMP/m0.pub")" "600 644" "modes under umask 000"
(umask 077 && "$cli" key generate mode-2 "$TMP/m7.sec" "$TMP/m7.pub")
same "$(mode_of "$TMP/m7.sec") $(mode_of "$TMP/m7.pub")" "600 600" "modes under umask 077"
echo "  key file modes ok"

# key files: wrong kind, too large, corrupt -- and no key text in messages
OURSEC_B64=$(cut -d: -f2- "$TMP/our.sec")
expect "key public of a public key file" 1 "$cli" key public "$TMP/our.pub"
{ cat "$TMP/our.sec"; head -c 5000 /dev/zero | tr '\0' '\n'; } >"$TMP/big.sec"
expect "key public of a 5 KB key file" 1 "$cli" key public "$TMP/big.sec"
err_has "larger than 4096 bytes"
err_lacks "${OURSEC_B64:0:12}"
{ head -c 60 "$TMP/our.sec"; printf '!'; tail -c +62 "$TMP/our.sec"; } >"$TMP/corrupt.sec"
expect "key public of a corrupt secret key" 1 "$cli" key public "$TMP/corrupt.sec"
err_has "byte 60"
err_lacks "${OURSEC_B64:0:12}"
err_lacks "${OURSEC_B64:50:12}"
expect "sign with a corrupt secret key" 1 "$cli" narinfo sign --key-file "$TMP/corrupt.sec" "$IA_NI"
err_lacks "${OURSEC_B64:0:12}"
expect "verify with a secret key given as --trusted-key" 2 \
    "$cli" narinfo verify --trusted-key "$(cat "$TMP/our.sec")" "$IA_NI"
err_lacks "${OURSEC_B64:0:12}"

# sign: a malformed file is reported and left alone, the others are signed
mkdir "$TMP/mixed"
printf 'StorePath: /nix/store/oops\n' >"$TMP/mixed/a-broken.narinfo"
cp "$TMP/mixed/a-broken.narinfo" "$TMP/broken.orig"
cp "$C3/$(hash_of "$P_IA").narinfo" "$TMP/mixed/b.narinfo"
expect "sign: malformed file among good ones" 1 \
    "$cli" narinfo sign --key-file "$TMP/our.sec" "$TMP/mixed/a-broken.narinfo" "$TMP/mixed/b.narinfo"
err_has "a-broken.narinfo: "
cmp "$TMP/broken.orig" "$TMP/mixed/a-broken.narinfo"
expect "the good file got both signatures" 0 "$cli" narinfo verify --trusted-key "$OURPK" \
    "$TMP/mixed/b.narinfo"
expect "  ... and kept Nix's" 0 "$cli" narinfo verify --trusted-key "$NIXPK" "$TMP/mixed/b.narinfo"
[[ $(grep -c '^Sig: ' "$TMP/mixed/b.narinfo") == 2 ]] || fail "expected two Sig lines"
ln -s b.narinfo "$TMP/mixed/link.narinfo"
expect "sign through a symlink" 0 \
    "$cli" narinfo sign --key-file "$data/keys/test-cache-1.sec" "$TMP/mixed/link.narinfo"
[[ -L $TMP/mixed/link.narinfo && $(grep -c '^Sig: ' "$TMP/mixed/b.narinfo") == 3 ]] ||
    fail "signing through a symlink must update its target and keep the link"
expect "verify of a malformed narinfo" 1 "$cli" narinfo verify --trusted-key "$OURPK" \
    "$TMP/mixed/a-broken.narinfo"
out_has "a-broken.narinfo: malformed narinfo: "
expect "bad usage: verify without a trusted key" 2 "$cli" narinfo verify "$IA_NI"
expect "bad usage: sign without a key" 2 "$cli" narinfo sign "$IA_NI"

printf '\nall narinfo CLI / Nix checks passed\n'
