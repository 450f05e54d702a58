"""Operating kmsd: --version, --help, JSON logs."""

import json
import os
import re
import shutil
import socket
import tempfile
import time

import grpc
import pytest

from conftest import BUILD, KMSD, MODULE, TOP, Kmsd, free_port, pb, run


def test_kmsd_version_and_help():
    p = run([KMSD, "--version"])
    assert re.match(rb"^kmsd \d+\.\d+\.\d+\n$", p.stdout), p.stdout
    p = run([KMSD, "--help"])
    assert p.stdout.startswith(b"usage: kmsd") and b"--log-format" in p.stdout
    p = run([KMSD, "--log-format", "xml", "--config", "/dev/null"],
            check=False)
    assert p.returncode == 2 and b"--log-format" in p.stderr


def test_json_log_one_object_per_line(kmsd, workdir):
    """Every line kmsd writes is one JSON object, gRPC's own included."""
    k = Kmsd(kmsd.home, workdir)
    k.args = ["--log-format", "json", "--log-level", "debug"]
    env = k.env
    k.env = lambda: dict(env(), GRPC_VERBOSITY="debug")
    k.start()
    try:
        who = k.client("ci").kms.WhoAmI(pb.WhoAmIRequest(), timeout=10)
        assert who.identity == "ci"
    finally:
        k.stop_clean()
    # LeakSanitizer's list of the suppressions it used (ASan build) is not
    # kmsd's; nothing after it is.
    lines = k.log().split("-" * 20)[0].splitlines()
    assert len(lines) > 3
    objs = []
    for line in lines:
        try:
            o = json.loads(line)
        except ValueError:
            raise AssertionError("not JSON: %r" % line)
        assert set(o) >= {"time", "level", "msg"}, o
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$",
                        o["time"]), o
        objs.append(o)
    assert any("listening on" in o["msg"] for o in objs)
    grpc_lines = [o for o in objs if o.get("source") == "grpc"]
    assert grpc_lines, "no gRPC message in the log"
    assert all(isinstance(o["line"], int) and o["file"] for o in grpc_lines)


def _capgo_without_registry(tmp_path, registry, offline="0"):
    """Runs one Capgo CLI test in a pytest of its own, with an empty npm
    cache and the registry at registry; returns (process, seconds)."""
    env = dict(os.environ, KMS_TEST_NPM_CACHE=str(tmp_path / "npm"),
               npm_config_registry=registry, npm_config_cache=str(
                   tmp_path / "npm-home"), KMS_TEST_OFFLINE=offline)
    t0 = time.monotonic()
    p = run(["/usr/bin/python3", "-m", "pytest", "-p", "no:cacheprovider",
             "-p", "no:random_order", "-q", "-rfEs",
             str(TOP / "tests" / "integration" / "test_capgo.py"), "-k",
             "test_our_verify_accepts_capgo_cli_bundle"],
            check=False, env=env, cwd=str(TOP), timeout=120)
    return p, time.monotonic() - t0


def test_capgo_tests_fail_fast_without_npm(tmp_path):
    """A registry that accepts connections and never answers (what a
    firewall that drops packets looks like): the Capgo test fails within
    30 s and says what to do."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        p, took = _capgo_without_registry(
            tmp_path, "http://127.0.0.1:%d/" % silent.getsockname()[1])
    finally:
        silent.close()
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 1, out
    assert "npm registry cannot be reached" in out, out
    assert "OFFLINE=1" in out, out
    assert took < 30 + 10, "took %.1f s" % took   # + pytest's own start


def test_capgo_tests_skipped_offline(tmp_path):
    p, took = _capgo_without_registry(tmp_path, "http://127.0.0.1:9/", "1")
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0 and "1 skipped" in out, out
    assert "OFFLINE=1" in out, out


# Packaging: make install, the man pages, the systemd unit.

@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """make install into a staging directory; returns its PREFIX."""
    dest = tmp_path_factory.mktemp("stage")
    build = os.environ.get("BUILD", "build")
    run(["make", "-s", "BUILD=" + build, "install", "DESTDIR=%s" % dest,
         "PREFIX=/usr/local"], cwd=str(TOP), timeout=600)
    return dest / "usr" / "local"


def test_make_install_runs(installed, kmsd):
    for f in ("sbin/kmsd", "bin/kmsctl", "bin/kmsb",
              "share/man/man8/kmsd.8", "share/man/man1/kmsctl.1",
              "share/man/man5/kmsd.conf.5", "lib/systemd/system/kmsd.service",
              "lib/sysusers.d/kms.conf",
              "share/bash-completion/completions/kmsctl",
              "share/kms/kmsd.conf.example"):
        assert (installed / f).is_file(), f
    assert os.access(installed / "sbin" / "kmsd", os.X_OK)
    p = run([installed / "sbin" / "kmsd", "--version"])
    assert p.stdout.startswith(b"kmsd ")
    p = run([installed / "bin" / "kmsctl", "--version"])
    assert p.stdout.startswith(b"kmsctl ")
    # The installed kmsctl talks to a server.
    p = run([installed / "bin" / "kmsctl", "--addr", kmsd.addr, "--as", "ci",
             "--json", "whoami"], env=kmsd.env())
    assert json.loads(p.stdout)["identity"] == "ci"
    p = run([installed / "bin" / "kmsb", "--help"], check=False)
    assert b"usage" in p.stdout + p.stderr
    unit = (installed / "lib/systemd/system/kmsd.service").read_text()
    assert "ExecStart=/usr/local/sbin/kmsd " in unit
    assert "@SBINDIR@" not in unit


@pytest.mark.parametrize("page,section", [("kmsd", "8"), ("kmsctl", "1"),
                                          ("kmsd.conf", "5")])
def test_man_pages(installed, page, section):
    path = installed / "share" / "man" / ("man" + section) / (
        page + "." + section)
    p = run(["man", "-l", path], env=dict(os.environ, MANWIDTH="100",
                                             MAN_KEEP_FORMATTING="0"))
    text = re.sub(r".\x08", "", p.stdout.decode())     # no overstrike
    assert "NAME" in text and "SEE ALSO" in text, text
    assert p.stderr == b"", p.stderr
    if page == "kmsctl":
        # Every command of kmsctl's table, with its options.
        for cmd in ("key create", "audit verify", "ota seal", "bundle verify",
                    "datakey"):
            assert cmd in text, cmd
        assert "--recipient PUB.pem" in text and "EXIT STATUS" in text
    if page == "kmsd.conf":
        assert "health_listen" in text and "[metrics]" in text


def test_unit_security_score(installed):
    unit = installed / "lib/systemd/system/kmsd.service"
    text = unit.read_text()
    for want in ("Type=notify", "WatchdogSec=", "User=kms",
                 "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "PrivateTmp=yes", "MemoryDenyWriteExecute=yes",
                 "SystemCallFilter=@system-service",
                 "CapabilityBoundingSet=\n", "ReadWritePaths=/var/lib/kms\n"):
        assert want in text, want
    assert text.count("ReadWritePaths=") == 1
    p = run(["systemd-analyze", "security", "--offline=yes", unit],
            check=False)
    out = p.stdout.decode()
    m = re.search(r"Overall exposure level for kmsd.service: (\d+\.\d+)", out)
    assert m, out + p.stderr.decode()
    assert float(m.group(1)) <= 2.0, out


# systemd's notifications and the watchdog.

class Notify:
    """The NOTIFY_SOCKET end of systemd, as a datagram socket."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="kms-n")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def messages(self, seconds):
        """Every message received within seconds."""
        got = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(4096).decode())
            except socket.timeout:
                return got

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def fault_kmsd(kmsd, workdir, env_extra):
    """A second kmsd on the session's token, through the fault module."""
    conf = kmsd.home / "kmsd-fault.conf"
    text = (kmsd.home / "kmsd.conf").read_text()
    text = re.sub(r"(?m)^module\s*=.*$", "module = %s" % (
        BUILD / "p11fault.so"), text)
    conf.write_text(text)
    k = Kmsd(kmsd.home, workdir)
    k.config = conf
    env = k.env
    k.env = lambda: dict(env(), P11FAULT_MODULE=MODULE, **env_extra)
    return k


def test_watchdog_fed_only_while_healthy(kmsd, workdir):
    if not (BUILD / "p11fault.so").exists():
        run(["make", "-s", "BUILD=%s" % BUILD, str(BUILD / "p11fault.so")],
            cwd=str(TOP))
    n = Notify()
    down = workdir / "hsm-down"
    k = fault_kmsd(kmsd, workdir, {
        "NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "1000000",
        "P11FAULT_DOWN": str(down)})
    try:
        k.start()
        got = n.messages(3)
        assert any("READY=1" in m for m in got), got
        assert sum("WATCHDOG=1" in m for m in got) >= 2, got
        # The HSM is pulled out: the watchdog starves.
        down.write_text("")
        n.messages(2)
        got = n.messages(3)
        assert not [m for m in got if "WATCHDOG=1" in m], got
        assert "health: not serving" in k.log()
        # Back: fed again.
        down.unlink()
        got = n.messages(4)
        assert sum("WATCHDOG=1" in m for m in got) >= 2, got
        assert "health: serving again" in k.log()
    finally:
        if down.exists():
            down.unlink()
        rc = k.stop()
        got = n.messages(0.5)
        n.close()
    assert rc == 0 and not k.sanitizer_reports, k.log()
    assert any("STOPPING=1" in m for m in got), got


# Metrics.

def scrape(url):
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families

    t0 = time.monotonic()
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    took = time.monotonic() - t0
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples, took


def sample(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics(kmsd, keys, workdir):
    import concurrent.futures

    mport = free_port()
    conf = kmsd.home / "kmsd-metrics.conf"
    conf.write_text((kmsd.home / "kmsd.conf").read_text() +
                    "\n[metrics]\nlisten = 127.0.0.1:%d\n" % mport)
    k = Kmsd(kmsd.home, workdir)
    k.config = conf
    url = "http://127.0.0.1:%d/metrics" % mport
    name = keys.get("EC_P256_SHA256")
    try:
        k.start()
        text, before, _ = scrape(url)
        ci = k.client("ci").kms
        for i in range(5):
            ci.Sign(pb.SignRequest(name=name, digest=bytes([i]) * 32),
                    timeout=30)
        try:
            k.client("auditor").kms.Sign(
                pb.SignRequest(name=name, digest=b"\1" * 32), timeout=30)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.PERMISSION_DENIED
        text, after, _ = scrape(url)

        def rise(name_, **labels):
            return sample(after, name_, **labels) - sample(before, name_,
                                                           **labels)

        assert rise("kms_requests_total", rpc="Sign", code="OK") == 5
        assert rise("kms_requests_total", rpc="Sign",
                    code="PERMISSION_DENIED") == 1
        assert rise("kms_request_duration_seconds_count", rpc="Sign") == 6
        assert rise("kms_request_duration_seconds_bucket", rpc="Sign",
                    le="+Inf") == 6
        assert rise("kms_hsm_operations_total", op="sign", result="ok") == 5
        assert rise("kms_audit_records_total") >= 6
        assert rise("kms_audit_batch_records_count") >= 1
        assert rise("kms_audit_sync_seconds_count") >= 1
        assert sample(after, "kms_audit_last_checkpoint_seq") >= 1
        assert sample(after, "kms_keys") >= 1
        assert sample(after, "kms_connections") >= 1
        assert ("kms_build_info", (("version", run([KMSD, "--version"])
                .stdout.decode().split()[1]),)) in after
        for p in ("process_cpu_seconds_total",
                  "process_resident_memory_bytes", "process_open_fds"):
            assert sample(after, p) > 0, p
        # Counts only: no key name, no identity.
        for secret in (name, "ci", "auditor", "officer"):
            assert '"%s"' % secret not in text, secret
        # Under load, a scrape still answers: it never waits for the
        # Signs (a scrape stuck behind them would take their 60 s).
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futs = [pool.submit(ci.Sign, pb.SignRequest(
                name=name, digest=bytes([i % 256]) * 32), timeout=60)
                for i in range(200)]
            times = [scrape(url)[2] for _ in range(10)]
            for f in futs:
                f.result()
        assert max(times) < 5.0, times
        _, last, _ = scrape(url)
        assert sample(last, "kms_requests_total", rpc="Sign", code="OK") - \
            sample(after, "kms_requests_total", rpc="Sign", code="OK") == 200
        # Anything but GET /metrics is refused.
        import urllib.error
        import urllib.request
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(url.replace("/metrics", "/"), timeout=10)
        assert ei.value.code == 404
    finally:
        for c in k.clients.values():
            c.close()
        rc = k.stop()
    assert rc == 0 and not k.sanitizer_reports, k.log()


# The plaintext health port.

def test_health_port(kmsd, workdir):
    import queue
    import threading

    from conftest import health_pb2, health_pb2_grpc, kms_pb2_grpc

    hport = free_port()
    down = workdir / "hsm-down"
    k = fault_kmsd(kmsd, workdir, {"P11FAULT_DOWN": str(down)})
    conf = kmsd.home / "kmsd-health.conf"
    conf.write_text(k.config.read_text().replace(
        "[server]\n", "[server]\nhealth_listen = 127.0.0.1:%d\n" % hport, 1))
    k.config = conf
    SERVING = health_pb2.HealthCheckResponse.SERVING
    NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
    ch = None
    try:
        k.start()
        # No certificate at all: a plaintext channel.
        ch = grpc.insecure_channel("127.0.0.1:%d" % hport)
        health = health_pb2_grpc.HealthStub(ch)
        req = health_pb2.HealthCheckRequest(service="")
        assert health.Check(req, timeout=10).status == SERVING
        assert health.Check(health_pb2.HealthCheckRequest(
            service="kms.v1.KeyManagementService"), timeout=10).status == \
            SERVING
        with pytest.raises(grpc.RpcError) as ei:
            health.Check(health_pb2.HealthCheckRequest(service="nosuch"),
                         timeout=10)
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND
        # Nothing else is served there.
        with pytest.raises(grpc.RpcError) as ei:
            kms_pb2_grpc.KeyManagementServiceStub(ch).WhoAmI(
                pb.WhoAmIRequest(), timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED

        got = queue.Queue()
        stream = health.Watch(req, timeout=60)

        def reader():
            try:
                for r in stream:
                    got.put(r.status)
            except grpc.RpcError as e:
                got.put(e.code())

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        assert got.get(timeout=10) == SERVING
        # The HSM goes away: Watch and Check say so.
        down.write_text("")
        assert got.get(timeout=10) == NOT_SERVING
        assert health.Check(req, timeout=10).status == NOT_SERVING
        # And back.
        down.unlink()
        assert got.get(timeout=10) == SERVING
        assert health.Check(req, timeout=10).status == SERVING
        stream.cancel()
        t.join(10)
    finally:
        if down.exists():
            down.unlink()
        if ch is not None:
            ch.close()
        rc = k.stop()
    assert rc == 0 and not k.sanitizer_reports, k.log()
