"""Fixtures of the integration suite: a real kmsd on a fresh SoftHSM2 token,
gRPC clients for each dev identity, kmsctl and OpenSSL helpers.

tests/run-integration.sh generates the Python stubs into a directory named
by KMS_TEST_STUBS and passes BUILD (build or build/asan).
"""

import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import pytest

TOP = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("BUILD", "build"))
if not BUILD.is_absolute():
    BUILD = TOP / BUILD
KMSD = BUILD / "kmsd"
KMSCTL = BUILD / "kmsctl"
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
IDENTITIES = ("ci", "officer", "auditor", "unwrapper")
ROLE_OF = {"ci": "signer", "officer": "officer", "auditor": "auditor",
           "unwrapper": "unwrapper"}

STARTUP_TIMEOUT = 60.0      # the ASan build starts slowly
STOP_TIMEOUT = 30.0
SANITIZER_MARKS = ("runtime error", "AddressSanitizer", "LeakSanitizer")


def _load_stubs():
    stubs = os.environ.get("KMS_TEST_STUBS")
    if not stubs:
        raise RuntimeError("KMS_TEST_STUBS is not set: run the suite with "
                           "tests/run-integration.sh")
    if stubs not in sys.path:
        sys.path.insert(0, stubs)
    # The health stubs live in grpc/health/v1, inside the name of the grpcio
    # package itself: extend that package's path so they can be imported.
    health_dir = os.path.join(stubs, "grpc")
    if health_dir not in grpc.__path__:
        grpc.__path__.append(health_dir)


_load_stubs()

from kms.v1 import kms_pb2, kms_pb2_grpc  # noqa: E402
from grpc.health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

pb = kms_pb2


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_conf(text, section, values):
    """kmsd.conf text with each key of values set in [section]: an existing
    line is replaced, a missing one added at the top of the section."""
    lines = text.splitlines()
    current, head, done = None, None, set()
    for i, line in enumerate(lines):
        m = re.match(r"\[(\w+)\]\s*$", line)
        if m:
            current = m.group(1)
            if current == section:
                head = i
            continue
        m = re.match(r"(\w+)\s*=", line)
        if current == section and m and m.group(1) in values:
            lines[i] = "%s = %s" % (m.group(1), values[m.group(1)])
            done.add(m.group(1))
    assert head is not None, "kmsd.conf has no [%s]" % section
    lines[head + 1:head + 1] = ["%s = %s" % (k, v) for k, v in values.items()
                                if k not in done]
    return "\n".join(lines) + "\n"


def make_home(root, name, conf=None):
    """A fresh state directory root/name made by hsm-config/setup.sh (a
    token, a PIN, a dev PKI, the default policy and kmsd.conf); conf maps
    sections to the kmsd.conf values to set in them."""
    home = pathlib.Path(root) / name
    p = run(["bash", TOP / "hsm-config" / "setup.sh"], check=False,
            env=dict(os.environ, KMS_HOME=str(home), KMS_ADDR="127.0.0.1:0"))
    if p.returncode != 0:
        pytest.fail("hsm-config/setup.sh exited %d:\n%s" % (
            p.returncode, p.stderr.decode(errors="replace")), pytrace=False)
    path = home / "kmsd.conf"
    for section, values in (conf or {}).items():
        path.write_text(set_conf(path.read_text(), section, values))
    return home


def run(argv, check=True, **kw):
    """Runs argv and returns the CompletedProcess (bytes)."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("timeout", 120)
    p = subprocess.run([str(a) for a in argv], **kw)
    if check and p.returncode != 0:
        raise AssertionError(
            "%s exited %d\nstdout: %s\nstderr: %s" % (
                " ".join(str(a) for a in argv), p.returncode,
                p.stdout.decode(errors="replace") if p.stdout else "",
                p.stderr.decode(errors="replace") if p.stderr else ""))
    return p


class Client:
    """A gRPC client with one client certificate."""

    def __init__(self, target, ca, cert=None, key=None):
        cert_pem = pathlib.Path(cert).read_bytes() if cert else None
        key_pem = pathlib.Path(key).read_bytes() if key else None
        creds = grpc.ssl_channel_credentials(
            root_certificates=pathlib.Path(ca).read_bytes(),
            private_key=key_pem, certificate_chain=cert_pem)
        self.channel = grpc.secure_channel(target, creds, options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20),
        ])
        self.kms = kms_pb2_grpc.KeyManagementServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def raw(self, method):
        """A callable that sends raw bytes to method and returns raw bytes."""
        return self.channel.unary_unary(
            method, request_serializer=lambda b: b,
            response_deserializer=lambda b: b)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Kmsd:
    """One kmsd process on a state directory made by hsm-config/setup.sh."""

    def __init__(self, home, workdir):
        self.home = pathlib.Path(home)
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.proc = None
        self.log_path = None
        self.starts = 0
        self.clients = {}
        self.sanitizer_reports = []
        self.args = []              # more kmsd options (--log-format json)
        self.config = self.home / "kmsd.conf"

    @property
    def ca(self):
        return self.home / "pki" / "ca.pem"

    def env(self):
        env = dict(os.environ)
        env["SOFTHSM2_CONF"] = str(self.home / "softhsm2.conf")
        env["KMS_HOME"] = str(self.home)
        env["ASAN_OPTIONS"] = ("detect_leaks=1:abort_on_error=0:"
                               "fast_unwind_on_malloc=0")
        env["LSAN_OPTIONS"] = "suppressions=%s" % (TOP / "tests" /
                                                   "lsan.supp")
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
        return env

    def log(self):
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def start(self):
        if not KMSD.exists():
            pytest.fail("%s does not exist: build it first (make BUILD=%s)" %
                        (KMSD, os.environ.get("BUILD", "build")),
                        pytrace=False)
        self.starts += 1
        self.log_path = self.workdir / ("kmsd-%d.log" % self.starts)
        logf = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [str(KMSD), "--config", str(self.config),
                 "--listen", self.addr, "--log-level", os.environ.get("KMS_TEST_LOG_LEVEL", "info")] + self.args,
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                env=self.env(), cwd=str(self.workdir))
        finally:
            logf.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if "listening on" in self.log():
                return
            if self.proc.poll() is not None:
                pytest.fail("kmsd exited with %d before listening; its "
                            "stderr:\n%s" % (self.proc.returncode, self.log()),
                            pytrace=False)
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        pytest.fail("kmsd did not print 'listening on' within %.0f s; its "
                    "stderr:\n%s" % (STARTUP_TIMEOUT, self.log()),
                    pytrace=False)

    def stop(self):
        """Stops kmsd with SIGTERM and returns its exit code."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "hung (killed after %.0f s)" % STOP_TIMEOUT
        self.proc = None
        text = self.log()
        if any(m in text for m in SANITIZER_MARKS):
            self.sanitizer_reports.append(text)
        return rc

    def close_clients(self):
        for c in self.clients.values():
            c.close()
        self.clients = {}

    def stop_clean(self):
        """Stops kmsd; fails unless it exited 0 and no sanitizer spoke."""
        self.close_clients()
        rc = self.stop()
        assert not self.sanitizer_reports, (
            "sanitizer report in kmsd's stderr:\n" +
            "\n----\n".join(self.sanitizer_reports))
        assert rc == 0, "kmsd exited with %r on SIGTERM; stderr:\n%s" % (
            rc, self.log())

    @staticmethod
    def stop_all(kmsds):
        """stop_clean for each, all stopped even when one fails."""
        errors = []
        for k in kmsds:
            try:
                k.stop_clean()
            except AssertionError as e:
                errors.append(str(e))
        assert not errors, "\n====\n".join(errors)

    def hup(self):
        self.proc.send_signal(signal.SIGHUP)

    def client(self, name):
        """The gRPC client of dev identity name (cached)."""
        if name not in self.clients:
            d = self.home / "pki" / "clients"
            self.clients[name] = Client(self.addr, self.ca,
                                        d / (name + ".pem"),
                                        d / (name + ".key"))
        return self.clients[name]

    def kmsctl(self, *args, identity="ci", check=True, **kw):
        """Runs kmsctl as identity and returns the CompletedProcess."""
        if not KMSCTL.exists():
            pytest.fail("%s does not exist" % KMSCTL, pytrace=False)
        argv = [KMSCTL, "--addr", self.addr]
        if identity is not None:
            argv += ["--as", identity]
        return run(argv + list(args), check=check, env=self.env(), **kw)


@pytest.fixture(scope="session")
def tmp_root():
    d = tempfile.mkdtemp(prefix="kms-it-")
    yield pathlib.Path(d)
    if os.environ.get("KMS_TEST_KEEP"):
        print("\nintegration state kept in %s" % d)
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def kmsd(tmp_root):
    """The kmsd of the whole session, on a fresh state directory.  Tests
    share it and must not stop it: a test that restarts kmsd or changes
    its configuration takes one of its own (own_kmsd)."""
    k = Kmsd(make_home(tmp_root, "home"), tmp_root)
    k.start()
    yield k
    k.stop_clean()


@pytest.fixture()
def own_kmsd(tmp_path):
    """Starts kmsd processes of the test's own: own_kmsd(conf=None,
    home=None) starts one on a fresh state directory (conf as for
    make_home), or on home, another instance on that token.  Each is
    stopped cleanly after the test."""
    made = []

    def start(conf=None, home=None):
        if home is None:
            home = make_home(tmp_path, "home-%d" % len(made), conf)
        k = Kmsd(home, tmp_path / ("work-%d" % len(made)))
        made.append(k)
        k.start()
        return k

    yield start
    Kmsd.stop_all(made)


class Keys:
    """Keys created once per session by the officer, by algorithm name."""

    def __init__(self, kmsd):
        self.kmsd = kmsd
        self.made = {}

    def name(self, alg):
        return "release/it/" + alg.lower().replace("_", "-")

    def get(self, alg):
        if alg not in self.made:
            name = self.name(alg)
            key = self.kmsd.client("officer").kms.CreateKey(
                pb.CreateKeyRequest(name=name,
                                    algorithm=pb.Algorithm.Value(alg)),
                timeout=120)
            assert key.name == name
            assert key.algorithm == pb.Algorithm.Value(alg)
            self.made[alg] = key
        return self.name(alg)


@pytest.fixture(scope="session")
def keys(kmsd):
    return Keys(kmsd)


@pytest.fixture()
def workdir(tmp_path):
    return tmp_path


def grpc_code(excinfo):
    return excinfo.value.code()


def expect_error(code, fn, *args, **kw):
    """Calls fn and asserts that it fails with gRPC status code; returns the
    error's details."""
    kw.setdefault("timeout", 30)
    with pytest.raises(grpc.RpcError) as ei:
        fn(*args, **kw)
    got = ei.value.code()
    assert got == code, "expected %s, got %s: %s" % (
        code, got, ei.value.details())
    return ei.value.details() or ""


def openssl_verifies(pub, sig, msg, workdir=None):
    """Whether `openssl dgst -sha256 -verify` accepts signature sig over msg
    with the public key pub: each a path, or text or bytes that are written
    into workdir first."""
    paths = []
    for name, v in (("pub.pem", pub), ("sig", sig), ("msg", msg)):
        if isinstance(v, (bytes, str)):
            path = workdir / name
            if isinstance(v, str):
                path.write_text(v)
            else:
                path.write_bytes(v)
            v = path
        paths.append(v)
    p = run(["openssl", "dgst", "-sha256", "-verify", paths[0],
             "-signature", paths[1], paths[2]], check=False)
    return p.returncode == 0 and b"Verified OK" in p.stdout


def openssl_pubkey_text(pem_path):
    return run(["openssl", "pkey", "-pubin", "-in", pem_path, "-noout",
                "-text"]).stdout.decode()


def key_names(resp):
    return sorted(k.name for k in resp.keys)


def sanitize_filename(s):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)


# The etcd cluster and the kmsd pair on it (tests/integration/etcdcluster.py).
from etcdcluster import etcd_cluster, etcd_pair  # noqa: E402,F401
