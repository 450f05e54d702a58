#!/bin/bash
# bench/threadcost.sh [BUILD...]: where the floor's and kmsd's CPU per
# Sign goes, thread by thread.  For each build (default: build), the
# floor and kmsd run on one fresh home and token; each is loaded in turn
# by the same kmsload (16 in flight, 2 client threads, THREADCOST_SECONDS
# seconds, default 5, after a 1 s warm-up), THREADCOST_ROUNDS rounds
# (default 2).  Per call it prints each thread kind's CPU time and
# voluntary + involuntary context switches (from /proc/PID/task/*), the
# process's total, and kmsd's records per fdatasync (from its log at
# stop).  The figures are thread CPU time, so they hold better than
# rates on a shared machine, but a loaded machine still inflates them.
set -eu
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -gt 0 ] || set -- "$TOP/build"
SECS=${THREADCOST_SECONDS:-5}
ROUNDS=${THREADCOST_ROUNDS:-2}
PY=/usr/bin/python3
W=$(mktemp -d /tmp/kms-threadcost.XXXXXX)
H=$W/home
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
KMS_HOME=$H KMS_ADDR=127.0.0.1:0 bash "$TOP/hsm-config/setup.sh" >/dev/null
export SOFTHSM2_CONF=$H/softhsm2.conf
PKI=$H/pki
free_port() {
	$PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# snap PID: one line per thread: TID:NAME VOLUNTARY INVOLUNTARY TICKS.
snap() {
	local t
	for t in /proc/$1/task/*; do
		printf '%s:%s %s %s\n' "${t##*/}" "$(tr ' ' _ <"$t/comm")" \
		    "$(awk '/^voluntary_ctxt/ { v = $2 }
			/^nonvoluntary_ctxt/ { n = $2 }
			END { print v, n }' "$t/status")" \
		    "$(awk '{ print $14 + $15 }' "$t/stat")"
	done 2>/dev/null | sort
}

# report WHO OPS BEFORE AFTER: per-call figures by thread name.
report() {
	join "$3" "$4" | awk -v who="$1" -v ops="$2" \
	    -v hz="$(getconf CLK_TCK)" '
	{
		split($1, k, ":")
		n = k[2]; sub(/-[0-9]+$/, "", n)
		cpu[n] += $7 - $4; vcs[n] += $5 - $2; ivcs[n] += $6 - $3
		tc += $7 - $4; tv += $5 - $2; ti += $6 - $3
	}
	END {
		for (n in cpu)
			if (cpu[n] > 0 || vcs[n] > ops / 100)
				printf "| %s | %s | %.1f | %.2f + %.2f |\n", who, n,
				    cpu[n] * 1e6 / hz / ops, vcs[n] / ops,
				    ivcs[n] / ops
		printf "| %s | **total** | **%.1f** | %.2f + %.2f |\n", who,
		    tc * 1e6 / hz / ops, tv / ops, ti / ops
	}' | sort
}

for B in "$@"; do
	B=$(cd "$B" && pwd)
	KA=127.0.0.1:$(free_port)
	"$B/kmsd" --config "$H/kmsd.conf" --listen "$KA" --log-level info \
	    2>"$W/kmsd.log" &
	kp=$!
	CTL=("$B/kmsctl" --addr "$KA")
	for _ in $(seq 100); do
		KMS_HOME=$H "${CTL[@]}" --as ci whoami >/dev/null 2>&1 && break
		sleep 0.1
	done
	KMS_HOME=$H "${CTL[@]}" --as officer key get bench/p256 >/dev/null \
	    2>&1 || KMS_HOME=$H "${CTL[@]}" --as officer key create \
	    bench/p256 --algorithm EC_P256_SHA256 >/dev/null
	"$B/floor" --config "$H/kmsd.conf" --listen 127.0.0.1:0 \
	    --key-name bench/p256 2>"$W/floor.log" &
	fp=$!
	for _ in $(seq 100); do
		grep -q '^floor: serving on port' "$W/floor.log" && break
		sleep 0.1
	done
	FA=127.0.0.1:$(sed -n 's/^floor: serving on port \([0-9]*\).*/\1/p' \
	    "$W/floor.log")
	echo "## $B"
	echo
	echo "| server | thread | CPU µs/call | context switches/call |"
	echo "|---|---|---|---|"
	for round in $(seq "$ROUNDS"); do
		for who in floor kmsd; do
			if [ $who = floor ]; then p=$fp a=$FA; else p=$kp a=$KA; fi
			L=("$B/kmsload" --addr "$a" --ca "$PKI/ca.pem" \
			    --cert "$PKI/clients/ci.pem" \
			    --key "$PKI/clients/ci.key" --key-name bench/p256 \
			    --inflight 16 --threads 2)
			"${L[@]}" --seconds 1 >/dev/null
			snap $p >"$W/t0"
			res=$("${L[@]}" --seconds "$SECS")
			snap $p >"$W/t1"
			ops=$(echo "$res" | $PY -c \
			    'import json,sys; print(json.load(sys.stdin)["ops"])')
			report "$who ($(echo "$res" | $PY -c \
			    'import json,sys; print("%.0f/s" % json.load(sys.stdin)["ops_per_s"])'))" \
			    "$ops" "$W/t0" "$W/t1"
		done
	done
	kill -TERM $fp $kp
	wait $fp $kp 2>/dev/null || true
	echo
	echo "kmsd: $(grep -o 'audit: [0-9]* records in [0-9]* writes.*' \
	    "$W/kmsd.log" | tail -1); load $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
done
