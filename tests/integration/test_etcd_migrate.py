"""Migration between the token store and etcd (kmsd --migrate-store):
token -> etcd -> token keeps every key, version, state, schedule and
counter; old signatures verify and wrapped blobs unwrap after each move;
each run is idempotent; a migration into a store that a kmsd serves from is
refused; a dry run writes nothing."""

import hashlib

import grpc

from conftest import (KMSD, SANITIZER_MARKS, Kmsd, expect_error, make_home,
                      pb, run, set_conf)
from etcdcluster import add_store_section, etcd_conf, ota_manifests

E = pb.KeyVersionState


def kmsd_cmd(k, *args):
    p = run([KMSD, "--config", k.config] + list(args), check=False,
            env=k.env(), cwd=str(k.workdir), timeout=120)
    err = p.stderr.decode(errors="replace")
    assert not any(m in err for m in SANITIZER_MARKS), err
    return p.returncode, p.stdout.decode()


def set_backend(k, backend):
    k.config.write_text(set_conf(k.config.read_text(), "store",
                                 {"backend": backend}))


def snapshot(k, names):
    """What kmsd says of each key: versions, states, schedule, public keys."""
    out = {}
    off, ci = k.client("officer").kms, k.client("ci").kms
    for n in names:
        key = off.GetKey(pb.GetKeyRequest(name=n), timeout=30)
        vs = [(v.version, v.state, v.create_time, v.destroy_time)
              for v in key.versions]
        pubs = {v.version: ci.GetPublicKey(pb.GetPublicKeyRequest(
            name=n, version=v.version), timeout=30).pem
            for v in key.versions if v.state == E.Value("ENABLED") and
            key.algorithm != pb.AES_256_KWP}
        out[n] = (key.algorithm, key.primary_version,
                  key.rotation_period_seconds, vs, pubs)
    return out


def payload(name, msg):
    """Sign's input: Ed25519 signs the message itself, EC a digest."""
    if name.endswith("/ed"):
        return {"data": msg}
    return {"digest": hashlib.sha256(msg).digest()}


def verify_all(k, sigs, blobs):
    ci, unw = k.client("ci").kms, k.client("unwrapper").kms
    for (name, version, msg), sig in sigs.items():
        assert ci.Verify(pb.VerifyRequest(
            name=name, version=version, signature=sig,
            **payload(name, msg)), timeout=30).valid, (name, version)
    for blob, pt in blobs.items():
        assert unw.Unwrap(pb.UnwrapRequest(name="mig/aes", wrapped=blob),
                          timeout=30).plaintext == pt


def serve_and_check(k, backend, names, want, sigs, blobs, last_manifest):
    """Starts k on backend and checks that it serves what was migrated:
    the keys as want, old signatures, old blobs, the counter (the last
    manifest signed is refused again).  Returns the ci stub."""
    set_backend(k, backend)
    k.start()
    assert snapshot(k, names) == want
    verify_all(k, sigs, blobs)
    ci = k.client("ci").kms
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, ci.SignBundleManifest,
                 pb.SignBundleManifestRequest(name="mig/ota",
                                              manifest=last_manifest))
    return ci


def test_token_to_etcd_to_token_keeps_everything(etcd_cluster, tmp_path):
    c = etcd_cluster
    home = make_home(tmp_path, "home", {"keys": {"min_rotation_period": 2}})
    add_store_section(home)
    conf = etcd_conf(c)["store"]
    conf["backend"] = "token"
    (home / "kmsd.conf").write_text(set_conf(
        (home / "kmsd.conf").read_text(), "store", conf))
    k = Kmsd(home, tmp_path / "work")
    k.start()
    try:
        off, ci = k.client("officer").kms, k.client("ci").kms
        names = ["mig/ec", "mig/ed", "mig/aes"]
        for n, alg in zip(names, (pb.EC_P256_SHA256, pb.ED25519,
                                  pb.AES_256_KWP)):
            off.CreateKey(pb.CreateKeyRequest(name=n, algorithm=alg),
                          timeout=60)
        sigs, blobs = {}, {}
        for i in range(3):
            for n in names[:2]:
                msg = b"v%d" % (i + 1)
                sigs[(n, i + 1, msg)] = ci.Sign(pb.SignRequest(
                    name=n, **payload(n, msg)), timeout=30).signature
            pt = b"data key %d" % i
            blobs[ci.Wrap(pb.WrapRequest(name="mig/aes", plaintext=pt),
                          timeout=30).wrapped] = pt
            if i < 2:
                for n in names:
                    off.RotateKey(pb.RotateKeyRequest(name=n), timeout=60)
        off.SetVersionState(pb.SetVersionStateRequest(
            name="mig/ec", version=1, state=E.Value("DISABLED")), timeout=30)
        off.SetVersionState(pb.SetVersionStateRequest(
            name="mig/ed", version=1, state=E.Value("DESTROY_SCHEDULED")),
            timeout=30)
        off.UpdateKey(pb.UpdateKeyRequest(name="mig/ed",
                                          rotation_period_seconds=86400),
                      timeout=30)
        # A disabled version or one scheduled for destruction is used for
        # nothing, Verify included.
        del sigs[("mig/ec", 1, b"v1")], sigs[("mig/ed", 1, b"v1")]
        with_seq = ota_manifests(k, tmp_path, "mig/root", "mig/ota",
                                 "com.mig")
        ci.SignBundleManifest(pb.SignBundleManifestRequest(
            name="mig/ota", manifest=with_seq(7)), timeout=30)
        names += ["mig/root", "mig/ota"]
        before = snapshot(k, names)

        # A dry run while the token kmsd serves: etcd is free, nothing is
        # written.
        rc, out = kmsd_cmd(k, "--migrate-store", "token:etcd", "--dry-run")
        assert rc == 0, out
        assert "would copy    mig/ec: generation" in out
        assert c.get_prefix("/kms/doc/") == {}
        k.stop_clean()

        rc, out = kmsd_cmd(k, "--migrate-store", "token:etcd")
        assert rc == 0, out
        ndocs = len(names) + 1              # the keys and one counter
        assert "%d copied, 0 updated, 0 already in etcd" % ndocs in out, out
        docs = c.get_prefix("/kms/doc/")
        assert len(docs) == ndocs, docs
        assert any("kms-counter!" in d and v.startswith("seq 7")
                   for d, v in docs.items()), docs
        rc, out = kmsd_cmd(k, "--migrate-store", "token:etcd")
        assert rc == 0 and "0 copied, 0 updated, %d already" % ndocs in out

        ci = serve_and_check(k, "etcd", names, before, sigs, blobs,
                             with_seq(7))
        ci.SignBundleManifest(pb.SignBundleManifestRequest(
            name="mig/ota", manifest=with_seq(8)), timeout=30)
        # Served from etcd now: a migration into etcd is refused.
        rc, out = kmsd_cmd(k, "--migrate-store", "token:etcd")
        assert rc == 1 and "refused" in out and "serve from etcd" in out, out
        # A change made in etcd goes back to the token with the rest.
        k.client("officer").kms.RotateKey(pb.RotateKeyRequest(
            name="mig/ec"), timeout=60)
        sigs[("mig/ec", 4, b"v4")] = ci.Sign(pb.SignRequest(
            name="mig/ec", digest=hashlib.sha256(b"v4").digest()),
            timeout=30).signature
        after_etcd = snapshot(k, names)
        k.stop_clean()

        rc, out = kmsd_cmd(k, "--migrate-store", "etcd:token")
        assert rc == 0, out
        assert "0 copied, 2 updated, %d already in token" % (ndocs - 2) \
            in out, out
        assert "updated       mig/ec: generation" in out
        rc, out = kmsd_cmd(k, "--migrate-store", "etcd:token")
        assert rc == 0 and "0 copied, 0 updated" in out, out

        serve_and_check(k, "token", names, after_etcd, sigs, blobs,
                        with_seq(8))
        # Served from the token: etcd:token is refused, token:etcd is not
        # (the token is only read) and finds etcd current.
        rc, out = kmsd_cmd(k, "--migrate-store", "etcd:token")
        assert rc == 1 and "refused: a kmsd serves from this token" in out
        rc, out = kmsd_cmd(k, "--migrate-store", "token:etcd")
        assert rc == 0 and "0 copied, 0 updated" in out, out
    finally:
        if k.proc is not None:
            k.stop_clean()
