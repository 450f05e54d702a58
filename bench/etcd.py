#!/usr/bin/python3
"""bench/etcd.py: kmsd with [store] backend = etcd against the token store,
on this machine.  Starts a 3-member etcd cluster of its own (Debian's
/usr/bin/etcd on free loopback ports, data under BUILD/bench-etcd), one kmsd
on the token store and two kmsd on etcd (one token directory, two state
directories), and measures:

  - Sign throughput (bench/kmsload, 16 in flight on 2 threads) on each
    store, in alternating rounds: signing never touches the store, so the
    goal is equal;
  - CreateKey and RotateKey latency on each store (one call at a time);
  - the time for a change to reach the other instance: RotateKey on B
    returns (its transaction committed), then A is asked for the key every
    millisecond until it shows the new version.

Writes bench/results/etcd.json and the section of docs/performance.md
between <!-- bench:etcd:begin --> and <!-- bench:etcd:end -->.

  BENCH_SECONDS         each Sign run (default 5)
  BENCH_ETCD_ROUNDS     Sign rounds per store (default 3)
  BENCH_ETCD_SAMPLES    latency and propagation samples (default 30)
"""

import atexit
import json
import os
import pathlib
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

TOP = pathlib.Path(__file__).resolve().parents[1]
BUILD = TOP / os.environ.get("BUILD", "build")
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ETCD_ROUNDS", "3"))
SAMPLES = int(os.environ.get("BENCH_ETCD_SAMPLES", "30"))
WORK = BUILD / "bench-etcd"
OUT = TOP / "bench" / "results"
DOC = TOP / "docs" / "performance.md"
BEGIN, END = "<!-- bench:etcd:begin -->", "<!-- bench:etcd:end -->"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stubs():
    """The Python gRPC stubs of kms.proto, generated into a temporary
    directory, imported."""
    d = tempfile.mkdtemp(prefix="kms-bench-stubs.")
    atexit.register(shutil.rmtree, d, True)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I",
                    str(TOP / "proto"), "--python_out", d,
                    "--grpc_python_out", d, "kms/v1/kms.proto"], check=True)
    sys.path.insert(0, d)
    from kms.v1 import kms_pb2, kms_pb2_grpc
    return kms_pb2, kms_pb2_grpc


class Cluster:
    def __init__(self, root, size=3):
        self.root = root
        self.members = [(f"m{i}", free_port(), free_port())
                        for i in range(size)]
        self.procs = []

    @property
    def endpoints(self):
        return ", ".join(f"127.0.0.1:{c}" for _, c, _ in self.members)

    def start(self):
        init = ",".join(f"{n}=http://127.0.0.1:{p}" for n, _, p in
                        self.members)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("ETCD")}
        for n, c, p in self.members:
            log = open(self.root / f"{n}.log", "wb")
            self.procs.append(subprocess.Popen([
                "/usr/bin/etcd", "--name", n,
                "--data-dir", str(self.root / f"{n}.data"),
                "--listen-client-urls", f"http://127.0.0.1:{c}",
                "--advertise-client-urls", f"http://127.0.0.1:{c}",
                "--listen-peer-urls", f"http://127.0.0.1:{p}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
                "--initial-cluster", init, "--initial-cluster-state", "new",
                "--initial-cluster-token", f"kms-bench-{os.getpid()}",
                "--listen-metrics-urls", "", "--logger", "zap",
                "--log-outputs", "stderr", "--log-level", "warn"],
                stdout=log, stderr=log, env=env))
        deadline = time.monotonic() + 60
        for _, c, _ in self.members:
            while True:
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{c}/health", timeout=2) as r:
                        if json.loads(r.read())["health"] == "true":
                            break
                except (OSError, ValueError, KeyError):
                    pass
                if time.monotonic() > deadline:
                    sys.exit("bench: etcd did not become healthy")
                time.sleep(0.1)

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(30)


def set_conf(path, section, values):
    """Sets keys of [section] in kmsd.conf (the section made if missing)."""
    text = path.read_text()
    if f"[{section}]" not in text:
        text = text.rstrip("\n") + f"\n\n[{section}]\n"
    out, current = [], None
    for line in text.splitlines():
        m = re.match(r"\[(\w+)\]\s*$", line)
        if m:
            current = m.group(1)
        elif current == section and re.match(r"(\w+)\s*=", line) and \
                line.split("=")[0].strip() in values:
            continue
        out.append(line)
        if m and current == section:
            out += [f"{k} = {v}" for k, v in values.items()]
    path.write_text("\n".join(out) + "\n")


def home(name, token_home=None, store=None):
    h = WORK / name
    if token_home is not None and not h.exists():
        h.mkdir(mode=0o700, parents=True)
        for f in ("softhsm2.conf", "pin", "so-pin"):
            shutil.copy(token_home / f, h / f)
    subprocess.run(["bash", str(TOP / "hsm-config" / "setup.sh")],
                   env=dict(os.environ, KMS_HOME=str(h),
                            KMS_ADDR="127.0.0.1:0"),
                   check=True, stdout=subprocess.DEVNULL)
    set_conf(h / "kmsd.conf", "server", {"workers": 2})
    set_conf(h / "kmsd.conf", "audit", {"sync": "no"})
    if store is not None:
        set_conf(h / "kmsd.conf", "store", store)
    return h


class Kmsd:
    def __init__(self, h, tag=None):
        self.home = h
        self.addr = f"127.0.0.1:{free_port()}"
        self.env = dict(os.environ, KMS_HOME=str(h),
                        SOFTHSM2_CONF=str(h / "softhsm2.conf"))
        self.log = WORK / f"{tag or h.name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(BUILD / "kmsd"), "--config", str(h / "kmsd.conf"),
                 "--listen", self.addr], stdout=log, stderr=log,
                env=self.env)
        deadline = time.monotonic() + 60
        while "listening on" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("bench: kmsd did not start:\n" +
                         self.log.read_text(errors="replace"))
            time.sleep(0.05)
        self.stubs = {}

    def stub(self, who):
        import grpc
        if who not in self.stubs:
            pki = self.home / "pki"
            creds = grpc.ssl_channel_credentials(
                (pki / "ca.pem").read_bytes(),
                (pki / "clients" / f"{who}.key").read_bytes(),
                (pki / "clients" / f"{who}.pem").read_bytes())
            self.stubs[who] = pb_grpc.KeyManagementServiceStub(
                grpc.secure_channel(self.addr, creds))
        return self.stubs[who]

    def sign_load(self, key):
        pki = self.home / "pki"
        r = subprocess.run([
            str(BUILD / "kmsload"), "--addr", self.addr, "--ca",
            str(pki / "ca.pem"), "--cert", str(pki / "clients" / "ci.pem"),
            "--key", str(pki / "clients" / "ci.key"), "--key-name", key,
            "--inflight", "16", "--threads", "2", "--seconds", str(SECONDS)],
            check=True, stdout=subprocess.PIPE, env=self.env)
        return json.loads(r.stdout)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def timed(fn, *args, **kw):
    t = time.perf_counter()
    r = fn(*args, **kw)
    return (time.perf_counter() - t) * 1000, r


def summary(ms):
    ms = sorted(ms)
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 2),
            "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 2),
            "max_ms": round(ms[-1], 2)}


def key_latencies(k, tag):
    off = k.stub("officer")
    create = [timed(off.CreateKey, pb.CreateKeyRequest(
        name=f"bench/{tag}/c{i}", algorithm=pb.EC_P256_SHA256),
        timeout=60)[0] for i in range(SAMPLES)]
    rotate = [timed(off.RotateKey, pb.RotateKeyRequest(
        name=f"bench/{tag}/c0"), timeout=60)[0] for _ in range(SAMPLES)]
    return summary(create), summary(rotate)


def propagation(a, b, key):
    out = []
    offa, offb = a.stub("officer"), b.stub("officer")
    for _ in range(SAMPLES):
        v = offb.RotateKey(pb.RotateKeyRequest(name=key),
                           timeout=60).primary_version
        t = time.perf_counter()
        while offa.GetKey(pb.GetKeyRequest(name=key),
                          timeout=30).primary_version != v:
            if time.perf_counter() - t > 10:
                sys.exit("bench: a rotation did not reach A in 10 s")
            time.sleep(0.001)
        out.append((time.perf_counter() - t) * 1000)
    return summary(out)


def regenerate(lines):
    text = DOC.read_text()
    block = "\n".join([BEGIN] + lines + [END])
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Several hosts: the etcd store\n\n" \
            + block + "\n"
    DOC.write_text(text)


def main():
    if not os.access("/usr/bin/etcd", os.X_OK):
        sys.exit("bench: /usr/bin/etcd is missing: hsm-config/deps.sh")
    subprocess.run(["make", "-s", "-C", str(TOP), f"BUILD={BUILD}", "all",
                    str(BUILD / "kmsload")], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    OUT.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(WORK)
    cluster.start()
    started = []
    try:
        htok = home("token")
        tok = Kmsd(htok)
        started.append(tok)
        tok2 = Kmsd(htok, "token-2")
        started.append(tok2)
        store = {"backend": "etcd", "endpoints": cluster.endpoints}
        ha = home("etcd-a", store=store)
        a = Kmsd(ha)
        started.append(a)
        b = Kmsd(home("etcd-b", token_home=ha, store=store))
        started.append(b)
        for k in (tok, a):
            k.stub("officer").CreateKey(pb.CreateKeyRequest(
                name="bench/sign", algorithm=pb.EC_P256_SHA256), timeout=60)
        sign = {"token": [], "etcd": []}
        for _ in range(ROUNDS):
            sign["token"].append(tok.sign_load("bench/sign"))
            sign["etcd"].append(a.sign_load("bench/sign"))
        lat = {"token": key_latencies(tok, "token"),
               "etcd": key_latencies(a, "etcd")}
        prop = {"token": propagation(tok, tok2, "bench/sign"),
                "etcd": propagation(a, b, "bench/sign")}
    finally:
        for k in started:
            k.stop()
        cluster.stop()
    res = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores, load "
                   f"{os.getloadavg()[0]:.1f}",
        "sign_ops_per_s": {s: round(statistics.median(
            r["ops_per_s"] for r in runs), 1) for s, runs in sign.items()},
        "sign_runs": sign,
        "create_key": {s: v[0] for s, v in lat.items()},
        "rotate_key": {s: v[1] for s, v in lat.items()},
        "propagation": prop,
        "seconds": SECONDS, "rounds": ROUNDS, "samples": SAMPLES,
    }
    (OUT / "etcd.json").write_text(json.dumps(res, indent=1) + "\n")
    render(res)
    print(json.dumps(res, indent=1))


def render(res):
    """The section of docs/performance.md from the results res."""
    s = res["sign_ops_per_s"]
    span = {k: "%.0f (%.0f–%.0f)" % (s[k], min(x["ops_per_s"] for x in v),
                                     max(x["ops_per_s"] for x in v))
            for k, v in res["sign_runs"].items()}
    prop = res["propagation"]
    c, r = res["create_key"], res["rotate_key"]
    lines = [
        "",
        f"Measured by `BENCH_ONLY=etcd make bench` (bench/etcd.py) on "
        f"{res['machine']}: a 3-member etcd {etcd_version()} cluster on "
        f"loopback, kmsd with 2 HSM workers on SoftHSM2 (file store), audit "
        f"not synced. Sign: bench/kmsload, 16 in flight on 2 threads, "
        f"{res['rounds']} alternating rounds of {res['seconds']} s, median "
        f"(range). Latencies: {res['samples']} calls one at a time.",
        "",
        "| | token store | etcd store |",
        "|---|---|---|",
        f"| Sign, P-256 (ops/s) | {span['token']} | {span['etcd']} |",
        f"| CreateKey p50 / p90 (ms) | {c['token']['p50_ms']} / "
        f"{c['token']['p90_ms']} | {c['etcd']['p50_ms']} / "
        f"{c['etcd']['p90_ms']} |",
        f"| RotateKey p50 / p90 (ms) | {r['token']['p50_ms']} / "
        f"{r['token']['p90_ms']} | {r['etcd']['p50_ms']} / "
        f"{r['etcd']['p90_ms']} |",
        f"| a rotation on B seen by A, p50 / p90 / max (ms) | "
        f"{prop['token']['p50_ms']} / {prop['token']['p90_ms']} / "
        f"{prop['token']['max_ms']} | {prop['etcd']['p50_ms']} / "
        f"{prop['etcd']['p90_ms']} / {prop['etcd']['max_ms']} |",
        "",
        sign_verdict(res["sign_runs"]) + " On the token store the other "
        "instance polls the token's change counter every `[keys] sync_ms` "
        "(1000 ms here, the default); on etcd its watch delivers the "
        "change.",
        "",
    ]
    regenerate(lines)


def sign_verdict(runs):
    """Whether signing costs the same on both stores, as measured."""
    lo = {k: min(x["ops_per_s"] for x in v) for k, v in runs.items()}
    hi = {k: max(x["ops_per_s"] for x in v) for k, v in runs.items()}
    if lo["etcd"] <= hi["token"] and lo["token"] <= hi["etcd"]:
        return ("Signing never touches the store: the Sign rounds of the "
                "two stores overlap, no difference beyond this machine's "
                "noise.")
    med = {k: statistics.median(x["ops_per_s"] for x in v)
           for k, v in runs.items()}
    return ("The Sign rounds of the two stores do not overlap: etcd at "
            "%+.0f %% of the token store's median." % (
                100 * (med["etcd"] / med["token"] - 1)))


def etcd_version():
    out = subprocess.run(["/usr/bin/etcd", "--version"], stdout=subprocess.PIPE,
                         text=True).stdout
    m = re.search(r"etcd Version: (\S+)", out)
    return m.group(1) if m else "?"


pb, pb_grpc = stubs()

if __name__ == "__main__":
    main()
