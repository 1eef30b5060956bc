#!/bin/sh
# Installs the Debian 12 packages membroker needs to build and test.
# Runs apt-get only when a package is missing, so repeated `make` calls stay fast and offline.
#   install-deps.sh               build and test (make build, make test)
#   install-deps.sh --packaging   also what `make deb` needs (debhelper, lintian)
#   install-deps.sh --nspawn      also what `make test-systemd` needs (debootstrap, systemd-nspawn)
set -eu

PACKAGES="build-essential cmake pkg-config libnng-dev libprotobuf-c-dev protobuf-c-compiler
libsystemd-dev libcmocka-dev libbsd-dev libinih-dev libjson-c-dev clang clang-format systemd
libmimalloc-dev libpython3.11-dev zlib1g-dev"
for arg in "$@"; do
	case $arg in
	--packaging) PACKAGES="$PACKAGES debhelper dpkg-dev lintian" ;;
	--nspawn) PACKAGES="$PACKAGES debootstrap systemd-container debian-archive-keyring" ;;
	*)
		echo "install-deps: unknown option $arg" >&2
		exit 2
		;;
	esac
done

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing (run as root, or install them)" >&2
	exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $missing
