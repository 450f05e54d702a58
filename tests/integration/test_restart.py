"""Keys live in the token: they survive a restart of kmsd."""

import hashlib

from conftest import pb, run


def test_restart_keeps_keys(kmsd, keys, workdir):
    name = keys.get("EC_P256_SHA256")
    ci = kmsd.client("ci").kms
    pem_before = ci.GetPublicKey(pb.GetPublicKeyRequest(name=name),
                                 timeout=30).pem

    rc = kmsd.stop()
    assert rc == 0, "kmsd exited with %r on SIGTERM; stderr:\n%s" % (
        rc, kmsd.log())
    kmsd.start()

    ci = kmsd.client("ci").kms
    pem_after = ci.GetPublicKey(pb.GetPublicKeyRequest(name=name),
                                timeout=30).pem
    assert pem_after == pem_before

    msg = b"signed after a restart"
    r = ci.Sign(pb.SignRequest(name=name,
                               digest=hashlib.sha256(msg).digest()),
                timeout=30)
    assert r.version == 1
    (workdir / "pub.pem").write_text(pem_before)
    (workdir / "msg").write_bytes(msg)
    (workdir / "sig").write_bytes(r.signature)
    v = run(["openssl", "dgst", "-sha256", "-verify", workdir / "pub.pem",
             "-signature", workdir / "sig", workdir / "msg"], check=False)
    assert v.returncode == 0 and b"Verified OK" in v.stdout

    names = [k.name for k in kmsd.client("officer").kms.ListKeys(
        pb.ListKeysRequest(), timeout=30).keys]
    for made in keys.made:
        assert keys.name(made) in names
