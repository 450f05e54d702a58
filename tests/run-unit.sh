#!/usr/bin/env bash
# Runs the cmocka unit tests named on the command line from $BUILD/tests
# and prints one line per test program, then "unit: N passed, M failed".
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export BUILD=${BUILD:-build}
passed=0
failed=0
failures=()
for t in "$@"; do
	log=$(mktemp "${TMPDIR:-/tmp}/kms-unit.XXXXXX")
	if "$BUILD/tests/$t" >"$log" 2>&1; then
		passed=$((passed + 1))
		echo "unit: $t: ok ($(grep -c '^\[       OK \]' "$log") tests)"
	else
		failed=$((failed + 1))
		failures+=("$t")
		echo "unit: $t: FAILED"
		cat "$log"
	fi
	rm -f "$log"
done
echo "unit: $passed passed, $failed failed${failures[*]:+ (${failures[*]})}"
[ "$failed" -eq 0 ]
