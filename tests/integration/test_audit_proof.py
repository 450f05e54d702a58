"""Receipts proved: Sign -> GetAuditProof -> an RFC 9162 inclusion proof
checked against a C2SP checkpoint signed by the pinned audit key, and
consistency between checkpoints, all verified by tests/integration/tlog.py
(Python, sharing no code with kms).
"""

import hashlib
import json
import time

import grpc
import pytest

import tlog
from conftest import Kmsd, expect_error, make_home, pb

UINT64_MAX = 2**64 - 1

# Checkpoints only when asked for (and at start and stop), so that a
# record is uncovered until then.
AUDIT_CONF = {"audit": {"checkpoint_every": 1000, "checkpoint_seconds": 0}}


@pytest.fixture(scope="module")
def pk(tmp_root):
    conf = {"audit": dict(AUDIT_CONF["audit"],
                          publish=str(tmp_root / "published"))}
    k = Kmsd(make_home(tmp_root, "proof-home", conf),
             tmp_root / "proof-work")
    k.published = tmp_root / "published"
    k.start()
    k.key = "release/proof/p256"
    k.client("officer").kms.CreateKey(
        pb.CreateKeyRequest(name=k.key, algorithm=pb.EC_P256_SHA256),
        timeout=60)
    resp = k.client("auditor").kms.ListAuditRecords(
        pb.ListAuditRecordsRequest(limit=1), timeout=30)
    k.chain = resp.chain
    k.origin = "kms/" + resp.chain
    # The pinned key: saved once, trusted from then on.
    k.pub = tlog.load_pem_public(resp.audit_key_pem)
    yield k
    k.stop_clean()


def sign(k, n, tag):
    out = []
    for i in range(n):
        d = hashlib.sha256(("%s-%d" % (tag, i)).encode()).digest()
        out.append((d, k.client("ci").kms.Sign(
            pb.SignRequest(name=k.key, digest=d), timeout=30).audit_seq))
    return out


def checked_note(k, note):
    """(size, root) of a checkpoint signed by the pinned key."""
    origin, size, root = tlog.parse_checkpoint(
        tlog.verify_note(note, k.origin, k.pub))
    assert origin == k.origin
    return size, root


def force(k, seq, who="ci"):
    """A proof of seq against a checkpoint made now (once a second)."""
    for _ in range(30):
        try:
            return k.client(who).kms.GetAuditProof(
                pb.GetAuditProofRequest(seq=seq, tree_size=UINT64_MAX),
                timeout=30)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            time.sleep(0.3)
    raise AssertionError("no checkpoint could be forced")


def check_proof(k, p, seq, digest=None):
    size, root = checked_note(k, p.checkpoint)
    assert p.tree_size == size and p.leaf_index == seq - 1
    rec = json.loads(p.record)
    assert rec["seq"] == seq and rec["chain"] == k.chain
    if digest is not None:
        assert rec["request_sha256"] == hashlib.sha256(digest).hexdigest()
    assert tlog.verify_inclusion(p.leaf_index, p.tree_size,
                                 tlog.leaf_hash(p.record.encode()),
                                 list(p.inclusion), root)
    # One flipped bit anywhere and it fails.
    for i in range(len(p.inclusion)):
        bad = list(p.inclusion)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        assert not tlog.verify_inclusion(p.leaf_index, p.tree_size,
                                         tlog.leaf_hash(p.record.encode()),
                                         bad, root)
    return size, root


def test_receipt_is_proved_against_the_pinned_key(pk):
    receipts = sign(pk, 12, "rcpt")
    last_digest, last = receipts[-1]
    # Not covered by a checkpoint yet: said so, not a wrong proof.
    why = expect_error(grpc.StatusCode.FAILED_PRECONDITION,
                       pk.client("ci").kms.GetAuditProof,
                       pb.GetAuditProofRequest(seq=last), timeout=30)
    assert "not covered by a checkpoint" in why, why
    sent = time.monotonic()
    p = force(pk, last)
    # At most one forced checkpoint a second per chain: the next one at
    # once is refused.  On a slow machine "at once" can be late; a forced
    # checkpoint granted then came at least 1 s after the one before it,
    # which was made after `sent`.
    for _ in range(5):
        again = time.monotonic()
        try:
            pk.client("ci").kms.GetAuditProof(pb.GetAuditProofRequest(
                seq=last, tree_size=UINT64_MAX), timeout=30)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            break
        took = time.monotonic() - sent
        assert took >= 1.0, "two forced checkpoints in %.3f s" % took
        sent = again
    else:
        pytest.fail("5 forced checkpoints in a row, none refused")
    check_proof(pk, p, last, last_digest)
    # Every receipt against the latest checkpoint (tree_size 0).
    for d, seq in receipts:
        q = pk.client("ci").kms.GetAuditProof(
            pb.GetAuditProofRequest(seq=seq), timeout=30)
        check_proof(pk, q, seq, d)
    # A record of someone else: auditors may, others may not.
    officer_seq = pk.client("officer").kms.GetKey(
        pb.GetKeyRequest(name=pk.key), timeout=30).audit_seq
    force(pk, officer_seq, who="officer")
    expect_error(grpc.StatusCode.PERMISSION_DENIED,
                 pk.client("ci").kms.GetAuditProof,
                 pb.GetAuditProofRequest(seq=officer_seq), timeout=30)
    check_proof(pk, pk.client("auditor").kms.GetAuditProof(
        pb.GetAuditProofRequest(seq=officer_seq), timeout=30), officer_seq)
    # Another chain, a seq that does not exist, seq 0.
    expect_error(grpc.StatusCode.NOT_FOUND, pk.client("ci").kms.GetAuditProof,
                 pb.GetAuditProofRequest(seq=1, chain="other"), timeout=30)
    expect_error(grpc.StatusCode.NOT_FOUND, pk.client("ci").kms.GetAuditProof,
                 pb.GetAuditProofRequest(seq=10**9), timeout=30)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 pk.client("ci").kms.GetAuditProof,
                 pb.GetAuditProofRequest(seq=0), timeout=30)


def test_consistency_from_every_earlier_checkpoint(pk):
    sizes = {}
    for round in range(4):
        _, seq = sign(pk, 3 + round, "cons%d" % round)[-1]
        p = force(pk, seq)
        size, root = checked_note(pk, p.checkpoint)
        sizes[size] = root
        time.sleep(1.05)
    latest = max(sizes)
    for old in sorted(sizes):
        c = pk.client("auditor").kms.GetAuditConsistency(
            pb.GetAuditConsistencyRequest(old_size=old), timeout=30)
        o_size, o_root = checked_note(pk, c.old_checkpoint)
        n_size, n_root = checked_note(pk, c.new_checkpoint)
        assert o_size == old and o_root == sizes[old]
        assert n_size >= latest
        assert tlog.verify_consistency(o_size, n_size, o_root, n_root,
                                       list(c.proof)), (o_size, n_size)
        if o_size != n_size:
            assert not tlog.verify_consistency(o_size, n_size, n_root,
                                               o_root, list(c.proof))
    # Auditors only; sizes must be checkpoints.
    expect_error(grpc.StatusCode.PERMISSION_DENIED,
                 pk.client("ci").kms.GetAuditConsistency,
                 pb.GetAuditConsistencyRequest(old_size=min(sizes)),
                 timeout=30)
    expect_error(grpc.StatusCode.NOT_FOUND,
                 pk.client("auditor").kms.GetAuditConsistency,
                 pb.GetAuditConsistencyRequest(old_size=min(sizes) + 1,
                                               new_size=max(sizes)),
                 timeout=30)


def test_kmsctl_prove_and_consistency(pk, tmp_path):
    pinned = tmp_path / "audit-key.pem"
    pinned.write_bytes(pk.client("auditor").kms.ListAuditRecords(
        pb.ListAuditRecordsRequest(limit=1), timeout=30
    ).audit_key_pem.encode())
    time.sleep(1.05)
    _, seq = sign(pk, 2, "cli")[-1]
    # Uncovered: kmsctl asks for a checkpoint now and checks the proof.
    p = pk.kmsctl("audit", "prove", "--pubkey", pinned, str(seq))
    out = p.stdout.decode()
    assert "verifies against the signed checkpoint" in out, out
    assert '"seq":%d' % seq in out
    # Another key is not the one that signed: exit 1.
    other = tmp_path / "other.pem"
    other.write_bytes(tlog.public_pem(tlog.new_key()))
    p = pk.kmsctl("audit", "prove", "--pubkey", other, str(seq), check=False)
    assert p.returncode == 1, p.stdout.decode() + p.stderr.decode()
    assert "does NOT verify" in p.stdout.decode()
    # Someone else's record: refused by kmsd.
    p = pk.kmsctl("audit", "prove", "--pubkey", pinned, "1", check=False)
    assert p.returncode == 4, p.stderr.decode()
    p = pk.kmsctl("audit", "consistency", "--pubkey", pinned, "0", "0",
                  identity="auditor")
    assert "verifies: the new checkpoint extends" in p.stdout.decode()


def test_checkpoints_are_published(pk):
    """[audit] publish = DIR: every checkpoint as DIR/CHAIN/SIZE.note and
    DIR/CHAIN/latest, signed by the pinned key."""
    _, seq = sign(pk, 2, "pub")[-1]
    time.sleep(1.05)
    p = force(pk, seq)
    d = pk.published / pk.chain
    latest = (d / "latest").read_text()
    assert latest == p.checkpoint
    size, root = checked_note(pk, latest)
    assert (d / ("%020d.note" % size)).read_text() == latest
    notes = sorted(d.glob("*.note"))
    assert len(notes) >= 2
    for f in notes:
        assert int(f.name[:20]) == checked_note(pk, f.read_text())[0]
