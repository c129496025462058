#!/bin/sh
# Install the build tree into a temporary prefix, then build and run the
# consumer program against it through pkg-config (shared and static) and
# through CMake's find_package(narcache).
# Usage: run.sh BUILD_DIR C_COMPILER "EXTRA_FLAGS"
set -eu
build=$1
cc=$2
extra=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" > "$work/install.log"
libdir=$(dirname "$(find "$prefix" -name narcache.pc)")/..
export PKG_CONFIG_PATH=$libdir/pkgconfig
export LD_LIBRARY_PATH=$libdir

echo "== pkg-config (shared)"
# shellcheck disable=SC2046,SC2086
"$cc" $extra -o "$work/pc_shared" "$here/consumer.c" $(pkg-config --cflags --libs narcache)
"$work/pc_shared"

echo "== pkg-config --static"
# shellcheck disable=SC2046,SC2086
"$cc" $extra -static-libgcc -o "$work/pc_static" "$here/consumer.c" \
  -Wl,-Bstatic $(pkg-config --cflags --libs-only-L narcache) -lnarcache -Wl,-Bdynamic \
  $(pkg-config --static --libs-only-other --libs-only-l narcache | sed 's/-lnarcache//')
"$work/pc_static"
if ldd "$work/pc_static" | grep -q libnarcache; then
  echo "error: static consumer still loads libnarcache.so" >&2
  exit 1
fi

echo "== find_package(narcache)"
CFLAGS="$extra" LDFLAGS="$extra" cmake -S "$here" -B "$work/cmake-build" \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_PREFIX_PATH="$prefix" > "$work/cmake.log" ||
  { cat "$work/cmake.log"; exit 1; }
cmake --build "$work/cmake-build" > "$work/build.log" || { cat "$work/build.log"; exit 1; }
"$work/cmake-build/consumer_shared"
"$work/cmake-build/consumer_static"
echo "consumer: all builds ran"
