"""Operating kmsd: --version, --help, JSON logs."""

import json
import re

from conftest import KMSD, Kmsd, pb, run


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
