"""Wrap, Unwrap and GenerateDataKey on AES_256_KWP keys, with Python gRPC
and kmsctl."""

import base64
import hashlib
import os

import grpc
import pytest

from conftest import expect_error, pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def kek(kmsd):
    name = "release/it/wrap-kek"
    try:
        kmsd.client("officer").kms.CreateKey(pb.CreateKeyRequest(
            name=name, algorithm=pb.AES_256_KWP), timeout=60)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.ALREADY_EXISTS
    return name


@pytest.mark.parametrize("size", [1, 7, 8, 37, 1024, 65536])
def test_round_trip(kmsd, kek, size):
    data = os.urandom(size)
    w = kmsd.client("ci").kms.Wrap(pb.WrapRequest(name=kek, plaintext=data),
                                   timeout=30)
    assert w.version == 1 and w.audit_seq > 0
    if size >= 8:
        # Short values can occur in any random-looking blob by chance.
        assert data not in w.wrapped
    u = kmsd.client("unwrapper").kms.Unwrap(
        pb.UnwrapRequest(name=kek, wrapped=w.wrapped), timeout=30)
    assert u.plaintext == data and u.version == 1 and u.audit_seq > 0


def test_tampered_and_truncated_blobs_refused(kmsd, kek):
    w = kmsd.client("ci").kms.Wrap(
        pb.WrapRequest(name=kek, plaintext=b"x" * 40), timeout=30).wrapped
    un = kmsd.client("unwrapper").kms.Unwrap
    bad = []
    for i in (0, 1, 4, 8, 9, 20, len(w) - 1):
        t = bytearray(w)
        t[i] ^= 0x01
        bad.append(bytes(t))
    bad += [w[:-8], w[:-1], w[:9], b"", b"\x01" + b"\0" * 40, w + b"\0" * 8]
    for b in bad:
        msg = expect_error(INVALID, un, pb.UnwrapRequest(name=kek, wrapped=b))
        assert msg
    # Nothing was released: the good blob still works.
    assert un(pb.UnwrapRequest(name=kek, wrapped=w),
              timeout=30).plaintext == b"x" * 40


def test_generate_data_key(kmsd, kek):
    d = kmsd.client("ci").kms.GenerateDataKey(
        pb.GenerateDataKeyRequest(name=kek), timeout=30)
    assert len(d.plaintext) == 32 and d.version == 1
    d2 = kmsd.client("ci").kms.GenerateDataKey(
        pb.GenerateDataKeyRequest(name=kek, length=64), timeout=30)
    assert len(d2.plaintext) == 64 and d2.plaintext != d.plaintext
    u = kmsd.client("unwrapper").kms.Unwrap(
        pb.UnwrapRequest(name=kek, wrapped=d.wrapped), timeout=30)
    assert u.plaintext == d.plaintext
    expect_error(INVALID, kmsd.client("ci").kms.GenerateDataKey,
                 pb.GenerateDataKeyRequest(name=kek, length=4096))


def test_roles_and_bad_input(kmsd, kek, keys):
    ci = kmsd.client("ci").kms
    w = ci.Wrap(pb.WrapRequest(name=kek, plaintext=b"abc"), timeout=30)
    msg = expect_error(DENIED, ci.Unwrap,
                       pb.UnwrapRequest(name=kek, wrapped=w.wrapped))
    assert "Unwrap" in msg
    for who in ("officer", "auditor"):
        expect_error(DENIED, kmsd.client(who).kms.Wrap,
                     pb.WrapRequest(name=kek, plaintext=b"abc"))
        expect_error(DENIED, kmsd.client(who).kms.Unwrap,
                     pb.UnwrapRequest(name=kek, wrapped=w.wrapped))
    expect_error(DENIED, kmsd.client("unwrapper").kms.Wrap,
                 pb.WrapRequest(name=kek, plaintext=b"abc"))
    expect_error(INVALID, ci.Wrap, pb.WrapRequest(name=kek, plaintext=b""))
    expect_error(INVALID, ci.Wrap,
                 pb.WrapRequest(name=kek, plaintext=b"x" * 65537))
    expect_error(grpc.StatusCode.NOT_FOUND, ci.Wrap,
                 pb.WrapRequest(name="release/it/no-kek", plaintext=b"a"))
    # A signing key cannot wrap, and a wrapping key cannot sign.
    ec = keys.get("EC_P256_SHA256")
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, ci.Wrap,
                 pb.WrapRequest(name=ec, plaintext=b"abc"))
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, ci.Sign,
                 pb.SignRequest(name=kek,
                                digest=hashlib.sha256(b"x").digest()))


def test_kmsctl_wrap_unwrap_datakey(kmsd, kek, workdir):
    secret = workdir / "secret.bin"
    secret.write_bytes(os.urandom(100))
    blob, plain = workdir / "blob", workdir / "plain"
    kmsd.kmsctl("wrap", kek, "--in", secret, "-o", blob, identity="ci")
    kmsd.kmsctl("unwrap", kek, "--in", blob, "-o", plain,
                identity="unwrapper")
    assert plain.read_bytes() == secret.read_bytes()
    # base64 through stdout and stdin.
    b64 = kmsd.kmsctl("wrap", kek, "--in", secret, identity="ci").stdout
    out = kmsd.kmsctl("unwrap", kek, "--base64", identity="unwrapper",
                      input=b64).stdout
    assert base64.b64decode(out) == secret.read_bytes()
    p = kmsd.kmsctl("unwrap", kek, "--in", blob, identity="ci", check=False)
    assert p.returncode == 4 and b"PERMISSION_DENIED" in p.stderr
    key, wrapped = workdir / "dk", workdir / "dk.wrapped"
    kmsd.kmsctl("datakey", kek, "-o", key, "--wrapped-out", wrapped,
                identity="ci")
    kmsd.kmsctl("unwrap", kek, "--in", wrapped, "-o", plain,
                identity="unwrapper")
    assert plain.read_bytes() == key.read_bytes()
    assert len(key.read_bytes()) == 32


def test_wrap_record_holds_no_hash_of_the_plaintext(kmsd, kek):
    # A short secret's unsalted SHA-256 would be guessed by a log reader.
    from test_audit import audit_records
    secret = b"1234"
    r = kmsd.client("ci").kms.Wrap(pb.WrapRequest(name=kek, plaintext=secret),
                                   timeout=30)
    rec = [x for x in audit_records(kmsd)[1]
           if x.get("seq") == r.audit_seq and x.get("rpc") == "Wrap"]
    assert len(rec) == 1
    assert rec[0]["request_sha256"] is None
    line = open(rec[0]["_where"][0]).read().splitlines()[rec[0]["_where"][1] - 1]
    assert hashlib.sha256(secret).hexdigest() not in line
