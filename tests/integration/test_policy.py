"""Roles from the default policy, and policy reload on SIGHUP."""

import hashlib
import time

import grpc

from conftest import expect_error, key_names, pb

DENIED = grpc.StatusCode.PERMISSION_DENIED


def digest():
    return hashlib.sha256(b"policy test").digest()


def test_officer_cannot_sign(kmsd, keys):
    name = keys.get("EC_P256_SHA256")
    msg = expect_error(DENIED, kmsd.client("officer").kms.Sign,
                       pb.SignRequest(name=name, digest=digest()))
    assert "Sign" in msg, msg


def test_ci_cannot_create_keys(kmsd):
    name = "release/it/made-by-ci"
    msg = expect_error(DENIED, kmsd.client("ci").kms.CreateKey,
                       pb.CreateKeyRequest(name=name,
                                           algorithm=pb.EC_P256_SHA256))
    assert "CreateKey" in msg, msg
    # Nothing was made.
    expect_error(grpc.StatusCode.NOT_FOUND, kmsd.client("officer").kms.GetKey,
                 pb.GetKeyRequest(name=name))


def test_auditor_has_no_key_operations(kmsd, keys):
    name = keys.get("EC_P256_SHA256")
    auditor = kmsd.client("auditor").kms
    expect_error(DENIED, auditor.Sign,
                 pb.SignRequest(name=name, digest=digest()))
    expect_error(DENIED, auditor.CreateKey,
                 pb.CreateKeyRequest(name="release/it/by-auditor",
                                     algorithm=pb.EC_P256_SHA256))
    expect_error(DENIED, auditor.GetKey, pb.GetKeyRequest(name=name))
    expect_error(grpc.StatusCode.NOT_FOUND, kmsd.client("officer").kms.GetKey,
                 pb.GetKeyRequest(name="release/it/by-auditor"))


def test_unwrapper_cannot_sign(kmsd, keys):
    name = keys.get("EC_P256_SHA256")
    msg = expect_error(DENIED, kmsd.client("unwrapper").kms.Sign,
                       pb.SignRequest(name=name, digest=digest()))
    assert "Sign" in msg, msg


def test_list_keys_is_filtered(kmsd, keys):
    name = keys.get("EC_P256_SHA256")
    officer = key_names(kmsd.client("officer").kms.ListKeys(
        pb.ListKeysRequest(), timeout=30))
    assert name in officer
    ci = key_names(kmsd.client("ci").kms.ListKeys(pb.ListKeysRequest(),
                                                  timeout=30))
    assert name in ci
    assert set(ci) <= set(officer)
    auditor = key_names(kmsd.client("auditor").kms.ListKeys(
        pb.ListKeysRequest(), timeout=30))
    assert auditor == []
    # A prefix narrows the listing.
    narrowed = key_names(kmsd.client("officer").kms.ListKeys(
        pb.ListKeysRequest(prefix="release/it/"), timeout=30))
    assert name in narrowed
    assert all(n.startswith("release/it/") for n in narrowed)


def _officer_sign_code(kmsd, name):
    try:
        kmsd.client("officer").kms.Sign(
            pb.SignRequest(name=name, digest=digest()), timeout=30)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def _wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_sighup_reloads_policy(kmsd, keys):
    name = keys.get("EC_P256_SHA256")
    path = kmsd.home / "policy.conf"
    original = path.read_text()
    granting = original + (
        "\n# Added by the integration test.\n"
        "[role it-officer-signer]\n"
        "members = officer\n"
        "allow = Sign on release/*\n")
    # Valid INI lines, then a line that is not INI at all: kmsd must refuse
    # the whole file, even though its valid part would deny officer Sign.
    broken = original + "\nthis line is not a policy line\n[role\n"
    try:
        assert _officer_sign_code(kmsd, name) == DENIED

        path.write_text(granting)
        kmsd.hup()
        assert _wait_for(lambda: _officer_sign_code(kmsd, name) ==
                         grpc.StatusCode.OK), \
            "officer still cannot sign after SIGHUP:\n" + kmsd.log()[-4000:]

        before = len(kmsd.log())
        path.write_text(broken)
        kmsd.hup()
        # Give kmsd time to read the file and refuse it; it says so in its
        # log, but the wording is its own.
        _wait_for(lambda: len(kmsd.log()) > before, timeout=3.0)
        time.sleep(0.3)
        assert kmsd.proc.poll() is None, "kmsd died on a broken policy"
        assert _officer_sign_code(kmsd, name) == grpc.StatusCode.OK, \
            "a broken policy replaced the one in force"
        assert kmsd.client("ci").kms.WhoAmI(pb.WhoAmIRequest(),
                                            timeout=10).identity == "ci"
    finally:
        path.write_text(original)
        kmsd.hup()
    assert _wait_for(lambda: _officer_sign_code(kmsd, name) == DENIED), \
        "the restored policy did not take effect"
