# bench/kmsd.sh: the benchmarks' own kmsd, started and stopped the same
# way by bench/run.sh, bench/ota.sh and bench/capgo.sh, which source it
# after setting BUILD, ADDR and KMSCTL (kmsctl with --addr).
pid=

# start_kmsd CONFIG LOG: starts kmsd on ADDR, its log in LOG, and waits
# until it answers; if it does not, prints the log and exits.
start_kmsd() {
	"$BUILD/kmsd" --config "$1" --listen "$ADDR" --log-level info \
	    2>"$2" &
	pid=$!
	for _ in $(seq 100); do
		if "${KMSCTL[@]}" --as ci whoami >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "bench: kmsd did not start:" >&2
	cat "$2" >&2
	exit 1
}

stop_kmsd() {
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		pid=
	fi
}
