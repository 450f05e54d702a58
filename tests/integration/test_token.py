"""What kmsd leaves in the token: private keys that cannot leave it."""

import re

import grpc
import pytest

from conftest import MODULE, pb, run


def pkcs11_objects(kmsd, kind):
    """Returns the attribute blocks of pkcs11-tool --list-objects --type kind.

    pkcs11-tool takes the PIN only on its command line; that is acceptable
    for a throwaway test token."""
    pin = (kmsd.home / "pin").read_text().strip()
    p = run(["pkcs11-tool", "--module", MODULE, "--token-label", "kms",
             "--login", "--pin", pin, "--list-objects", "--type", kind],
            env=kmsd.env())
    text = p.stdout.decode()
    blocks = re.split(r"\n(?=\S)", text)
    return [b for b in blocks if b.strip() and not b.startswith("Using ")]


def test_private_keys_are_sensitive(kmsd, keys):
    for alg in ("EC_P256_SHA256", "ED25519", "RSA_PKCS1_2048_SHA256"):
        keys.get(alg)
    blocks = [b for b in pkcs11_objects(kmsd, "privkey")
              if b.startswith("Private Key Object")]
    assert len(blocks) >= 3, blocks
    for b in blocks:
        m = re.search(r"^\s*Access:\s*(.*)$", b, re.M)
        assert m, b
        access = [a.strip() for a in m.group(1).split(",")]
        assert "sensitive" in access, b
        assert "always sensitive" in access, b
        assert "never extractable" in access, b
        assert "extractable" not in access, b


def test_secret_keys_are_sensitive(kmsd):
    try:
        kmsd.client("officer").kms.CreateKey(pb.CreateKeyRequest(
            name="release/it/wrap-token", algorithm=pb.AES_256_KWP),
            timeout=30)
    except grpc.RpcError as e:
        pytest.skip("CreateKey AES_256_KWP: %s %s" % (e.code(), e.details()))
    blocks = [b for b in pkcs11_objects(kmsd, "secrkey")
              if b.startswith("Secret Key Object")]
    assert blocks
    for b in blocks:
        m = re.search(r"^\s*Access:\s*(.*)$", b, re.M)
        assert m, b
        access = [a.strip() for a in m.group(1).split(",")]
        assert "sensitive" in access, b
        assert "extractable" not in access, b


def test_signing_keys_only_sign(kmsd):
    """A new signing key's private half has CKA_SIGN and nothing else: no
    decrypt or unwrap, which SoftHSM2 would give an RSA key by default."""
    officer = kmsd.client("officer").kms
    names = {}
    for alg in ("RSA_PKCS1_2048_SHA256", "EC_P256_SHA256"):
        name = "release/it/sign-only-" + alg.lower().replace("_", "-")
        officer.CreateKey(pb.CreateKeyRequest(
            name=name, algorithm=pb.Algorithm.Value(alg)), timeout=120)
        names[name] = alg
    blocks = pkcs11_objects(kmsd, "privkey")
    for name in names:
        mine = [b for b in blocks
                if re.search(r"^\s*label:\s*%s#1#" % re.escape(name), b,
                             re.M)]
        assert len(mine) == 1, (name, blocks)
        m = re.search(r"^\s*Usage:\s*(.*)$", mine[0], re.M)
        assert m, mine[0]
        usage = [u.strip() for u in m.group(1).split(",")]
        assert usage == ["sign"], mine[0]
        assert "decrypt" not in m.group(1) and "unwrap" not in m.group(1)
