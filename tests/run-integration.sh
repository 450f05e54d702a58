#!/usr/bin/env bash
# Runs the integration suite (tests/integration, pytest) against
# $BUILD/kmsd and $BUILD/kmsctl (BUILD=build or build/asan).  The Python
# gRPC stubs are generated from proto/ into a temporary directory.
#
#   BUILD=build bash tests/run-integration.sh [-k PATTERN] [FILE[::TEST]...]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export BUILD=${BUILD:-build}
PY=/usr/bin/python3

stubs=$(mktemp -d "${TMPDIR:-/tmp}/kms-stubs.XXXXXX")
trap 'rm -rf "$stubs"' EXIT

"$PY" -m grpc_tools.protoc -I proto --python_out="$stubs" \
    --grpc_python_out="$stubs" kms/v1/kms.proto grpc/health/v1/health.proto

# The tests run in a random order (python3-pytest-random-order): the
# files shuffled, and the tests within each file.  The seed is printed;
# KMS_TEST_SEED=N repeats that order, KMS_TEST_SEED=none keeps file order.
seed=${KMS_TEST_SEED:-$(((RANDOM << 15 | RANDOM) % 1000000 + 1))}
if [ "$seed" = none ]; then
	order=(-p no:random_order)
	echo "integration tests on $BUILD, in file order"
else
	if ! "$PY" -c 'import random_order.plugin' 2>/dev/null; then
		echo "integration: python3-pytest-random-order is missing:" \
		    "run hsm-config/deps.sh" >&2
		exit 1
	fi
	order=(-p random_order --random-order-bucket=module
	    --random-order-seed="$seed")
	echo "integration tests on $BUILD, random order, seed $seed" \
	    "(KMS_TEST_SEED=$seed repeats it)"
fi

# Arguments that name test files or tests (tests/integration/test_x.py,
# ...::test_y) replace the whole suite; other arguments (-k, -x) apply to it.
where=(tests/integration)
for a in "$@"; do
	case $a in
	-*) ;;
	*.py | *.py::* | tests/integration*) where=() ;;
	esac
done

# No bytecode or cache files in the source tree (pytest's cache, which
# the ordering plugin asks for, goes to the temporary directory).
KMS_TEST_STUBS=$stubs PYTHONDONTWRITEBYTECODE=1 \
    "$PY" -m pytest -o cache_dir="$stubs/pytest-cache" "${order[@]}" -q -rfEs \
    "${where[@]}" "$@"
