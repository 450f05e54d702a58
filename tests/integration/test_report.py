"""`kmsctl audit report`: an HTML report of a copy of the audit log, made
offline, checked as text and rendered by headless Chromium (Debian's)
behind a local proxy that records every request."""

import json
import os
import re
import shutil
import socketserver
import threading

import pytest

from conftest import KMSCTL, run

APP = "com.example.report"
CHANNEL = "beta"
SIGN_A = "report/sign-a"
SIGN_B = "report/sign-b"
ROOT = "report/ota-root"
OTA_KEY = "report/ota-sign"
# The report's chart colours (kmsctl/reportcmd.c, palette).
PALETTE = [(0x15, 0x65, 0xc0), (0x6a, 0x1b, 0x9a), (0x00, 0x83, 0x8f),
           (0xad, 0x14, 0x57), (0x9e, 0x9d, 0x24), (0x4e, 0x34, 0x2e)]
# Hosts Chromium contacts by itself (component updates, time, accounts)
# even with background networking off; a page's request is anything else.
BROWSER_OWN = ("google.com", "googleapis.com", "gvt1.com", "gvt2.com")


def bare(*args, check=False):
    """kmsctl with no server and no credentials."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KMS_HOME", "KMS_ADDR")}
    env["KMS_HOME"] = "/nonexistent"
    return run([KMSCTL] + [str(a) for a in args], check=check, env=env)


@pytest.fixture(scope="module")
def audit_copy(kmsd, tmp_path_factory):
    """Activity of every kind on the session's kmsd, then a copy of its
    audit log (what an auditor is given)."""
    d = tmp_path_factory.mktemp("report")
    for name, alg in ((SIGN_A, "EC_P256_SHA256"), (SIGN_B, "ED25519"),
                      (ROOT, "ED25519"), (OTA_KEY, "EC_P256_SHA256")):
        p = kmsd.kmsctl("key", "create", name, "--algorithm", alg,
                        identity="officer", check=False)
        assert p.returncode == 0 or b"ALREADY_EXISTS" in p.stderr, p.stderr
    for i in range(12):
        (d / "msg").write_bytes(b"message %d" % i)
        kmsd.kmsctl("sign", SIGN_A if i % 3 else SIGN_B, "--in", d / "msg",
                    "-o", d / "sig")
    # Denied: an auditor signing, a signer creating a key.
    kmsd.kmsctl("sign", SIGN_A, "--digest", "aa" * 32, identity="auditor",
                check=False)
    kmsd.kmsctl("key", "create", "report/not-allowed", "--algorithm",
                "ED25519", check=False)
    kmsd.kmsctl("key", "rotate", SIGN_A, identity="officer")
    kmsd.kmsctl("key", "disable", SIGN_A, "--version", "1",
                identity="officer")
    # An OTA bundle for APP on CHANNEL.
    kmsd.kmsctl("ota", "keygen", "-o", d / "dev.key", "--pub", d / "dev.pub",
                identity=None)
    kmsd.kmsctl("ota", "statement", "--root-key", ROOT, "--app", APP,
                "--signing-key", OTA_KEY, "--seq", "1", "--expires-in",
                "3600", "-o", d / "statement")
    (d / "app.zip").write_bytes(os.urandom(3000))
    kmsd.kmsctl("ota", "seal", "--key", OTA_KEY, "--app", APP, "--channel",
                CHANNEL, "--version", "3.1.4", "--seq", "7", "--recipient",
                d / "dev.pub", "--statement", d / "statement", "-o",
                d / "app.kmsb", d / "app.zip")
    copy = d / "audit"
    shutil.copytree(kmsd.home / "audit", copy,
                    ignore=shutil.ignore_patterns("*.lock", "lock"))
    return copy


@pytest.fixture(scope="module")
def report(audit_copy, tmp_path_factory):
    out = tmp_path_factory.mktemp("report-out") / "report.html"
    p = bare("audit", "report", "-o", out, audit_copy)
    assert p.returncode == 0, p.stderr
    return out


def test_report_holds_what_an_auditor_needs(report):
    text = report.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert re.search(r'class="ok">intact<', text), "no intact verdict"
    for want in (SIGN_A, SIGN_B, "ci", "officer", "auditor",
                 "Records per identity", "Records per key",
                 "PERMISSION_DENIED", "RotateKey", "SetVersionState",
                 "state=DISABLED", "CreateKey", APP, CHANNEL, "3.1.4",
                 OTA_KEY, "<svg"):
        assert want in text, want
    # The denials are listed with who was refused.
    problems = text.split('id="problems"')[1].split('id="lifecycle"')[0]
    assert "auditor" in problems and "report/not-allowed" in problems
    # Self-contained: no script, nothing fetched, nothing linked.
    lower = text.lower()
    for bad in ("<script", " src=", " href=", "url(", "@import", "<link",
                "<iframe", "<object", "<embed"):
        assert bad not in lower, bad
    assert re.findall(r"https?://[^\"' <]*", text) == [
        "http://www.w3.org/2000/svg"] * lower.count("xmlns=")
    assert "default-src 'none'" in text


def test_report_window_and_refusals(audit_copy, tmp_path):
    out = tmp_path / "r.html"
    p = bare("audit", "report", "--since", "2100-01-01T00:00:00Z", "-o", out,
             audit_copy)
    assert p.returncode == 0, p.stderr
    assert "0 records in it" in out.read_text()
    for argv in (["audit", "report", audit_copy],
                 ["audit", "report", "--since", "yesterday", "-o", out,
                  audit_copy],
                 ["audit", "report", "--since", "2026-01-02T00:00:00Z",
                  "--until", "2026-01-01T00:00:00Z", "-o", out, audit_copy]):
        p = bare(*argv)
        assert p.returncode == 2, (argv, p.stderr)
    p = bare("audit", "report", "-o", out, tmp_path / "nothing")
    assert p.returncode == 5, p.stderr


def test_report_of_a_tampered_log(audit_copy, tmp_path):
    bad = tmp_path / "audit"
    shutil.copytree(audit_copy, bad)
    # A segment with a second record to change: other tests may have left
    # short chains of other instances on the session's token.
    seg = next(f for f in sorted(bad.glob("*/*.jsonl"))
               if f.read_bytes().count(b"\n") >= 3)
    lines = seg.read_bytes().split(b"\n")
    rec = json.loads(lines[1])
    rec["identity"] = "mallory"
    lines[1] = json.dumps(rec, separators=(",", ":")).encode()
    seg.write_bytes(b"\n".join(lines))
    out = tmp_path / "r.html"
    p = bare("audit", "report", "-o", out, bad)
    assert p.returncode == 1, p.stderr
    assert "FAILED" in p.stderr.decode()
    assert re.search(r'class="bad">FAILED: [^<]*\.jsonl line [23] ',
                     out.read_text())


class Proxy:
    """An HTTP proxy on 127.0.0.1 that refuses and records every request."""

    def __init__(self):
        self.requests = []
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline(8192).decode(errors="replace")
                proxy.requests.append(line.strip())
                self.wfile.write(b"HTTP/1.1 403 Forbidden\r\n"
                                 b"Content-Length: 0\r\n\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()

    def page_requests(self):
        """The requests that are not the browser's own."""
        out = []
        for r in self.requests:
            m = re.match(r"^\S+ (?:https?://)?([^/:\s]+)", r)
            host = m.group(1) if m else r
            if not any(host == h or host.endswith("." + h)
                       for h in BROWSER_OWN):
                out.append(r)
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def chromium(proxy, tmp_path, url, *mode):
    """Headless Chromium on url, only through proxy; returns the process."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is needed to render the report: run "
                    "`make deps`", pytrace=False)
    profile = tmp_path / ("profile-%d" % len(os.listdir(tmp_path)))
    env = dict(os.environ, HOME=str(tmp_path))
    return run([exe, "--headless=new", "--no-sandbox", "--disable-gpu",
                "--user-data-dir=%s" % profile,
                "--proxy-server=http://127.0.0.1:%d" % proxy.port,
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--disable-background-networking", "--no-first-run",
                "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--enable-logging=stderr", "--v=0",
                "--window-size=1200,1400", *mode, url],
               check=False, env=env, timeout=120, cwd=str(tmp_path))


def console_messages(p):
    return [l for l in p.stderr.decode(errors="replace").splitlines()
            if ":CONSOLE" in l]


def test_report_in_chromium(report, tmp_path):
    from PIL import Image

    proxy = Proxy()
    try:
        # The set-up sees what a page asks for: a control page that loads
        # an image from outside and has a script error.
        probe = tmp_path / "probe.html"
        probe.write_text('<!DOCTYPE html><img src="http://kms-probe.invalid'
                         '/x.png"><script>nosuch()</script><p>probe</p>')
        p = chromium(proxy, tmp_path, probe.as_uri(), "--dump-dom")
        assert b"probe" in p.stdout, p.stderr[-2000:]
        assert any("kms-probe.invalid" in r for r in proxy.page_requests()), \
            proxy.requests
        assert any("nosuch" in m for m in console_messages(p)), \
            p.stderr[-3000:]
        proxy.requests.clear()

        # The report: its DOM, then a screenshot.
        p = chromium(proxy, tmp_path, report.as_uri(), "--dump-dom")
        dom = p.stdout.decode(errors="replace")
        assert "Records per identity" in dom and "<svg" in dom, dom[:2000]
        assert console_messages(p) == [], console_messages(p)
        shot = tmp_path / "report.png"
        p = chromium(proxy, tmp_path, report.as_uri(),
                     "--screenshot=%s" % shot)
        assert shot.exists(), p.stderr[-3000:]
        assert console_messages(p) == [], console_messages(p)
        assert proxy.page_requests() == [], proxy.page_requests()
    finally:
        proxy.close()

    # The charts are drawn: pixels of the series' colours, in bars.
    img = Image.open(shot).convert("RGB")
    w, h = img.size
    px = img.load()
    coloured = 0
    rows = set()
    for y in range(0, h, 2):
        for x in range(0, w, 2):
            r, g, b = px[x, y]
            if any(abs(r - c[0]) + abs(g - c[1]) + abs(b - c[2]) < 24
                   for c in PALETTE):
                coloured += 1
                rows.add(y)
    assert coloured > 500, "only %d chart pixels" % coloured
    assert len(rows) > 40, "bars are %d rows high" % len(rows)
    # Not a blank page either: most of it is text on white, some is not.
    colors = img.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 20
