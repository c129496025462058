#!/bin/sh
# Regenerate the golden tables with the installed Nix into a temporary
# directory and require them to equal the committed ones.
# Usage: check.sh PYTHON
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$1" "$here/generate.py" "$out"
for table in contents encodings paths malformed; do
  cmp "$out/$table.tsv" "$here/$table.tsv"
done
echo "golden hash tables reproduced by $(nix-hash --version)"
