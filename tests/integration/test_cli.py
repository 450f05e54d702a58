"""kmsctl explains itself: help for every command, --version, offline
commands without certificates, JSON errors, datakey's wrapped key, the
text key listing and the audit filters."""

import json
import pathlib
import os
import re

import pytest

from conftest import KMSCTL, run


def bare(*args, check=False, **kw):
    """kmsctl with no server, no KMS_HOME and no certificate."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KMS_HOME", "KMS_ADDR")}
    env["KMS_HOME"] = "/nonexistent"
    return run([KMSCTL] + list(args), check=check, env=env, **kw)


def commands():
    """(group, sub) of every row of `kmsctl help`."""
    p = bare("help", check=True)
    out = p.stdout.decode()
    rows = []
    for line in out.split("commands", 1)[1].splitlines()[1:]:
        m = re.match(r"^  ([a-z]+)(?: ([a-z]+))?\s+[*+ ] \S", line)
        if not m:
            if rows:
                break
            continue
        rows.append((m.group(1), m.group(2)))
    return rows


def test_help_lists_every_command():
    rows = commands()
    for want in [("key", "create"), ("key", "list"), ("sign", None),
                 ("datakey", None), ("audit", "list"), ("audit", "verify"),
                 ("ota", "seal"), ("ota", "keygen"), ("bundle", "encrypt")]:
        assert want in rows, rows
    p = bare("--help", check=True)
    assert p.stdout == bare("help", check=True).stdout
    assert b"exit codes" in p.stdout


@pytest.mark.parametrize("how", ["help", "--help", "-h"])
def test_help_of_every_command(how):
    """Per-command usage with an example, without a server or certificate,
    and different for each command."""
    seen = {}
    for group, sub in commands():
        words = [group] + ([sub] if sub else [])
        argv = ["help"] + words if how == "help" else words + [how]
        p = bare(*argv)
        assert p.returncode == 0, (argv, p.stderr)
        text = p.stdout.decode()
        assert text.startswith("usage: kmsctl " + " ".join(words)), text
        assert "Example" in text, (argv, text)
        assert b"certificate" not in p.stderr, p.stderr
        seen[" ".join(words)] = text
    assert len(set(seen.values())) == len(seen)
    # The ota options are in the help, not only in docs/bundle-format.md.
    for opt in ("--recipient", "--statement", "--chunk-size", "--channel"):
        assert opt in seen["ota seal"]
    # A group's help holds all its subcommands.
    p = bare("key", "--help", check=True)
    for sub in ("create", "rotate", "destroy", "update"):
        assert ("usage: kmsctl key " + sub).encode() in p.stdout


def test_help_errors():
    for argv in (["help", "nosuch"], ["nosuch"], ["key"], ["key", "nosuch"],
                 ["help", "key", "nosuch"]):
        p = bare(*argv)
        assert p.returncode == 2, (argv, p.stdout, p.stderr)
        assert b"kmsctl help" in p.stderr, p.stderr
    p = bare()
    assert p.returncode == 2 and b"usage: kmsctl" in p.stderr


def test_version():
    p = bare("--version", check=True)
    assert re.match(rb"^kmsctl \d+\.\d+\.\d+\n$", p.stdout), p.stdout


def test_offline_commands_need_no_certificate(tmp_path):
    priv, pub = tmp_path / "d.key", tmp_path / "d.pub"
    p = bare("ota", "keygen", "-o", priv, "--pub", pub)
    assert p.returncode == 0, p.stderr
    assert priv.stat().st_mode & 0o777 == 0o600
    p = bare("audit", "verify", tmp_path / "none")
    assert p.returncode == 5 and b"certificate" not in p.stderr, p.stderr
    # An online command does ask for one.
    p = bare("whoami")
    assert p.returncode == 2 and b"certificate" in p.stderr, p.stderr


def test_json_errors_are_json():
    cases = [
        (["--json", "key"], 2, "usage error"),
        (["--json", "nosuch"], 2, "usage error"),
        (["--json", "--timeout", "x", "whoami"], 2, "usage error"),
        (["--json", "audit", "verify", "/nonexistent"], 5,
         "local I/O error"),
    ]
    for argv, code, meaning in cases:
        p = bare(*argv)
        assert p.returncode == code, (argv, p.stderr)
        lines = p.stderr.decode().splitlines()
        assert len(lines) == 1, (argv, p.stderr)
        e = json.loads(lines[0])
        assert e["exit_code"] == code and e["meaning"] == meaning, e
        assert e["error"] and "try kmsctl" not in e["error"], e


def test_json_error_of_the_server(kmsd):
    p = kmsd.kmsctl("--json", "key", "create", "release/cli/denied",
                    "--algorithm", "ED25519", identity="ci", check=False)
    assert p.returncode == 4, p.stderr
    e = json.loads(p.stderr)
    assert e["status"] == "PERMISSION_DENIED", e
    assert e["meaning"] == "refused by the server"
    assert "CreateKey" in e["error"], e
    # Transport errors too.
    p = run([KMSCTL, "--json", "--addr", "127.0.0.1:1", "--as", "ci",
             "--timeout", "5", "whoami"], check=False, env=kmsd.env())
    assert p.returncode == 3, p.stderr
    assert json.loads(p.stderr)["meaning"] == "transport error"


def test_datakey_needs_somewhere_for_the_wrapped_key(kmsd, keys, workdir):
    kek = keys.get("AES_256_KWP")
    dek = workdir / "dek"
    p = kmsd.kmsctl("datakey", kek, "-o", dek, check=False)
    assert p.returncode == 2 and b"--wrapped-out" in p.stderr, p.stderr
    assert not dek.exists()
    p = kmsd.kmsctl("datakey", kek, check=False)
    assert p.returncode == 2, p.stderr
    # --json without -o prints both.
    d = json.loads(kmsd.kmsctl("--json", "datakey", kek).stdout)
    assert d["plaintext"] and d["wrapped"] and d["version"] >= 1


def test_text_key_list_shows_states_and_times(kmsd):
    name = "release/cli/listed"
    kmsd.kmsctl("key", "create", name, "--algorithm", "EC_P256_SHA256",
                "--rotation-period", "86400", identity="officer")
    kmsd.kmsctl("key", "rotate", name, identity="officer")
    kmsd.kmsctl("key", "disable", name, "--version", "1",
                identity="officer")
    out = kmsd.kmsctl("key", "list", "--prefix", "release/cli/",
                      identity="officer").stdout.decode()
    lines = out.splitlines()
    i = [n for n, l in enumerate(lines) if l.startswith(name + " ")][0]
    assert re.match(r"^%s EC_P256_SHA256 v2 next_rotation "
                    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$" % re.escape(name),
                    lines[i]), lines[i]
    ts = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.match(r"^  1 DISABLED %s$" % ts, lines[i + 1]), out
    assert re.match(r"^  2 ENABLED %s$" % ts, lines[i + 2]), out


def test_audit_filters_ignore_case_or_are_refused(kmsd):
    # A Sign of its own that succeeds, whatever ran before (an Ed25519 key
    # would refuse a digest).
    kmsd.kmsctl("key", "create", "release/cli/f", "--algorithm",
                "EC_P256_SHA256", identity="officer")
    kmsd.kmsctl("sign", "release/cli/f", "--digest", "02" * 32)
    lower = kmsd.kmsctl("--json", "audit", "list", "--rpc", "sign",
                        "--result", "OK", "--limit", "500",
                        identity="auditor").stdout.decode().splitlines()
    exact = kmsd.kmsctl("--json", "audit", "list", "--rpc", "Sign",
                        "--result", "ok", "--limit", "500",
                        identity="auditor").stdout.decode().splitlines()
    assert lower and lower == exact
    assert all(json.loads(l)["rpc"] == "Sign" for l in lower)
    for opt, v in (("--rpc", "sigh"), ("--result", "fine")):
        p = kmsd.kmsctl("audit", "list", opt, v, identity="auditor",
                        check=False)
        assert p.returncode == 2, p.stderr
        assert b"unknown " + opt.encode() in p.stderr, p.stderr


def test_bash_completion():
    comp = (pathlib.Path(__file__).resolve().parents[2] / "packaging" /
            "kmsctl.bash-completion")
    prog = r'''
source "$1"
t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1));
      COMPREPLY=(); _kmsctl; echo "${COMPREPLY[*]}"; }
t kmsctl ke
t kmsctl key ""
t kmsctl ota seal --ch
t kmsctl audit list --result ""
'''
    env = dict(os.environ, PATH="%s:%s" % (KMSCTL.parent, os.environ["PATH"]))
    p = run(["bash", "-c", prog, "bash", comp], env=env)
    got = p.stdout.decode().splitlines()
    assert got[0] == "key", got
    assert got[1].split()[:3] == ["create", "get", "list"], got
    assert got[2].split() == ["--channel", "--chunk-size"], got
    assert got[3].split() == ["ok", "denied", "error"], got
