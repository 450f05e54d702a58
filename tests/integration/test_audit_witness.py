"""The witness: `kmsctl audit witness` cosigns kmsd's checkpoints while
each extends the last one it holds, and refuses a forked log (two
different records at one seq, both checkpointed: the state directory and
the token restored from a copy and written on) with both checkpoints.
"""

import hashlib
import shutil

import tlog
from conftest import Kmsd, make_home, pb, run

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


def test_witness_cosigns_and_refuses_a_fork(tmp_path):
    home = make_home(tmp_path, "home", AUDIT_CONF)
    k = Kmsd(home, tmp_path / "work")
    k.start()
    k.key = "release/witness/p256"
    k.client("officer").kms.CreateKey(
        pb.CreateKeyRequest(name=k.key, algorithm=pb.EC_P256_SHA256),
        timeout=60)
    k.pinned = tmp_path / "audit-key.pem"
    k.pinned.write_text(k.client("auditor").kms.ListAuditRecords(
        pb.ListAuditRecordsRequest(limit=1), timeout=30).audit_key_pem)
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
