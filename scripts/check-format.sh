#!/bin/sh
# Fails when a tracked C source or header is not formatted by the committed .clang-format.
# `scripts/check-format.sh --fix` rewrites them in place instead.
set -eu
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h')
if [ "${1:-}" = "--fix" ]; then
	# shellcheck disable=SC2086
	clang-format -i $files
	exit 0
fi
# shellcheck disable=SC2086
if ! clang-format --dry-run --Werror $files; then
	echo "check-format: the files above are not formatted; run scripts/check-format.sh --fix" >&2
	exit 1
fi
