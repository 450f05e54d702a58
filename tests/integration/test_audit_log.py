"""The tamper-evident audit log: receipts, checkpoints, the offline
verifier, ListAuditRecords, crash safety and failing closed.

These tests run their own kmsd on a state directory with small segments
and frequent checkpoints, so that segment and checkpoint rules are reached
with a few hundred records.
"""

import base64
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import grpc
import pytest

import tlog
from conftest import KMSCTL, MODULE, Kmsd, expect_error, make_home, pb, run

# Small segments and frequent checkpoints, so that a few records make many.
AUDIT_CONF = {"audit": {"segment_bytes": 8192, "checkpoint_every": 8,
                        "checkpoint_seconds": 1}}


@pytest.fixture(scope="module")
def ak(tmp_root):
    """kmsd on its own state directory, with one P-256 key."""
    k = Kmsd(make_home(tmp_root, "audit-home", AUDIT_CONF),
             tmp_root / "audit-work")
    k.start()
    k.key = "release/audit/p256"
    k.client("officer").kms.CreateKey(
        pb.CreateKeyRequest(name=k.key, algorithm=pb.EC_P256_SHA256),
        timeout=60)
    yield k
    k.stop_clean()


def sign(k, n, tag, identity="ci"):
    """n Signs with distinct digests; returns [(digest, response)]."""
    kms = k.client(identity).kms
    out = []
    for i in range(n):
        d = hashlib.sha256(("%s-%d" % (tag, i)).encode()).digest()
        out.append((d, kms.Sign(pb.SignRequest(name=k.key, digest=d),
                                timeout=30)))
    return out


def records_on_disk(chain_dir):
    recs = {}
    for f in sorted(chain_dir.glob("*.jsonl")):
        for line in f.read_bytes().split(b"\n"):
            if line.strip():
                r = json.loads(line)
                recs[r["seq"]] = r
    return recs


def my_chain(k):
    resp = k.client("auditor").kms.ListAuditRecords(
        pb.ListAuditRecordsRequest(limit=1), timeout=30)
    assert resp.chain
    return k.home / "audit" / resp.chain, resp


def verify(path, *args):
    return run([KMSCTL, "audit", "verify", str(path)] + list(args),
               check=False)


def out_text(p):
    return (p.stdout + p.stderr).decode(errors="replace")


def test_receipts_match_records_under_concurrency(ak):
    """Every receipt of many concurrent signers names its own record."""
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = [r for part in ex.map(lambda t: sign(ak, 25, "rcpt%d" % t),
                                        range(8)) for r in part]
    seqs = [resp.audit_seq for _, resp in results]
    assert len(set(seqs)) == len(seqs) == 200
    chain_dir, _ = my_chain(ak)
    recs = records_on_disk(chain_dir)
    for digest, resp in results:
        r = recs[resp.audit_seq]
        assert r["rpc"] == "Sign" and r["identity"] == "ci", r
        assert r["key"] == ak.key and r["version"] == resp.version == 1, r
        assert r["result"] == "ok" and r["status"] == "OK", r
        assert r["request_sha256"] == hashlib.sha256(digest).hexdigest(), r
    # Group commit: all of that is already durable and the chain holds.
    p = verify(chain_dir)
    assert p.returncode == 0, out_text(p)


def test_every_response_that_used_a_key_has_a_receipt(ak):
    chain_dir, _ = my_chain(ak)
    officer = ak.client("officer").kms
    ci = ak.client("ci").kms
    got = [officer.GetKey(pb.GetKeyRequest(name=ak.key), timeout=30),
           ci.GetPublicKey(pb.GetPublicKeyRequest(name=ak.key), timeout=30),
           ci.Verify(pb.VerifyRequest(name=ak.key, digest=b"\0" * 32,
                                      signature=b"\x30\x00"), timeout=30)]
    recs = records_on_disk(chain_dir)
    for resp, rpc in zip(got, ("GetKey", "GetPublicKey", "Verify")):
        assert resp.audit_seq > 0
        assert recs[resp.audit_seq]["rpc"] == rpc


def test_denials_and_failures_are_recorded(ak):
    chain_dir, _ = my_chain(ak)
    msg = expect_error(grpc.StatusCode.PERMISSION_DENIED,
                       ak.client("officer").kms.Sign,
                       pb.SignRequest(name=ak.key, digest=b"\1" * 32))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, ak.client("ci").kms.Sign,
                 pb.SignRequest(name=ak.key, digest=b"\1" * 31))
    expect_error(grpc.StatusCode.NOT_FOUND, ak.client("ci").kms.Sign,
                 pb.SignRequest(name="release/audit/none",
                                digest=b"\1" * 32))
    recs = list(records_on_disk(chain_dir).values())[-6:]
    denied = [r for r in recs if r["identity"] == "officer" and
              r["rpc"] == "Sign"]
    assert denied and denied[-1]["result"] == "denied"
    assert denied[-1]["reason"] == msg
    codes = [r["status"] for r in recs if r["identity"] == "ci"]
    assert "INVALID_ARGUMENT" in codes and "NOT_FOUND" in codes


def test_only_auditors_list_records(ak):
    for who in ("ci", "officer", "unwrapper"):
        msg = expect_error(grpc.StatusCode.PERMISSION_DENIED,
                           ak.client(who).kms.ListAuditRecords,
                           pb.ListAuditRecordsRequest())
        assert "ListAuditRecords" in msg
    resp = ak.client("auditor").kms.ListAuditRecords(
        pb.ListAuditRecordsRequest(
            filters=pb.AuditFilters(rpc="ListAuditRecords",
                                    result="denied"), limit=1000),
        timeout=30)
    assert {r.identity for r in resp.records} >= {"ci", "officer",
                                                  "unwrapper"}


def test_list_pages_and_filters(ak):
    sign(ak, 5, "page")
    chain_dir, first = my_chain(ak)
    disk = records_on_disk(chain_dir)
    auditor = ak.client("auditor").kms
    # Page through everything, 7 at a time: same records as on disk.
    # Every call is recorded as well: read up to the end as it was.
    seen, after, end = [], 0, first.last_seq
    # The listing call's own record follows the end, and so may the
    # checkpoints that fall due meanwhile (one a second here).
    after_end = [disk[k] for k in sorted(disk) if k > end]
    assert [r["rpc"] for r in after_end
            if "checkpoint" not in r] == ["ListAuditRecords"], after_end
    disk = {k: v for k, v in disk.items() if k <= end}
    while after < end:
        resp = auditor.ListAuditRecords(
            pb.ListAuditRecordsRequest(after_seq=after, limit=7), timeout=30)
        assert resp.records
        assert len(resp.records) <= 7
        seen += [r.seq for r in resp.records]
        for r in resp.records:
            if r.seq in disk:
                assert json.loads(r.json) == disk[r.seq]
        after = resp.next_after_seq
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert set(disk) <= set(seen)
    # Filters.
    resp = auditor.ListAuditRecords(pb.ListAuditRecordsRequest(
        filters=pb.AuditFilters(identity="ci", rpc="Sign", key=ak.key,
                                result="ok"), limit=1000), timeout=30)
    assert resp.records and all(
        (r.identity, r.rpc, r.key, r.result) == ("ci", "Sign", ak.key, "ok")
        for r in resp.records)
    resp = auditor.ListAuditRecords(pb.ListAuditRecordsRequest(
        filters=pb.AuditFilters(time_from="2999-01-01T00:00:00Z")),
        timeout=30)
    assert len(resp.records) == 0
    t0 = min(r["time"] for r in disk.values())
    resp = auditor.ListAuditRecords(pb.ListAuditRecordsRequest(
        filters=pb.AuditFilters(time_to=t0), limit=10), timeout=30)
    assert [r.seq for r in resp.records] == [min(disk)]
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, auditor.ListAuditRecords,
                 pb.ListAuditRecordsRequest(
                     filters=pb.AuditFilters(time_from="yesterday")))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, auditor.ListAuditRecords,
                 pb.ListAuditRecordsRequest(chain="../../etc"))
    expect_error(grpc.StatusCode.NOT_FOUND, auditor.ListAuditRecords,
                 pb.ListAuditRecordsRequest(chain="no-such-chain"))
    assert "BEGIN PUBLIC KEY" in first.audit_key_pem


def test_kmsctl_audit_list(ak):
    # Its own three Signs, whatever ran before: the listing starts just
    # before the first of them and skips the records between them.
    signed = sign(ak, 3, "kmsctl-list")
    seqs = [r.audit_seq for _, r in signed]
    p = ak.kmsctl("--json", "audit", "list", "--rpc", "Sign", "--after",
                  str(min(seqs) - 1), "--limit", "3", identity="auditor")
    recs = [json.loads(l) for l in p.stdout.decode().splitlines() if l]
    assert [r["seq"] for r in recs] == sorted(seqs), recs
    for d, resp in signed:
        r = recs[sorted(seqs).index(resp.audit_seq)]
        assert (r["rpc"], r["identity"], r["key"]) == ("Sign", "ci", ak.key)
        assert r["request_sha256"] == hashlib.sha256(d).hexdigest(), r
    p = ak.kmsctl("audit", "list", identity="ci", check=False)
    assert p.returncode == 4 and b"PERMISSION_DENIED" in p.stderr


def test_log_verifies_with_segments_and_checkpoints(ak):
    sign(ak, 60, "segments")
    chain_dir, resp = my_chain(ak)
    assert len(list(chain_dir.glob("*.jsonl"))) >= 3
    pem = ak.home / "audit-key.pem"
    pem.write_text(resp.audit_key_pem)
    # This instance's chain with its key pinned (another test may have
    # added the chain of another instance, with a key of its own).
    p = verify(chain_dir, "--pubkey", pem)
    assert p.returncode == 0, out_text(p)
    assert re.search(r"\b[1-9]\d* checkpoints\b", out_text(p)), out_text(p)
    p = verify(ak.home / "audit")
    assert p.returncode == 0, out_text(p)
    cps = [r for r in records_on_disk(chain_dir).values()
           if r["rpc"] == "Checkpoint"]
    assert cps and all(r["identity"] == "kmsd" for r in cps)


# --- Tampering, on a copy of the log --------------------------------------

def rechain(lines, start):
    """Recomputes seq and prev from line start on, as a forger who knows the
    format would (keeping every other byte)."""
    for i in range(max(start, 1), len(lines)):
        r = json.loads(lines[i])
        prev = json.loads(lines[i - 1])
        r["seq"] = prev["seq"] + 1
        r["prev"] = hashlib.sha256(lines[i - 1]).hexdigest()
        lines[i] = json.dumps(r, separators=(",", ":")).encode()
    return lines


def load_chain(chain_dir):
    """[(file, [line bytes])] in order."""
    return [(f, [l for l in f.read_bytes().split(b"\n") if l])
            for f in sorted(chain_dir.glob("*.jsonl"))]


def save_chain(segs):
    for f, lines in segs:
        f.write_bytes(b"".join(l + b"\n" for l in lines))


def flat(segs):
    return [l for _, lines in segs for l in lines]


def resplit(segs, lines):
    out, i = [], 0
    for f, old in segs:
        out.append((f, lines[i:i + len(old)]))
        i += len(old)
    return out


def middle_segment(segs):
    for i in range(1, len(segs) - 1):
        if len(segs[i][1]) >= 4:
            return i
    pytest.fail("no middle segment with 4 records")


def t_change_field(segs):
    i = middle_segment(segs)
    f, lines = segs[i]
    r = json.loads(lines[1])
    r["time"] = "2020" + r["time"][4:]
    lines[1] = json.dumps(r, separators=(",", ":")).encode()
    return f, 3


def t_delete(segs):
    i = middle_segment(segs)
    del segs[i][1][1]
    return segs[i][0], 2


def t_insert(segs):
    i = middle_segment(segs)
    f, lines = segs[i]
    fake = json.loads(lines[1])
    fake["identity"] = "intruder"
    lines.insert(2, json.dumps(fake, separators=(",", ":")).encode())
    return f, 3


def t_duplicate(segs):
    i = middle_segment(segs)
    segs[i][1].insert(2, segs[i][1][1])
    return segs[i][0], 3


def t_swap(segs):
    i = middle_segment(segs)
    l = segs[i][1]
    l[1], l[2] = l[2], l[1]
    return segs[i][0], 2


def t_remove_segment(segs):
    i = middle_segment(segs)
    segs[i][0].unlink()
    del segs[i]
    return segs[i][0], None


def t_reorder_segments(segs):
    i = middle_segment(segs)
    (fa, la), (fb, lb) = segs[i], segs[i + 1]
    segs[i], segs[i + 1] = (fa, lb), (fb, la)
    return fa, None


def t_forge_and_rechain(segs):
    """Change a record and fix every hash after it: only the checkpoint
    signatures can tell."""
    lines = flat(segs)
    n = len(segs[0][1]) + 1
    r = json.loads(lines[n])
    r["identity"] = "someone-else"
    lines[n] = json.dumps(r, separators=(",", ":")).encode()
    rechain(lines, n + 1)
    segs[:] = resplit(segs, lines)
    return None, None


def t_drop_checkpoint(segs):
    """Remove a checkpoint and renumber and rechain everything after it."""
    lines = flat(segs)
    idx = [i for i, l in enumerate(lines) if b'"rpc":"Checkpoint"' in l]
    del lines[idx[2]]
    rechain(lines, idx[2])
    segs[:] = resplit(segs, lines + [lines[-1]])
    segs[-1] = (segs[-1][0], segs[-1][1][:-1])
    return None, None


TAMPERS = {
    "changed field": t_change_field,
    "deleted record": t_delete,
    "inserted record": t_insert,
    "duplicated record": t_duplicate,
    "swapped records": t_swap,
    "removed segment": t_remove_segment,
    "reordered segments": t_reorder_segments,
    "forged and rechained": t_forge_and_rechain,
    "dropped checkpoint": t_drop_checkpoint,
}


@pytest.mark.parametrize("kind", sorted(TAMPERS))
def test_tampering_is_detected(ak, tmp_path, kind):
    sign(ak, 40, "tamper")
    chain_dir, _ = my_chain(ak)
    copy = tmp_path / "audit"
    shutil.copytree(ak.home / "audit", copy)
    cdir = copy / chain_dir.name
    assert verify(copy).returncode == 0
    segs = load_chain(cdir)
    before = [(f, list(l)) for f, l in segs]
    f, line = TAMPERS[kind](segs)
    assert segs != before
    save_chain(segs)
    p = verify(copy)
    text = out_text(p)
    assert p.returncode == 1, (kind, text)
    assert "FAILED" in text, text
    if f is not None:
        assert f.name in text, (kind, text)
    if line is not None:
        assert "line %d" % line in text, (kind, text)
    assert re.search(r"seq \d+", text), text


def test_checkpoint_by_a_foreign_key_needs_the_pinned_key(ak, tmp_path):
    """A forger who changes a record, rebuilds the tree, re-signs every
    later checkpoint with a key of their own and puts its PEM beside the
    log is caught by pinning the real audit key."""
    sign(ak, 20, "pin")
    chain_dir, resp = my_chain(ak)
    real = tmp_path / "real.pem"
    real.write_text(resp.audit_key_pem)
    tlog.load_pem_public(resp.audit_key_pem)
    copy = tmp_path / "audit"
    shutil.copytree(ak.home / "audit", copy)
    cdir = copy / chain_dir.name
    evil = tlog.new_key()
    fpr = hashlib.sha256(tlog.public_der(evil)).hexdigest()
    (cdir / ("audit-key-%s.pem" % fpr[:16])).write_bytes(
        tlog.public_pem(evil))
    segs = load_chain(cdir)
    lines = flat(segs)
    r = json.loads(lines[3])
    r["identity"] = "someone-else"
    lines[3] = json.dumps(r, separators=(",", ":")).encode()
    leaves = [tlog.leaf_hash(l) for l in lines[:4]]
    resigned = 0
    for i in range(4, len(lines)):
        r = json.loads(lines[i])
        r["prev"] = hashlib.sha256(lines[i - 1]).hexdigest()
        if r["rpc"] == "Checkpoint":
            text, sigs = tlog.split_note(r["checkpoint"]["note"])
            origin, size, _ = tlog.parse_checkpoint(text)
            r["checkpoint"]["note"] = tlog.sign_note(
                tlog.checkpoint_text(origin, size, tlog.mth(leaves[:size])),
                origin, evil)
            resigned += 1
        lines[i] = json.dumps(r, separators=(",", ":")).encode()
        leaves.append(tlog.leaf_hash(lines[i]))
    assert resigned > 0
    save_chain(resplit(segs, lines))
    p = verify(copy)
    assert p.returncode == 0, out_text(p)
    assert "more than one audit key" in out_text(p)
    p = verify(copy, "--pubkey", real)
    assert p.returncode == 1, out_text(p)
    assert "unknown audit key" in out_text(p)


# --- Instances, crashes, full disks ----------------------------------------

def test_two_instances_keep_their_own_chains(ak, tmp_root):
    other = Kmsd(ak.home, tmp_root / "audit-work-other")
    other.start()
    try:
        other.key = ak.key
        sign(other, 5, "other")
        sign(ak, 5, "one")
    finally:
        other.stop_clean()
    chains = [d for d in (ak.home / "audit").iterdir() if d.is_dir()]
    assert len(chains) >= 2
    p = verify(ak.home / "audit")
    assert p.returncode == 0, out_text(p)
    assert out_text(p).count("chain ") >= 2


def test_kill9_under_load_loses_no_receipt(ak):
    receipts, stop = [], threading.Event()
    lock = threading.Lock()

    def signer(t):
        kms = ak.client("ci").kms
        i = 0
        while not stop.is_set():
            d = hashlib.sha256(b"kill-%d-%d" % (t, i)).digest()
            i += 1
            try:
                r = kms.Sign(pb.SignRequest(name=ak.key, digest=d),
                             timeout=5)
            except grpc.RpcError:
                return
            with lock:
                receipts.append((r.audit_seq, d))

    # 8 signers; the kill comes once they have 100 receipts (or after 20 s
    # on a loaded machine), so that it lands in the middle of the load.
    threads = [threading.Thread(target=signer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with lock:
            if len(receipts) >= 100:
                break
        time.sleep(0.05)
    time.sleep(0.2)
    ak.proc.send_signal(signal.SIGKILL)
    ak.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    ak.proc = None
    ak.close_clients()
    assert len(receipts) > 50
    ak.start()
    chain_dir, _ = my_chain(ak)
    recs = records_on_disk(chain_dir)
    for seq, d in receipts:
        assert recs[seq]["request_sha256"] == hashlib.sha256(d).hexdigest()
    p = verify(ak.home / "audit")
    assert p.returncode == 0, out_text(p)


def test_torn_tail_is_cut_and_recorded(ak):
    chain_dir, _ = my_chain(ak)
    ak.stop_clean()
    last = sorted(chain_dir.glob("*.jsonl"))[-1]
    with open(last, "ab") as f:
        f.write(b'{"seq":999999,"time":"2026-')
    p = verify(ak.home / "audit")
    assert p.returncode == 0 and "unfinished" in out_text(p), out_text(p)
    ak.start()
    recs = records_on_disk(chain_dir)
    repairs = [r for r in recs.values() if r["rpc"] == "AuditRepair"]
    assert repairs and "27 bytes" in repairs[-1]["reason"], repairs
    p = verify(ak.home / "audit")
    assert p.returncode == 0 and "unfinished" not in out_text(p), out_text(p)


def mount_tmpfs(path, size):
    path.mkdir(parents=True, exist_ok=True)
    p = run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size,
             "tmpfs", str(path)], check=False)
    return p.returncode == 0


def fill_disk(k, audit, key, smaller=False):
    """Fills the tmpfs of the audit log until a Sign with key is refused
    for it (smaller: then a WhoAmI too, whose record is shorter); returns
    the file to remove to free it."""
    filler = audit / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    # Appends may still fit in the segment's last page for a while.
    ci = k.client("ci").kms
    for _ in range(64):
        try:
            ci.Sign(pb.SignRequest(name=key, digest=b"\2" * 32), timeout=30)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
            assert "audit" in e.details()
            break
    else:
        pytest.fail("64 Signs succeeded on a full disk")
    if not smaller:
        return filler
    # A WhoAmI record is shorter than a Sign's: once one is refused too,
    # the page's slack is below a WhoAmI record.
    for _ in range(8):
        try:
            ci.WhoAmI(pb.WhoAmIRequest(), timeout=30)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
            assert "audit" in e.details()
            return filler
    pytest.fail("WhoAmI succeeded 8 times on a full disk")


def test_full_disk_fails_closed_and_recovers(tmp_root):
    home = make_home(tmp_root, "full-home", AUDIT_CONF)
    audit = home / "audit"
    if os.geteuid() != 0 or not mount_tmpfs(audit, "1m"):
        pytest.skip("needs root and tmpfs mounts to make a real full disk")
    k = Kmsd(home, tmp_root / "full-work")
    try:
        k.start()
        k.key = "release/full/p256"
        k.client("officer").kms.CreateKey(
            pb.CreateKeyRequest(name=k.key, algorithm=pb.EC_P256_SHA256),
            timeout=60)
        sign(k, 3, "before")
        filler = fill_disk(k, audit, k.key)
        filler.unlink()
        after = sign(k, 3, "after")
        chain_dir, _ = my_chain(k)
        recs = records_on_disk(chain_dir)
        for d, r in after:
            assert recs[r.audit_seq]["request_sha256"] == \
                hashlib.sha256(d).hexdigest()
        p = verify(audit)
        assert p.returncode == 0, out_text(p)
        k.stop_clean()
    finally:
        if k.proc is not None:
            k.proc.kill()
            k.proc.wait()
        subprocess.run(["umount", str(audit)], check=False)


def test_scheduled_destroy_waits_for_the_audit_log(tmp_root):
    """A scheduled destruction is audited before it happens: while the
    audit log cannot be written the version and its HSM objects stay, and
    once it can the destruction is made with its record."""
    home = make_home(tmp_root, "sched-full-home", dict(AUDIT_CONF, keys={
        "destroy_wait": 8, "sync_ms": 200}))
    audit = home / "audit"
    if os.geteuid() != 0 or not mount_tmpfs(audit, "1m"):
        pytest.skip("needs root and tmpfs mounts to make a real full disk")
    k = Kmsd(home, tmp_root / "sched-full-work")
    # A long name makes the ScheduledDestroy record (about 250 bytes plus
    # the name) longer than a WhoAmI record (about 380), so that it cannot
    # fit in what fill_disk leaves of the segment's last page.
    name = "release/sched-full/" + "p" * 96 + "/p256"
    try:
        k.start()
        officer = k.client("officer").kms
        officer.CreateKey(pb.CreateKeyRequest(
            name=name, algorithm=pb.EC_P256_SHA256), timeout=60)
        officer.RotateKey(pb.RotateKeyRequest(name=name), timeout=60)
        v = officer.SetVersionState(pb.SetVersionStateRequest(
            name=name, version=1, state=pb.KeyVersionState.Value(
                "DESTROY_SCHEDULED")), timeout=30)
        filler = fill_disk(k, audit, name, smaller=True)
        # Past the destroy time, with room for a few maintenance rounds.
        time.sleep(max(0, v.destroy_time - time.time()) + 2)
        assert "scheduled changes wait for the audit log" in k.log()
        pin = (home / "pin").read_text().strip()
        p = run(["pkcs11-tool", "--module", MODULE, "--token-label", "kms",
                 "--login", "--pin", pin, "--list-objects",
                 "--type", "privkey"], env=k.env())
        labels = re.findall(r"label:\s*(\S+)", p.stdout.decode())
        assert [x for x in labels if x.startswith(name + "#1#")], labels

        filler.unlink()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            key = officer.GetKey(pb.GetKeyRequest(name=name), timeout=30)
            if key.versions[0].state == pb.KeyVersionState.Value(
                    "DESTROYED"):
                break
            time.sleep(0.2)
        else:
            pytest.fail("version 1 not destroyed once the log works")
        chain_dir, _ = my_chain(k)
        recs = [r for r in records_on_disk(chain_dir).values()
                if r["rpc"] == "ScheduledDestroy"]
        assert len(recs) == 1 and recs[0]["result"] == "ok", recs
        assert recs[0]["version"] == 1
        k.stop_clean()
    finally:
        if k.proc is not None:
            k.proc.kill()
            k.proc.wait()
        subprocess.run(["umount", str(audit)], check=False)


def test_health_not_serving_while_the_audit_log_is_full(tmp_root):
    """The plaintext health port says NOT_SERVING while the audit log has
    no room, and SERVING again once it has, with no restart."""
    from conftest import free_port, health_pb2, health_pb2_grpc

    hport = free_port()
    home = make_home(tmp_root, "health-full-home", dict(
        AUDIT_CONF, server={"health_listen": "127.0.0.1:%d" % hport}))
    audit = home / "audit"
    if os.geteuid() != 0 or not mount_tmpfs(audit, "1m"):
        pytest.skip("needs root and tmpfs mounts to make a real full disk")
    k = Kmsd(home, tmp_root / "health-full-work")
    ch = None
    req = health_pb2.HealthCheckRequest(service="")
    SERVING = health_pb2.HealthCheckResponse.SERVING
    NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

    def status_within(want, seconds):
        deadline = time.monotonic() + seconds
        while True:
            got = health.Check(req, timeout=10).status
            if got == want or time.monotonic() >= deadline:
                return got
            time.sleep(0.2)

    try:
        k.start()
        ch = grpc.insecure_channel("127.0.0.1:%d" % hport)
        health = health_pb2_grpc.HealthStub(ch)
        assert status_within(SERVING, 10) == SERVING
        name = "release/health-full/p256"
        k.client("officer").kms.CreateKey(pb.CreateKeyRequest(
            name=name, algorithm=pb.EC_P256_SHA256), timeout=60)
        filler = fill_disk(k, audit, name)
        assert status_within(NOT_SERVING, 10) == NOT_SERVING
        filler.unlink()
        assert status_within(SERVING, 10) == SERVING
        k.stop_clean()
    finally:
        if ch is not None:
            ch.close()
        if k.proc is not None:
            k.proc.kill()
            k.proc.wait()
        subprocess.run(["umount", str(audit)], check=False)
