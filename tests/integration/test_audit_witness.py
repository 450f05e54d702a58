"""The witness: `kmsctl audit witness` cosigns kmsd's checkpoints while
each extends the last one it holds, and refuses a forked log (two
different records at one seq, both checkpointed: the state directory and
the token restored from a copy and written on) with both checkpoints.
"""

import hashlib
import shutil
import time

import tlog
from conftest import KMSCTL, Kmsd, make_home, pb, run

AUDIT_CONF = {"audit": {"checkpoint_every": 1000, "checkpoint_seconds": 0}}


def signs(k, n, tag):
    kms = k.client("ci").kms
    for i in range(n):
        d = hashlib.sha256(("%s-%d" % (tag, i)).encode()).digest()
        seq = kms.Sign(pb.SignRequest(name=k.key, digest=d),
                       timeout=30).audit_seq
    return seq


def checkpoint_now(k, seq):
    """A checkpoint covering seq (kmsctl makes one when none does)."""
    p = k.kmsctl("audit", "prove", "--pubkey", k.pinned, str(seq))
    assert "verifies" in p.stdout.decode(), p.stdout.decode()


def witness(k, state, wkey, check=True):
    return k.kmsctl("audit", "witness", "--state", state, "--witness-key", wkey,
                    "--pubkey", k.pinned, identity="auditor", check=check)


def started(tmp_path, key):
    """kmsd on a home of its own with one P-256 key, its audit key pinned
    in k.pinned."""
    home = make_home(tmp_path, "home", AUDIT_CONF)
    k = Kmsd(home, tmp_path / "work")
    k.start()
    k.key = key
    k.client("officer").kms.CreateKey(
        pb.CreateKeyRequest(name=k.key, algorithm=pb.EC_P256_SHA256),
        timeout=60)
    k.pinned = tmp_path / "audit-key.pem"
    k.pinned.write_text(k.client("auditor").kms.ListAuditRecords(
        pb.ListAuditRecordsRequest(limit=1), timeout=30).audit_key_pem)
    return home, k


def test_witness_cosigns_and_refuses_a_fork(tmp_path):
    home, k = started(tmp_path, "release/witness/p256")
    wkey = tmp_path / "witness.pem"
    run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", wkey])
    wpub = tlog.load_pem_public(run(["openssl", "pkey", "-in", wkey,
                                     "-pubout"]).stdout)
    state = tmp_path / "state"
    state.mkdir()
    checkpoint_now(k, signs(k, 5, "one"))
    p = witness(k, state, wkey)
    assert "the first it holds" in p.stdout.decode()
    note = (state / "latest").read_text()
    # Both signatures: the audit key's and the witness's own.
    text = tlog.verify_note(note, "kms/127.0.0.1_%d" % k.port,
                            tlog.load_pem_public(k.pinned.read_bytes()))
    assert tlog.verify_note(note, "kms-witness", wpub) == text
    k.stop_clean()
    # A copy of the state directory and the token, as they are now.
    backup = tmp_path / "backup"
    shutil.copytree(home, backup, symlinks=True)
    k.start()
    checkpoint_now(k, signs(k, 6, "two"))
    p = witness(k, state, wkey)
    assert "consistent with the last one" in p.stdout.decode()
    held = (state / "latest").read_text()
    k.stop_clean()
    # Roll both back and write other records at the same seqs: a fork.
    for sub in ("audit", "tokens"):
        shutil.rmtree(home / sub)
        shutil.copytree(backup / sub, home / sub, symlinks=True)
    k.start()
    checkpoint_now(k, signs(k, 12, "fork"))
    p = witness(k, state, wkey, check=False)
    out = p.stdout.decode()
    assert p.returncode == 1, out + p.stderr.decode()
    assert "witness REFUSES" in out and held.split("\n\n")[0] in out, out
    assert (state / "latest").read_text() == held
    k.stop_clean()


def verify(path, *args):
    p = run([KMSCTL, "audit", "verify"] + [str(a) for a in args] +
            [str(path)], check=False)
    return p.returncode, (p.stdout + p.stderr).decode()


def test_verify_requires_the_witness_cosignature(tmp_path):
    home, k = started(tmp_path, "release/witness/verify")
    keys = {}
    for w in ("witness", "other"):
        keys[w] = tmp_path / (w + ".pem")
        run(["openssl", "genpkey", "-algorithm", "ed25519", "-out",
             keys[w]])
        (tmp_path / (w + "-pub.pem")).write_bytes(run(
            ["openssl", "pkey", "-in", keys[w], "-pubout"]).stdout)
    wpub, other = tmp_path / "witness-pub.pem", tmp_path / "other-pub.pem"
    state = tmp_path / "state"
    state.mkdir()
    audit = home / "audit"
    chain = "127.0.0.1_%d" % k.port

    # No cosignature anywhere yet: the log is intact but not witnessed.
    checkpoint_now(k, signs(k, 5, "one"))
    rc, out = verify(audit, "--pubkey", k.pinned, "--witness", wpub)
    assert rc == 1, out
    assert "NOT witnessed" in out and "no checkpoint of it is cosigned" \
        in out, out
    # The witness's key as the request spells it (--key after the
    # command), twice: two cosigned checkpoints.
    k.kmsctl("audit", "witness", "--state", state, "--key", keys["witness"],
             "--pubkey", k.pinned, identity="auditor")
    first = sorted(state.glob("*.note"))
    time.sleep(1.1)             # a checkpoint on demand: once a second
    checkpoint_now(k, signs(k, 6, "two"))
    witness(k, state, keys["witness"])     # the old spelling still works
    k.stop_clean()
    rc, out = verify(audit, "--pubkey", k.pinned, "--witness", wpub,
                     "--cosigned", state)
    assert rc == 0, out
    assert "2 checkpoint(s) cosigned by the witness" in out, out
    # Another witness's key is not this one.
    rc, out = verify(audit, "--pubkey", k.pinned, "--witness", other,
                     "--cosigned", state)
    assert rc == 1 and "no checkpoint of it is cosigned" in out, out
    # Beside the chain, where verify looks by default.
    shutil.copytree(state, audit / chain / "witness")
    rc, out = verify(audit, "--pubkey", k.pinned, "--witness", wpub)
    assert rc == 0, out
    p = run([KMSCTL, "audit", "verify", "--json", "--witness", wpub,
             audit], check=False)
    assert p.returncode == 0 and b'"witness": {"ok": true}' in \
        p.stdout.replace(b'":{', b'": {').replace(b'":true', b'": true'), \
        p.stdout
    shutil.rmtree(audit / chain / "witness")

    # Cut the log back to the first witnessed checkpoint: the log alone
    # still verifies, the witness's later checkpoint shows the cut.
    cut = tmp_path / "cut" / chain
    shutil.copytree(audit / chain, cut)
    size = int(first[-1].name.split(".")[0])
    segs = sorted(cut.glob("*.jsonl"))
    done = False
    for seg in segs:
        lines = []
        for line in seg.read_bytes().split(b"\n"):
            if not line or done:
                continue
            lines.append(line)
            if b'"rpc":"Checkpoint"' in line and \
                    (b"\\n%d\\n" % size) in line:
                done = True
        seg.write_bytes(b"".join(l + b"\n" for l in lines))
    for seg in segs:
        if seg.stat().st_size == 0:
            seg.unlink()
    assert done
    rc, out = verify(cut, "--pubkey", k.pinned)
    assert rc == 0, out
    rc, out = verify(cut, "--pubkey", k.pinned, "--witness", wpub,
                     "--cosigned", state)
    assert rc == 1 and "does not hold" in out and "cut or forked" in out, out
    # Usage: --cosigned without --witness.
    rc, out = verify(audit, "--cosigned", state)
    assert rc == 2, out
