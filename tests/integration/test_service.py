"""The service answers: health, identities, unknown methods."""

import time

import grpc

from conftest import IDENTITIES, ROLE_OF, health_pb2, pb


def test_health_serving(kmsd):
    resp = kmsd.client("ci").health.Check(
        health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_whoami_each_identity(kmsd):
    for name in IDENTITIES:
        resp = kmsd.client(name).kms.WhoAmI(pb.WhoAmIRequest(), timeout=10)
        assert resp.identity == name
        assert ROLE_OF[name] in list(resp.roles), (name, list(resp.roles))
        # Each dev identity holds exactly the role of its purpose.
        assert len(resp.roles) == 1, (name, list(resp.roles))


def test_unknown_method_unimplemented_quickly(kmsd):
    c = kmsd.client("ci")
    for method in ("/kms.v1.KeyManagementService/NoSuchMethod",
                   "/no.such.Service/Call"):
        t0 = time.monotonic()
        try:
            c.raw(method)(b"", timeout=5)
        except grpc.RpcError as e:
            code = e.code()
        else:
            code = grpc.StatusCode.OK
        elapsed = time.monotonic() - t0
        assert code == grpc.StatusCode.UNIMPLEMENTED, (method, code)
        assert elapsed < 2.0, "%s took %.2f s" % (method, elapsed)
    # The server still serves afterwards.
    assert c.kms.WhoAmI(pb.WhoAmIRequest(), timeout=10).identity == "ci"
