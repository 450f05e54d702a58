"""Identity rules: exactly one of the single URI SAN (SPIFFE ID or other
URI) or the CN, never a fallback; clientAuth required; kmsd's own names
cannot be claimed.  Certificates are issued at test time by the dev CA."""

import grpc
import pytest

from conftest import Client, pb
from test_audit import new_records, snapshot
from test_tls import client_ext, sign_with_ca, write_ext


def der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def uri_sans_der(*uris):
    """subjectAltName as raw DER: SEQUENCE of [6] IA5String URIs."""
    body = b"".join(b"\x86" + der_len(len(u)) + u for u in uris)
    return b"\x30" + der_len(len(body)) + body


def whoami_error(kmsd, cert, key):
    c = Client(kmsd.addr, kmsd.ca, cert, key)
    try:
        with pytest.raises(grpc.RpcError) as e:
            c.kms.WhoAmI(pb.WhoAmIRequest(), timeout=10)
        return e.value.code(), e.value.details()
    finally:
        c.close()


def issue(kmsd, workdir, stem, subj, *extra, eku="clientAuth"):
    pki = kmsd.home / "pki"
    ext = workdir / (stem + ".ext")
    write_ext(ext, "basicConstraints = critical, CA:FALSE",
              "keyUsage = critical, digitalSignature",
              "extendedKeyUsage = " + eku, *extra)
    return sign_with_ca(workdir, pki / "ca.pem", pki / "ca.key", subj, ext,
                        stem)


def whoami_record(kmsd, seen):
    """The one WhoAmI record written since seen (chains and segments sort
    by name, not by time, so "the last one in the files" is not it)."""
    recs = new_records(kmsd, seen, lambda r: r.get("rpc") == "WhoAmI")
    assert len(recs) == 1, recs
    return recs[0]


def test_long_spiffe_id_is_refused_not_served_as_cn(kmsd, workdir):
    spiffe = "spiffe://kms.test/" + "a" * (600 - len("spiffe://kms.test/"))
    assert len(spiffe) == 600
    cert, key = issue(kmsd, workdir, "long", "/CN=officer",
                      "subjectAltName = URI:" + spiffe)
    seen = snapshot(kmsd)
    code, details = whoami_error(kmsd, cert, key)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "SPIFFE ID is 600 bytes" in details
    rec = whoami_record(kmsd, seen)
    assert rec["result"] == "denied" and not rec.get("identity")
    assert "600 bytes" in rec["reason"]


REFUSED = [
    # (case, subject, extensions, extended key usage, reason given)
    ("nul", "/CN=officer", ["subjectAltName = DER:" + uri_sans_der(
        b"spiffe://kms.test/ci\x00.officer").hex()], "clientAuth",
     "contains a NUL byte"),
    ("not-utf8", "/CN=officer", ["subjectAltName = DER:" + uri_sans_der(
        b"urn:kms:\xff\xfe").hex()], "clientAuth", "not UTF-8"),
    ("two-uris", "/CN=officer", ["subjectAltName = URI:spiffe://kms.test/ci,"
                                 " URI:spiffe://kms.test/officer"],
     "clientAuth", "2 URI SANs"),
    ("server-eku", "/CN=officer", [], "serverAuth",
     "does not include clientAuth"),
    ("scheduler", "/CN=kmsd\\/scheduler", [], "clientAuth", "kmsd's own"),
    ("kmsd", "/CN=kmsd", [], "clientAuth", "kmsd's own"),
    ("internal-uri", "/CN=ci", ["subjectAltName = URI:kmsd/scheduler"],
     "clientAuth", "kmsd's own"),
]


@pytest.mark.parametrize("case,subj,extra,eku,reason", REFUSED,
                         ids=[r[0] for r in REFUSED])
def test_refused_for_its_reason(kmsd, workdir, case, subj, extra, eku,
                                reason):
    cert, key = issue(kmsd, workdir, case, subj, *extra, eku=eku)
    code, details = whoami_error(kmsd, cert, key)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert reason in details


def test_single_uri_san_wins_over_cn(kmsd, workdir):
    # The control case: a usable URI SAN is the identity, not the CN.
    cert, key = issue(kmsd, workdir, "uri", "/CN=officer",
                      "subjectAltName = URI:urn:kms:ci, DNS:ci.kms.test")
    c = Client(kmsd.addr, kmsd.ca, cert, key)
    try:
        r = c.kms.WhoAmI(pb.WhoAmIRequest(), timeout=10)
        assert r.identity == "urn:kms:ci"
        assert "officer" not in r.roles
    finally:
        c.close()


def test_refused_identity_cannot_sign(kmsd, workdir, keys):
    # A refused certificate is refused for every call, not only WhoAmI.
    name = keys.get("EC_P256_SHA256")
    cert, key = issue(kmsd, workdir, "two-sign", "/CN=ci",
                      "subjectAltName = URI:urn:a, URI:urn:b")
    c = Client(kmsd.addr, kmsd.ca, cert, key)
    try:
        with pytest.raises(grpc.RpcError) as e:
            c.kms.Sign(pb.SignRequest(name=name, digest=b"\x01" * 32),
                       timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        c.close()
