"""kmsd with [store] backend = etcd: two instances on one token and one
3-member etcd cluster (etcdcluster.py) share keys through etcd alone.

A key made on one signs on the other; a rotation on one is used by the
other within a second of its commit (the watch, not a poll); the token
holds no data object; concurrent rotations on both instances lose and
duplicate no version, and every version is a key of its own."""

import hashlib
import re
import threading
import time

from conftest import MODULE, pb, run

CHANGE_SECONDS = 1.0        # a commit reaches the other instance this soon


def officer(k):
    return k.client("officer").kms


def sign(k, name, msg=b"m"):
    return k.client("ci").kms.Sign(pb.SignRequest(
        name=name, digest=hashlib.sha256(msg).digest()), timeout=30)


def token_objects(k, kind):
    """The objects of type kind (data, privkey, ...) pkcs11-tool lists."""
    pin = (k.home / "pin").read_text().strip()
    p = run(["pkcs11-tool", "--module", MODULE, "--token-label", "kms",
             "--login", "--pin", pin, "--list-objects", "--type", kind],
            env=k.env())
    blocks = re.split(r"\n(?=\S)", p.stdout.decode())
    return [b for b in blocks if b.strip() and not b.startswith("Using ")]


def test_key_made_on_a_signs_on_b_and_rotation_reaches_a(etcd_cluster,
                                                         etcd_pair):
    a, b = etcd_pair(etcd_cluster)
    name = "etcd/shared/ec"
    officer(a).CreateKey(pb.CreateKeyRequest(
        name=name, algorithm=pb.EC_P256_SHA256), timeout=60)
    # Created through A: B has it at once (no sync period to wait for).
    deadline = time.monotonic() + CHANGE_SECONDS
    while True:
        try:
            assert sign(b, name).version == 1
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    # The document lives in etcd, under the prefix, with its version.
    docs = etcd_cluster.get_prefix("/kms/doc/")
    assert '"%s"' % name in docs["/kms/doc/" + name]
    # Rotated through B: A signs with version 2 within a second.
    officer(b).RotateKey(pb.RotateKeyRequest(name=name), timeout=60)
    t0 = time.monotonic()
    while sign(a, name).version != 2:
        assert time.monotonic() - t0 < CHANGE_SECONDS, (
            "A still signs with version 1 %.2f s after the rotation "
            "committed on B" % (time.monotonic() - t0))
        time.sleep(0.01)
    print("rotation on B used by A after %.3f s" % (time.monotonic() - t0))
    # kmsd wrote no data object: no document, no lock, no change counter.
    assert token_objects(a, "data") == []
    assert len(token_objects(a, "privkey")) >= 2
    # The etcd store says so in its log.
    assert "etcd store on 3 endpoints" in a.log()


def test_concurrent_rotations_on_both_lose_and_duplicate_nothing(
        etcd_cluster, etcd_pair):
    a, b = etcd_pair(etcd_cluster)
    name = "etcd/race/ec"
    officer(a).CreateKey(pb.CreateKeyRequest(
        name=name, algorithm=pb.EC_P256_SHA256), timeout=60)
    errors, done = [], []

    def rotate(k):
        try:
            for _ in range(5):
                r = officer(k).RotateKey(pb.RotateKeyRequest(name=name),
                                         timeout=120)
                done.append(r.primary_version)
        except Exception as e:          # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=rotate, args=(k,))
               for k in (a, b) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    assert len(done) == 40 and len(set(done)) == 40
    for k in (a, b):
        deadline = time.monotonic() + CHANGE_SECONDS
        while True:
            key = officer(k).GetKey(pb.GetKeyRequest(name=name), timeout=30)
            if key.primary_version == 41 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert sorted(v.version for v in key.versions) == list(range(1, 42))
        assert key.primary_version == 41
    # Every version is a key pair of its own: 41 distinct public keys.
    pems = {a.client("ci").kms.GetPublicKey(pb.GetPublicKeyRequest(
        name=name, version=v), timeout=30).pem for v in range(1, 42)}
    assert len(pems) == 41
    # Every version signs, and no lost race left a key pair behind.
    assert sign(b, name).version == 41
    labels = [b_ for b_ in token_objects(a, "privkey") if name in b_]
    assert len(labels) == 41
