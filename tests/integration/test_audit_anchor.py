"""The HSM anchor and the batch seals: attacks on a stopped kmsd by
someone who can write the audit directory but does not hold the PIN.

Each test runs its own kmsd on its own state directory, stops it cleanly
(the anchor then names every record but the closing checkpoint), attacks
the log and starts kmsd again: it must refuse to start and say what it
found, or with [audit] on_tamper = new-chain start the next chain above
every seq it ever issued.
"""

import hashlib
import json
import os
import shutil
import subprocess

import pytest

from conftest import (KMSCTL, KMSD, MODULE, Kmsd, make_home, pb, run,
                      set_conf)

AUDIT_CONF = {"audit": {"segment_bytes": 8192, "checkpoint_every": 8,
                        "checkpoint_seconds": 1}}


def signs(k, n, tag):
    kms = k.client("ci").kms
    out = []
    for i in range(n):
        d = hashlib.sha256(("%s-%d" % (tag, i)).encode()).digest()
        out.append(kms.Sign(pb.SignRequest(name=k.key, digest=d),
                            timeout=30).audit_seq)
    return out


@pytest.fixture
def stopped(tmp_path):
    """A kmsd that made a key and 40 Signs, stopped cleanly."""
    home = make_home(tmp_path, "home", AUDIT_CONF)
    k = Kmsd(home, tmp_path / "work")
    k.start()
    k.key = "release/anchor/p256"
    k.client("officer").kms.CreateKey(
        pb.CreateKeyRequest(name=k.key, algorithm=pb.EC_P256_SHA256),
        timeout=60)
    k.seqs = signs(k, 40, "before")
    resp = k.client("auditor").kms.ListAuditRecords(
        pb.ListAuditRecordsRequest(limit=1), timeout=30)
    k.chain = resp.chain
    k.chain_dir = home / "audit" / resp.chain
    k.stop_clean()
    yield k
    if k.proc is not None:
        k.stop()


def lines_of(chain_dir):
    out = []
    for f in sorted(chain_dir.glob("*.jsonl")):
        out += [(f, l) for l in f.read_bytes().split(b"\n") if l]
    return out


def rewrite(chain_dir, keep):
    """Keeps the first keep lines of the chain, segment files as they were."""
    by_file = {}
    for f, l in lines_of(chain_dir)[:keep]:
        by_file.setdefault(f, []).append(l)
    for f in sorted(chain_dir.glob("*.jsonl")):
        if f in by_file:
            f.write_bytes(b"".join(l + b"\n" for l in by_file[f]))
        else:
            f.unlink()


def refused(k, *words):
    """kmsd exits non-zero before listening; its log says all of words."""
    p = subprocess.run([str(KMSD), "--config", str(k.home / "kmsd.conf"),
                        "--listen", k.addr], env=k.env(),
                        cwd=str(k.workdir), stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        timeout=120)
    text = p.stdout.decode(errors="replace")
    assert p.returncode != 0, text
    assert "listening on" not in text, text
    for w in words + ("kmsctl audit verify",):
        assert w in text, (w, text)
    return text


def new_chain_starts(k, *words):
    """With on_tamper = new-chain kmsd starts the next chain, above every
    seq it issued, and says why in its first record."""
    conf = k.home / "kmsd.conf"
    conf.write_text(set_conf(conf.read_text(), "audit",
                             {"on_tamper": "new-chain"}))
    k.start()
    seqs = signs(k, 3, "after")
    resp = k.client("auditor").kms.ListAuditRecords(
        pb.ListAuditRecordsRequest(limit=1), timeout=30)
    assert resp.chain == k.chain + "-chain2", resp.chain
    first = json.loads(lines_of(k.home / "audit" / resp.chain)[0][1])
    assert first["rpc"] == "AuditChainStart", first
    assert first["detail"]["previous_chain"] == k.chain, first
    for w in words:
        assert w in first["reason"], (w, first["reason"])
    # Receipts are never issued twice.
    assert min(seqs) > max(k.seqs), (seqs, max(k.seqs))
    assert first["seq"] > max(k.seqs)
    k.stop_clean()
    p = run([KMSCTL, "audit", "verify", k.home / "audit" / resp.chain],
            check=False)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()


def test_clean_restart_is_accepted(stopped):
    stopped.start()
    assert min(signs(stopped, 2, "again")) > max(stopped.seqs)
    stopped.stop_clean()


def test_forged_appended_record(stopped):
    """A record appended with the right seq and prev is not sealed."""
    lines = lines_of(stopped.chain_dir)
    f, last = lines[-1]
    r = json.loads(last)
    forged = dict(r, seq=r["seq"] + 1, prev=hashlib.sha256(last).hexdigest(),
                  rpc="CreateKey", identity="officer", key="release/x",
                  result="ok", status="OK")
    forged.pop("checkpoint", None)
    with open(f, "ab") as out:
        out.write(json.dumps(forged, separators=(",", ":")).encode() + b"\n")
    text = refused(stopped, "carry no seal", "seq %d" % forged["seq"],
                   f.name, "line %d" % len(f.read_bytes().split(b"\n")[:-1]))
    assert "starting chain" not in text
    new_chain_starts(stopped, "carry no seal", f.name)


def test_cut_tail(stopped):
    lines = lines_of(stopped.chain_dir)
    rewrite(stopped.chain_dir, len(lines) - 12)
    refused(stopped, "HSM anchor says", "was cut")
    new_chain_starts(stopped, "was cut")


def test_cut_to_a_checkpoint(stopped):
    """Cut just after an earlier checkpoint: a log that verifies alone."""
    lines = lines_of(stopped.chain_dir)
    cps = [i for i, (_, l) in enumerate(lines)
           if json.loads(l)["rpc"] == "Checkpoint"]
    assert len(cps) >= 3
    rewrite(stopped.chain_dir, cps[-3] + 1)
    p = run([KMSCTL, "audit", "verify", stopped.chain_dir], check=False)
    assert p.returncode == 0, p.stdout.decode()
    refused(stopped, "HSM anchor says", "was cut")


def test_deleted_chain_directory(stopped):
    shutil.rmtree(stopped.chain_dir)
    refused(stopped, "holds 0 records but the HSM anchor says")
    new_chain_starts(stopped, "holds 0 records")


def test_changed_record_under_the_anchor(stopped):
    """A record the anchored checkpoint covers, changed and rechained."""
    lines = lines_of(stopped.chain_dir)
    out = []
    for i, (f, l) in enumerate(lines):
        r = json.loads(l)
        if i == 5:
            r["identity"] = "someone-else"
        if i > 0:
            r["prev"] = hashlib.sha256(out[-1][1]).hexdigest()
        out.append((f, json.dumps(r, separators=(",", ":")).encode()))
    for f in sorted(set(f for f, _ in out)):
        f.write_bytes(b"".join(l + b"\n" for g, l in out if g == f))
    refused(stopped, "do not hash to the root the HSM anchored")


def pkcs11(k, *args):
    pin = (k.home / "pin").read_text().strip()
    return run(["pkcs11-tool", "--module", MODULE, "--token-label", "kms",
                "--login", "--pin", pin] + list(args),
               env=dict(os.environ, SOFTHSM2_CONF=str(k.home /
                                                      "softhsm2.conf")))


def test_swapped_anchor_object(stopped, tmp_path):
    """The anchor of another instance's chain put in this one's place
    (done here with the PIN, as a second process on the token could), or
    the anchor removed: refused either way."""
    other = Kmsd(stopped.home, tmp_path / "other")
    other.start()
    other.stop_clean()
    other_chain = "127.0.0.1_%d" % other.port
    val = tmp_path / "anchor"
    val.write_bytes(pkcs11(stopped, "--read-object", "--type", "data",
                           "--label", "kms-audit!anchor#" + other_chain
                           ).stdout)
    assert b"chain=" + other_chain.encode() in val.read_bytes()
    label = "kms-audit!anchor#" + stopped.chain
    pkcs11(stopped, "--delete-object", "--type", "data", "--label", label)
    refused(stopped, "holds no audit anchor", "removed or swapped")
    pkcs11(stopped, "--write-object", str(val), "--type", "data",
           "--label", label, "--application-label", "kms", "--private")
    refused(stopped, "does not belong to it")


def test_operator_starts_a_new_chain(stopped):
    """kmsd --audit-new-chain REASON: said in the old chain and the new."""
    stopped.args = ["--audit-new-chain", "key ceremony 7"]
    stopped.start()
    seqs = signs(stopped, 3, "after")
    resp = stopped.client("auditor").kms.ListAuditRecords(
        pb.ListAuditRecordsRequest(limit=1), timeout=30)
    assert resp.chain == stopped.chain + "-chain2", resp.chain
    old = [json.loads(l) for _, l in lines_of(stopped.chain_dir)]
    ends = [r for r in old if r["rpc"] == "AuditChainEnd"]
    assert ends and ends[0]["reason"] == "key ceremony 7", old[-3:]
    assert old[-1]["rpc"] == "Checkpoint"
    new = json.loads(lines_of(stopped.home / "audit" / resp.chain)[0][1])
    assert new["rpc"] == "AuditChainStart" and \
        new["reason"] == "key ceremony 7", new
    assert new["seq"] > old[-1]["seq"] and min(seqs) > old[-1]["seq"]
    stopped.args = []
    stopped.stop_clean()
    for chain in (stopped.chain, resp.chain):
        p = run([KMSCTL, "audit", "verify", stopped.home / "audit" / chain],
                check=False)
        assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    # The next start continues the new chain (the anchor names it).
    stopped.start()
    resp2 = stopped.client("auditor").kms.ListAuditRecords(
        pb.ListAuditRecordsRequest(limit=1), timeout=30)
    assert resp2.chain == resp.chain
    stopped.stop_clean()
