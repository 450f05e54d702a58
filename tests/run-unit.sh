#!/usr/bin/env bash
# Runs the unit tests named on the command line, each the cmocka program
# $BUILD/tests/NAME (BUILD=build or build/asan), from the top of the
# source tree so that tests can read files such as hsm-config/policy.conf.
# BUILD is exported: test_hsm loads $BUILD/p11fault.so.
#
#   BUILD=build bash tests/run-unit.sh test_kmserr test_names ...
#
# Prints one line per program (its whole output when it fails), then
# "unit: N passed, M failed", and exits non-zero when any failed.
# UNIT_VERBOSE=1 shows every program's output.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export BUILD=${BUILD:-build}
# A test that hangs counts as failed rather than stalling the run.
TIMEOUT=${UNIT_TIMEOUT:-300}

if [ "$#" -eq 0 ]; then
	echo "usage: BUILD=DIR bash tests/run-unit.sh TEST..." >&2
	exit 2
fi

log=$(mktemp "${TMPDIR:-/tmp}/kms-unit.XXXXXX")
trap 'rm -f "$log"' EXIT

passed=0
failed=0
failures=()
for name in "$@"; do
	bin=$BUILD/tests/$name
	if [ ! -x "$bin" ]; then
		echo "unit: $name: FAILED ($bin is missing)"
		failed=$((failed + 1))
		failures+=("$name")
		continue
	fi
	timeout "$TIMEOUT" "$bin" >"$log" 2>&1
	rc=$?
	[ "${UNIT_VERBOSE:-0}" = 1 ] && cat "$log"
	if [ "$rc" -eq 0 ]; then
		echo "unit: $name: ok ($(grep -c '^\[       OK \]' "$log") tests," \
		    "$(grep -c '^\[  SKIPPED \]' "$log") skipped)"
		passed=$((passed + 1))
		continue
	fi
	if [ "$rc" -eq 124 ]; then
		echo "unit: $name: FAILED (timed out after ${TIMEOUT}s)"
	else
		echo "unit: $name: FAILED (exit status $rc)"
	fi
	[ "${UNIT_VERBOSE:-0}" = 1 ] || cat "$log"
	failed=$((failed + 1))
	failures+=("$name")
done

echo "unit: $passed passed, $failed failed${failures[*]:+ (${failures[*]})}"
[ "$failed" -eq 0 ]
