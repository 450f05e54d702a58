"""A real etcd cluster for the integration suite: three members of Debian's
etcd-server (/usr/bin/etcd) on free loopback ports, each with its own data
directory under the test's temporary directory, and two kmsd on it.

It never touches a system etcd (2379/2380): every member listens on ports
of its own, chosen by free_port(), and etcdctl is always given the
cluster's endpoints.  Members can be killed (SIGKILL) and restarted on
their data directory; etcdctl (ETCDCTL_API=3) runs against the cluster.

The fixtures (imported by conftest.py):
  etcd_cluster   a fresh 3-member cluster per test, stopped afterwards;
  etcd_pair      a function (cluster, conf=None) -> (a, b): two kmsd with
                 [store] backend = etcd on that cluster, separate KMS_HOMEs
                 (TLS, policy, audit) and one token directory.
"""

import base64
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import Kmsd, free_port, make_home, run, set_conf

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
START_TIMEOUT = 60.0        # a loaded 2-core machine elects slowly
STOP_TIMEOUT = 15.0
PREFIX = "/kms/"


def have_etcd():
    return os.access(ETCD, os.X_OK) and os.access(ETCDCTL, os.X_OK)


class EtcdMember:
    """One member: its ports, data directory and process."""

    def __init__(self, root, name):
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = root / (name + ".data")
        self.log_dir = root
        self.proc = None
        self.starts = 0
        self.log_path = None

    @property
    def client_url(self):
        return "http://127.0.0.1:%d" % self.client_port

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.client_port

    def log(self):
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def start(self, initial_cluster, token):
        self.starts += 1
        self.log_path = self.log_dir / ("%s-%d.log" % (self.name, self.starts))
        argv = [
            ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", initial_cluster,
            "--initial-cluster-token", token,
            "--initial-cluster-state", "new",
            # No metrics or pprof listeners of its own: only the two ports.
            "--listen-metrics-urls", "",
            "--logger", "zap", "--log-outputs", "stderr",
            "--log-level", "warn",
        ]
        with open(self.log_path, "wb") as logf:
            # ETCD_* variables of the environment would change the flags.
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith("ETCD")}
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=logf, env=env)

    def kill(self):
        """SIGKILL, as a crash: no clean shutdown, no leadership handover."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def healthy(self):
        """Whether the member answers /health with a leader (a quorum)."""
        try:
            with urllib.request.urlopen(self.client_url + "/health",
                                        timeout=2) as r:
                return json.loads(r.read().decode()).get("health") == "true"
        except (OSError, ValueError):
            return False


class EtcdCluster:
    """A cluster of size members on loopback, started by start()."""

    def __init__(self, root, size=3):
        self.root = pathlib.Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.members = [EtcdMember(self.root, "m%d" % i) for i in range(size)]
        self.token = "kms-test-%d-%d" % (os.getpid(), self.members[0].peer_port)
        self.initial_cluster = ",".join(
            "%s=%s" % (m.name, m.peer_url) for m in self.members)

    @property
    def endpoints(self):
        """The endpoints for kmsd.conf's [store] endpoints."""
        return ", ".join(m.endpoint for m in self.members)

    def start(self):
        for m in self.members:
            m.start(self.initial_cluster, self.token)
        self.wait_healthy()

    def stop(self):
        for m in self.members:
            m.stop()

    def kill(self, i):
        self.members[i].kill()

    def restart(self, i, wait=True):
        """Starts member i again on its data directory (after kill)."""
        m = self.members[i]
        assert not m.running(), "member %s is still running" % m.name
        m.start(self.initial_cluster, self.token)
        if wait:
            self.wait_healthy([i])

    def wait_healthy(self, which=None, timeout=START_TIMEOUT):
        which = range(len(self.members)) if which is None else which
        deadline = time.monotonic() + timeout
        for i in which:
            m = self.members[i]
            while not m.healthy():
                if m.proc is not None and m.proc.poll() is not None:
                    pytest.fail("etcd member %s exited with %d:\n%s" % (
                        m.name, m.proc.returncode, m.log()[-4000:]),
                        pytrace=False)
                if time.monotonic() > deadline:
                    pytest.fail("etcd member %s not healthy within %.0f s:"
                                "\n%s" % (m.name, timeout, m.log()[-4000:]),
                                pytrace=False)
                time.sleep(0.1)

    def live_endpoints(self):
        return ",".join(m.endpoint for m in self.members if m.running())

    def etcdctl(self, *args, check=True, endpoints=None, timeout=60,
                stdin=None):
        """Runs etcdctl (API 3) against the running members; returns the
        CompletedProcess with text output."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("ETCDCTL")}
        env["ETCDCTL_API"] = "3"
        argv = [ETCDCTL, "--endpoints", endpoints or self.live_endpoints(),
                "--dial-timeout", "3s", "--command-timeout", "10s"]
        p = run(argv + list(args), check=check, env=env, timeout=timeout,
                input=stdin)
        p.stdout = p.stdout.decode(errors="replace")
        p.stderr = p.stderr.decode(errors="replace")
        return p

    def get_prefix(self, prefix=PREFIX):
        """{key: value} of every key under prefix (text)."""
        out = json.loads(self.etcdctl("get", "--prefix", prefix,
                                      "-w", "json").stdout)
        return {base64.b64decode(kv["key"]).decode():
                base64.b64decode(kv["value"]).decode(errors="replace")
                for kv in out.get("kvs", [])}

    def revision(self):
        """The cluster's current revision."""
        out = json.loads(self.etcdctl("get", "--prefix", "/", "--limit", "1",
                                      "-w", "json").stdout)
        return int(out["header"]["revision"])

    def compact(self, revision=None):
        """Compacts the history up to revision (default: the current)."""
        rev = self.revision() if revision is None else revision
        self.etcdctl("compact", "--physical", str(rev))
        return rev

    def leader(self):
        """The index of the member that leads the Raft group, or None."""
        p = self.etcdctl("endpoint", "status", "-w", "json", check=False)
        if p.returncode != 0 and not p.stdout.strip():
            return None
        try:
            rows = json.loads(p.stdout)
        except ValueError:
            return None
        for row in rows:
            st = row["Status"]
            if st["header"]["member_id"] == st["leader"]:
                ep = row["Endpoint"]
                for i, m in enumerate(self.members):
                    if ep.endswith(":%d" % m.client_port):
                        return i
        return None

    def logs(self):
        return "\n".join("---- %s\n%s" % (m.name, m.log()[-3000:])
                         for m in self.members)


# What a client of kms does with UNAVAILABLE from key management while etcd
# elects a leader (docs/etcd.md, "Failure semantics"): try again after
# RETRY_PAUSE, at most RETRIES times.
RETRIES = 5
RETRY_PAUSE = 1.0


def with_retries(fn, *args, retries=RETRIES, counter=None, **kw):
    """fn(*args, **kw), tried again on UNAVAILABLE as docs/etcd.md tells
    clients to; counter (a list) gets one entry per retry."""
    import grpc
    for attempt in range(retries + 1):
        try:
            return fn(*args, **kw)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or attempt == retries:
                raise
            if counter is not None:
                counter.append(e.details())
            time.sleep(RETRY_PAUSE)


def wait_until(fn, seconds, what, pause=0.02):
    """fn()'s first true value within seconds (exceptions count as false
    until the end), else the test fails saying what."""
    deadline = time.monotonic() + seconds
    last = None
    while True:
        try:
            got = fn()
            if got:
                return got
        except Exception as e:      # reported if it lasts
            last = e
        if time.monotonic() > deadline:
            pytest.fail("not within %.1f s: %s (last error: %r)" % (
                seconds, what, last), pytrace=False)
        time.sleep(pause)


def ota_manifests(k, d, root, signer, app):
    """Makes ED25519 keys root and signer on kmsd k, a device key and a
    signing-key statement in directory d, seals one bundle (sequence 1)
    and returns with_seq(n): its manifest with sequence number n, for
    SignBundleManifest (the number's offset is docs/bundle-format.md's)."""
    from conftest import pb
    for name in (root, signer):
        with_retries(k.client("officer").kms.CreateKey, pb.CreateKeyRequest(
            name=name, algorithm=pb.ED25519), timeout=60)
    k.kmsctl("ota", "keygen", "-o", d / "dev.key", "--pub", d / "dev.pub",
             identity=None)
    k.kmsctl("ota", "statement", "--root-key", root, "--app", app,
             "--signing-key", signer, "--seq", "1", "--expires-in", "3600",
             "-o", d / "statement")
    (d / "in").write_bytes(b"payload")
    k.kmsctl("ota", "seal", "--key", signer, "--app", app, "--channel",
             "production", "--version", "1", "--seq", "1", "--recipient",
             d / "dev.pub", "--statement", d / "statement", "-o",
             d / "bundle", d / "in")
    raw = (d / "bundle").read_bytes()
    manifest = raw[:int.from_bytes(raw[6:10], "big")]

    def with_seq(n):
        m = bytearray(manifest)
        m[46:54] = n.to_bytes(8, "big")
        return bytes(m)

    return with_seq


def shared_token_home(root, name, token_home, conf=None):
    """A state directory root/name of its own (TLS, policy, audit, kmsd.conf)
    whose SoftHSM2 configuration names the token directory of token_home,
    with that token's PINs: a second host on the same (networked) HSM."""
    home = pathlib.Path(root) / name
    home.mkdir(mode=0o700, parents=True)
    shutil.copy(token_home / "softhsm2.conf", home / "softhsm2.conf")
    for f in ("pin", "so-pin"):
        shutil.copy(token_home / f, home / f)
        os.chmod(home / f, 0o600)
    return make_home(root, name, conf)


def etcd_conf(cluster, conf=None, prefix=PREFIX):
    """conf (as for make_home) with [store] backend = etcd on cluster."""
    out = {k: dict(v) for k, v in (conf or {}).items()}
    out.setdefault("store", {}).update({
        "backend": "etcd", "endpoints": cluster.endpoints, "prefix": prefix})
    return out


def add_store_section(home):
    """Gives kmsd.conf a [store] section when the template has none."""
    path = pathlib.Path(home) / "kmsd.conf"
    text = path.read_text()
    if "[store]" not in text:
        path.write_text(text.rstrip("\n") + "\n\n[store]\nbackend = token\n")


def make_pair_homes(root, cluster, conf=None, tags=("a", "b")):
    """Two state directories on one token, [store] on cluster."""
    conf = etcd_conf(cluster, conf)
    first = make_home(root, "home-" + tags[0])
    homes = [first]
    for tag in tags[1:]:
        homes.append(shared_token_home(root, "home-" + tag, first))
    for h in homes:
        add_store_section(h)
        path = h / "kmsd.conf"
        text = path.read_text()
        for section, values in conf.items():
            text = set_conf(text, section, values)
        path.write_text(text)
    return homes


@pytest.fixture()
def etcd_cluster(tmp_path):
    """A fresh 3-member etcd cluster on loopback, stopped after the test."""
    if not have_etcd():
        pytest.skip("etcd-server/etcd-client are not installed "
                    "(hsm-config/deps.sh)")
    c = EtcdCluster(tmp_path / "etcd")
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture()
def etcd_pair(tmp_path):
    """etcd_pair(cluster, conf=None) starts two kmsd on cluster (see the
    module's doc); both are stopped cleanly after the test."""
    made = []

    def start(cluster, conf=None):
        homes = make_pair_homes(tmp_path / "kms", cluster, conf)
        for i, h in enumerate(homes):
            k = Kmsd(h, tmp_path / ("work-%d" % i))
            made.append(k)
            k.start()
        return made[-2], made[-1]

    yield start
    Kmsd.stop_all(made)
