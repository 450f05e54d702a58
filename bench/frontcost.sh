#!/bin/bash
# bench/frontcost.sh BEFORE_BUILD AFTER_BUILD [NOW_BUILD]: Sign calls/s and
# kmsd CPU and voluntary context switches per call of two or three kmsd
# builds on one token, 5 s at 16 in
# flight after a 1 s warm-up,
# the builds alternating, FRONTCOST_ROUNDS rounds (3).  Each run also
# prints kmsd's group commit (records per fdatasync, from its log at
# stop).  A build older than [server] crl is given the configuration
# without it.
set -eu
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILDS=("$@")
[ ${#BUILDS[@]} -ge 2 ] || { echo "usage: $0 BEFORE_BUILD AFTER_BUILD [NOW_BUILD]" >&2; exit 2; }
H=$(mktemp -d /tmp/kms-frontcost.XXXXXX)/home
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
rm -rf $H
KMS_HOME=$H KMS_ADDR=127.0.0.1:0 bash $TOP/hsm-config/setup.sh >/dev/null 2>&1
grep -v '^crl = ' $H/kmsd.conf > $H/kmsd-old.conf
export SOFTHSM2_CONF=$H/softhsm2.conf
PKI=$H/pki
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADDR=127.0.0.1:$PORT
CTL="$TOP/build/kmsctl --addr $ADDR"
vcs() { cat /proc/$1/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ { n += $2 } END { print n + 0 }'; }
cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000000 / hz }' /proc/$1/stat; }
one() {
	local label=$1 bin=$2 conf=$3
	$bin/kmsd --config $conf --listen $ADDR --log-level info 2>/tmp/hb-perf-$label.log &
	local pid=$! i
	for i in $(seq 200); do KMS_HOME=$H $CTL --as ci whoami >/dev/null 2>&1 && break; sleep 0.1; done
	KMS_HOME=$H $CTL --as officer key get bench/p256 >/dev/null 2>&1 || KMS_HOME=$H $CTL --as officer key create bench/p256 --algorithm EC_P256_SHA256 >/dev/null
	$bin/kmsload --addr $ADDR --ca $PKI/ca.pem --cert $PKI/clients/ci.pem --key $PKI/clients/ci.key --key-name bench/p256 --inflight 16 --threads 2 --seconds 1 >/dev/null
	local b=$(cpu_us $pid) vb=$(vcs $pid)
	local res=$($bin/kmsload --addr $ADDR --ca $PKI/ca.pem --cert $PKI/clients/ci.pem --key $PKI/clients/ci.key --key-name bench/p256 --inflight 16 --threads 2 --seconds 5)
	local a=$(cpu_us $pid) va=$(vcs $pid)
	/usr/bin/python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%-7s ops/s %7.1f  kmsd_cpu_us/op %6.1f  vcs/op %.2f  p50 %.2f ms  p99 %.2f ms  errors %d  load %s" % (sys.argv[2], r["ops_per_s"], (int(sys.argv[3])-int(sys.argv[4]))/max(r["ops"],1), (int(sys.argv[5])-int(sys.argv[6]))/max(r["ops"],1), r["p50_ms"], r["p99_ms"], r["errors"], open("/proc/loadavg").read().split()[0]))' "$res" $label $a $b $va $vb
	kill -TERM $pid; wait $pid || true
	grep -o 'audit: [0-9]* records in [0-9]* writes.*' /tmp/hb-perf-$label.log | tail -1 || true
}
conf_of() {
	if grep -q 'max_connections' "$1/kmsd" 2>/dev/null; then echo $H/kmsd.conf
	else echo $H/kmsd-old.conf; fi
}
for round in $(seq ${FRONTCOST_ROUNDS:-3}); do
	i=0
	for b in "${BUILDS[@]}"; do
		i=$((i + 1))
		one "build$i" "$b" "$(conf_of "$b")"
	done
done
