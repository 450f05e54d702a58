"""The audit log: JSON Lines under $KMS_HOME/audit, one record per call,
denials included, with the sequence number the caller got as a receipt."""

import hashlib
import json
import time

import grpc

from conftest import expect_error, pb

FIELDS = ("seq", "time", "identity", "fingerprint", "peer", "rpc", "key",
          "version", "result", "status", "reason", "request_sha256")


def audit_records(kmsd):
    """All records, each with "_where" = (file, line number) added."""
    files = sorted((kmsd.home / "audit").rglob("*.jsonl"))
    records = []
    for f in files:
        for i, line in enumerate(f.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except ValueError as e:
                raise AssertionError("%s:%d is not JSON (%s): %r" %
                                     (f, i + 1, e, line[:200]))
            assert isinstance(r, dict), (f, i + 1, line[:200])
            r["_where"] = (str(f), i + 1)
            records.append(r)
    return files, records


def new_records(kmsd, seen, pred, timeout=2.0):
    """The records not in seen that match pred, waiting a little for them
    to appear."""
    deadline = time.monotonic() + timeout
    while True:
        _, records = audit_records(kmsd)
        hits = [r for r in records if r["_where"] not in seen and pred(r)]
        if hits or time.monotonic() >= deadline:
            return hits
        time.sleep(0.05)


def snapshot(kmsd):
    return {r["_where"] for r in audit_records(kmsd)[1]}


def test_audit_dir_holds_json_lines(kmsd, keys):
    keys.get("EC_P256_SHA256")
    assert (kmsd.home / "audit").is_dir()
    files, records = audit_records(kmsd)
    assert files, "no *.jsonl under %s" % (kmsd.home / "audit")
    assert records
    for r in records:
        assert isinstance(r, dict)
        missing = [f for f in FIELDS if f not in r]
        assert not missing, (missing, r)
        assert r["result"] in ("ok", "denied", "error"), r
    # Sequence numbers increase along each directory's files (one chain of
    # records per directory).
    chains = {}
    for r in records:
        chains.setdefault(r["_where"][0].rsplit("/", 1)[0], []).append(
            r["seq"])
    for d, seqs in chains.items():
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), d


def test_sign_is_audited_with_its_receipt(kmsd, keys):
    name = keys.get("EC_P256_SHA256")
    seen = snapshot(kmsd)
    digest = hashlib.sha256(b"audit").digest()
    resp = kmsd.client("ci").kms.Sign(pb.SignRequest(name=name, digest=digest),
                                      timeout=30)
    assert resp.audit_seq > 0
    hits = new_records(kmsd, seen, lambda r: r.get("seq") == resp.audit_seq)
    assert len(hits) == 1, hits
    r = hits[0]
    assert r["rpc"] == "Sign"
    assert r["identity"] == "ci"
    assert r["result"] == "ok"
    assert r["status"] == "OK"
    assert r["key"] == name
    assert r["version"] == resp.version == 1
    assert len(r["request_sha256"]) == 64
    assert len(r["fingerprint"]) > 0
    # Neither the digest nor the signature is in the log.
    text = json.dumps({k: v for k, v in r.items() if k != "_where"})
    assert digest.hex() not in text.lower()
    assert resp.signature.hex() not in text.lower()


def test_denial_is_audited(kmsd, keys):
    name = keys.get("EC_P256_SHA256")
    seen = snapshot(kmsd)
    expect_error(grpc.StatusCode.PERMISSION_DENIED,
                 kmsd.client("officer").kms.Sign,
                 pb.SignRequest(name=name,
                                digest=hashlib.sha256(b"deny").digest()))
    hits = new_records(kmsd, seen, lambda r: r.get("rpc") == "Sign" and
                       r.get("identity") == "officer")
    assert len(hits) == 1, hits
    r = hits[0]
    assert r["result"] == "denied"
    assert r["status"] == "PERMISSION_DENIED"
    assert r["key"] == name
    assert "Sign" in r["reason"]
