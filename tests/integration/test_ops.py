"""Operating kmsd: --version, --help, JSON logs."""

import json
import os
import re
import socket
import time

from conftest import KMSD, TOP, Kmsd, pb, run


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
        for c in k.clients.values():
            c.close()
        rc = k.stop()
    assert rc == 0 and not k.sanitizer_reports, k.log()
    lines = k.log().splitlines()
    assert len(lines) > 3
    objs = []
    for line in lines:
        o = json.loads(line)
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
