"""kmsd with [store] backend = etcd: two instances on one token and one
3-member etcd cluster (etcdcluster.py) share keys through etcd alone.

A key made on one signs on the other; a rotation on one is used by the
other within a second of its commit (the watch, not a poll); the token
holds no data object; concurrent rotations on both instances lose and
duplicate no version, and every version is a key of its own.  Over TLS
kmsd reaches an etcd that requires client certificates, and does not
start against one its CA did not sign."""

import hashlib
import json
import os
import re
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import (KMSD, MODULE, Kmsd, free_port, make_home, pb, run,
                      set_conf)
from etcdcluster import ETCD, add_store_section, have_etcd

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
    assert errors == [], "%d rotations failed: %s\nA:\n%s\nB:\n%s" % (
        len(errors), errors[:3], a.log()[-3000:], b.log()[-3000:])
    assert len(done) == 40 and len(set(done)) == 40, sorted(done)
    for k in (a, b):
        deadline = time.monotonic() + CHANGE_SECONDS
        while True:
            key = officer(k).GetKey(pb.GetKeyRequest(name=name), timeout=30)
            if key.primary_version == 41 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert sorted(v.version for v in key.versions) == list(range(1, 42))
        assert key.primary_version == 41, (
            "%s shows primary %d %.1f s after the last rotation" % (
                k.addr, key.primary_version, CHANGE_SECONDS))
    # Every version is a key pair of its own: 41 distinct public keys.
    pems = {a.client("ci").kms.GetPublicKey(pb.GetPublicKeyRequest(
        name=name, version=v), timeout=30).pem for v in range(1, 42)}
    assert len(pems) == 41
    # Every version signs, and no lost race left a key pair behind.
    assert sign(b, name).version == 41
    labels = [b_ for b_ in token_objects(a, "privkey") if name in b_]
    assert len(labels) == 41, "%d private keys of %s:\n%s" % (
        len(labels), name, a.log()[-3000:] + b.log()[-3000:])


def _openssl(*args, cwd):
    run(["openssl"] + list(args), cwd=str(cwd))


def _tls_set(d, name, ca=None, san=None):
    """A P-256 key and certificate name.pem/name.key in d, self-signed
    (a CA) when ca is None, else signed by ca (with san when given)."""
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
             name + ".key", cwd=d)
    if ca is None:
        _openssl("req", "-x509", "-new", "-key", name + ".key", "-subj",
                 "/CN=" + name, "-days", "2", "-out", name + ".pem",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign", cwd=d)
        return
    _openssl("req", "-new", "-key", name + ".key", "-subj", "/CN=" + name,
             "-out", name + ".csr", cwd=d)
    ext = d / (name + ".ext")
    ext.write_text("extendedKeyUsage = serverAuth, clientAuth\n" +
                   ("subjectAltName = %s\n" % san if san else ""))
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem",
             "-CAkey", ca + ".key", "-CAcreateserial", "-days", "2",
             "-extfile", name + ".ext", "-out", name + ".pem", cwd=d)


def _wait_healthy(url, pki, timeout=30.0):
    """Waits for a TLS etcd's /health to say it has a leader."""
    ctx = ssl.create_default_context(cafile=str(pki / "etcd-ca.pem"))
    ctx.load_cert_chain(str(pki / "kms-client.pem"),
                        str(pki / "kms-client.key"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2,
                                        context=ctx) as r:
                if json.loads(r.read().decode()).get("health") == "true":
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError("the TLS etcd at %s did not become healthy" % url)


def test_tls_to_etcd(tmp_path):
    """kmsd reaches an etcd that requires client certificates over TLS,
    and refuses to start against one whose certificate its CA did not
    sign."""
    if not have_etcd():
        pytest.skip("etcd-server is not installed (hsm-config/deps.sh)")
    pki = tmp_path / "etcd-pki"
    pki.mkdir()
    _tls_set(pki, "etcd-ca")
    _tls_set(pki, "other-ca")
    _tls_set(pki, "member", ca="etcd-ca", san="IP:127.0.0.1")
    _tls_set(pki, "kms-client", ca="etcd-ca")
    _tls_set(pki, "stranger", ca="other-ca")
    cport, pport = free_port(), free_port()
    curl = "https://127.0.0.1:%d" % cport
    purl = "http://127.0.0.1:%d" % pport
    log = open(tmp_path / "etcd-tls.log", "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    etcd = subprocess.Popen(
        [ETCD, "--name", "tls", "--data-dir", str(tmp_path / "tls.data"),
         "--listen-client-urls", curl, "--advertise-client-urls", curl,
         "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
         "--initial-cluster", "tls=" + purl, "--listen-metrics-urls", "",
         "--cert-file", str(pki / "member.pem"),
         "--key-file", str(pki / "member.key"),
         "--client-cert-auth", "--trusted-ca-file", str(pki / "etcd-ca.pem"),
         "--log-level", "warn"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    kmsds = []

    def kmsd_on(tag, ca, cert, key):
        home = make_home(tmp_path, "home-" + tag)
        add_store_section(home)
        conf = home / "kmsd.conf"
        conf.write_text(set_conf(conf.read_text(), "store", {
            "backend": "etcd", "endpoints": curl, "ca": pki / ca,
            "cert": pki / cert, "key": pki / key, "prefix": "/tls/"}))
        return Kmsd(home, tmp_path / ("work-" + tag))

    try:
        _wait_healthy(curl, pki)
        k = kmsd_on("ok", "etcd-ca.pem", "kms-client.pem", "kms-client.key")
        kmsds.append(k)
        k.start()
        name = "etcd/tls/ec"
        officer(k).CreateKey(pb.CreateKeyRequest(
            name=name, algorithm=pb.EC_P256_SHA256), timeout=60)
        assert sign(k, name).version == 1
        assert token_objects(k, "data") == []

        # Its CA did not sign etcd's certificate: kmsd does not start.
        bad = kmsd_on("bad", "other-ca.pem", "stranger.pem", "stranger.key")
        p = run([KMSD, "--config", bad.config, "--listen", "127.0.0.1:0"],
                check=False, env=bad.env(), timeout=60)
        assert p.returncode != 0
        assert b"etcd unavailable" in p.stderr, p.stderr.decode()
    finally:
        Kmsd.stop_all(kmsds)
        etcd.terminate()
        etcd.wait(timeout=15)
        log.close()
