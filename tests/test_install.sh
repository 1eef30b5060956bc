#!/bin/sh
# Installs the build tree into a temporary prefix and builds a tiny program against it three times:
# with pkg-config (shared, and static with --static) and with find_package(membroker). membroker.pc
# must name the prefix installed to. Also checks that the library exports only mb_*, and that the
# Debian symbols file lists exactly what the version script exports.
# Usage: test_install.sh BUILD_DIR
set -eu
build=$1
tmp=$(mktemp -d /tmp/mbinstall.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
lib=$(find "$tmp/prefix" -name 'libmembroker.so.0' | head -n 1)
[ -n "$lib" ] || { echo "libmembroker.so.0 not installed"; exit 1; }
libdir=$(dirname "$lib")

# Only the public API leaves the library.
extra=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^mb_' | grep -v '^MEMBROKER_0$' || true)
[ -z "$extra" ] || { echo "unexpected exported symbols:"; echo "$extra"; exit 1; }
readelf -d "$lib" | grep -q 'SONAME.*libmembroker.so.0' || { echo "no SONAME"; exit 1; }

# debian/libmembroker0.symbols follows client/libmembroker.map (a new export needs both).
src=$(dirname "$0")/..
map=$(awk '/global:/{f=1;next} /local:/{f=0} f && /;/{gsub(/[ ;]/,""); print}' \
	"$src/client/libmembroker.map" | sort)
sym=$(sed -n 's/^ \(mb_[a-z_0-9]*\)@MEMBROKER_0 .*/\1/p' "$src/debian/libmembroker0.symbols" | sort)
if [ "$map" != "$sym" ]; then
	echo "debian/libmembroker0.symbols does not list what client/libmembroker.map exports"
	echo "map:     $(echo $map)"
	echo "symbols: $(echo $sym)"
	exit 1
fi

for f in "$tmp/prefix/include/membroker.h" "$libdir/libmembroker.a"; do
	[ -f "$f" ] || { echo "$f not installed"; exit 1; }
done
for f in sbin/membrokerd lib/systemd/system/membroker.service lib/sysusers.d/membroker.conf \
	share/man/man8/membrokerd.8 share/man/man5/membroker.conf.5; do
	[ -e "$tmp/prefix/$f" ] || { echo "$f not installed"; exit 1; }
done

cat > "$tmp/prog.c" <<'C'
#include <stdio.h>
#include <membroker.h>
int main(void)
{
	mb_client *c;
	/* Nothing listens here: the call must fail promptly with the documented HRESULT. */
	HRESULT hr = mb_connect("ipc:///nonexistent/membroker.sock", &c);
	printf("%s\n", mb_hresult_name(hr));
	return hr == HOST_E_CLRNOTAVAILABLE ? 0 : 1;
}
C

# pkg-config: the .pc names the prefix it was installed to, nothing redefined.
pcdir=$(dirname "$(find "$tmp/prefix" -name membroker.pc | head -n 1)")
grep -qx "prefix=$tmp/prefix" "$pcdir/membroker.pc" ||
	{ echo "membroker.pc does not name the install prefix:"; cat "$pcdir/membroker.pc"; exit 1; }
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs membroker)
# shellcheck disable=SC2086
cc -o "$tmp/prog_pc" "$tmp/prog.c" $flags
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/prog_pc")
[ "$out" = HOST_E_CLRNOTAVAILABLE ] || { echo "pkg-config build printed '$out'"; exit 1; }

# The static library, with what pkg-config --static adds: the program needs no libmembroker.so.
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --static --cflags --libs membroker)
# shellcheck disable=SC2086
cc -o "$tmp/prog_static" "$tmp/prog.c" -L"$libdir" -Wl,-Bstatic -lmembroker -Wl,-Bdynamic $flags
if readelf -d "$tmp/prog_static" | grep -q 'libmembroker'; then
	echo "the static build still needs libmembroker.so"
	exit 1
fi
out=$("$tmp/prog_static")
[ "$out" = HOST_E_CLRNOTAVAILABLE ] || { echo "static build printed '$out'"; exit 1; }

# find_package
mkdir -p "$tmp/proj"
cp "$tmp/prog.c" "$tmp/proj/prog.c"
cat > "$tmp/proj/CMakeLists.txt" <<'C'
cmake_minimum_required(VERSION 3.25)
project(prog C)
find_package(membroker 0.1 REQUIRED)
add_executable(prog prog.c)
target_link_libraries(prog PRIVATE membroker::membroker)
C
cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/proj/build" >/dev/null
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/proj/build/prog")
[ "$out" = HOST_E_CLRNOTAVAILABLE ] || { echo "find_package build printed '$out'"; exit 1; }
echo "install: pkg-config (shared and static) and find_package builds work; exports are mb_* only"
