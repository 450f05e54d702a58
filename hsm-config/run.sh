#!/usr/bin/env bash
# run.sh: sets up $KMS_HOME (see setup.sh) and runs kmsd in the foreground
# on $KMS_ADDR.  Several of these may run side by side, even on one
# $KMS_HOME: each is one more instance on the same HSM token.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$HERE")
KMS_HOME=${KMS_HOME:-$TOP/var}
KMS_ADDR=${KMS_ADDR:-127.0.0.1:7443}
BUILD=${BUILD:-build}
export KMS_HOME KMS_ADDR

case $BUILD in
/*) KMSD=$BUILD/kmsd ;;
*) KMSD=$TOP/$BUILD/kmsd ;;
esac
if ! [ -x "$KMSD" ]; then
	echo "run: $KMSD is missing: run 'make'" >&2
	exit 1
fi

bash "$HERE/setup.sh"
KMS_HOME=$(cd "$KMS_HOME" && pwd)

echo "run: kmsd on $KMS_ADDR, state in $KMS_HOME" >&2
exec env SOFTHSM2_CONF="$KMS_HOME/softhsm2.conf" "$KMSD" \
    --config "$KMS_HOME/kmsd.conf" --listen "$KMS_ADDR"
