"""Every signing algorithm: keys made by the officer, signatures made by ci
and checked with OpenSSL against the public key the service hands out."""

import hashlib
import os

import grpc
import pytest

from conftest import expect_error, openssl_pubkey_text, pb, run

# algorithm -> (family, hash, what `openssl pkey -text` says about the key)
SIGN_ALGS = {
    "EC_P256_SHA256": ("ec", "sha256", "prime256v1"),
    "EC_P384_SHA384": ("ec", "sha384", "secp384r1"),
    "ED25519": ("ed25519", None, "ED25519 Public-Key"),
    "RSA_PKCS1_2048_SHA256": ("rsa", "sha256", "(2048 bit)"),
    "RSA_PKCS1_3072_SHA256": ("rsa", "sha256", "(3072 bit)"),
    # One 4096-bit key: RSA key generation of that size is slow.
    "RSA_PKCS1_4096_SHA256": ("rsa", "sha256", "(4096 bit)"),
    "RSA_PSS_2048_SHA256": ("pss", "sha256", "(2048 bit)"),
    "RSA_PSS_3072_SHA256": ("pss", "sha256", "(3072 bit)"),
    "RSA_RAW_PKCS1_2048": ("raw", None, "(2048 bit)"),
}


def flip(sig):
    """The signature with its last byte changed (DER stays well-formed)."""
    return sig[:-1] + bytes([sig[-1] ^ 0x01])


def openssl_verify(family, hname, pub, msg_path, sig_path, raw_in=None):
    """Checks a signature over the file msg_path with OpenSSL."""
    if family in ("ec", "rsa"):
        p = run(["openssl", "dgst", "-" + hname, "-verify", pub,
                 "-signature", sig_path, msg_path], check=False)
        return p.returncode == 0 and b"Verified OK" in p.stdout
    if family == "pss":
        p = run(["openssl", "dgst", "-" + hname, "-verify", pub,
                 "-sigopt", "rsa_padding_mode:pss",
                 "-sigopt", "rsa_pss_saltlen:32",
                 "-signature", sig_path, msg_path], check=False)
        return p.returncode == 0 and b"Verified OK" in p.stdout
    if family == "ed25519":
        p = run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", pub,
                 "-rawin", "-in", msg_path, "-sigfile", sig_path],
                check=False)
        return p.returncode == 0 and b"Signature Verified Successfully" in \
            p.stdout
    if family == "raw":
        p = run(["openssl", "pkeyutl", "-verifyrecover", "-pubin",
                 "-inkey", pub, "-in", sig_path,
                 "-pkeyopt", "rsa_padding_mode:pkcs1"], check=False)
        return p.returncode == 0 and p.stdout == raw_in
    raise AssertionError(family)


@pytest.mark.parametrize("alg", list(SIGN_ALGS))
def test_sign_and_verify(kmsd, keys, workdir, alg):
    family, hname, pubtext = SIGN_ALGS[alg]
    name = keys.get(alg)
    ci = kmsd.client("ci").kms

    pk = ci.GetPublicKey(pb.GetPublicKeyRequest(name=name), timeout=30)
    assert pk.version == 1
    assert pk.algorithm == pb.Algorithm.Value(alg)
    assert pk.pem.startswith("-----BEGIN PUBLIC KEY-----")
    pub = workdir / "pub.pem"
    pub.write_text(pk.pem)
    assert pubtext in openssl_pubkey_text(pub)

    msg = os.urandom(32) if family == "raw" else \
        b"kms integration test message " + os.urandom(64)
    msg_path = workdir / "msg"
    msg_path.write_bytes(msg)
    sig_path = workdir / "sig"

    # Signing the data itself.
    r1 = ci.Sign(pb.SignRequest(name=name, data=msg), timeout=30)
    assert r1.version == 1
    assert r1.audit_seq > 0
    assert len(r1.signature) > 0
    sig_path.write_bytes(r1.signature)
    assert openssl_verify(family, hname, pub, msg_path, sig_path, raw_in=msg)
    if family == "ed25519":
        assert len(r1.signature) == 64

    # Signing a digest the caller computed (raw keys sign the bytes as is).
    if family == "ed25519":
        expect_error(grpc.StatusCode.INVALID_ARGUMENT, ci.Sign,
                     pb.SignRequest(name=name,
                                    digest=hashlib.sha256(msg).digest()))
        digest = None
    else:
        digest = msg if family == "raw" else hashlib.new(hname, msg).digest()
        r2 = ci.Sign(pb.SignRequest(name=name, digest=digest), timeout=30)
        assert r2.version == 1
        assert r2.audit_seq > r1.audit_seq
        sig_path.write_bytes(r2.signature)
        assert openssl_verify(family, hname, pub, msg_path, sig_path,
                              raw_in=msg)

    # A flipped signature fails OpenSSL's check, too.
    sig_path.write_bytes(flip(r1.signature))
    assert not openssl_verify(family, hname, pub, msg_path, sig_path,
                              raw_in=msg)

    # The Verify RPC agrees.
    v = ci.Verify(pb.VerifyRequest(name=name, data=msg,
                                   signature=r1.signature), timeout=30)
    assert v.valid
    v = ci.Verify(pb.VerifyRequest(name=name, data=msg,
                                   signature=flip(r1.signature)), timeout=30)
    assert not v.valid
    if digest is not None:
        v = ci.Verify(pb.VerifyRequest(name=name, digest=digest,
                                       signature=r1.signature), timeout=30)
        assert v.valid
        v = ci.Verify(pb.VerifyRequest(name=name, digest=digest,
                                       signature=flip(r1.signature)),
                      timeout=30)
        assert not v.valid


def test_get_key_describes_new_key(kmsd, keys):
    name = keys.get("EC_P256_SHA256")
    k = kmsd.client("officer").kms.GetKey(pb.GetKeyRequest(name=name),
                                          timeout=30)
    assert k.name == name
    assert k.algorithm == pb.EC_P256_SHA256
    assert k.primary_version == 1
    assert [v.version for v in k.versions] == [1]
    assert k.versions[0].state == pb.ENABLED
    assert k.versions[0].create_time > 1600000000
