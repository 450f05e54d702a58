"""Revocation and SIGHUP: a CRL refuses revoked certificates on every new
handshake; SIGHUP reloads the server certificate and key, the CA, the CRL
and the policy together, audits the reload, keeps the old set when a file
is broken, and lets established connections and calls in flight finish."""

import hashlib
import shutil
import threading
import time

import grpc
import pytest

from conftest import TOP, Kmsd, make_home, pb, run
from test_audit import audit_records

PKI_SH = TOP / "hsm-config" / "pki.sh"


@pytest.fixture(scope="module")
def rk(tmp_root):
    """kmsd on its own state directory: these tests revoke and replace."""
    k = Kmsd(make_home(tmp_root, "reload-home"), tmp_root / "reload-work")
    (tmp_root / "reload-work").mkdir(exist_ok=True)
    k.start()
    k.key = "release/reload/p256"
    k.client("officer").kms.CreateKey(
        pb.CreateKeyRequest(name=k.key, algorithm=pb.EC_P256_SHA256),
        timeout=60)
    yield k
    k.stop_clean()


def channel(k, cert, key):
    """A channel of its own (no subchannel shared with other channels)."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=k.ca.read_bytes(), private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes())
    ch = grpc.secure_channel(k.addr, creds, options=[
        ("grpc.use_local_subchannel_pool", 1)])
    from kms.v1 import kms_pb2_grpc
    return ch, kms_pb2_grpc.KeyManagementServiceStub(ch)


def whoami(k, cert, key):
    ch, kms = channel(k, cert, key)
    try:
        return kms.WhoAmI(pb.WhoAmIRequest(), timeout=10).identity
    except grpc.RpcError as e:
        return e.code()
    finally:
        ch.close()


def hup_and_wait(k, word):
    """SIGHUP, then waits for the reload's verdict in the log."""
    before = k.log().count(word)
    k.hup()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if k.log().count(word) > before:
            return k.log()
        time.sleep(0.05)
    raise AssertionError("no %r in the log after SIGHUP:\n%s" %
                         (word, k.log()[-3000:]))


def last_reload(k):
    return [r for r in audit_records(k)[1] if r.get("rpc") == "Reload"][-1]


def issue(k, name):
    run(["bash", PKI_SH, k.home / "pki", "issue", name])
    d = k.home / "pki" / "clients"
    keep = k.workdir / name
    keep.mkdir(exist_ok=True)
    shutil.copy(d / (name + ".pem"), keep / "cert.pem")
    shutil.copy(d / (name + ".key"), keep / "key.pem")
    return keep / "cert.pem", keep / "key.pem"


def test_revoked_certificate_refused_after_sighup(rk):
    cert, key = issue(rk, "ci-rev")
    assert whoami(rk, cert, key) == "ci-rev"
    # A connection made before the revocation keeps its verified set.
    early, early_kms = channel(rk, cert, key)
    assert early_kms.WhoAmI(pb.WhoAmIRequest(), timeout=10).identity == \
        "ci-rev"

    run(["bash", PKI_SH, rk.home / "pki", "revoke", "ci-rev"])
    hup_and_wait(rk, "reloaded")
    assert whoami(rk, cert, key) == grpc.StatusCode.UNAVAILABLE
    deadline = time.monotonic() + 10
    while "certificate revoked" not in rk.log():
        assert time.monotonic() < deadline, rk.log()[-3000:]
        time.sleep(0.05)
    # Others are unaffected.
    pki = rk.home / "pki" / "clients"
    assert whoami(rk, pki / "ci.pem", pki / "ci.key") == "ci"
    rec = last_reload(rk)
    assert rec["result"] == "ok" and rec["identity"] == "kmsd"
    assert "crl" in rec["detail"]["changed"] and rec["detail"]["accepted"] is True
    assert early_kms.WhoAmI(pb.WhoAmIRequest(), timeout=10).identity == \
        "ci-rev"
    early.close()

    # A broken CRL file is refused and the previous CRL stays in force.
    crl = rk.home / "pki" / "crl.pem"
    good = crl.read_bytes()
    crl.write_bytes(good[:len(good) // 2])
    try:
        log = hup_and_wait(rk, "reload refused")
        assert str(crl) in log.split("reload refused")[-1]
        rec = last_reload(rk)
        assert rec["result"] == "error" and rec["detail"]["accepted"] is False
        assert str(crl) in rec["reason"]
        assert whoami(rk, cert, key) == grpc.StatusCode.UNAVAILABLE
        assert whoami(rk, pki / "ci.pem", pki / "ci.key") == "ci"
    finally:
        crl.write_bytes(good)
    hup_and_wait(rk, "reloaded")


def fetch_server_cert(k):
    """The certificate a new TLS client is shown, as PEM."""
    pki = k.home / "pki"
    p = run(["openssl", "s_client", "-connect", k.addr, "-CAfile",
             pki / "ca.pem", "-cert", pki / "clients" / "ci.pem", "-key",
             pki / "clients" / "ci.key", "-verify_return_error"],
            input=b"", check=False)
    out = p.stdout.decode(errors="replace")
    begin = out.index("-----BEGIN CERTIFICATE-----")
    end = out.index("-----END CERTIFICATE-----") + 25
    return out[begin:end]


def fingerprint(pem):
    p = run(["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
            input=pem.encode() if isinstance(pem, str) else pem)
    return p.stdout.decode().strip()


def new_server_cert(k, d):
    pki = k.home / "pki"
    key, csr, cert, ext = (d / "srv.key", d / "srv.csr", d / "srv.pem",
                           d / "srv.ext")
    run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-out", key])
    run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=localhost",
         "-out", csr])
    ext.write_text("basicConstraints = critical, CA:FALSE\n"
                   "keyUsage = critical, digitalSignature\n"
                   "extendedKeyUsage = serverAuth\n"
                   "subjectAltName = DNS:localhost, IP:127.0.0.1\n")
    run(["openssl", "x509", "-req", "-in", csr, "-CA", pki / "ca.pem",
         "-CAkey", pki / "ca.key", "-set_serial", "0x5e7e", "-days", "30",
         "-extfile", ext, "-out", cert])
    return cert, key


def test_server_certificate_reload(rk, workdir):
    pki = rk.home / "pki"
    old = fetch_server_cert(rk)
    assert fingerprint(old) == fingerprint((pki / "server.pem").read_bytes())
    cert, key = new_server_cert(rk, workdir)

    # Calls keep flowing on an established connection across the reload.
    errors, done = [], []
    stop = threading.Event()
    kms = rk.client("ci").kms

    def signer():
        i = 0
        while not stop.is_set():
            d = hashlib.sha256(b"reload %d" % i).digest()
            try:
                kms.Sign(pb.SignRequest(name=rk.key, digest=d), timeout=30)
                done.append(i)
            except grpc.RpcError as e:
                errors.append(e)
            i += 1

    def slow_create():
        try:
            rk.client("officer").kms.CreateKey(pb.CreateKeyRequest(
                name="release/reload/rsa", algorithm=pb.RSA_PKCS1_4096_SHA256),
                timeout=120)
            done.append("create")
        except grpc.RpcError as e:
            errors.append(e)

    threads = [threading.Thread(target=signer),
               threading.Thread(target=slow_create)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    shutil.copy(key, pki / "server.key.new")
    shutil.copy(cert, pki / "server.pem.new")
    (pki / "server.key.new").rename(pki / "server.key")
    (pki / "server.pem.new").rename(pki / "server.pem")
    hup_and_wait(rk, "reloaded")
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=150)
    assert not errors, errors[:3]
    assert "create" in done and len(done) > 5

    new = fetch_server_cert(rk)
    assert fingerprint(new) == fingerprint(cert.read_bytes())
    assert fingerprint(new) != fingerprint(old)
    rec = last_reload(rk)
    assert rec["result"] == "ok"
    assert "cert" in rec["detail"]["changed"] and "key" in rec["detail"]["changed"]

    # A key that does not match the certificate keeps the old pair.
    other, other_key = workdir / "o.key", pki / "server.key"
    run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-out", other])
    good_key = other_key.read_bytes()
    other_key.write_bytes(other.read_bytes())
    try:
        log = hup_and_wait(rk, "reload refused")
        assert "does not match" in log.split("reload refused")[-1]
        assert fingerprint(fetch_server_cert(rk)) == \
            fingerprint(cert.read_bytes())
        assert last_reload(rk)["detail"]["accepted"] is False
    finally:
        other_key.write_bytes(good_key)
    hup_and_wait(rk, "reloaded")


def test_policy_reload_is_audited(rk):
    pol = rk.home / "policy.conf"
    text = pol.read_text()
    pol.write_text(text + "\n# touched\n")
    hup_and_wait(rk, "reloaded")
    rec = last_reload(rk)
    assert rec["detail"]["changed"] == ["policy"] and rec["detail"]["accepted"] is True
    pol.write_text(text + "\n[role broken\n")
    try:
        hup_and_wait(rk, "reload refused")
        rec = last_reload(rk)
        assert rec["detail"]["accepted"] is False and str(pol) in rec["reason"]
    finally:
        pol.write_text(text)
    hup_and_wait(rk, "reloaded")
