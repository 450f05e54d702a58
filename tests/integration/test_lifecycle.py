"""Key lifecycle: versions, rotation (manual and scheduled), version states
with a delayed destroy, and two kmsd instances on one token.

The instances here run on a state directory of their own whose [keys]
section has short periods: an 8 s destroy wait, 2 s minimum rotation period
and a 200 ms sync period.
"""

import hashlib
import json
import re
import threading
import time

import grpc
import pytest

from conftest import (MODULE, Kmsd, expect_error, make_home,
                      openssl_verifies, pb, run)

DESTROY_WAIT = 8       # room for the slow steps of the ASan build
MIN_PERIOD = 2
SYNC_MS = 200
AGREE_SECONDS = 3.0     # "within about a second", with room for ASan

E = pb.KeyVersionState
OK_CODES = grpc.StatusCode


@pytest.fixture(scope="module")
def pair(tmp_root):
    """Two kmsd processes on one state directory (one token)."""
    home = make_home(tmp_root, "lifecycle-home", {"keys": {
        "destroy_wait": DESTROY_WAIT, "min_rotation_period": MIN_PERIOD,
        "sync_ms": SYNC_MS}})
    insts = []
    for tag in ("a", "b"):
        k = Kmsd(home, tmp_root / ("lifecycle-" + tag))
        k.start()
        insts.append(k)
    yield insts
    Kmsd.stop_all(insts)


def officer(k):
    return k.client("officer").kms


def ci(k):
    return k.client("ci").kms


def create(k, name, alg, period=0, timeout=60):
    return officer(k).CreateKey(pb.CreateKeyRequest(
        name=name, algorithm=pb.Algorithm.Value(alg),
        rotation_period_seconds=period), timeout=timeout)


def get(k, name, timeout=30):
    return officer(k).GetKey(pb.GetKeyRequest(name=name), timeout=timeout)


def set_state(k, name, version, state, timeout=30):
    return officer(k).SetVersionState(pb.SetVersionStateRequest(
        name=name, version=version, state=state), timeout=timeout)


def sign(k, name, msg, version=0, timeout=30):
    return ci(k).Sign(pb.SignRequest(
        name=name, version=version, digest=hashlib.sha256(msg).digest()),
        timeout=timeout)


def pubkey(k, name, version, timeout=30):
    return ci(k).GetPublicKey(pb.GetPublicKeyRequest(
        name=name, version=version), timeout=timeout).pem


def states(key):
    return {v.version: v.state for v in key.versions}


def wait_for(fn, seconds, what):
    deadline = time.monotonic() + seconds
    while True:
        try:
            got = fn()
        except grpc.RpcError as e:      # a key not seen yet
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail("not within %.1f s: %s" % (seconds, what))
        time.sleep(0.05)


def audit_records(k, rpc, key):
    """The audit records of this instance's chain for rpc on key."""
    out = []
    after = 0
    while True:
        r = k.client("auditor").kms.ListAuditRecords(
            pb.ListAuditRecordsRequest(
                after_seq=after, limit=1000,
                filters=pb.AuditFilters(rpc=rpc, key=key)), timeout=30)
        out += [json.loads(x.json) for x in r.records]
        if r.next_after_seq <= after or r.next_after_seq >= r.last_seq:
            return out
        after = r.next_after_seq


def test_rotation_keeps_old_signatures_verifiable(pair, workdir):
    a, _ = pair
    name = "lc/rotate/ec"
    k = create(a, name, "EC_P256_SHA256")
    assert k.primary_version == 1 and states(k) == {1: E.Value("ENABLED")}
    msg1, msg2 = b"bundle signed with v1", b"bundle signed with v2"
    s1 = sign(a, name, msg1)
    assert s1.version == 1
    pem1 = pubkey(a, name, 1)

    r = officer(a).RotateKey(pb.RotateKeyRequest(name=name), timeout=60)
    assert r.primary_version == 2
    assert [v.version for v in r.versions] == [1, 2]
    assert all(v.state == E.Value("ENABLED") for v in r.versions)
    assert all(v.create_time > 0 for v in r.versions)
    assert r.audit_seq > 0

    s2 = sign(a, name, msg2)
    assert s2.version == 2
    pem2 = pubkey(a, name, 2)
    assert pem1 != pem2
    assert pubkey(a, name, 0) == pem2
    # Old signatures keep verifying with their version's public key, in
    # kms and in OpenSSL; the new key is another key.
    assert openssl_verifies(pem1, s1.signature, msg1, workdir)
    assert openssl_verifies(pem2, s2.signature, msg2, workdir)
    assert not openssl_verifies(pem1, s2.signature, msg2, workdir)
    v = ci(a).Verify(pb.VerifyRequest(
        name=name, version=1, digest=hashlib.sha256(msg1).digest(),
        signature=s1.signature), timeout=30)
    assert v.valid and v.version == 1
    v = ci(a).Verify(pb.VerifyRequest(
        name=name, digest=hashlib.sha256(msg1).digest(),
        signature=s1.signature), timeout=30)
    assert not v.valid and v.version == 2

    recs = audit_records(a, "RotateKey", name)
    assert recs and recs[-1]["identity"] == "officer"
    assert recs[-1]["version"] == 2 and recs[-1]["result"] == "ok"


def test_version_states_are_enforced(pair):
    a, _ = pair
    name = "lc/states/ec"
    create(a, name, "EC_P256_SHA256")
    officer(a).RotateKey(pb.RotateKeyRequest(name=name), timeout=60)

    v = set_state(a, name, 1, E.Value("DISABLED"))
    assert v.version == 1 and v.state == E.Value("DISABLED")
    assert v.audit_seq > 0
    d = expect_error(OK_CODES.FAILED_PRECONDITION, sign, a, name, b"x", 1)
    assert "DISABLED" in d
    expect_error(OK_CODES.FAILED_PRECONDITION, ci(a).GetPublicKey,
                 pb.GetPublicKeyRequest(name=name, version=1))
    assert sign(a, name, b"x").version == 2     # the primary still signs

    v = set_state(a, name, 1, E.Value("ENABLED"))
    assert v.state == E.Value("ENABLED")
    assert sign(a, name, b"x", 1).version == 1

    # The primary version can be neither disabled nor destroyed.
    for st in ("DISABLED", "DESTROY_SCHEDULED"):
        d = expect_error(OK_CODES.FAILED_PRECONDITION, set_state, a, name,
                         2, E.Value(st))
        assert "primary" in d and "rotate" in d, d
    d = expect_error(OK_CODES.INVALID_ARGUMENT, set_state, a, name, 1,
                     E.Value("DESTROYED"))
    assert "DESTROY_SCHEDULED" in d
    expect_error(OK_CODES.INVALID_ARGUMENT, set_state, a, name, 1,
                 E.Value("KEY_VERSION_STATE_UNSPECIFIED"))
    expect_error(OK_CODES.INVALID_ARGUMENT, set_state, a, name, 0,
                 E.Value("DISABLED"))
    expect_error(OK_CODES.NOT_FOUND, set_state, a, name, 9,
                 E.Value("DISABLED"))
    expect_error(OK_CODES.NOT_FOUND, set_state, a, "lc/no/such", 1,
                 E.Value("DISABLED"))
    # Nothing changed through all those refusals.
    assert states(get(a, name)) == {1: E.Value("ENABLED"),
                                    2: E.Value("ENABLED")}

    # Roles: CI cannot change states or rotate; the officer cannot sign.
    for fn, req in ((ci(a).SetVersionState, pb.SetVersionStateRequest(
            name=name, version=1, state=E.Value("DISABLED"))),
            (ci(a).RotateKey, pb.RotateKeyRequest(name=name)),
            (ci(a).UpdateKey, pb.UpdateKeyRequest(
                name=name, rotation_period_seconds=3600))):
        d = expect_error(OK_CODES.PERMISSION_DENIED, fn, req)
        assert "has no grant" in d
    expect_error(OK_CODES.PERMISSION_DENIED, officer(a).Sign,
                 pb.SignRequest(name=name,
                                digest=hashlib.sha256(b"x").digest()))
    assert states(get(a, name)) == {1: E.Value("ENABLED"),
                                    2: E.Value("ENABLED")}

    recs = audit_records(a, "SetVersionState", name)
    assert any(r["result"] == "denied" and r["identity"] == "ci"
               for r in recs)
    assert any(r["result"] == "ok" and r.get("detail") == {"state": "DISABLED"}
               for r in recs), recs


def test_destroy_waits_and_can_be_restored(pair):
    a, b = pair
    name = "lc/destroy/ec"
    create(a, name, "EC_P256_SHA256")
    officer(a).RotateKey(pb.RotateKeyRequest(name=name), timeout=60)

    t0 = int(time.time())
    v = set_state(a, name, 1, E.Value("DESTROY_SCHEDULED"))
    assert v.state == E.Value("DESTROY_SCHEDULED")
    assert t0 + DESTROY_WAIT - 1 <= v.destroy_time <= t0 + DESTROY_WAIT + 2
    expect_error(OK_CODES.FAILED_PRECONDITION, sign, a, name, b"x", 1)
    # Enabling straight from DESTROY_SCHEDULED is refused: restore first.
    d = expect_error(OK_CODES.FAILED_PRECONDITION, set_state, a, name, 1,
                     E.Value("ENABLED"))
    assert "restore" in d
    v = set_state(a, name, 1, E.Value("DISABLED"))      # restore
    assert v.state == E.Value("DISABLED") and v.destroy_time == 0
    set_state(a, name, 1, E.Value("ENABLED"))
    assert sign(a, name, b"x", 1).version == 1

    # Scheduled again, left alone: destroyed once the wait has passed, by
    # whichever instance gets there first, and seen as DESTROYED by both.
    v = set_state(a, name, 1, E.Value("DESTROY_SCHEDULED"))
    time.sleep(max(0, v.destroy_time - time.time()))
    for k in (a, b):
        wait_for(lambda: states(get(k, name))[1] == E.Value("DESTROYED"),
                 AGREE_SECONDS + 2, "version 1 DESTROYED")
    key = get(a, name)
    assert [x.version for x in key.versions] == [1, 2]
    assert key.versions[0].destroy_time >= v.destroy_time
    d = expect_error(OK_CODES.FAILED_PRECONDITION, set_state, a, name, 1,
                     E.Value("DISABLED"))
    assert "destroyed" in d
    d = expect_error(OK_CODES.FAILED_PRECONDITION, sign, a, name, b"x", 1)
    assert "DESTROYED" in d
    expect_error(OK_CODES.FAILED_PRECONDITION, pubkey, b, name, 1)
    assert sign(b, name, b"x").version == 2

    # The HSM objects of version 1 are gone from the token; version 2's
    # are there.
    pin = (a.home / "pin").read_text().strip()
    p = run(["pkcs11-tool", "--module", MODULE, "--token-label", "kms",
             "--login", "--pin", pin, "--list-objects"], env=a.env())
    labels = re.findall(r"label:\s*(\S+)", p.stdout.decode())
    assert not [x for x in labels if x.startswith(name + "#1#")], labels
    assert len([x for x in labels if x.startswith(name + "#2#")]) == 2

    recs = audit_records(a, "ScheduledDestroy", name) + \
        audit_records(b, "ScheduledDestroy", name)
    assert len(recs) == 1, recs         # done once, by one instance
    assert recs[0]["identity"] == "kmsd/scheduler"
    assert recs[0]["version"] == 1 and recs[0]["result"] == "ok"


def test_restore_after_the_wait_is_refused(pair):
    a, _ = pair
    name = "lc/late/ed"
    create(a, name, "ED25519")
    officer(a).RotateKey(pb.RotateKeyRequest(name=name), timeout=60)
    v = set_state(a, name, 1, E.Value("DESTROY_SCHEDULED"))
    time.sleep(max(0, v.destroy_time - time.time()) + 0.1)
    # Past its destroy time a version cannot come back, destroyed yet or not.
    expect_error(OK_CODES.FAILED_PRECONDITION, set_state, a, name, 1,
                 E.Value("DISABLED"))
    wait_for(lambda: states(get(a, name))[1] == E.Value("DESTROYED"),
             AGREE_SECONDS, "version 1 DESTROYED")


def test_scheduled_rotation(pair):
    a, b = pair
    name = "lc/scheduled/ec"
    d = expect_error(OK_CODES.INVALID_ARGUMENT, create, a, name,
                     "EC_P256_SHA256", MIN_PERIOD - 1)
    assert "rotation_period_seconds" in d
    expect_error(OK_CODES.NOT_FOUND, get, a, name)
    k = create(a, name, "EC_P256_SHA256", MIN_PERIOD)
    assert k.rotation_period_seconds == MIN_PERIOD
    assert k.next_rotation_time == k.versions[0].create_time + MIN_PERIOD
    # Both instances run the scheduler; the key rotates about every
    # period, and never twice for one period.
    wait_for(lambda: get(b, name).primary_version >= 3,
             3 * MIN_PERIOD + AGREE_SECONDS, "two scheduled rotations")
    key = officer(a).UpdateKey(pb.UpdateKeyRequest(
        name=name, rotation_period_seconds=0), timeout=30)
    assert key.rotation_period_seconds == 0 and key.next_rotation_time == 0
    time.sleep(SYNC_MS / 1000.0 * 3)
    settled = get(a, name).primary_version
    time.sleep(MIN_PERIOD + 1)
    key = get(b, name)
    assert key.primary_version == settled, "rotated after the schedule " \
        "was turned off"
    versions = [v.version for v in key.versions]
    assert versions == list(range(1, len(versions) + 1))
    created = [v.create_time for v in key.versions]
    for x, y in zip(created, created[1:]):
        assert y - x >= MIN_PERIOD - 1, created
    pems = {pubkey(a, name, v) for v in versions}
    assert len(pems) == len(versions)

    recs = audit_records(a, "ScheduledRotation", name) + \
        audit_records(b, "ScheduledRotation", name)
    assert sorted(r["version"] for r in recs) == versions[1:]
    assert all(r["identity"] == "kmsd/scheduler" and r["result"] == "ok"
               for r in recs)

    d = expect_error(OK_CODES.INVALID_ARGUMENT, officer(a).UpdateKey,
                     pb.UpdateKeyRequest(name=name,
                                         rotation_period_seconds=-5))
    assert "rotation_period_seconds" in d
    expect_error(OK_CODES.NOT_FOUND, officer(a).UpdateKey,
                 pb.UpdateKeyRequest(name="lc/no/such",
                                     rotation_period_seconds=3600))
    key = officer(a).UpdateKey(pb.UpdateKeyRequest(
        name=name, rotation_period_seconds=86400), timeout=30)
    assert key.next_rotation_time == key.versions[-1].create_time + 86400
    wait_for(lambda: get(b, name).rotation_period_seconds == 86400,
             AGREE_SECONDS, "the new period seen by the other instance")


def test_wraps_unwrap_after_rotations(pair):
    a, _ = pair
    name = "lc/wrap/aes"
    create(a, name, "AES_256_KWP")
    blobs = []
    for i in range(4):
        pt = ("data key %d" % i).encode() * 3
        w = ci(a).Wrap(pb.WrapRequest(name=name, plaintext=pt), timeout=30)
        assert w.version == i + 1
        blobs.append((pt, w.wrapped))
        officer(a).RotateKey(pb.RotateKeyRequest(name=name), timeout=60)
    g = ci(a).GenerateDataKey(pb.GenerateDataKeyRequest(name=name),
                              timeout=30)
    assert g.version == 5
    blobs.append((g.plaintext, g.wrapped))
    unw = a.client("unwrapper").kms
    for i, (pt, blob) in enumerate(blobs):
        u = unw.Unwrap(pb.UnwrapRequest(name=name, wrapped=blob), timeout=30)
        assert u.plaintext == pt and u.version == i + 1
    # A blob of a disabled version is refused until it is enabled again.
    set_state(a, name, 1, E.Value("DISABLED"))
    expect_error(OK_CODES.FAILED_PRECONDITION, unw.Unwrap,
                 pb.UnwrapRequest(name=name, wrapped=blobs[0][1]))
    set_state(a, name, 1, E.Value("ENABLED"))
    assert unw.Unwrap(pb.UnwrapRequest(name=name, wrapped=blobs[0][1]),
                      timeout=30).plaintext == blobs[0][0]
    # A tampered blob of an old version is still refused.
    bad = bytearray(blobs[1][1])
    bad[-1] ^= 1
    expect_error(OK_CODES.INVALID_ARGUMENT, unw.Unwrap,
                 pb.UnwrapRequest(name=name, wrapped=bytes(bad)))


def test_two_instances_agree(pair):
    a, b = pair
    name = "lc/agree/ec"
    create(a, name, "EC_P256_SHA256")
    wait_for(lambda: b.client("ci").kms.GetKey(pb.GetKeyRequest(name=name),
                                               timeout=30).name == name,
             AGREE_SECONDS, "the key seen by the other instance")
    # Made through one, refused through the other.
    expect_error(OK_CODES.ALREADY_EXISTS, create, b, name, "ED25519")
    officer(a).RotateKey(pb.RotateKeyRequest(name=name), timeout=60)
    wait_for(lambda: get(b, name).primary_version == 2, AGREE_SECONDS,
             "the rotation seen by the other instance")
    assert sign(b, name, b"m").version == 2
    set_state(b, name, 1, E.Value("DISABLED"))
    wait_for(lambda: states(get(a, name))[1] == E.Value("DISABLED"),
             AGREE_SECONDS, "the state change seen by the other instance")
    expect_error(OK_CODES.FAILED_PRECONDITION, sign, a, name, b"m", 1)


def test_concurrent_rotations_on_two_instances(pair):
    a, b = pair
    name = "lc/race/ec"
    create(a, name, "EC_P256_SHA256")
    wait_for(lambda: get(b, name).name == name, AGREE_SECONDS,
             "the key seen by the other instance")
    per_thread = 5
    errors, got = [], []

    def rotate(k):
        try:
            for _ in range(per_thread):
                r = officer(k).RotateKey(pb.RotateKeyRequest(name=name),
                                         timeout=60)
                got.append(r.primary_version)
        except Exception as e:      # reported below, with the others
            errors.append(e)

    threads = [threading.Thread(target=rotate, args=(k,))
               for k in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    n = 1 + per_thread * len(threads)
    # Every rotation made its own version: none lost, none twice.
    assert sorted(got) == list(range(2, n + 1))
    for k in (a, b):
        key = wait_for(lambda: (lambda x: x if x.primary_version == n
                                else None)(get(k, name)),
                       AGREE_SECONDS, "the last rotation everywhere")
        assert [v.version for v in key.versions] == list(range(1, n + 1))
    pems = {pubkey(b, name, v) for v in range(1, n + 1)}
    assert len(pems) == n


def test_kmsctl_lifecycle_commands(pair):
    a, _ = pair
    name = "lc/kmsctl/ec"
    r = a.kmsctl("key", "create", name, "--algorithm", "EC_P256_SHA256",
                 identity="officer")
    assert b"primary_version: 1" in r.stdout
    out = json.loads(a.kmsctl("--json", "key", "rotate", name,
                              identity="officer").stdout)
    assert out["primary_version"] == 2 and len(out["versions"]) == 2
    out = json.loads(a.kmsctl("key", "disable", name, "--version", "1",
                              "--json", identity="officer").stdout)
    assert out["state"] == "DISABLED" and out["audit_seq"] > 0
    out = json.loads(a.kmsctl("key", "destroy", name, "--version", "1",
                              "--json", identity="officer").stdout)
    assert out["state"] == "DESTROY_SCHEDULED" and "destroy_time" in out
    r = a.kmsctl("key", "get", name, identity="officer")
    assert re.search(rb"1 DESTROY_SCHEDULED \S+ destroy_time \S+",
                     r.stdout), r.stdout
    out = json.loads(a.kmsctl("key", "restore", name, "--version", "1",
                              "--json", identity="officer").stdout)
    assert out["state"] == "DISABLED" and "destroy_time" not in out
    a.kmsctl("key", "enable", name, "--version", "1", identity="officer")
    r = a.kmsctl("key", "disable", name, "--version", "2",
                 identity="officer", check=False)
    assert r.returncode == 4 and b"FAILED_PRECONDITION" in r.stderr
    assert b"primary" in r.stderr
    out = json.loads(a.kmsctl("key", "update", name, "--rotation-period",
                              "86400", "--json", identity="officer").stdout)
    assert out["rotation_period_seconds"] == 86400
    assert "next_rotation_time" in out
    r = a.kmsctl("key", "rotate", name, identity="ci", check=False)
    assert r.returncode == 4 and b"PERMISSION_DENIED" in r.stderr
    r = a.kmsctl("key", "update", name, identity="officer", check=False)
    assert r.returncode == 2
    r = a.kmsctl("key", "restore", name, identity="officer", check=False)
    assert r.returncode == 2
    out = json.loads(a.kmsctl("key", "get", name, "--json",
                              identity="officer").stdout)
    assert [v["state"] for v in out["versions"]] == ["ENABLED", "ENABLED"]


def test_state_survives_restart(pair):
    a, b = pair
    name = "lc/restart/ec"
    create(a, name, "EC_P256_SHA256", 3600)
    officer(a).RotateKey(pb.RotateKeyRequest(name=name), timeout=60)
    officer(a).RotateKey(pb.RotateKeyRequest(name=name), timeout=60)
    set_state(a, name, 1, E.Value("DISABLED"))
    before = get(a, name)
    before.audit_seq = 0
    for k in (a, b):
        assert k.stop() == 0
    for k in (a, b):
        k.start()
    for k in (a, b):
        after = get(k, name)
        after.audit_seq = 0
        assert after == before
