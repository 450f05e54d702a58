"""The etcd cluster of the suite (etcdcluster.py) is what the etcd tests
take it for: three members of their own on loopback ports, none of them
the system's 2379/2380, that keep a quorum with one member killed, lose it
with two, and recover when they are restarted on their data."""

import pytest


def test_cluster_members_quorum_and_restart(etcd_cluster):
    c = etcd_cluster
    ports = {p for m in c.members for p in (m.client_port, m.peer_port)}
    assert len(ports) == 6 and not ports & {2379, 2380}
    c.etcdctl("put", "/kms/t/a", "1")
    assert c.get_prefix("/kms/t/") == {"/kms/t/a": "1"}
    members = c.etcdctl("member", "list").stdout
    assert all(m.peer_url in members for m in c.members)

    victim = c.leader()
    assert victim is not None
    c.kill(victim)
    rest = [i for i in range(3) if i != victim]
    c.wait_healthy(rest)
    c.etcdctl("put", "/kms/t/b", "2")

    c.kill(rest[0])
    assert not c.members[rest[1]].healthy()
    p = c.etcdctl("get", "/kms/t/a", "--consistency=l", check=False)
    assert p.returncode != 0

    c.restart(victim)
    c.restart(rest[0])
    assert c.get_prefix("/kms/t/") == {"/kms/t/a": "1", "/kms/t/b": "2"}
    rev = c.compact()
    p = c.etcdctl("get", "/kms/t/a", "--rev", str(rev - 1), check=False)
    assert p.returncode != 0 and "compacted" in p.stderr


