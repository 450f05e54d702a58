"""kmsd's store commands on the token store: --gc-orphans finds the key
objects that no metadata references (left by a crash between the HSM work
and the metadata commit), keeps what may be a change in flight while a kmsd
serves, destroys the orphans only with --apply and audits each; and
--migrate-store refuses what it cannot do."""

import hashlib
import json
import os

from conftest import KMSCTL, KMSD, MODULE, SANITIZER_MARKS, Kmsd, pb, run

EC = "EC_P256_SHA256"


def kmsd_cmd(k, *args, check=False):
    """Runs a kmsd store command on k's state directory; fails on a
    sanitizer report."""
    p = run([KMSD, "--config", k.config] + list(args), check=check,
            env=k.env(), cwd=str(k.workdir), timeout=120)
    err = p.stderr.decode(errors="replace")
    assert not any(m in err for m in SANITIZER_MARKS), err
    return p


def p11(k, *args):
    env = dict(k.env(), P11_PIN=(k.home / "pin").read_text().strip())
    return run(["pkcs11-tool", "--module", MODULE, "--token-label", "kms",
                "--login", "--pin", "env:P11_PIN"] + list(args), env=env)


def token_labels(k):
    out = p11(k, "--list-objects").stdout.decode(errors="replace")
    return [line.split(":", 1)[1].strip() for line in out.splitlines()
            if line.strip().startswith("label:")]


def make_orphans(k, name):
    """Key objects as a crash would leave them: an EC pair for version 1
    (which the key holds with other material), one for version 9 (not
    recorded), and an AES key of a key that has no metadata at all."""
    lost = "%s#1#00000000000000aa" % name
    unrec = "%s#9#00000000000000bb" % name
    nokey = "gc/never-made#1#00000000000000cc"
    p11(k, "--keypairgen", "--key-type", "EC:prime256v1", "--label", lost)
    p11(k, "--keypairgen", "--key-type", "EC:prime256v1", "--label", unrec)
    p11(k, "--keygen", "--key-type", "AES:32", "--label", nokey)
    return lost, unrec, nokey


def two_versions(k, name):
    """Key name made on k and rotated once."""
    off = k.client("officer").kms
    off.CreateKey(pb.CreateKeyRequest(name=name,
                                      algorithm=pb.Algorithm.Value(EC)),
                  timeout=60)
    off.RotateKey(pb.RotateKeyRequest(name=name), timeout=60)


def sign(k, name, version, msg=b"gc"):
    return k.client("ci").kms.Sign(pb.SignRequest(
        name=name, version=version, digest=hashlib.sha256(msg).digest()),
        timeout=30)


def audit_lines(home, chain):
    d = home / "audit" / chain
    out = []
    for f in sorted(os.listdir(d)):
        if f.endswith(".jsonl"):
            out += [json.loads(x) for x in (d / f).read_text().splitlines()]
    return out


def test_gc_orphans_dry_run_apply_and_audit(own_kmsd):
    k = own_kmsd()
    name = "gc/ec"
    two_versions(k, name)
    live = [lb for lb in token_labels(k) if lb.startswith(name + "#")]
    assert len(set(live)) == 2
    lost, unrec, nokey = make_orphans(k, name)

    # Dry run while kmsd serves: the lost version is an orphan; the
    # unrecorded ones may be changes in flight; nothing is destroyed.
    p = kmsd_cmd(k, "--gc-orphans")
    out = p.stdout.decode()
    assert p.returncode == 0, out + p.stderr.decode()
    assert "orphan      %s" % lost in out
    assert "in flight?  %s" % unrec in out
    assert "in flight?  %s" % nokey in out
    assert not any(lb in out for lb in live)
    assert "1 orphans, 2 possibly in flight; dry run" in out
    labels = token_labels(k)
    assert all(lb in labels for lb in (lost, unrec, nokey))

    # --apply while kmsd serves destroys the certain orphan only.
    p = kmsd_cmd(k, "--gc-orphans", "--apply")
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    assert "1 orphans destroyed, 2 possibly in flight kept" in \
        p.stdout.decode()
    labels = token_labels(k)
    assert lost not in labels and unrec in labels and nokey in labels
    assert sign(k, name, 1).version == 1 and sign(k, name, 2).version == 2

    # With every kmsd stopped the rest are orphans too.
    k.stop_clean()
    p = kmsd_cmd(k, "--gc-orphans", "--apply")
    out = p.stdout.decode()
    assert p.returncode == 0, out + p.stderr.decode()
    assert "2 orphans destroyed, 0 possibly in flight kept" in out
    labels = token_labels(k)
    assert unrec not in labels and nokey not in labels
    assert sorted(set(lb for lb in labels if lb.startswith(name + "#"))) \
        == sorted(set(live))
    p = kmsd_cmd(k, "--gc-orphans")
    assert "0 orphans, 0 possibly in flight" in p.stdout.decode()

    # Each destruction has its record, before it, in the admin chain,
    # which verifies.
    recs = [r for r in audit_lines(k.home, "kmsd-admin")
            if r["rpc"] == "GcOrphans"]
    assert sorted(r["detail"]["label"] for r in recs) == sorted(
        [lost, unrec, nokey])
    assert all(r["identity"] == "kmsd/admin" and r["result"] == "ok"
               for r in recs)
    run([KMSCTL, "audit", "verify", k.home / "audit" / "kmsd-admin"])

    # The live versions still sign after a restart.
    k.start()
    assert sign(k, name, 1).version == 1 and sign(k, name, 2).version == 2


def test_store_commands_refuse_bad_arguments(own_kmsd):
    k = own_kmsd()
    for args in (["--migrate-store", "token:token"],
                 ["--migrate-store", "token"],
                 ["--migrate-store", "token:etcd", "--gc-orphans"],
                 ["--apply"], ["--dry-run"]):
        p = kmsd_cmd(k, *args)
        assert p.returncode == 2, (args, p.stderr)
        assert b"usage" in p.stderr or b"--migrate-store" in p.stderr


def test_migration_into_a_served_token_is_refused(own_kmsd):
    """Writing into the token while a kmsd serves from it is refused before
    anything is read (the source, etcd, is not even opened)."""
    k = own_kmsd()
    p = kmsd_cmd(k, "--migrate-store", "etcd:token")
    out = p.stdout.decode()
    assert p.returncode == 1
    assert "refused: a kmsd serves from this token" in out, out


def test_gc_orphans_on_etcd(etcd_cluster, etcd_pair):
    """The same on the etcd store: while the pair serves, only the lost
    version's objects go; with both stopped the rest go too, the admin
    chain's anchor goes to etcd and the token holds no data object."""
    from etcdcluster import wait_until
    a, b = etcd_pair(etcd_cluster)
    name = "gc/etcd/ec"
    two_versions(a, name)
    wait_until(lambda: b.client("officer").kms.GetKey(
        pb.GetKeyRequest(name=name), timeout=30).primary_version == 2, 3,
        "the rotation on B")
    lost, unrec, nokey = make_orphans(a, name)
    p = kmsd_cmd(a, "--gc-orphans", "--apply")
    out = p.stdout.decode()
    assert p.returncode == 0, out + p.stderr.decode()
    assert "documents in the etcd store; kmsd serves" in out
    assert "1 orphans destroyed, 2 possibly in flight kept" in out, out
    # A store command cannot hold etcd alone while the pair serves.
    p = kmsd_cmd(a, "--migrate-store", "token:etcd")
    assert p.returncode == 1 and b"serve from etcd" in p.stdout, p.stdout
    Kmsd.stop_all([a, b])
    p = kmsd_cmd(a, "--gc-orphans", "--apply")
    out = p.stdout.decode()
    assert p.returncode == 0, out + p.stderr.decode()
    assert "2 orphans destroyed, 0 possibly in flight kept" in out, out
    labels = token_labels(a)
    assert not {lost, unrec, nokey} & set(labels)
    assert len({lb for lb in labels if lb.startswith(name + "#")}) == 2
    anchors = etcd_cluster.get_prefix("/kms/audit/")
    assert "/kms/audit/kms-audit!anchor#kmsd-admin" in anchors, anchors
    data = p11(a, "--list-objects", "--type", "data").stdout
    assert b"Data object" not in data, data
    recs = [r for r in audit_lines(a.home, "kmsd-admin")
            if r["rpc"] == "GcOrphans"]
    assert sorted(r["detail"]["label"] for r in recs) == sorted(
        [lost, unrec, nokey])
    a.start()
    b.start()
    assert sign(a, name, 1).version == 1 and sign(b, name, 2).version == 2
