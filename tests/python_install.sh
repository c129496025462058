#!/usr/bin/env bash
# The Python binding as a user installs it: libnarcache installed with
# `cmake --install` into a prefix, `pip install bindings/python` into a
# fresh venv (offline: the package's build backend needs nothing from
# PyPI), then `import narcache` from that venv must load the *installed*
# library through the system loader (LD_LIBRARY_PATH, no NARCACHE_LIBRARY)
# and `python -m narcache --version` must name it; without LD_LIBRARY_PATH
# it must still be found through pkg-config (an install ldconfig has not
# seen yet).
# Usage: python_install.sh BUILD_DIR BINDING_DIR
set -euo pipefail
build=$1
binding=$(realpath "$2")
TMP=$(mktemp -d "${TMPDIR:-/tmp}/narcache-pyinstall.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
py=python3
[[ -x /usr/bin/python3 ]] && py=/usr/bin/python3

cmake --install "$build" --prefix "$TMP/prefix" > "$TMP/install.log"
libdir=$(dirname "$(find "$TMP/prefix" -name 'libnarcache.so.0' | head -n 1)")
[[ -e $libdir/libnarcache.so.0 ]] || { echo "no libnarcache.so.0 installed" >&2; exit 1; }

"$py" -m venv "$TMP/venv"
# A copy of the sources, so that nothing pip does can touch the checkout.
cp -r "$binding" "$TMP/src"
rm -rf "$TMP/src/tests"
"$TMP/venv/bin/pip" install --quiet --no-index --disable-pip-version-check "$TMP/src"

cd "$TMP"  # not the source tree: the import must come from site-packages
unset NARCACHE_LIBRARY PYTHONPATH
export LD_LIBRARY_PATH=$libdir
"$TMP/venv/bin/python" - "$TMP/venv" "$libdir" <<'PYEOF'
import os, sys
venv, libdir = sys.argv[1], os.path.realpath(sys.argv[2])
import narcache
assert os.path.realpath(narcache.__file__).startswith(os.path.realpath(venv)), narcache.__file__
maps = open("/proc/self/maps").read()
loaded = {line.split()[-1] for line in maps.splitlines() if "libnarcache.so" in line}
assert loaded and all(os.path.realpath(p).startswith(libdir) for p in loaded), loaded
key = narcache.SecretKey.generate("installed-1")
assert key.public_key.name == "installed-1"
print("import narcache from", narcache.__file__, "with", sorted(loaded))
PYEOF
# Installed where the loader does not look without ldconfig (as
# /usr/local/lib right after `cmake --install`): found through pkg-config.
if [[ -z $(ldconfig -p | grep 'libnarcache\.so\.0 ') ]]; then
    env -u LD_LIBRARY_PATH PKG_CONFIG_PATH="$libdir/pkgconfig" "$TMP/venv/bin/python" -c '
import os, sys, narcache
loaded = {l.split()[-1] for l in open("/proc/self/maps") if "libnarcache.so" in l}
assert loaded and all(os.path.realpath(p).startswith(sys.argv[1]) for p in loaded), loaded
print("found through pkg-config:", sorted(loaded))' "$libdir"
fi
out=$("$TMP/venv/bin/python" -m narcache --version)
[[ $out == "narcache 0.1.0 (libnarcache "* ]] || { echo "unexpected --version: $out" >&2; exit 1; }
echo "$out"
