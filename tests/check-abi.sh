#!/bin/sh
# Compare the dynamic symbols a shared library defines with the checked-in
# list. Usage: check-abi.sh LIBRARY EXPECTED_LIST
set -eu
lib=$1
expected=$2
actual=$(mktemp)
trap 'rm -f "$actual"' EXIT
nm -D --defined-only "$lib" | awk '{ print $NF }' | sort -u > "$actual"
if grep -v '^narcache_' "$actual"; then
  echo "error: the library exports symbols outside the narcache_ prefix (above)" >&2
  exit 1
fi
if ! diff -u "$expected" "$actual"; then
  echo "error: exported symbols differ from $expected (- expected, + actual)." >&2
  echo "If the change is intended, update the list; removals break the ABI." >&2
  exit 1
fi
echo "abi: $(wc -l < "$actual") exported symbols match $expected"
