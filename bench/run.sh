#!/usr/bin/env bash
# make bench: measures kmsd on this machine against raw PKCS#11 C_Sign on
# the same token, p11-kit's remote PKCS#11 and pkcs11-tool per process, and
# writes bench/results/results.json and bench/results/summary.md.  Every
# number printed is measured in this run.
#
#   BENCH_SECONDS   duration of each load run (default 5)
#   BENCH_ADDR      where the benchmark kmsd listens (default 127.0.0.1:17443)
#   BENCH_WORKERS   kmsd HSM workers (default 2)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOP=$(pwd)
BUILD=${BUILD:-build}
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

# 1. Raw C_Sign on a token key of the same token (the baseline).
add raw-ecdsa-1 "$(raw "$MODULE" ecdsa 1)"
add raw-ecdsa-2 "$(raw "$MODULE" ecdsa 2)"
add raw-eddsa-1 "$(raw "$MODULE" eddsa 1)"
add raw-rsa-1 "$(raw "$MODULE" rsa 1)"

# 2. kms, audit durable.
start_kmsd "$HOME_DIR/bench-durable.conf" durable
make_key bench/p256 EC_P256_SHA256
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
start_kmsd "$HOME_DIR/bench-nosync.conf" nosync
add kms-ecdsa-16-nosync "$(load --key-name bench/p256 --inflight 16 \
    --threads 2)"
stop_kmsd

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

# 6. Start-up with many keys: a token filled once (BENCH_FILL=1, slow:
# SoftHSM2 writes a file per object) and kept in $BUILD/bench-10k.
BIG=$TOP/$BUILD/bench-10k
KEYS=${BENCH_KEYS:-10000}
if [ "${BENCH_FILL:-0}" = 1 ] || [ -d "$BIG" ]; then
	KMS_HOME=$BIG KMS_ADDR=$ADDR bash hsm-config/setup.sh >/dev/null
	export SOFTHSM2_CONF=$BIG/softhsm2.conf
	if [ "${BENCH_FILL:-0}" = 1 ]; then
		"$BUILD/kmsd" --config "$BIG/kmsd.conf" --listen "$ADDR" \
		    --log-level info 2>"$OUT/kmsd-fill.log" &
		pid=$!
		# Loading the keys already there takes a while.
		until grep -q "listening on" "$OUT/kmsd-fill.log"; do
			kill -0 "$pid" || { cat "$OUT/kmsd-fill.log" >&2; exit 1; }
			sleep 0.2
		done
		"$BUILD/kmsload" --addr "$ADDR" --ca "$BIG/pki/ca.pem" \
		    --cert "$BIG/pki/clients/officer.pem" \
		    --key "$BIG/pki/clients/officer.key" --rpc CreateKey \
		    --count "$KEYS" --key-name bulk/k --inflight 16 \
		    --threads 1 >/dev/null
		stop_kmsd
	fi
	t0=$(date +%s%N)
	"$BUILD/kmsd" --config "$BIG/kmsd.conf" --listen "$ADDR" \
	    --log-level info 2>"$OUT/kmsd-big.log" &
	pid=$!
	until grep -q "listening on" "$OUT/kmsd-big.log"; do
		kill -0 "$pid" || { cat "$OUT/kmsd-big.log" >&2; exit 1; }
		sleep 0.01
	done
	t1=$(date +%s%N)
	nkeys=$(grep -o '[0-9]* keys, audit' "$OUT/kmsd-big.log" | cut -d' ' -f1)
	rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
	stop_kmsd
	add startup-big "$(printf '{"keys": %d, "start_s": %.3f, "rss_kib": %d}' \
	    "$nkeys" "$(( (t1 - t0) / 1000 ))e-6" "$rss")"
	export SOFTHSM2_CONF=$HOME_DIR/softhsm2.conf
fi

machine="$(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
/usr/bin/python3 bench/report.py "$RESULTS" "$OUT" "$machine" "$WORKERS" \
    "$SECONDS_EACH" "$batching"

# Capgo-compatible bundles: kmsctl against Capgo's own CLI, its own kmsd
# (bench/capgo.sh writes bench/results/capgo.json).
BUILD=$BUILD bash bench/capgo.sh
