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


class Kmsd:
    """One kmsd process on a state directory made by hsm-config/setup.sh."""

    def __init__(self, home, workdir):
        self.home = pathlib.Path(home)
        self.workdir = pathlib.Path(workdir)
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.proc = None
        self.log_path = None
        self.starts = 0
        self.clients = {}
        self.sanitizer_reports = []
        self.args = []              # more kmsd options (--log-format json)

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
                [str(KMSD), "--config", str(self.home / "kmsd.conf"),
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
    """The kmsd of the whole session, on a fresh state directory."""
    home = tmp_root / "home"
    p = run(["bash", TOP / "hsm-config" / "setup.sh"], check=False,
            env=dict(os.environ, KMS_HOME=str(home), KMS_ADDR="127.0.0.1:0"))
    if p.returncode != 0:
        pytest.fail("hsm-config/setup.sh exited %d:\n%s" % (
            p.returncode, p.stderr.decode(errors="replace")), pytrace=False)
    k = Kmsd(home, tmp_root)
    k.start()
    yield k
    for c in k.clients.values():
        c.close()
    rc = k.stop()
    if k.sanitizer_reports:
        pytest.fail("sanitizer report in kmsd's stderr:\n" +
                    "\n----\n".join(k.sanitizer_reports), pytrace=False)
    assert rc == 0, "kmsd exited with %r on SIGTERM; stderr:\n%s" % (
        rc, k.log())


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


def openssl_pubkey_text(pem_path):
    return run(["openssl", "pkey", "-pubin", "-in", pem_path, "-noout",
                "-text"]).stdout.decode()


def key_names(resp):
    return sorted(k.name for k in resp.keys)


def sanitize_filename(s):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s)
