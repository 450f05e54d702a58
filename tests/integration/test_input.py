"""Bad requests get the right status code and change nothing."""

import hashlib

import grpc
import pytest

from conftest import expect_error, key_names, pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
SIGN = "/kms.v1.KeyManagementService/Sign"
CREATE = "/kms.v1.KeyManagementService/CreateKey"

BAD_NAMES = ["", "/a", "a//b", "a/../b", "a/./b", "..", "a/", "a b",
             "-a", "a" * 129, "a\nb", "caf\u00e9"]


def all_keys(kmsd):
    return key_names(kmsd.client("officer").kms.ListKeys(
        pb.ListKeysRequest(), timeout=30))


def test_bad_key_names(kmsd, keys):
    keys.get("EC_P256_SHA256")
    before = all_keys(kmsd)
    officer = kmsd.client("officer").kms
    for name in BAD_NAMES:
        expect_error(INVALID, officer.CreateKey,
                     pb.CreateKeyRequest(name=name,
                                         algorithm=pb.EC_P256_SHA256))
    assert all_keys(kmsd) == before


def test_good_key_name_limits(kmsd):
    # 128 characters and every allowed character are accepted.
    officer = kmsd.client("officer").kms
    longest = "release/" + "x" * 120
    assert len(longest) == 128
    for name in (longest, "release/A-z_0.9/v2"):
        k = officer.CreateKey(pb.CreateKeyRequest(
            name=name, algorithm=pb.EC_P256_SHA256), timeout=30)
        assert k.name == name


def test_digest_and_data_rules(kmsd, keys):
    name = keys.get("EC_P256_SHA256")
    ci = kmsd.client("ci").kms
    d = hashlib.sha256(b"x").digest()
    for bad in (d[:31], d + b"\0", hashlib.sha384(b"x").digest()):
        msg = expect_error(INVALID, ci.Sign,
                           pb.SignRequest(name=name, digest=bad))
        assert msg, "INVALID_ARGUMENT without a message"
    expect_error(INVALID, ci.Sign,
                 pb.SignRequest(name=name, digest=d, data=b"x"))
    expect_error(INVALID, ci.Sign, pb.SignRequest(name=name))
    # The same rules hold for Verify.
    expect_error(INVALID, ci.Verify,
                 pb.VerifyRequest(name=name, digest=d[:31], signature=b"x"))


def test_data_size_limit(kmsd, keys):
    name = keys.get("EC_P256_SHA256")
    ci = kmsd.client("ci").kms
    mib = 1 << 20
    r = ci.Sign(pb.SignRequest(name=name, data=b"\xa5" * mib), timeout=60)
    assert r.version == 1
    with pytest.raises(grpc.RpcError) as ei:
        ci.Sign(pb.SignRequest(name=name, data=b"\xa5" * (mib + 1)),
                timeout=60)
    assert ei.value.code() in (INVALID,
                               grpc.StatusCode.RESOURCE_EXHAUSTED), \
        ei.value.code()
    # A message over the gRPC size limit is refused by the transport.
    expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, ci.Sign,
                 pb.SignRequest(name=name, data=b"\xa5" * (5 * mib)),
                 timeout=60)
    # And the server is fine afterwards.
    assert ci.WhoAmI(pb.WhoAmIRequest(), timeout=10).identity == "ci"


def test_malformed_protobuf(kmsd, keys):
    keys.get("EC_P256_SHA256")
    before = all_keys(kmsd)
    ci = kmsd.client("ci")
    officer = kmsd.client("officer")
    garbage = [
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        # Field 1, length-delimited, with a length past the end.
        b"\x0a\xff\xff\xff\x0f" + b"x" * 8,
        # Field 1 as a truncated varint.
        b"\x08\x80",
    ]
    for blob in garbage:
        for client, method in ((ci, SIGN), (officer, CREATE)):
            expect_error(INVALID, client.raw(method), blob)
    assert all_keys(kmsd) == before


def test_unknown_algorithm(kmsd):
    officer = kmsd.client("officer").kms
    before = all_keys(kmsd)
    for alg in (99, pb.ALGORITHM_UNSPECIFIED):
        expect_error(INVALID, officer.CreateKey,
                     pb.CreateKeyRequest(name="release/it/bad-alg",
                                         algorithm=alg))
    assert all_keys(kmsd) == before


def test_duplicate_key(kmsd, keys):
    name = keys.get("EC_P256_SHA256")
    officer = kmsd.client("officer").kms
    pem = officer.GetPublicKey(pb.GetPublicKeyRequest(name=name),
                               timeout=30).pem
    for alg in (pb.EC_P256_SHA256, pb.ED25519):
        expect_error(grpc.StatusCode.ALREADY_EXISTS, officer.CreateKey,
                     pb.CreateKeyRequest(name=name, algorithm=alg))
    k = officer.GetKey(pb.GetKeyRequest(name=name), timeout=30)
    assert k.algorithm == pb.EC_P256_SHA256
    assert [v.version for v in k.versions] == [1]
    assert officer.GetPublicKey(pb.GetPublicKeyRequest(name=name),
                                timeout=30).pem == pem


def test_unknown_key(kmsd):
    name = "release/it/no-such-key"
    d = hashlib.sha256(b"x").digest()
    ci = kmsd.client("ci").kms
    officer = kmsd.client("officer").kms
    expect_error(grpc.StatusCode.NOT_FOUND, ci.Sign,
                 pb.SignRequest(name=name, digest=d))
    expect_error(grpc.StatusCode.NOT_FOUND, officer.GetKey,
                 pb.GetKeyRequest(name=name))
    expect_error(grpc.StatusCode.NOT_FOUND, officer.GetPublicKey,
                 pb.GetPublicKeyRequest(name=name))
    expect_error(grpc.StatusCode.NOT_FOUND, ci.GetPublicKey,
                 pb.GetPublicKeyRequest(name=name))


def test_unknown_version(kmsd, keys):
    name = keys.get("EC_P256_SHA256")
    expect_error(grpc.StatusCode.NOT_FOUND, kmsd.client("ci").kms.Sign,
                 pb.SignRequest(name=name, version=7,
                                digest=hashlib.sha256(b"x").digest()))


def test_sign_with_wrap_key(kmsd):
    name = "release/it/wrap-key"
    officer = kmsd.client("officer").kms
    try:
        officer.CreateKey(pb.CreateKeyRequest(name=name,
                                              algorithm=pb.AES_256_KWP),
                          timeout=30)
    except grpc.RpcError as e:
        pytest.skip("CreateKey AES_256_KWP: %s %s" % (e.code(), e.details()))
    ci = kmsd.client("ci").kms
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, ci.Sign,
                 pb.SignRequest(name=name,
                                digest=hashlib.sha256(b"x").digest()))
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, ci.Sign,
                 pb.SignRequest(name=name, data=b"x"))
