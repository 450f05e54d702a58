"""The HSM anchor of an audit chain kept in etcd ([store] backend = etcd):
sealed by the chain's seal key in the HSM, so that someone who can write
etcd and the audit directory, but holds no PIN, cannot cut the log and
write a smaller anchor to match it.  kmsd refuses to start on an anchor
whose MAC is missing or wrong, naming etcd and the anchor; untouched, it
starts; --migrate-store etcd:token does not carry a forged one over."""

import hashlib
import json

from conftest import KMSCTL, KMSD, Kmsd, pb, run
from etcdcluster import PREFIX, make_pair_homes
from test_audit_anchor import AUDIT_CONF, lines_of, refused, rewrite, signs
from tlog import leaf_hash, mth


def anchor_key(chain):
    return PREFIX + "audit/kms-audit!anchor#" + chain


def parse(text):
    return dict(l.split("=", 1) for l in text.split("\n")[1:] if "=" in l)


def test_forged_etcd_anchor_is_refused(etcd_cluster, tmp_path):
    c = etcd_cluster
    home, = make_pair_homes(tmp_path / "kms", c, AUDIT_CONF, tags=("a",))
    k = Kmsd(home, tmp_path / "work")
    k.start()
    try:
        k.key = "anchor/etcd/p256"
        k.client("officer").kms.CreateKey(pb.CreateKeyRequest(
            name=k.key, algorithm=pb.EC_P256_SHA256), timeout=60)
        seqs = signs(k, 40, "before")
        chain = k.client("auditor").kms.ListAuditRecords(
            pb.ListAuditRecordsRequest(limit=1), timeout=30).chain
        chain_dir = home / "audit" / chain
        k.stop_clean()

        # Kept in etcd as its text and the MAC line.
        key = anchor_key(chain)
        genuine = c.get_prefix(PREFIX + "audit/")[key]
        text, mac = genuine.split("mac=")
        assert text.startswith("kms-audit-anchor-v1\nchain=%s\n" % chain)
        assert len(mac) == 65 and mac.endswith("\n"), genuine
        an = parse(text)
        lines = [l for _, l in lines_of(chain_dir)]
        size = int(an["size"])
        # The anchored root is the log's (the forgery below is exact).
        assert mth([leaf_hash(l) for l in lines[:size]]).hex() == an["root"]

        # Untouched: kmsd starts and goes on.
        k.start()
        seqs += signs(k, 3, "again")
        k.stop_clean()
        genuine = c.get_prefix(PREFIX + "audit/")[key]
        text = genuine.split("mac=")[0]

        # The MAC line removed, or the size changed under the old MAC.
        c.etcdctl("put", key, text)
        refused(k, "anchor", "kms-audit!anchor#" + chain, "etcd",
                "forged")
        an = parse(text)
        c.etcdctl("put", key, genuine.replace(
            "size=%s\n" % an["size"], "size=%d\n" % (int(an["size"]) - 8)))
        refused(k, "kms-audit!anchor#" + chain, "etcd", "forged")
        # Put back: kmsd starts again (the refusals were the anchor's).
        c.etcdctl("put", key, genuine)
        k.start()
        k.stop_clean()

        # The log cut back to an earlier checkpoint, which verifies alone,
        # and a plain anchor that matches it exactly.
        lines = [l for _, l in lines_of(chain_dir)]
        cps = [i for i, l in enumerate(lines)
               if json.loads(l)["rpc"] == "Checkpoint"]
        assert len(cps) >= 3
        keep = cps[-3] + 1
        rewrite(chain_dir, keep)
        p = run([KMSCTL, "audit", "verify", chain_dir], check=False)
        assert p.returncode == 0, p.stdout.decode()
        forged = ("kms-audit-anchor-v1\nchain=%s\nbase=%s\nsize=%d\n"
                  "root=%s\n" % (chain, an["base"], keep,
                                 mth([leaf_hash(l) for l in
                                      lines[:keep]]).hex()))
        c.etcdctl("put", key, forged)
        refused(k, "kms-audit!anchor#" + chain, "etcd", "forged")
        # Nor with a MAC line of its own making.
        c.etcdctl("put", key, forged + "mac=" + hashlib.sha256(
            forged.encode()).hexdigest() + "\n")
        refused(k, "kms-audit!anchor#" + chain, "etcd", "forged")

        # The migration to the token does not carry it over.
        p = run([KMSD, "--config", k.config, "--migrate-store",
                 "etcd:token"], check=False, env=k.env(),
                cwd=str(k.workdir), timeout=120)
        out = p.stdout.decode(errors="replace")
        assert p.returncode != 0, out
        assert "kms-audit!anchor#" + chain in out, out
        assert "forged or damaged in etcd, not migrated" in out, out
        assert "1 failed" in out, out

        # The way out (docs/etcd.md): the anchor deleted, the next chain.
        c.etcdctl("del", key)
        refused(k, "holds no audit anchor")
        k.args = ["--audit-new-chain", "forged anchor in etcd"]
        k.start()
        assert len(signs(k, 2, "after")) == 2
        now = k.client("auditor").kms.ListAuditRecords(
            pb.ListAuditRecordsRequest(limit=1), timeout=30).chain
        assert now == chain + "-chain2", now
        k.stop_clean()
        assert "mac=" in c.get_prefix(PREFIX + "audit/")[key]
    finally:
        if k.proc is not None:
            k.stop()
