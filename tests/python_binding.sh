#!/usr/bin/env bash
# The Python binding's pytest suite against the library just built
# (NARCACHE_LIBRARY), with a Python that has pytest (Debian's
# python3-pytest: /usr/bin/python3 when another python3 comes first).
# Usage: python_binding.sh LIBNARCACHE_SO BINDING_DIR [PYTEST ARGS...]
set -euo pipefail
lib=$(realpath "$1")
dir=$(realpath "$2")
shift 2
py=
for candidate in python3 /usr/bin/python3; do
    if "$candidate" -c 'import pytest' 2>/dev/null; then py=$candidate; break; fi
done
[[ -n $py ]] || { echo "no python3 with pytest (scripts/install-deps installs python3-pytest)" >&2; exit 1; }
export NARCACHE_LIBRARY=$lib
export PYTHONPATH=$dir${PYTHONPATH:+:$PYTHONPATH}
unset NIX_REMOTE
cd "$dir"
exec "$py" -m pytest -q -p no:cacheprovider "$@" tests
