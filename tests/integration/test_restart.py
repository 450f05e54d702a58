"""Keys live in the token: they survive a restart of kmsd."""

import hashlib

from conftest import openssl_verifies, pb

ALGS = ("EC_P256_SHA256", "ED25519", "RSA_PKCS1_2048_SHA256", "AES_256_KWP")


def test_restart_keeps_keys(own_kmsd, workdir):
    # A kmsd of its own: the session's is shared and must keep running.
    k = own_kmsd()
    officer = k.client("officer").kms
    names = []
    for alg in ALGS:
        name = "release/restart/" + alg.lower().replace("_", "-")
        officer.CreateKey(pb.CreateKeyRequest(
            name=name, algorithm=pb.Algorithm.Value(alg)), timeout=120)
        names.append(name)
    name = names[0]
    pem_before = k.client("ci").kms.GetPublicKey(
        pb.GetPublicKeyRequest(name=name), timeout=30).pem
    wrapped = k.client("ci").kms.Wrap(pb.WrapRequest(
        name=names[-1], plaintext=b"wrapped before a restart"), timeout=30)

    k.stop_clean()
    k.start()

    ci = k.client("ci").kms
    pem_after = ci.GetPublicKey(pb.GetPublicKeyRequest(name=name),
                                timeout=30).pem
    assert pem_after == pem_before

    msg = b"signed after a restart"
    r = ci.Sign(pb.SignRequest(name=name,
                               digest=hashlib.sha256(msg).digest()),
                timeout=30)
    assert r.version == 1
    assert openssl_verifies(pem_before, r.signature, msg, workdir)

    # The key made to wrap before the restart unwraps after it.
    plain = k.client("unwrapper").kms.Unwrap(pb.UnwrapRequest(
        name=names[-1], wrapped=wrapped.wrapped), timeout=30)
    assert plain.plaintext == b"wrapped before a restart"

    listed = [x.name for x in k.client("officer").kms.ListKeys(
        pb.ListKeysRequest(), timeout=30).keys]
    assert sorted(listed) == sorted(names)
