#!/bin/sh
# Starts membrokerd with its built-in defaults, runs the example client against it, stops it.
set -eu
build=${1:-build}
daemon="$build/daemon/membrokerd"
client="$build/examples/mb_hello"

"$daemon" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT INT TERM

# Wait for the broker to serve (a client connects) or to fail (it exits).
i=0
until "$client" >/dev/null 2>&1; do
	if ! kill -0 "$pid" 2>/dev/null; then
		wait "$pid" || true
		echo "run-demo: membrokerd exited; see its message above" >&2
		exit 1
	fi
	i=$((i + 1))
	[ "$i" -lt 100 ] || { echo "run-demo: membrokerd did not come up" >&2; exit 1; }
	sleep 0.1
done

"$client"
echo
echo "run-demo: what an operator sees (membrokerctl status):"
"$build/ctl/membrokerctl" status || true
kill -TERM "$pid"
wait "$pid"
trap - EXIT INT TERM
echo "run-demo: membrokerd stopped cleanly"
