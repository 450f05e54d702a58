"""Mutual TLS: who gets in, and under which identity."""

import grpc
import pytest

from conftest import Client, pb, run

FAIL = grpc.StatusCode.UNAVAILABLE


def new_key(path):
    run(["openssl", "genpkey", "-algorithm", "EC",
         "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path])


def write_ext(path, *lines):
    path.write_text("\n".join(lines) + "\n")


def client_ext(path, extra=()):
    write_ext(path, "basicConstraints = critical, CA:FALSE",
              "keyUsage = critical, digitalSignature",
              "extendedKeyUsage = clientAuth", *extra)


def sign_with_ca(d, ca_pem, ca_key, subj, ext, stem, days=30):
    key, csr, cert = d / (stem + ".key"), d / (stem + ".csr"), \
        d / (stem + ".pem")
    new_key(key)
    run(["openssl", "req", "-new", "-key", key, "-subj", subj, "-out", csr])
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_pem,
         "-CAkey", ca_key, "-set_serial", "0x1234abcd", "-days", str(days),
         "-extfile", ext, "-out", cert])
    return cert, key


def call_fails(client):
    """Returns the status codes of a WhoAmI and a ListKeys with client."""
    codes = []
    for fn, req in ((client.kms.WhoAmI, pb.WhoAmIRequest()),
                    (client.kms.ListKeys, pb.ListKeysRequest())):
        try:
            fn(req, timeout=10)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
    return codes


def test_no_client_certificate(kmsd):
    with Client(kmsd.addr, kmsd.ca) as c:
        assert call_fails(c) == [FAIL, FAIL]


def test_certificate_from_another_ca(kmsd, workdir):
    ca_key, ca_pem = workdir / "other-ca.key", workdir / "other-ca.pem"
    new_key(ca_key)
    run(["openssl", "req", "-new", "-x509", "-key", ca_key,
         "-subj", "/CN=kms dev CA", "-days", "30", "-out", ca_pem])
    ext = workdir / "client.ext"
    client_ext(ext)
    # Same subject as the real ci identity: only the issuer differs.
    cert, key = sign_with_ca(workdir, ca_pem, ca_key, "/CN=ci", ext, "ci")
    with Client(kmsd.addr, kmsd.ca, cert, key) as c:
        assert call_fails(c) == [FAIL, FAIL]


def test_expired_certificate(kmsd, workdir):
    pki = kmsd.home / "pki"
    ca_dir = workdir / "ca"
    ca_dir.mkdir()
    (ca_dir / "index.txt").write_text("")
    (ca_dir / "serial").write_text("1000\n")
    conf = workdir / "ca.cnf"
    conf.write_text("\n".join([
        "[ca]",
        "default_ca = dev",
        "[dev]",
        "database = %s" % (ca_dir / "index.txt"),
        "serial = %s" % (ca_dir / "serial"),
        "new_certs_dir = %s" % ca_dir,
        "certificate = %s" % (pki / "ca.pem"),
        "private_key = %s" % (pki / "ca.key"),
        "default_md = sha256",
        "policy = any",
        "unique_subject = no",
        "copy_extensions = none",
        "x509_extensions = client",
        "[any]",
        "commonName = supplied",
        "[client]",
        "basicConstraints = critical, CA:FALSE",
        "keyUsage = critical, digitalSignature",
        "extendedKeyUsage = clientAuth",
        ""]))
    key, csr, cert = workdir / "old.key", workdir / "old.csr", \
        workdir / "old.pem"
    new_key(key)
    run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=ci",
         "-out", csr])
    run(["openssl", "ca", "-batch", "-config", conf, "-in", csr,
         "-out", cert, "-notext", "-startdate", "20200101000000Z",
         "-enddate", "20200201000000Z"])
    # The certificate is good but for its dates.
    v = run(["openssl", "verify", "-CAfile", pki / "ca.pem", cert],
            check=False)
    assert b"expired" in v.stdout + v.stderr
    v = run(["openssl", "verify", "-CAfile", pki / "ca.pem",
             "-no_check_time", cert], check=False)
    assert v.returncode == 0, v.stdout + v.stderr

    with Client(kmsd.addr, kmsd.ca, cert, key) as c:
        assert call_fails(c) == [FAIL, FAIL]


def test_spiffe_identity(kmsd, workdir):
    pki = kmsd.home / "pki"
    ext = workdir / "spiffe.ext"
    client_ext(ext, ["subjectAltName = URI:spiffe://kms.test/ci"])
    cert, key = sign_with_ca(workdir, pki / "ca.pem", pki / "ca.key",
                             "/O=kms test", ext, "spiffe")
    with Client(kmsd.addr, kmsd.ca, cert, key) as c:
        resp = c.kms.WhoAmI(pb.WhoAmIRequest(), timeout=10)
        assert resp.identity == "spiffe://kms.test/ci"


@pytest.mark.parametrize("name", ["ci", "officer"])
def test_dev_certificates_work(kmsd, name):
    # The control case for the refusals above.
    with Client(kmsd.addr, kmsd.ca,
                kmsd.home / "pki" / "clients" / (name + ".pem"),
                kmsd.home / "pki" / "clients" / (name + ".key")) as c:
        assert c.kms.WhoAmI(pb.WhoAmIRequest(), timeout=10).identity == name
