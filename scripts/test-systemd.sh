#!/bin/sh
# make test-systemd: the Debian packages installed and run under a real systemd, the operator's
# path end to end. Debian 12 (debootstrap minbase with systemd, kept between runs) boots under
# systemd-nspawn on a throw-away overlay; commands run inside with nsenter. One PASS/FAIL line per
# check; the exit status is 1 if any check failed.
#
# Usage: test-systemd.sh DEBDIR        (DEBDIR holds the .deb files of `make deb`)
# Environment:
#   MB_NSPAWN_CACHE   where the debootstrapped root is kept (default /var/cache/membroker-nspawn)
#   MB_NSPAWN_MIRROR  the Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   MB_NSPAWN_KEEP=1  leave the overlay and the container's console log behind for a look
set -u

debdir=$(cd "${1:?usage: test-systemd.sh DEBDIR}" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
cache=${MB_NSPAWN_CACHE:-/var/cache/membroker-nspawn}
mirror=${MB_NSPAWN_MIRROR:-http://deb.debian.org/debian}
# The runtime libraries the packages need come with the root, so no check waits for the network.
include="systemd,systemd-sysv,dbus,passwd,procps,libnng1,libprotobuf-c1,libinih1,libjson-c5,libbsd0,libsystemd0"
start=$(date +%s)

if [ "$(id -u)" != 0 ]; then
	echo "test-systemd: needs root (debootstrap, overlay mounts, systemd-nspawn)" >&2
	exit 2
fi
"$src/scripts/install-deps.sh" --nspawn || exit 2

# ---- the Debian 12 root, made once ----
root="$cache/bookworm"
if [ "$(cat "$root/.membroker-include" 2>/dev/null)" != "$include" ]; then
	echo "test-systemd: debootstrap Debian 12 into $root (once; a few minutes)"
	rm -rf "$root" "$root.tmp"
	mkdir -p "$cache"
	if ! debootstrap --variant=minbase --include="$include" bookworm "$root.tmp" "$mirror" \
		>"$cache/debootstrap.log" 2>&1; then
		echo "test-systemd: debootstrap failed; see $cache/debootstrap.log" >&2
		exit 2
	fi
	echo "$include" >"$root.tmp/.membroker-include"
	mv "$root.tmp" "$root"
fi

# ---- the helper clients, built against the packages' own library and header ----
work=$(mktemp -d /var/tmp/membroker-nspawn.XXXXXX)
machine="mbtest-$$"
nspawn_pid=""
leader=""
cleanup() {
	if [ -n "$leader" ] && kill -0 "$leader" 2>/dev/null; then
		nsenter -t "$leader" -a -r -w /bin/systemctl poweroff >/dev/null 2>&1 || true
		i=0
		while kill -0 "$nspawn_pid" 2>/dev/null && [ $i -lt 300 ]; do
			sleep 0.1
			i=$((i + 1))
		done
	fi
	[ -n "$nspawn_pid" ] && kill -KILL "$nspawn_pid" 2>/dev/null
	sleep 0.2
	umount "$work/merged" 2>/dev/null || umount -l "$work/merged" 2>/dev/null
	for h in systemd unified; do
		[ -d "/sys/fs/cgroup/$h/$machine" ] &&
			find "/sys/fs/cgroup/$h/$machine" -depth -type d -exec rmdir {} \; 2>/dev/null
	done
	if [ "${MB_NSPAWN_KEEP:-0}" = 1 ]; then
		echo "test-systemd: kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 3' INT TERM

ver=$(dpkg-deb -f "$(ls "$debdir"/membroker_*.deb | head -n 1)" Version)
mkdir -p "$work/dev" "$work/upper" "$work/ovl" "$work/merged"
for p in libmembroker0 libmembroker-dev; do
	dpkg-deb -x "$debdir/${p}_${ver}_"*.deb "$work/dev"
done
libdir=$(dirname "$(find "$work/dev" -name libmembroker.so | head -n 1)")
for prog in "$src/tests/systemd/mb_holder.c" "$src/examples/hello.c"; do
	out="$work/$(basename "$prog" .c)"
	cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o "$out" "$prog" -I"$work/dev/usr/include" \
		-L"$libdir" -lmembroker || exit 2
done
mv "$work/hello" "$work/mb_hello"

# The upgrade: the same package with a higher version, so dpkg replaces the files.
mkdir -p "$work/up"
dpkg-deb -R "$debdir/membroker_${ver}_"*.deb "$work/up/tree"
sed -i "s/^Version: .*/Version: ${ver}+upgrade1/" "$work/up/tree/DEBIAN/control"
dpkg-deb -b "$work/up/tree" "$work/up/membroker_${ver}+upgrade1.deb" >/dev/null

# ---- boot ----
mount -t overlay overlay -o "lowerdir=$root,upperdir=$work/upper,workdir=$work/ovl" \
	"$work/merged" || exit 2
mkdir -p "$work/merged/root/debs" "$work/merged/var/tmp/mbtest"
cp "$debdir/membroker_${ver}_"*.deb "$debdir/libmembroker0_${ver}_"*.deb \
	"$work/up/membroker_${ver}+upgrade1.deb" "$work/merged/root/debs/"
cp "$work/mb_holder" "$work/mb_hello" "$work/merged/usr/local/bin/"
chmod 1777 "$work/merged/var/tmp/mbtest"
echo "$machine" >"$work/merged/etc/hostname"

# This host runs no systemd: nspawn gets cgroups of its own in the named systemd hierarchy and in
# the unified one, and neither registers with machined nor creates a scope.
(
	for h in systemd unified; do
		mkdir -p "/sys/fs/cgroup/$h/$machine"
		echo $$ >"/sys/fs/cgroup/$h/$machine/cgroup.procs"
	done
	exec systemd-nspawn -q -b --register=no --keep-unit -M "$machine" -D "$work/merged"
) </dev/null >"$work/console.log" 2>&1 &
nspawn_pid=$!

i=0
while [ -z "$leader" ] && [ $i -lt 300 ]; do
	for s in /proc/[0-9]*/status; do
		if grep -q "^PPid:[[:space:]]*$nspawn_pid\$" "$s" 2>/dev/null &&
			grep -q '^NSpid:[[:space:]]*[0-9]*[[:space:]]*1$' "$s" 2>/dev/null; then
			leader=$(basename "$(dirname "$s")")
		fi
	done
	[ -n "$leader" ] || sleep 0.1
	i=$((i + 1))
done
if [ -z "$leader" ]; then
	echo "test-systemd: the container did not start:" >&2
	cat "$work/console.log" >&2
	exit 2
fi

# Runs a command inside, as root, with a clean environment (no MEMBROKER_ADDRESS).
inside() {
	nsenter -t "$leader" -a -r -w /usr/bin/env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 "$@"
}
# Runs a command inside as a user, with the user's groups (primary and supplementary).
as() {
	u=$1
	shift
	inside setpriv --reuid="$u" --regid="$(inside id -g "$u")" --init-groups --reset-env -- "$@"
}
prop() { inside systemctl show -P "$1" membroker.service; }

failures=0
passes=0
check() { # check NAME DETAIL -- run after a test, with $? of the test
	if [ "$1" = 0 ]; then
		passes=$((passes + 1))
		echo "PASS  $2${3:+  ($3)}"
	else
		failures=$((failures + 1))
		echo "FAIL  $2${3:+  ($3)}"
	fi
}
wait_active() { # up to $1 seconds
	n=0
	while [ "$(prop ActiveState)" != active ] && [ $n -lt $(($1 * 10)) ]; do
		sleep 0.1
		n=$((n + 1))
	done
	[ "$(prop ActiveState)" = active ]
}

state=$(inside systemctl is-system-running --wait 2>/dev/null)
echo "test-systemd: Debian 12 booted under systemd-nspawn in $(($(date +%s) - start)) s ($state)"

# ---- install ----
out=$(inside sh -c 'dpkg -i /root/debs/membroker_'"$ver"'_*.deb /root/debs/libmembroker0_'"$ver"'_*.deb 2>&1')
check $? "install: dpkg -i membroker libmembroker0" "$(echo "$out" | grep -c 'Setting up') packages set up"
inside getent passwd membroker >/dev/null && inside getent group membroker-admin >/dev/null
check $? "install: sysusers created user membroker and group membroker-admin"
wait_active 20
check $? "running: active after a fresh install, no configuration (READY=1)" \
	"$(prop StatusText)"
[ "$(prop NRestarts)" = 0 ] && [ "$(prop UnitFileState)" = enabled ]
check $? "running: enabled, no restart" "NRestarts=$(prop NRestarts)"
mainpid=$(prop MainPID)
inside stat -c '%a %U %G %n' /run/membroker /run/membroker/membroker.sock \
	/run/membroker/membroker.sock.fd /run/membroker/membroker.sock.admin >"$work/modes" 2>&1
grep -qx '660 membroker membroker /run/membroker/membroker.sock' "$work/modes" &&
	grep -qx '660 membroker membroker /run/membroker/membroker.sock.fd' "$work/modes" &&
	grep -qx '660 membroker membroker-admin /run/membroker/membroker.sock.admin' "$work/modes"
check $? "sockets: RPC and .fd 0660 group membroker, admin 0660 group membroker-admin" \
	"$(tr '\n' ';' <"$work/modes")"

# ---- clients ----
inside useradd -m -G membroker alice
inside useradd -m mallory
inside useradd -m -g membroker-admin bob
inside useradd -m -G membroker-admin carol
out=$(as alice mb_hello 2>&1)
check $? "clients: a member of group membroker is served at the default address" \
	"$(echo "$out" | grep -m1 mb_connect | tr -s ' ')"
out=$(as mallory mb_hello 2>&1)
[ $? != 0 ]
check $? "clients: a user outside group membroker is refused" \
	"$(echo "$out" | grep -m1 mb_connect | tr -s ' ' | cut -c1-140)"
as bob membrokerctl status >/dev/null 2>&1
check $? "membrokerctl: primary member of membroker-admin gets status"
as carol membrokerctl clients >/dev/null 2>&1
check $? "membrokerctl: supplementary member of membroker-admin gets clients"
as alice membrokerctl status >/dev/null 2>&1
rc=$?
[ $rc = 4 ]
check $? "membrokerctl: a non-admin is refused (exit 4)" "exit $rc"

# ---- reload ----
inside groupadd sandbox
inside useradd -m -G membroker,sandbox erin
sgid=$(inside getent group sandbox | cut -d: -f3)
inside sh -c "printf '[broker]\nbudget = 256M\n[access]\ngids = $sgid\n' > /etc/membroker/membroker.conf"
inside systemctl reload membroker
sleep 1
budget=$(inside membrokerctl --json status | sed -n 's/.*"budget": *\([0-9]*\).*/\1/p')
[ "$budget" = 268435456 ]
check $? "reload: a valid file applies (budget 256M)" "budget $budget"
as erin mb_hello >/dev/null 2>&1 && ! as alice mb_hello >/dev/null 2>&1
check $? "reload: [access] gids admits a supplementary member (SO_PEERGROUPS), refuses others"
inside sh -c "printf '[broker]\nbudget = lots\n' > /etc/membroker/membroker.conf"
inside systemctl reload membroker
sleep 1
budget=$(inside membrokerctl --json status | sed -n 's/.*"budget": *\([0-9]*\).*/\1/p')
[ "$budget" = 268435456 ] && [ "$(prop ActiveState)" = active ] &&
	inside journalctl -u membroker --no-pager -q | grep -q 'invalid configuration'
check $? "reload: an invalid file is refused, the running configuration stays" \
	"$(inside journalctl -u membroker --no-pager -q -o cat | grep -m1 'invalid configuration' | cut -c1-90)"
inside sh -c "printf '[broker]\nbudget = 256M\n' > /etc/membroker/membroker.conf"
inside systemctl reload membroker

# ---- journal ----
as alice mb_holder refuse >/dev/null 2>&1
rc=$?
sleep 1
inside journalctl -u membroker -o export --no-pager MESSAGE_ID=8dab179f78ba4db487ec2ecb165e48c8 \
	>"$work/journal" 2>&1
missing=""
for f in MESSAGE_ID MEMBROKER_CLIENT_PID MEMBROKER_CLIENT_UID MEMBROKER_LEVEL MEMBROKER_BYTES \
	MEMBROKER_HRESULT; do
	grep -q "^$f=" "$work/journal" || missing="$missing $f"
done
[ $rc = 0 ] && [ -z "$missing" ]
check $? "journal: a refusal (E_OUTOFMEMORY) with MESSAGE_ID and every MEMBROKER_* field" \
	"${missing:+missing$missing}$(grep -m1 '^MEMBROKER_HRESULT=' "$work/journal")"

# ---- watchdog ----
sleep 25
[ "$(prop MainPID)" = "$mainpid" ] && [ "$(prop NRestarts)" = 0 ] &&
	! inside journalctl -u membroker --no-pager -q | grep -qi 'watchdog timeout'
check $? "watchdog: 25 s (2.5 periods of WatchdogSec=10s) without a timeout" \
	"WatchdogUSec=$(prop WatchdogUSec)"

# ---- restart with a client holding memory ----
as alice mb_holder hold 16 /var/tmp/mbtest >"$work/holder.log" 2>&1 &
holder=$!
i=0
while [ ! -s "$work/merged/var/tmp/mbtest/held" ] && [ $i -lt 300 ]; do
	sleep 0.1
	i=$((i + 1))
done
inside systemctl restart membroker
wait_active 20
newpid=$(prop MainPID)
touch "$work/merged/var/tmp/mbtest/go"
i=0
while [ ! -s "$work/merged/var/tmp/mbtest/result" ] && [ $i -lt 600 ]; do
	sleep 0.1
	i=$((i + 1))
done
# Still connected: the new broker lists it with at least the 16 MiB it held across the restart.
held=$(inside membrokerctl --json clients | tr -d ' \n' | grep -o '{[^{}]*"mb_holder"[^{}]*}')
touch "$work/merged/var/tmp/mbtest/done"
wait $holder
rc=$?
committed=$(echo "$held" | sed -n 's/.*"committed":\([0-9]*\).*/\1/p')
[ $rc = 0 ] && [ "$newpid" != "$mainpid" ] && [ "${committed:-0}" -ge $((16 << 20)) ]
check $? "restart: a client holding 16 MiB keeps its memory and the new broker's books count it" \
	"pid $mainpid -> $newpid; client: $(tr -d '\n' <"$work/merged/var/tmp/mbtest/result" 2>/dev/null)$(tail -n 2 "$work/holder.log" | tr '\n' ' '); membrokerctl clients: committed ${committed:-none}; FileDescriptorStoreMax=$(prop FileDescriptorStoreMax)"
# The books came back from systemd's descriptor store: the client's commits and credit and the
# total are what they were, to the byte, and the journal says the section was restored with them.
books=$(sed -n 's/.*books \(.*\)/\1/p' "$work/merged/var/tmp/mbtest/result" 2>/dev/null)
set -- $books
[ $# = 13 ] && [ "$2" = "$9" ] && [ "$4" = "${11}" ] && [ "$6" = "${13}" ] &&
	inside journalctl -u membroker --no-pager -q -o cat | grep -q 'restored 1 section(s) with their books'
check $? "restart: the section and its books back from systemd's descriptor store, to the byte" \
	"${books:-no books}; $(inside journalctl -u membroker --no-pager -q -o cat | grep -m1 'restored 1 section' | cut -c1-120)"
mainpid=$newpid

# ---- crash: SIGKILL, Restart=on-failure, the section back from the store without books ----
rm -f "$work/merged/var/tmp/mbtest/held" "$work/merged/var/tmp/mbtest/go" \
	"$work/merged/var/tmp/mbtest/result" "$work/merged/var/tmp/mbtest/done"
as alice mb_holder hold 8 /var/tmp/mbtest >"$work/holder2.log" 2>&1 &
holder=$!
i=0
while [ ! -s "$work/merged/var/tmp/mbtest/held" ] && [ $i -lt 300 ]; do
	sleep 0.1
	i=$((i + 1))
done
inside systemctl kill -s KILL membroker
i=0
while { [ "$(prop MainPID)" = "$mainpid" ] || [ "$(prop ActiveState)" != active ]; } && [ $i -lt 300 ]; do
	sleep 0.1
	i=$((i + 1))
done
newpid=$(prop MainPID)
touch "$work/merged/var/tmp/mbtest/go"
i=0
while [ ! -s "$work/merged/var/tmp/mbtest/result" ] && [ $i -lt 600 ]; do
	sleep 0.1
	i=$((i + 1))
done
touch "$work/merged/var/tmp/mbtest/done"
wait $holder
rc=$?
books=$(sed -n 's/.*books \(.*\)/\1/p' "$work/merged/var/tmp/mbtest/result" 2>/dev/null)
set -- $books
[ $rc = 0 ] && [ "$newpid" != "$mainpid" ] && [ $# = 13 ] && [ "$2" = "$9" ] &&
	inside journalctl -u membroker --no-pager -q -o cat | grep -q 'no books snapshot'
check $? "crash: after SIGKILL systemd restarts the broker; the client's memory intact, its commits registered again" \
	"pid $mainpid -> $newpid, NRestarts=$(prop NRestarts); ${books:-$(tr -d '\n' <"$work/merged/var/tmp/mbtest/result" 2>/dev/null)}"
mainpid=$newpid

# ---- upgrade ----
inside dpkg -i "/root/debs/membroker_${ver}+upgrade1.deb" >/dev/null 2>&1
rc=$?
wait_active 20
newpid=$(prop MainPID)
exe=$(inside readlink "/proc/$newpid/exe")
[ $rc = 0 ] && [ "$newpid" != "$mainpid" ] && [ "$exe" = /usr/sbin/membrokerd ]
check $? "upgrade: dpkg -i of a newer membroker restarts the daemon" \
	"pid $mainpid -> $newpid, exe $exe"

# ---- stop ----
t0=$(date +%s%N)
inside systemctl stop membroker
t1=$(date +%s%N)
[ "$(prop ActiveState)" = inactive ] && [ "$(prop Result)" = success ]
check $? "stop: clean" "$(((t1 - t0) / 1000000)) ms, Result=$(prop Result)"
inside systemctl start membroker
wait_active 20

# ---- security ----
score=$(inside systemd-analyze security membroker.service 2>/dev/null |
	sed -n 's/.*Overall exposure level for membroker.service: \([0-9.]*\) \([A-Z]*\).*/\1 \2/p')
[ "${score#* }" = SAFE ]
check $? "security: systemd-analyze security of the installed unit" "$score"

# ---- purge ----
inside dpkg --purge membroker >/dev/null 2>&1
rc=$?
left=$(inside sh -c 'ls -d /run/membroker /etc/membroker /usr/sbin/membrokerd \
	/lib/systemd/system/membroker.service 2>/dev/null; pgrep -x membrokerd')
[ $rc = 0 ] && [ -z "$left" ] && [ "$(prop LoadState)" = not-found ]
check $? "purge: stopped, unit, files and configuration gone" "${left:+left: $left}"

echo "test-systemd: $passes passed, $failures failed, $(($(date +%s) - start)) s in all"
[ $failures = 0 ]
