#!/usr/bin/env bash
# bench/capgo.sh: encrypting a Capgo bundle end to end, `kmsctl bundle
# encrypt --format capgo` against a running kmsd (session key and checksum
# signed in SoftHSM2 over mTLS gRPC) versus Capgo's own CLI `bundle encrypt`
# with a local private key file; plus kmsctl's peak RSS.  Writes
# bench/results/capgo.json.  Called at the end of bench/run.sh, or alone
# (after `make all`).
#
#   CAPGO_BENCH_MB     bundle size in MB (default 5)
#   CAPGO_BENCH_RUNS   timed runs of each command (default 10)
#   CAPGO_BENCH_ADDR   where its kmsd listens (default 127.0.0.1:17444)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOP=$(pwd)
BUILD=${BUILD:-build}
MB=${CAPGO_BENCH_MB:-5}
RUNS=${CAPGO_BENCH_RUNS:-10}
ADDR=${CAPGO_BENCH_ADDR:-127.0.0.1:17444}
CAPGO_CLI_VERSION=8.68.1
CAPGO_UPDATER_VERSION=8.51.23	# an 8.x app: the V3 checksum
NPM_CACHE=$TOP/build/npm-cache/capgo
HOME_DIR=$TOP/$BUILD/bench-capgo-home
OUT=$TOP/bench/results
PY=/usr/bin/python3
KEY=bench/capgo
mkdir -p "$OUT"

for f in "$BUILD/kmsd" "$BUILD/kmsctl"; do
	[ -x "$f" ] || { echo "capgo bench: $f is missing: make all" >&2; exit 1; }
done
for tool in node npm openssl; do
	command -v "$tool" >/dev/null ||
	    { echo "capgo bench: $tool is missing: make deps" >&2; exit 1; }
done

# Capgo's CLI, pinned, in the same cache as the integration tests.
installed() {
	"$PY" -c 'import json, sys
try:
    v = json.load(open(sys.argv[1]))["version"]
except Exception:
    v = None
sys.exit(0 if v == sys.argv[2] else 1)' "$NPM_CACHE/node_modules/$1/package.json" "$2"
}
if ! installed @capgo/cli "$CAPGO_CLI_VERSION" ||
    ! installed @capgo/capacitor-updater "$CAPGO_UPDATER_VERSION"; then
	mkdir -p "$NPM_CACHE"
	npm install --prefix "$NPM_CACHE" --no-audit --no-fund --no-save \
	    "@capgo/cli@$CAPGO_CLI_VERSION" \
	    "@capgo/capacitor-updater@$CAPGO_UPDATER_VERSION" >&2
fi
CLI=$NPM_CACHE/node_modules/@capgo/cli/dist/index.js

work=$(mktemp -d "${TMPDIR:-/tmp}/kms-capgo-bench.XXXXXX")
. bench/kmsd.sh
cleanup() {
	stop_kmsd
	rm -rf "$work"
}
trap cleanup EXIT

# A valid zip of MB megabytes of random data (stored, as images and
# minified bundles barely compress).
"$PY" - "$work/bundle.zip" "$MB" <<'EOF'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_STORED) as z:
    z.writestr("index.html", "<html></html>\n")
    z.writestr("assets/app.bin", os.urandom(int(sys.argv[2]) * 1000 * 1000))
EOF
bytes=$(stat -c %s "$work/bundle.zip")
sum=$(sha256sum "$work/bundle.zip" | cut -d' ' -f1)

# kmsd on its own state directory and key.
KMS_HOME=$HOME_DIR KMS_ADDR=$ADDR bash hsm-config/setup.sh >/dev/null
export KMS_HOME=$HOME_DIR
export SOFTHSM2_CONF=$HOME_DIR/softhsm2.conf
KMSCTL=("$TOP/$BUILD/kmsctl" --addr "$ADDR")
start_kmsd "$HOME_DIR/kmsd.conf" "$OUT/kmsd-capgo.log"
"${KMSCTL[@]}" --as ci key get "$KEY" >/dev/null 2>&1 ||
    "${KMSCTL[@]}" --as officer key create "$KEY" \
    --algorithm RSA_RAW_PKCS1_2048 >/dev/null

# Capgo's CLI in an app directory with a local key, as its users run it.
proj=$work/app
mkdir -p "$proj"
openssl genrsa -traditional -out "$proj/capgo.key" 2048 2>/dev/null
openssl rsa -in "$proj/capgo.key" -RSAPublicKey_out -out "$proj/capgo.pub" \
    2>/dev/null
"$PY" - "$proj" "$CAPGO_UPDATER_VERSION" <<'EOF'
import json, sys
d, updater = sys.argv[1], sys.argv[2]
pem = open(d + "/capgo.pub").read()
json.dump({"appId": "com.example.kms", "appName": "kms", "webDir": "dist",
           "plugins": {"CapacitorUpdater": {"publicKey": pem}}},
          open(d + "/capacitor.config.json", "w"))
json.dump({"name": "kms-capgo-bench", "version": "1.0.0", "private": True,
           "dependencies": {"@capgo/capacitor-updater": updater}},
          open(d + "/package.json", "w"))
EOF
ln -s "$NPM_CACHE/node_modules" "$proj/node_modules"
cp "$work/bundle.zip" "$proj/bundle.zip"

kms_cmd="$BUILD/kmsctl --addr $ADDR --as ci --json bundle encrypt --format capgo --key $KEY -o $work/out.zip $work/bundle.zip"
capgo_cmd="cd $proj && CI=1 node $CLI bundle encrypt bundle.zip $sum --key capgo.key --json"

# Both must work before they are timed; each output is checked.
sealed=$(bash -c "$kms_cmd")
"$PY" -c 'import json, sys; s = json.loads(sys.argv[1]); assert len(s["checksum"]) == 512' "$sealed"
"${KMSCTL[@]}" bundle verify --format capgo --key "$KEY" --as ci \
    --iv-session-key "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["ivSessionKey"])' "$sealed")" \
    --checksum "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["checksum"])' "$sealed")" \
    "$work/out.zip" >/dev/null
bash -c "$capgo_cmd" >"$work/capgo.out" 2>&1 ||
    { cat "$work/capgo.out" >&2; exit 1; }
[ -s "$proj/bundle.zip_encrypted.zip" ]

# peak_rss CMD: the peak RSS (KiB) of CMD, the only child of a fresh Python.
peak_rss() {
	"$PY" -c 'import resource, subprocess, sys
r = subprocess.run(["bash", "-c", sys.argv[1]], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
assert r.returncode == 0
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$1"
}
kms_rss=$(peak_rss "$kms_cmd")
capgo_rss=$(peak_rss "$capgo_cmd")

# time_runs NAME CMD: mean, stddev, min, max in seconds as JSON.
time_runs() {
	if command -v hyperfine >/dev/null; then
		hyperfine --style none --warmup 1 --runs "$RUNS" \
		    --export-json "$work/$1.json" "$2" >/dev/null 2>"$work/$1.log"
		"$PY" -c 'import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
print(json.dumps({"mean_s": r["mean"], "stddev_s": r["stddev"],
                  "min_s": r["min"], "max_s": r["max"], "runs": len(r["times"]),
                  "tool": "hyperfine"}))' "$work/$1.json"
	else
		local i t0 t1 ts=()
		bash -c "$2" >/dev/null 2>&1
		for i in $(seq "$RUNS"); do
			t0=$(date +%s%N)
			bash -c "$2" >/dev/null 2>&1
			t1=$(date +%s%N)
			ts+=($(( t1 - t0 )))
		done
		"$PY" -c 'import json, statistics, sys
t = [int(x) / 1e9 for x in sys.argv[1:]]
print(json.dumps({"mean_s": statistics.mean(t), "stddev_s": statistics.pstdev(t),
                  "min_s": min(t), "max_s": max(t), "runs": len(t),
                  "tool": "date +%s%N loop"}))' "${ts[@]}"
	fi
}
kms_t=$(time_runs kmsctl "$kms_cmd")
capgo_t=$(time_runs capgo "$capgo_cmd")

machine="$(nproc) cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo)"
"$PY" - "$OUT/capgo.json" "$bytes" "$kms_t" "$capgo_t" "$kms_rss" \
    "$capgo_rss" "$kms_cmd" "$capgo_cmd" "$machine" "$CAPGO_CLI_VERSION" \
    "$(node --version)" "$TOP" "$work" <<'EOF'
import json, sys
(path, size, kms, capgo, kms_rss, capgo_rss, kms_cmd, capgo_cmd, machine,
 cli, node, top, work) = sys.argv[1:]
# The commands as run, with the temporary and source directories named.
kms_cmd, capgo_cmd = (c.replace(work, "$TMP").replace(top + "/", "")
                      for c in (kms_cmd, capgo_cmd))
kms, capgo = json.loads(kms), json.loads(capgo)
kms.update(command=kms_cmd, peak_rss_kib=int(kms_rss))
capgo.update(command=capgo_cmd, peak_rss_kib=int(capgo_rss),
             version="@capgo/cli " + cli, node=node)
ratio = capgo["mean_s"] / kms["mean_s"]
res = {"bundle_bytes": int(size), "machine": machine,
       "what": "encrypt a zip bundle end to end (process start to exit); "
               "kmsctl signs the session key and checksum in kmsd "
               "(SoftHSM2, mTLS gRPC), Capgo's CLI with a local key file "
               "and the checksum given",
       "kmsctl": kms, "capgo_cli": capgo,
       "capgo_over_kmsctl": round(ratio, 2),
       "kmsctl_at_least_10x_faster": ratio >= 10}
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(res, f, indent=2)
    f.write("\n")
import os
os.replace(tmp, path)
print("capgo bundle encrypt, %.1f MB: kmsctl %.1f ms (peak RSS %d KiB), "
      "Capgo CLI %.1f ms (peak RSS %d KiB): Capgo/kmsctl = %.1fx; "
      ">= 10x faster than Capgo's CLI: %s" % (
          int(size) / 1e6, kms["mean_s"] * 1e3, kms["peak_rss_kib"],
          capgo["mean_s"] * 1e3, capgo["peak_rss_kib"], ratio,
          "yes" if ratio >= 10 else "no"))
EOF
