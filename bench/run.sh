#!/usr/bin/env bash
# make bench: measures kmsd on this machine and writes JSON under
# bench/results/.  Every number printed is measured in this run.
#
#   BENCH_SECONDS   duration of each load run (default 5)
#   BENCH_ADDR      where the benchmark kmsd listens (default 127.0.0.1:17443)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOP=$(pwd)
BUILD=${BUILD:-build}
SECONDS_EACH=${BENCH_SECONDS:-5}
ADDR=${BENCH_ADDR:-127.0.0.1:17443}
HOME_DIR=$TOP/$BUILD/bench-home
OUT=$TOP/bench/results
mkdir -p "$OUT"

KMS_HOME=$HOME_DIR KMS_ADDR=$ADDR bash hsm-config/setup.sh >/dev/null
export KMS_HOME=$HOME_DIR
export SOFTHSM2_CONF=$HOME_DIR/softhsm2.conf
PKI=$HOME_DIR/pki
KMSCTL=("$BUILD/kmsctl" --addr "$ADDR")
pid=

stop_kmsd() {
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		pid=
	fi
}
trap stop_kmsd EXIT

# start_kmsd CONFIG: starts kmsd and waits until it listens.
start_kmsd() {
	"$BUILD/kmsd" --config "$1" --listen "$ADDR" --log-level info \
	    2>"$OUT/kmsd-$2.log" &
	pid=$!
	for _ in $(seq 100); do
		if "${KMSCTL[@]}" --as ci whoami >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	echo "bench: kmsd did not start:" >&2
	cat "$OUT/kmsd-$2.log" >&2
	exit 1
}

# kmsd's CPU time so far, in microseconds (utime + stime from /proc).
cpu_us() {
	awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000000 / hz }' \
	    "/proc/$pid/stat"
}

# load ARGS...: one kmsload run; its JSON gains kmsd's CPU time per
# operation and peak RSS.
load() {
	local before after res
	before=$(cpu_us)
	res=$("$BUILD/kmsload" --addr "$ADDR" --ca "$PKI/ca.pem" \
	    --cert "$PKI/clients/ci.pem" --key "$PKI/clients/ci.key" \
	    --seconds "$SECONDS_EACH" "$@")
	after=$(cpu_us)
	/usr/bin/python3 -c 'import json, sys
r = json.loads(sys.argv[1])
r["kmsd_cpu_us_per_op"] = round((int(sys.argv[2]) - int(sys.argv[3])) /
                                max(r["ops"], 1), 1)
r["kmsd_peak_rss_kib"] = int(sys.argv[4])
print(json.dumps(r))' "$res" "$after" "$before" \
	    "$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")"
}

make_key() {
	"${KMSCTL[@]}" --as officer key get "$1" >/dev/null 2>&1 ||
	    "${KMSCTL[@]}" --as officer key create "$1" --algorithm "$2" \
	    >/dev/null
}

WORKERS=${BENCH_WORKERS:-2}
# The benchmark's own configurations: WORKERS HSM workers, and the audit
# log fdatasync'd (the service as shipped) or written but not synced.
sed -e "s/^workers *=.*/workers = $WORKERS/" -e 's/^sync *=.*//' \
    "$HOME_DIR/kmsd.conf" >"$HOME_DIR/bench-durable.conf"
sed -e 's/^\[audit\]$/[audit]\nsync = no/' "$HOME_DIR/bench-durable.conf" \
    >"$HOME_DIR/bench-nosync.conf"

start_kmsd "$HOME_DIR/bench-durable.conf" durable
make_key bench/p256 EC_P256_SHA256
durable=$(load --key-name bench/p256 --inflight 16 --threads 2)
stop_kmsd
start_kmsd "$HOME_DIR/bench-nosync.conf" nosync
nosync=$(load --key-name bench/p256 --inflight 16 --threads 2)
stop_kmsd
batching=$(grep -o 'audit: [0-9]* records in [0-9]* writes ([^)]*)' \
    "$OUT/kmsd-durable.log" | tail -1)

machine="$(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo)"
/usr/bin/python3 - "$OUT/audit-durability.json" "$machine" "$durable" \
    "$nosync" "$batching" "$WORKERS" <<'PY'
import json, sys
path, machine, durable, nosync = sys.argv[1], sys.argv[2], \
    json.loads(sys.argv[3]), json.loads(sys.argv[4])
batching, workers = sys.argv[5], int(sys.argv[6])
ratio = durable["ops_per_s"] / nosync["ops_per_s"]
res = {"machine": machine,
       "command": "make bench (bench/run.sh)",
       "sign_p256_inflight16_durable": durable,
       "sign_p256_inflight16_not_synced": nosync,
       "workers": workers,
       "group_commit": batching,
       "durable_over_not_synced": round(ratio, 3)}
json.dump(res, open(path, "w"), indent=2)
print("audit durability, ECDSA P-256 Sign, 16 in flight, %s:" % machine)
for k, r in (("durable (fdatasync)", durable),
             ("written, not synced", nosync)):
    print("  %-22s %8.0f ops/s  p50 %.2f ms  p99 %.2f ms  kmsd CPU %.0f "
          "us/op  errors %d" % (k, r["ops_per_s"], r["p50_ms"], r["p99_ms"],
                                r["kmsd_cpu_us_per_op"], r["errors"]))
print("  group commit (durable run): %s" % batching)
print("  target: durable within 10%% of not synced: %.1f%% -> %s" % (
    (1 - ratio) * 100, "holds" if ratio >= 0.9 else "MISSED"))
print("  results: %s" % path)
PY
