#!/bin/sh
# Fails when the broker's modules include each other in a circle. A module is a .c file and its
# .h; an edge A -> B means a file of A includes B's header. The layers (daemon/state.h) only point
# down, so the graph must sort topologically.
set -eu
dir="${1:-$(dirname "$0")/../daemon}"
edges=$(
	for f in "$dir"/*.c "$dir"/*.h; do
		from=$(basename "$f" | sed 's/\.[ch]$//')
		sed -n 's/^#include "\([a-z_]*\)\.h".*/\1/p' "$f" | while read -r to; do
			if [ -e "$dir/$to.h" ] && [ "$to" != "$from" ]; then
				echo "$from $to"
			fi
		done
	done
) || true
if ! printf '%s\n' "$edges" | tsort >/dev/null 2>/tmp/check-layers.$$; then
	echo "daemon/: modules include each other in a circle:" >&2
	cat /tmp/check-layers.$$ >&2
	rm -f /tmp/check-layers.$$
	exit 1
fi
rm -f /tmp/check-layers.$$
echo "daemon/: $(printf '%s\n' "$edges" | wc -l) include edges, no circle"
