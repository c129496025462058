#!/bin/sh
# Dump real system trees with narcache and with nix-store --dump and require
# identical NARs (and NAR hashes equal to nix-hash's). Copies are taken
# first so both tools see the same snapshot even if the system changes.
# Usage: nar_system_trees.sh NARCACHE_CLI
set -eu
cli=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
checked=0
for tree in /usr/share/doc /usr/lib/python3*; do
  [ -d "$tree" ] || continue
  copy=$work/$(basename "$tree")
  cp -a "$tree" "$copy"
  ours=$("$cli" nar dump "$copy" | sha256sum | cut -d' ' -f1)
  theirs=$(nix-store --dump "$copy" | sha256sum | cut -d' ' -f1)
  if [ "$ours" != "$theirs" ]; then
    echo "MISMATCH $tree: narcache $ours, nix-store $theirs" >&2
    exit 1
  fi
  hash=$("$cli" nar hash "$copy")
  want=sha256:$(nix-hash --type sha256 --base32 "$copy")
  if [ "$hash" != "$want" ]; then
    echo "MISMATCH $tree: narcache nar hash $hash, nix-hash $want" >&2
    exit 1
  fi
  echo "ok $tree ($(du -sh "$copy" | cut -f1), sha256 $ours)"
  rm -rf "$copy"
  checked=$((checked + 1))
done
[ "$checked" -ge 2 ] || { echo "expected /usr/share/doc and a python tree" >&2; exit 1; }
