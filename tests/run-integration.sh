#!/usr/bin/env bash
# Runs the integration suite (tests/integration, pytest) against
# $BUILD/kmsd and $BUILD/kmsctl (BUILD=build or build/asan).  The Python
# gRPC stubs are generated from proto/ into a temporary directory.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export BUILD=${BUILD:-build}
PY=/usr/bin/python3

stubs=$(mktemp -d "${TMPDIR:-/tmp}/kms-stubs.XXXXXX")
trap 'rm -rf "$stubs"' EXIT

"$PY" -m grpc_tools.protoc -I proto --python_out="$stubs" \
    --grpc_python_out="$stubs" kms/v1/kms.proto grpc/health/v1/health.proto

echo "integration tests on $BUILD"
# No bytecode or cache files in the source tree.
KMS_TEST_STUBS=$stubs PYTHONDONTWRITEBYTECODE=1 \
    "$PY" -m pytest -p no:cacheprovider -q -rfEs tests/integration "$@"
