#!/usr/bin/env bash
# make bench: measures kmsd on this machine against raw PKCS#11 C_Sign on
# the same token, p11-kit's remote PKCS#11 and pkcs11-tool per process, and
# writes bench/results/results.json and bench/results/summary.md.  Every
# number printed is measured in this run.
#
#   BENCH_SECONDS   duration of each load run (default 5)
#   BENCH_ADDR      where the benchmark kmsd listens (default 127.0.0.1:17443)
#   BENCH_WORKERS   kmsd HSM workers (default 2)
#   BENCH_KEYS      keys in the big tokens (default 10000), filled in the
#                   steps BENCH_KEY_STEPS (default "1000 5000 10000")
#   BENCH_BACKENDS  SoftHSM2 object stores measured (default "file db")
#   BENCH_REFILL    1 (or a list of back-ends): empty those big tokens
#                   first, so that the fill rate covers the whole range;
#                   else they are kept and topped up
#   BENCH_FILL_PROCS, BENCH_START_RUNS  fill processes (2), starts per
#                   measurement (3)
#
#   BENCH_ROUNDS    rounds of kmsd against the floor (default 3)
#   BENCH_WARMUP    seconds of load before each of those runs, not
#                   counted (default 1)
#   BENCH_PROFILE   0: no perf profile of kmsd and the floor;
#   BENCH_KEEP_PERF 1: keep their perf data in bench/results/perf-*.data
#   BENCH_ONLY      floor: only kmsd against the floor (and its profiles);
#                   the report then regenerates only their section of
#                   docs/performance.md and the README's rows.  pkcs11:
#                   only the PKCS#11 module against kmsload (its section
#                   of docs/performance.md).  auditv2: only the audit log
#                   v2 against the log before it (its section of
#                   docs/performance.md).  etcd: only the etcd store
#                   against the token store (bench/etcd.py: Sign
#                   throughput, CreateKey/RotateKey latency, a change's
#                   way to the other instance)
#
# A quick check of the whole run: BENCH_SECONDS=1 BENCH_KEYS=200
# BENCH_START_RUNS=1 make bench (the results then miss the 10,000-key
# targets, and say so).  kmsd against the floor alone, short:
# BENCH_ONLY=floor BENCH_SECONDS=2 make bench.  The module alone:
# BENCH_ONLY=pkcs11 make bench.  The audit log's cost alone:
# BENCH_ONLY=auditv2 BENCH_SECONDS=3 make bench.  The etcd store alone,
# quick: BENCH_ONLY=etcd BENCH_SECONDS=2 make bench.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOP=$(pwd)
BUILD=${BUILD:-build}
if [ "${BENCH_ONLY:-}" = etcd ]; then
	BUILD=$BUILD exec /usr/bin/python3 bench/etcd.py
fi
SECONDS_EACH=${BENCH_SECONDS:-5}
ADDR=${BENCH_ADDR:-127.0.0.1:17443}
HOME_DIR=$TOP/$BUILD/bench-home
OUT=$TOP/bench/results
mkdir -p "$OUT"

# The plot needs gnuplot; install it when missing, as deps.sh does.
if ! command -v gnuplot >/dev/null; then
	echo "bench: installing gnuplot-nox" >&2
	SUDO=()
	[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends gnuplot-nox >/dev/null
fi

KMS_HOME=$HOME_DIR KMS_ADDR=$ADDR bash hsm-config/setup.sh >/dev/null
export KMS_HOME=$HOME_DIR
export SOFTHSM2_CONF=$HOME_DIR/softhsm2.conf
PKI=$HOME_DIR/pki
KMSCTL=("$BUILD/kmsctl" --addr "$ADDR")
. bench/kmsd.sh
trap stop_kmsd EXIT

# cpu_us PID: the process's CPU time so far, in microseconds (utime +
# stime from /proc, every thread).
cpu_us() {
	awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($14 + $15) * 1000000 / hz }' \
	    "/proc/$1/stat"
}

# cs PID: the context switches of every thread of the process so far,
# voluntary (it waited) and not ("VOL INVOL").
cs() {
	cat /proc/"$1"/task/*/status 2>/dev/null | awk '
	    /^voluntary_ctxt_switches/ { v += $2 }
	    /^nonvoluntary_ctxt_switches/ { n += $2 }
	    END { printf "%d %d", v, n }'
}

# load_on PREFIX PID ADDR ARGS...: one kmsload run against the server PID
# listening on ADDR; its JSON gains the server's CPU time per operation,
# peak RSS and context switches per operation as PREFIX_cpu_us_per_op,
# PREFIX_peak_rss_kib, PREFIX_vcs_per_op and PREFIX_ivcs_per_op.
load_on() {
	local prefix=$1 spid=$2 saddr=$3 before after csb csa res
	shift 3
	before=$(cpu_us "$spid")
	csb=$(cs "$spid")
	res=$("$BUILD/kmsload" --addr "$saddr" --ca "$PKI/ca.pem" \
	    --cert "$PKI/clients/ci.pem" --key "$PKI/clients/ci.key" \
	    --seconds "$SECONDS_EACH" "$@")
	after=$(cpu_us "$spid")
	csa=$(cs "$spid")
	/usr/bin/python3 -c 'import json, sys
r = json.loads(sys.argv[1])
p = sys.argv[5]
n = max(r["ops"], 1)
r[p + "_cpu_us_per_op"] = round((int(sys.argv[2]) - int(sys.argv[3])) / n,
                                1)
r[p + "_peak_rss_kib"] = int(sys.argv[4])
b, a = sys.argv[6].split(), sys.argv[7].split()
r[p + "_vcs_per_op"] = round((int(a[0]) - int(b[0])) / n, 2)
r[p + "_ivcs_per_op"] = round((int(a[1]) - int(b[1])) / n, 2)
print(json.dumps(r))' "$res" "$after" "$before" \
	    "$(awk '/^VmHWM/ {print $2}' "/proc/$spid/status")" "$prefix" \
	    "$csb" "$csa"
}

# load ARGS...: one kmsload run against the benchmark's kmsd.
load() {
	load_on kmsd "$pid" "$ADDR" "$@"
}

make_key() {
	"${KMSCTL[@]}" --as officer key get "$1" >/dev/null 2>&1 ||
	    "${KMSCTL[@]}" --as officer key create "$1" --algorithm "$2" \
	    >/dev/null
}

WORKERS=${BENCH_WORKERS:-2}
MODULE=/usr/lib/softhsm/libsofthsm2.so
CLIENT_MODULE=/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so
RESULTS=$OUT/parts.jsonl
: >"$RESULTS"

# add NAME JSON: one measured result.
add() {
	printf '{"name": "%s", "result": %s}\n' "$1" "$2" >>"$RESULTS"
	echo "bench: $1: $2" >&2
}

raw() {
	"$BUILD/p11raw" --module "$1" --token kms --pin-file "$HOME_DIR/pin" \
	    --seconds "$SECONDS_EACH" --alg "$2" --threads "$3"
}

# The benchmark's own configurations: WORKERS HSM workers, and the audit
# log fdatasync'd (the service as shipped) or written but not synced.
sed -e "s/^workers *=.*/workers = $WORKERS/" -e 's/^sync *=.*//' \
    "$HOME_DIR/kmsd.conf" >"$HOME_DIR/bench-durable.conf"
sed -e 's/^\[audit\]$/[audit]\nsync = no/' "$HOME_DIR/bench-durable.conf" \
    >"$HOME_DIR/bench-nosync.conf"
# The audit log as it was before v2 (no Merkle tree, batch seals or HSM
# anchor: [audit] v2 = no), in a directory of its own so that the v2
# chain, whose anchor is on the token, is never written without them.
sed -e 's/^dir *= *audit$/dir = audit-v1\nv2 = no/' \
    "$HOME_DIR/bench-durable.conf" >"$HOME_DIR/bench-v1.conf"
grep -q '^v2 = no$' "$HOME_DIR/bench-v1.conf" || {
	echo "bench: no [audit] dir line to turn v2 off in" >&2
	exit 1
}

# The machine's load around the comparison: other work on the machine
# takes CPU from both, and the report says so.
loadavg() {
	awk '{ printf "{\"load1\": %s, \"load5\": %s}", $1, $2 }' /proc/loadavg
}

# auditv2_cmp: Sign P-256 at 16 in flight on kmsd with the audit log v2
# (as shipped) and with v2 = no, one kmsd at a time on the same address,
# key and token, alternately (the order swapped every round), ROUNDS
# times, each run after a WARMUP-second one that is not counted.
auditv2_cmp() {
	local round mode order
	add auditv2-load-before "$(loadavg)"
	for round in $(seq "$ROUNDS"); do
		order="v2 v1"
		[ $((round % 2)) = 0 ] && order="v1 v2"
		for mode in $order; do
			if [ "$mode" = v2 ]; then
				start_kmsd "$HOME_DIR/bench-durable.conf" \
				    "$OUT/kmsd-auditv2.log"
			else
				start_kmsd "$HOME_DIR/bench-v1.conf" \
				    "$OUT/kmsd-auditv1.log"
			fi
			SECONDS_EACH=$WARMUP load --key-name bench/p256 \
			    --inflight 16 --threads 2 >/dev/null
			add "auditv2-$mode-16-$round" "$(load --key-name \
			    bench/p256 --inflight 16 --threads 2)"
			stop_kmsd
		done
	done
	add auditv2-load-after "$(loadavg)"
}

ONLY=${BENCH_ONLY:-}
case $ONLY in
"" | floor | pkcs11 | auditv2) ;;
*) echo "bench: BENCH_ONLY is empty, floor, pkcs11, auditv2 or etcd, not" \
    "$ONLY" >&2
   exit 2 ;;
esac
machine="$(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-1}

# 1. Raw C_Sign on a token key of the same token (the baseline).
if [ -z "$ONLY" ]; then
	add raw-ecdsa-1 "$(raw "$MODULE" ecdsa 1)"
	add raw-ecdsa-2 "$(raw "$MODULE" ecdsa 2)"
	add raw-eddsa-1 "$(raw "$MODULE" eddsa 1)"
	add raw-rsa-1 "$(raw "$MODULE" rsa 1)"
fi

# 2. kms, audit durable.
start_kmsd "$HOME_DIR/bench-durable.conf" "$OUT/kmsd-durable.log"
make_key bench/p256 EC_P256_SHA256
if [ "$ONLY" = auditv2 ]; then
	stop_kmsd
	auditv2_cmp
	/usr/bin/python3 bench/report.py "$RESULTS" "$OUT" "$machine" \
	    "$WORKERS" "$SECONDS_EACH" ""
	exit 0
fi

# 2a. The PKCS#11 module (build/libkms-pkcs11.so): C_Sign (CKM_ECDSA, a
# 32-byte digest) from 16 threads, one session each, through
# tests/p11drive.c, then kmsload with 16 calls in flight on the same key
# and the same client identity (ci), one run each, back to back.
if [ "$ONLY" != floor ]; then
	printf '[client]\naddr = %s\nca = %s\ncert = %s\nkey = %s\n' \
	    "$ADDR" "$PKI/ca.pem" "$PKI/clients/ci.pem" \
	    "$PKI/clients/ci.key" >"$HOME_DIR/pkcs11.conf"
	add pkcs11-load-before "$(awk '{ printf "{\"load1\": %s}", $1 }' \
	    /proc/loadavg)"
	# A warm-up that is not counted, as for the floor below.
	SECONDS_EACH=${BENCH_WARMUP:-1} load --key-name bench/p256 \
	    --inflight 16 --threads 2 --digest-len 32 >/dev/null
	# The module's CPU time comes from time(1) (user and system, every
	# thread), kmsd's from /proc as for kmsload.
	before=$(cpu_us "$pid")
	res=$(KMS_PKCS11_CONFIG=$HOME_DIR/pkcs11.conf /usr/bin/time \
	    -f 'cpu=%U+%S' "$BUILD/p11drive" "$BUILD/libkms-pkcs11.so" bench \
	    bench/p256 ECDSA 16 "$SECONDS_EACH" 2>&1 || true)	# failures are counted
	after=$(cpu_us "$pid")
	# "threads=16 seconds=5.0 signatures=N failed=0 rate=R/s\ncpu=U+S"
	add pkcs11-module-16 "$(echo "$res" | awk -v k=$((after - before)) '{
	    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
	} END {
	    sub("/s", "", v["rate"]); split(v["cpu"], c, "+")
	    n = v["signatures"] > 0 ? v["signatures"] : 1
	    printf "{\"threads\": %d, \"seconds\": %s, \"ops\": %d, ", \
	        v["threads"], v["seconds"], v["signatures"]
	    printf "\"errors\": %d, \"ops_per_s\": %s, ", v["failed"], \
	        v["rate"]
	    printf "\"cpu_us_per_op\": %.1f, \"kmsd_cpu_us_per_op\": %.1f}", \
	        (c[1] + c[2]) * 1e6 / n, k / n }')"
	add pkcs11-kmsload-16 "$(load --key-name bench/p256 --inflight 16 \
	    --threads 2 --digest-len 32)"
	if [ "$ONLY" = pkcs11 ]; then
		stop_kmsd
		/usr/bin/python3 bench/report.py "$RESULTS" "$OUT" \
		    "$machine" "$WORKERS" "$SECONDS_EACH" ""
		exit 0
	fi
fi

# 2b. kmsd against the floor: bench/floor.c on the same configuration
# (certificates, CA, token, PIN file, workers) and the same key, both
# running at once and loaded in turn by the same kmsload, floor then
# kmsd, at 16 and 64 in flight, ROUNDS times.  Each run follows a
# WARMUP-second run that is not counted.
fpid=
stop_floor() {
	if [ -n "$fpid" ]; then
		kill -TERM "$fpid" 2>/dev/null || true
		wait "$fpid" 2>/dev/null || true
		fpid=
	fi
}
trap 'stop_floor; stop_kmsd' EXIT
"$BUILD/floor" --config "$HOME_DIR/bench-durable.conf" \
    --listen 127.0.0.1:0 --key-name bench/p256 2>"$OUT/floor.log" &
fpid=$!
for _ in $(seq 100); do
	grep -q '^floor: serving on port' "$OUT/floor.log" && break
	kill -0 "$fpid" 2>/dev/null || break
	sleep 0.1
done
FADDR=127.0.0.1:$(sed -n 's/^floor: serving on port \([0-9]*\).*/\1/p' \
    "$OUT/floor.log")
if [ "$FADDR" = 127.0.0.1: ]; then
	echo "bench: the floor did not start:" >&2
	cat "$OUT/floor.log" >&2
	exit 1
fi
# The floor's answer is a real signature: it verifies under kmsd's key.
digest=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
"$BUILD/kmsctl" --addr "$FADDR" --as ci sign bench/p256 --digest "$digest" \
    -o "$HOME_DIR/floor.sig" >/dev/null
if ! "${KMSCTL[@]}" --as ci verify bench/p256 --signature "$HOME_DIR/floor.sig" \
    --digest "$digest" >/dev/null; then
	echo "bench: the floor's signature does not verify with kmsd" >&2
	exit 1
fi
rm -f "$HOME_DIR/floor.sig"
rm -f "$OUT/profile-floor-16.txt" "$OUT/profile-kmsd-16.txt" \
    "$OUT/profile-16.md"

# cmp WHO N ROUND: one counted run (after a warm-up) of WHO, floor or kmsd.
cmp() {
	local spid=$pid saddr=$ADDR
	if [ "$1" = floor ]; then
		spid=$fpid
		saddr=$FADDR
	fi
	SECONDS_EACH=$WARMUP load_on server "$spid" "$saddr" \
	    --key-name bench/p256 --inflight "$2" --threads 2 >/dev/null
	add "cmp-$1-$2-$3" "$(load_on server "$spid" "$saddr" \
	    --key-name bench/p256 --inflight "$2" --threads 2)"
}
add cmp-load-before "$(loadavg)"
for round in $(seq "$ROUNDS"); do
	for n in 16 64; do
		cmp floor "$n" "$round"
		cmp kmsd "$n" "$round"
	done
done
add cmp-load-after "$(loadavg)"
# What one durable append costs on the audit log's file system (the
# group commit waits for one per batch): bench/synclat.py.
add cmp-synclat "$(/usr/bin/python3 bench/synclat.py "$HOME_DIR/audit")"
# Where each spends its CPU at 16 in flight: perf, in runs of their own
# (not counted above): a profile with call graphs, then the system calls
# (perf trace -s); bench/profdiff.py sets them side by side, per call, in
# profile-16.md.
# beside PID ADDR JSON TOOL...: TOOL -- sleep (a run's length but 1 s)
# while a run at 16 in flight loads the server PID on ADDR, its result in
# JSON.
beside() {
	local spid=$1 saddr=$2 json=$3 tpid
	shift 3
	"$@" -- sleep $((SECONDS_EACH > 2 ? SECONDS_EACH - 1 : 1)) \
	    >/dev/null 2>&1 &
	tpid=$!
	load_on server "$spid" "$saddr" --key-name bench/p256 \
	    --inflight 16 --threads 2 >"$json"
	wait "$tpid" || true
}
# profile WHO PID ADDR
profile() {
	local who=$1 spid=$2 saddr=$3
	beside "$spid" "$saddr" "$OUT/profile-$who-16.json" perf record -q \
	    -F 999 --call-graph dwarf -p "$spid" -o "$OUT/perf-$who.data"
	beside "$spid" "$saddr" "$OUT/trace-$who.json" perf trace -s \
	    -p "$spid" -o "$OUT/trace-$who.txt"
	{
		echo "# perf record -F 999 --call-graph dwarf -p PID of the" \
		    "$who at 16 in flight: $(cat "$OUT/profile-$who-16.json")"
		echo "# self time per DSO:"
		perf report -i "$OUT/perf-$who.data" --no-children \
		    --sort dso --stdio 2>/dev/null |
		    grep -E '^ +[0-9.]+%' | head -15
		echo "# self time per symbol:"
		perf report -i "$OUT/perf-$who.data" --no-children \
		    --sort dso,sym --stdio -g none 2>/dev/null |
		    grep -E '^ +[0-9.]+%' | head -60
	} >"$OUT/profile-$who-16.txt" || true
}
if [ "${BENCH_PROFILE:-1}" != 0 ] && command -v perf >/dev/null; then
	profile floor "$fpid" "$FADDR"
	profile kmsd "$pid" "$ADDR"
	# Whatever perf could not do (no trace events, say), the rest stands.
	/usr/bin/python3 bench/profdiff.py "$OUT" \
	    $((SECONDS_EACH > 2 ? SECONDS_EACH - 1 : 1)) >/dev/null ||
	    echo "bench: bench/profdiff.py failed" >&2
	# BENCH_KEEP_PERF=1 keeps them, to look further by hand.
	for who in floor kmsd; do
		[ "${BENCH_KEEP_PERF:-0}" = 1 ] && break
		rm -f "$OUT/perf-$who.data" "$OUT/perf-$who.data.old" \
		    "$OUT/profile-$who-16.json" "$OUT/trace-$who.json" \
		    "$OUT/trace-$who.txt" "$OUT/trace-$who.txt.old"
	done
fi
stop_floor
if [ "$ONLY" = floor ]; then
	stop_kmsd
	/usr/bin/python3 bench/report.py "$RESULTS" "$OUT" "$machine" \
	    "$WORKERS" "$SECONDS_EACH" ""
	exit 0
fi
make_key bench/ed25519 ED25519
make_key bench/rsa2048 RSA_PKCS1_2048_SHA256
for n in 1 16 64; do
	# Where kmsd's time goes at 16 in flight: a perf profile beside it.
	if [ $n = 16 ] && command -v perf >/dev/null; then
		perf record -q -F 499 -g -p "$pid" -o "$OUT/perf.data" -- \
		    sleep $((SECONDS_EACH > 2 ? SECONDS_EACH - 1 : 1)) \
		    >/dev/null 2>&1 &
		perfpid=$!
	fi
	add kms-ecdsa-$n "$(load --key-name bench/p256 --inflight $n \
	    --threads $((n < 2 ? 1 : 2)))"
	if [ $n = 16 ] && [ -n "${perfpid:-}" ]; then
		wait "$perfpid" || true
		perf report -i "$OUT/perf.data" --no-children --sort dso \
		    --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -15 \
		    >"$OUT/profile-kms-ecdsa-16.txt" || true
		rm -f "$OUT/perf.data" "$OUT/perf.data.old"
	fi
done
for n in 1 16 64; do
	add kms-eddsa-$n "$(load --key-name bench/ed25519 --inflight $n \
	    --threads $((n < 2 ? 1 : 2)) --digest-len 0 --data-len 32)"
	add kms-rsa-$n "$(load --key-name bench/rsa2048 --inflight $n \
	    --threads $((n < 2 ? 1 : 2)))"
done
# Key wrapping (32-byte data keys), when the key type exists.
make_key bench/kek AES_256_KWP
head -c 32 /dev/urandom >"$OUT/dk.bin"
"${KMSCTL[@]}" --as ci wrap bench/kek --in "$OUT/dk.bin" -o "$OUT/dk.blob"
add kms-wrap-16 "$(load --key-name bench/kek --rpc Wrap --inflight 16 \
    --threads 2 --data-len 32)"
add kms-unwrap-16 "$("$BUILD/kmsload" --addr "$ADDR" --ca "$PKI/ca.pem" \
    --cert "$PKI/clients/unwrapper.pem" --key "$PKI/clients/unwrapper.key" \
    --seconds "$SECONDS_EACH" --key-name bench/kek --rpc Unwrap \
    --blob-file "$OUT/dk.blob" --inflight 16 --threads 2)"
add kms-datakey-16 "$(load --key-name bench/kek --rpc GenerateDataKey \
    --inflight 16 --threads 2 --data-len 32)"
rm -f "$OUT/dk.bin" "$OUT/dk.blob"
stop_kmsd
batching=$(grep -o 'audit: [0-9]* records in [0-9]* writes ([^)]*)' \
    "$OUT/kmsd-durable.log" | tail -1)

# 3. kms, audit written but not synced.
start_kmsd "$HOME_DIR/bench-nosync.conf" "$OUT/kmsd-nosync.log"
add kms-ecdsa-16-nosync "$(load --key-name bench/p256 --inflight 16 \
    --threads 2)"
stop_kmsd

# 3a. What the audit log v2 costs against the log before it.
auditv2_cmp

# 4. p11-kit's remote PKCS#11: p11-kit server in front of the same token,
# C_Sign through its client module.
sock=$OUT/p11-kit.sock
rm -f "$sock"
p11-kit server -f -s --provider "$MODULE" -n "$sock" "pkcs11:token=kms" \
    >/dev/null 2>"$OUT/p11-kit.log" &
p11pid=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
export P11_KIT_SERVER_ADDRESS="unix:path=$sock"
add p11kit-ecdsa-1 "$(raw "$CLIENT_MODULE" ecdsa 1)"
add p11kit-ecdsa-2 "$(raw "$CLIENT_MODULE" ecdsa 2)"
unset P11_KIT_SERVER_ADDRESS
kill "$p11pid" 2>/dev/null || true
wait "$p11pid" 2>/dev/null || true

# 5. pkcs11-tool, one process per signature, as CI scripts do it (the dev
# PIN goes on its command line: pkcs11-tool takes it no other way).
head -c 32 /dev/urandom >"$OUT/digest.bin"
pin=$(cat "$HOME_DIR/pin")
P11TOOL=(pkcs11-tool --module "$MODULE" --token-label kms --login --pin "$pin")
# Its own P-256 token key, selected by id as pkcs11-tool needs.
if ! "${P11TOOL[@]}" --list-objects --type privkey 2>/dev/null |
    grep -q 'label: *bench-tool-ecdsa'; then
	"${P11TOOL[@]}" --keypairgen --key-type EC:prime256v1 \
	    --label bench-tool-ecdsa --id 7074 >/dev/null 2>&1
fi
n=0
end=$(($(date +%s%N) + SECONDS_EACH * 1000000000))
start=$(date +%s%N)
while [ "$(date +%s%N)" -lt "$end" ]; do
	if "${P11TOOL[@]}" --sign -m ECDSA --id 7074 -i "$OUT/digest.bin" \
	    -o "$OUT/sig.bin" >/dev/null 2>&1; then
		n=$((n + 1))
	else
		echo "bench: pkcs11-tool --sign failed" >&2
		exit 1
	fi
done
el=$(( $(date +%s%N) - start ))
add pkcs11tool-ecdsa "$(printf '{"ops": %d, "ns": %d}' "$n" "$el")"
rm -f "$OUT/digest.bin" "$OUT/sig.bin"

# 6. Many keys, per SoftHSM2 object store: "file" (the default, Debian's
# module) and "db" (SQLite; Debian's module lacks it, so the same SoftHSM2
# version is built with it by bench/softhsm2-db.sh).  A token per back-end
# and step in $BUILD/bench-keys-BACKEND-KEYS, filled by kmsfill up to the
# step's size from a copy of the previous step's, and kept (a later run
# measures them again; BENCH_REFILL=1 starts afresh so that the fill rate
# is measured in the run).  At each step:
# the fill rate, a check that kmsd loads every key and that GetKey and Sign
# work on a sample, kmsd's start-up time and memory (BENCH_START_RUNS
# starts), and Sign P-256 at 16 in flight.  A perf profile and a massif
# heap profile of one start show where time and memory go.
KEYS=${BENCH_KEYS:-10000}
if [ "$KEYS" -ge 10000 ]; then
	STEPS="1000 5000 $KEYS"
else
	STEPS="$((KEYS / 10 > 0 ? KEYS / 10 : 1)) $((KEYS / 2 > 0 ? KEYS / 2 : 1)) $KEYS"
fi
STEPS=${BENCH_KEY_STEPS:-$STEPS}
BACKENDS=${BENCH_BACKENDS:-file db}
FILL_PROCS=${BENCH_FILL_PROCS:-2}
START_RUNS=${BENCH_START_RUNS:-3}
DBMOD=
case " $BACKENDS " in
*" db "*) DBMOD=$(bash bench/softhsm2-db.sh "$TOP/$BUILD/softhsm2-db") ;;
esac
last_step=${STEPS##* }

# SoftHSM2 2.6.1 makes its SQLite tables without an index on the object
# id, so every attribute read scans every attribute of the token (about
# 2.5 keys/s filling at 1,000 keys, and falling).  The bench adds one per
# table, as an operator would; "db, no index" start-up is measured at the
# first step by dropping them for that measurement.
db_index() {
	local db t
	db=$(ls "$BIG"/tokens/*/sqlite3.db)
	for t in text integer binary array boolean datetime real; do
		if [ "$1" = on ]; then
			sqlite3 "$db" "CREATE INDEX IF NOT EXISTS
			    bench_attribute_${t}_object ON
			    attribute_$t (object_id, type);"
		else
			sqlite3 "$db" "DROP INDEX IF EXISTS
			    bench_attribute_${t}_object;"
		fi
	done
}

# big_setup BACKEND KEYS PREVIOUS: $BIG, $BIGMOD and $BIGCONF of the
# back-end's token of KEYS keys.  Each step has its own token, kept, made
# from a copy of the previous step's (so that a later run measures every
# step again without filling).
big_setup() {
	BIG=$TOP/$BUILD/bench-keys-$1-$2
	BIGMOD=$MODULE
	[ "$1" = db ] && BIGMOD=$DBMOD
	if ! [ -d "$BIG" ] && [ -n "$3" ] &&
	    [ -d "$TOP/$BUILD/bench-keys-$1-$3" ]; then
		cp -a "$TOP/$BUILD/bench-keys-$1-$3" "$BIG.tmp"
		mv "$BIG.tmp" "$BIG"
	fi
	mkdir -p "$BIG"
	# The tokens are where the directory is now (it may have moved).
	if [ -e "$BIG/softhsm2.conf" ]; then
		sed -i "s|^directories.tokendir = .*|directories.tokendir = $BIG/tokens|" \
		    "$BIG/softhsm2.conf"
	else
		printf '%s\n' "directories.tokendir = $BIG/tokens" \
		    "objectstore.backend = $1" "log.level = ERROR" \
		    "slots.removable = false" >"$BIG/softhsm2.conf"
	fi
	KMS_HOME=$BIG KMS_ADDR=$ADDR KMS_PKCS11_MODULE=$BIGMOD \
	    bash hsm-config/setup.sh >/dev/null
	export SOFTHSM2_CONF=$BIG/softhsm2.conf
	BIGCONF=$BIG/bench.conf
	sed -e "s|^module *=.*|module = $BIGMOD|" \
	    -e "s/^workers *=.*/workers = $WORKERS/" "$BIG/kmsd.conf" \
	    >"$BIGCONF"
	[ "$1" = db ] && db_index on
	return 0
}

big_ctl() {
	"$BUILD/kmsctl" --addr "$ADDR" --cert "$BIG/pki/clients/$1.pem" \
	    --key "$BIG/pki/clients/$1.key" --ca "$BIG/pki/ca.pem" "${@:2}"
}

# alive PID: the process runs (an exited child stays a zombie until wait).
alive() {
	local st
	st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# big_start CONF LOG [WRAPPER...]: starts kmsd (under WRAPPER, e.g. perf)
# and waits for Health; sets pid, up_s (process start to SERVING), log_s
# (to the "keystore: N keys loaded" line, by its time stamp) and nkeys.
big_start() {
	local conf=$1 log=$2 t0 up ts end
	shift 2
	t0=$(date +%s%N)
	"$@" "$BUILD/kmsd" --config "$conf" --listen "$ADDR" --log-level info \
	    2>"$log" &
	pid=$!
	# Health in rounds of 2 s, so that a kmsd that exits (the port taken
	# by another process, say) ends the wait at once.
	end=$(($(date +%s) + ${START_TIMEOUT:-900}))
	while ! up=$("$BUILD/kmsload" --addr "$ADDR" --ca "$BIG/pki/ca.pem" \
	    --cert "$BIG/pki/clients/ci.pem" --key "$BIG/pki/clients/ci.key" \
	    --rpc Health --since-ns "$t0" --seconds 2 2>/dev/null) &&
	    alive "$pid" && [ "$(date +%s)" -lt "$end" ]; do
		:
	done
	if ! alive "$pid" || ! grep -q '"serving":true' <<<"$up"; then
		if [ -n "${START_TIMEOUT:-}" ]; then
			# Still loading: it takes no signal before it serves.
			kill -KILL "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
			pid=
			return 1
		fi
		echo "bench: kmsd on $conf did not answer Health:" >&2
		tail -5 "$log" >&2
		exit 1
	fi
	up_s=$(/usr/bin/python3 -c 'import json, sys
print(json.loads(sys.argv[1])["up_s"])' "$up")
	ts=$(sed -n 's/^\([^ ]*\) kmsd info: keystore: [0-9]* keys loaded.*/\1/p' \
	    "$log")
	nkeys=$(sed -n 's/.* keystore: \([0-9]*\) keys loaded.*/\1/p' "$log")
	log_s=$(( ($(date -d "$ts" +%s%N) - t0) / 1000 ))e-6
}

# The process under a wrapper (perf, valgrind) is kmsd itself or its child.
kmsd_pid() {
	local c
	if [ "$(cat "/proc/$pid/comm")" = kmsd ] ||
	    ! c=$(pgrep -P "$pid" -x kmsd); then
		echo "$pid"
	else
		echo "$c"
	fi
}

mem_json() {
	awk '/^VmRSS/ { r = $2 } /^VmHWM/ { h = $2 }
	    END { printf "\"rss_kib\": %d, \"hwm_kib\": %d", r, h }' \
	    "/proc/$(kmsd_pid)/status"
}

stop_wrapped() {
	kill -TERM "$(kmsd_pid)" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	pid=
}

# measure_starts NAME CONF: START_RUNS starts of kmsd, one result.
measure_starts() {
	local runs="" i
	for i in $(seq "$START_RUNS"); do
		if ! big_start "$2" "$OUT/kmsd-$1.log"; then
			add "$1" "{\"keys\": null, \"timeout_s\": $START_TIMEOUT}"
			return 0
		fi
		runs="$runs${runs:+, }{\"up_s\": $up_s, \"log_s\": $log_s, $(mem_json)}"
		stop_wrapped
	done
	add "$1" "{\"keys\": $nkeys, \"runs\": [$runs]}"
}

# heap_profile BACKEND KEYS: massif's peak heap of one start, by owner.
heap_profile() {
	command -v valgrind >/dev/null || return 0
	big_start "$BIGCONF" "$OUT/kmsd-massif-$1.log" valgrind -q \
	    --tool=massif --threshold=0.1 --massif-out-file="$OUT/massif-$1.out"
	stop_wrapped
	add "heap-$1-$2" "$(/usr/bin/python3 bench/massif.py \
	    "$OUT/massif-$1.out")"
	rm -f "$OUT/massif-$1.out"
}

for b in $BACKENDS; do
	case " ${BENCH_REFILL:-0} " in
	" 1 " | *" $b "*) rm -rf "$TOP/$BUILD/bench-keys-$b-"* ;;
	esac
	prev=
	big_setup "$b" "${STEPS%% *}" ""
	# The heap profile at the last step; a db start is so slow (every
	# first read of an object is a SQLite transaction) that under
	# valgrind it is profiled at the first.
	heap_step=$last_step
	[ "$b" = db ] && heap_step=${STEPS%% *}
	# Exits 1 when the property does not hold, and still reports.
	vis=$("$BUILD/kmsfill" --module "$BIGMOD" --token kms \
	    --pin-file "$BIG/pin" --visibility) || true
	add "visibility-$b" "${vis:-{\"holds\": null\}}"
	for n in $STEPS; do
		big_setup "$b" "$n" "$prev"
		prev=$n
		fill=$("$BUILD/kmsfill" --module "$BIGMOD" --token kms \
		    --pin-file "$BIG/pin" --count "$n" --procs "$FILL_PROCS") ||
		    { echo "bench: kmsfill failed: $fill" >&2; exit 1; }
		# Each fill is logged with the token; a step this run found
		# filled already reports the fill that made it.
		printf '%s %s\n' "$(date -u +%FT%TZ)" "$fill" >>"$BIG/fill.log"
		case $fill in
		*'"made":0,'*)
			made=$(grep "\"keys\":$n,.*\"complete\":true" \
			    "$BIG/fill.log" | grep -v '"made":0,' | tail -1)
			[ -n "$made" ] && fill="{\"earlier\": \"${made%% *}\", \"fill\": ${made#* }}"
			;;
		esac
		add "fill-$b-$n" "$fill"
		# kmsd loads them all; GetKey and Sign work on a sample.
		big_start "$BIGCONF" "$OUT/kmsd-check-$b.log"
		if [ "$nkeys" -lt "$n" ]; then
			echo "bench: kmsd loaded $nkeys keys of $n" >&2
			exit 1
		fi
		for i in 0 $((n / 2)) $((n - 1)); do
			k=$(printf 'bulk/k-%06d' "$i")
			big_ctl officer key get "$k" >/dev/null
			big_ctl ci sign "$k" --digest "$(printf '%064d' "$i")" \
			    --format hex >/dev/null
		done
		add "check-$b-$n" "{\"loaded\": $nkeys, \"get_and_sign_ok\": [\"bulk/k-000000\", \"$(printf 'bulk/k-%06d' $((n / 2)))\", \"$(printf 'bulk/k-%06d' $((n - 1)))\"]}"
		if [ "$n" = "${STEPS%% *}" ]; then
			# A key made by CreateKey against one made by kmsfill.
			big_ctl officer key get bench/ref >/dev/null 2>&1 ||
			    big_ctl officer key create bench/ref \
			    --algorithm EC_P256_SHA256 >/dev/null
			same=true
			"$BUILD/kmsfill" --module "$BIGMOD" --token kms \
			    --pin-file "$BIG/pin" --compare bench/ref \
			    --with bulk/k-000000 >"$OUT/compare-$b.txt" || same=false
			add "compare-$b" "{\"same\": $same}"
		fi
		add "kms-ecdsa-16-$b-$n" "$(PKI=$BIG/pki load \
		    --key-name bulk/k-000000 --inflight 16 --threads 2)"
		stop_wrapped
		measure_starts "startup-$b-$n" "$BIGCONF"
		[ "$n" = "$heap_step" ] && heap_profile "$b" "$n"
		if [ "$b" = db ] && [ "$n" = "${STEPS%% *}" ]; then
			db_index off
			START_RUNS=1 START_TIMEOUT=600 measure_starts \
			    "startup-db-noindex-$n" \
			    "$BIGCONF"
			db_index on
		fi
	done
	# Where start-up time and memory go, at the last step.
	if command -v perf >/dev/null; then
		big_start "$BIGCONF" "$OUT/kmsd-perf-$b.log" perf record -q \
		    -F 499 --call-graph dwarf -o "$OUT/perf-start.data" --
		stop_wrapped
		{
			echo "# perf record -F 499 --call-graph dwarf of kmsd from exec to its first" \
			    "Health answer (and its stop), $nkeys keys, $b back-end"
			echo "# self time per DSO:"
			perf report -i "$OUT/perf-start.data" --no-children \
			    --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' |
			    head -12
			echo "# time inside (children included):"
			perf report -i "$OUT/perf-start.data" --children \
			    --sort sym -g none --stdio 2>/dev/null |
			    grep -E '\] (main|hsm_open|C_Initialize|C_Login|keystore_open|hsm_list|load_one|hsm_data_get|meta_decode|json_loadb|C_FindObjectsInit|C_FindObjects|C_GetAttributeValue|audit_key_open|audit_open|hsm_find|hsm_find_key_pair|hsm_list_data|rpc_server_start|insert_locked)$' |
			    head -30
		} >"$OUT/profile-start-$b.txt" || true
		rm -f "$OUT/perf-start.data" "$OUT/perf-start.data.old"
	fi
	# The built module on the file token: the same start-up as Debian's?
	if [ "$b" = file ] && [ -n "$DBMOD" ]; then
		sed -e "s|^module *=.*|module = $DBMOD|" "$BIGCONF" \
		    >"$BIG/bench-built.conf"
		measure_starts "startup-file-built-$last_step" \
		    "$BIG/bench-built.conf"
	fi
done
export SOFTHSM2_CONF=$HOME_DIR/softhsm2.conf

/usr/bin/python3 bench/report.py "$RESULTS" "$OUT" "$machine" "$WORKERS" \
    "$SECONDS_EACH" "$batching"

# Capgo-compatible bundles: kmsctl against Capgo's own CLI, its own kmsd
# (bench/capgo.sh writes bench/results/capgo.json).
BUILD=$BUILD bash bench/capgo.sh

# kms OTA bundles: sealing against its own kmsd, the verifier's throughput
# and peak memory (bench/ota.sh writes bench/results/ota.json).
BUILD=$BUILD bash bench/ota.sh

# Several hosts: the etcd store against the token store, on a 3-member
# etcd cluster of its own (bench/etcd.py writes bench/results/etcd.json
# and its section of docs/performance.md).
BUILD=$BUILD /usr/bin/python3 bench/etcd.py
