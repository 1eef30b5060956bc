#!/bin/sh
# Builds the Debian packages from debian/ with dpkg-buildpackage (debhelper), out of the source tree,
# and checks them with lintian: any error or warning fails.
# Usage: build-deb.sh [OUTDIR]   (default: build/deb); the .deb files end up in OUTDIR.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$src/build/deb}

"$src/scripts/install-deps.sh" --packaging
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
rm -rf "$out"
tree="$out/src/membroker-$version"
mkdir -p "$tree"

# The sources as they are in this tree (committed or not), without build directories.
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git -C "$src" ls-files -z --cached --others --exclude-standard |
		(cd "$src" && xargs -0 tar -cf - --no-recursion) | tar -xf - -C "$tree"
else
	tar -C "$src" --exclude='./build' --exclude='./build-*' --exclude='./obj-*' -cf - . |
		tar -xf - -C "$tree"
fi

echo "build-deb: dpkg-buildpackage in $tree"
(cd "$tree" && dpkg-buildpackage -us -uc -b)
mv "$out"/src/*.deb "$out"/src/*.changes "$out"/src/*.buildinfo "$out"/
mv "$out"/src/*.ddeb "$out"/ 2>/dev/null || true

echo "build-deb: lintian"
lintian --info --display-info --fail-on error,warning "$out"/membroker_"$version"_*.changes
echo "build-deb: lintian clean (no error, no warning)"
ls -1 "$out"/*.deb
