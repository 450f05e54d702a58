"""WatchAuditRecords: audit records streamed as they become durable, to
Debian's python3-grpcio and to `kmsctl audit list --follow`.

One kmsd of this module's own, with at most 2 watchers and small queues,
so that the limits are reached with a few calls.
"""

import json
import queue
import subprocess
import threading
import time

import grpc
import pytest

from conftest import KMSCTL, Client, Kmsd, grpc_code, make_home, pb
from kms.v1 import kms_pb2_grpc as pb_grpc
from test_audit_anchor import signs
from test_audit_log import records_on_disk as on_disk

CONF = {"audit": {"max_watchers": 2, "watch_queue": 16,
                  "checkpoint_every": 1000, "checkpoint_seconds": 60}}


@pytest.fixture(scope="module")
def wk(tmp_root):
    k = Kmsd(make_home(tmp_root, "watch-home", CONF), tmp_root / "watch-work")
    k.start()
    k.key = "release/watch/p256"
    k.client("officer").kms.CreateKey(
        pb.CreateKeyRequest(name=k.key, algorithm=pb.EC_P256_SHA256),
        timeout=60)
    yield k
    k.stop_clean()


def last_seq(k):
    """The last record on disk, read from the files (no call, no record)."""
    resp = k.client("auditor").kms.ListAuditRecords(
        pb.ListAuditRecordsRequest(limit=1), timeout=30)
    return resp.chain


def records_on_disk(k, chain):
    recs = on_disk(k.home / "audit" / chain)
    return [recs[s] for s in sorted(recs)]


def sign(k, n, tag):
    return signs(k, n, tag)


class Reader:
    """Iterates a stream in a thread, putting each record in a queue."""

    def __init__(self, stream):
        self.stream = stream
        self.q = queue.Queue()
        self.error = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            for rec in self.stream:
                self.q.put(rec)
        except grpc.RpcError as e:
            self.error = e

    def until(self, pred, timeout=30):
        """Records until one satisfies pred; fails after timeout."""
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                rec = self.q.get(timeout=0.2)
            except queue.Empty:
                if self.error is not None:
                    raise AssertionError("stream ended: %r" % self.error)
                continue
            got.append(rec)
            if pred(rec, got):
                return got
        raise AssertionError("not seen in %d s; got %r" %
                             (timeout, [r.seq for r in got]))

    def end(self, timeout=10):
        self.t.join(timeout)
        assert not self.t.is_alive(), "the stream did not end"
        return self.error


def watch(k, identity="auditor", **kw):
    return k.client(identity).kms.WatchAuditRecords(
        pb.WatchAuditRecordsRequest(**kw), timeout=120)


def test_new_records_arrive_as_they_become_durable(wk):
    chain = last_seq(wk)
    start = records_on_disk(wk, chain)[-1]["seq"]
    r = Reader(watch(wk, after_seq=start))
    # The Watch call's own record comes first: it is recorded once.
    first = r.until(lambda rec, got: rec.rpc == "WatchAuditRecords")
    assert first[-1].identity == "auditor" and first[-1].result == "ok"
    seqs = sign(wk, 5, "live")
    got = r.until(lambda rec, got: all(
        s in [g.seq for g in got] for s in seqs))
    for rec in got:
        assert rec.seq > start and rec.chain == chain
        assert json.loads(rec.json)["seq"] == rec.seq
    assert [g.seq for g in got] == sorted(g.seq for g in got)
    r.stream.cancel()
    assert grpc_code_of(r.end()) == grpc.StatusCode.CANCELLED
    watches = [x for x in records_on_disk(wk, chain)
               if x["rpc"] == "WatchAuditRecords" and x["seq"] > start]
    assert len(watches) == 1, watches


def grpc_code_of(err):
    assert err is not None
    return err.code()


def test_history_and_filters(wk):
    seqs = sign(wk, 3, "hist")
    r = Reader(watch(wk, after_seq=seqs[0] - 1, filters=pb.AuditFilters(
        rpc="Sign", identity="ci")))
    got = r.until(lambda rec, got: rec.seq == seqs[-1])
    assert [g.seq for g in got] == seqs
    assert all(g.rpc == "Sign" and g.identity == "ci" for g in got)
    r.stream.cancel()
    r.end()


def test_bad_requests_are_refused(wk):
    with pytest.raises(grpc.RpcError) as e:
        next(iter(watch(wk, filters=pb.AuditFilters(time_from="yesterday"))))
    assert grpc_code(e) == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        next(iter(watch(wk, chain="someone-else")))
    assert grpc_code(e) == grpc.StatusCode.NOT_FOUND


def test_non_auditor_is_denied_and_recorded(wk):
    chain = last_seq(wk)
    with pytest.raises(grpc.RpcError) as e:
        next(iter(watch(wk, identity="ci")))
    assert grpc_code(e) == grpc.StatusCode.PERMISSION_DENIED
    assert "auditor" in e.value.details() or "grant" in e.value.details()
    rec = [x for x in records_on_disk(wk, chain)
           if x["rpc"] == "WatchAuditRecords"][-1]
    assert (rec["identity"], rec["result"]) == ("ci", "denied"), rec


def test_watchers_are_capped_and_cancel_frees_them(wk):
    readers = [Reader(watch(wk)) for _ in range(2)]
    for r in readers:
        r.until(lambda rec, got: True)
    with pytest.raises(grpc.RpcError) as e:
        next(iter(watch(wk)))
    assert grpc_code(e) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_watchers" in e.value.details()
    for r in readers:
        r.stream.cancel()
        r.end()
    # The server lets them go once it sees the cancel.
    deadline = time.monotonic() + 10
    while True:
        try:
            s = watch(wk)
            next(iter(s))
            s.cancel()
            break
        except grpc.RpcError as err:
            assert grpc_code_of(err) == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline, "watchers not released"
            time.sleep(0.2)


def test_a_reader_that_falls_behind_is_cut_off(wk):
    """A stream nobody reads, while records pour in: once the transport's
    flow-control window and the queue of 16 are full, the stream ends with
    RESOURCE_EXHAUSTED naming where to resume, and the signers never wait
    for it."""
    start = records_on_disk(wk, last_seq(wk))[-1]["seq"]
    d = wk.home / "pki" / "clients"
    creds = grpc.ssl_channel_credentials(
        root_certificates=wk.ca.read_bytes(),
        private_key=(d / "auditor.key").read_bytes(),
        certificate_chain=(d / "auditor.pem").read_bytes())
    # The window stays at its first 64 KiB: a reader that does not read
    # stops the transport soon, as one on a slow link would.
    ch = grpc.secure_channel(wk.addr, creds, options=[
        ("grpc.http2.bdp_probe", 0)])
    s = pb_grpc.KeyManagementServiceStub(ch).WatchAuditRecords(
        pb.WatchAuditRecordsRequest(after_seq=start), timeout=120)
    it = iter(s)
    next(it)                    # caught up: its own record
    t0 = time.monotonic()
    for n in range(60):
        sign(wk, 50, "flood-%d" % n)
        if "a watcher ends" in wk.log():
            break
    r = Reader(it)
    err = r.end(timeout=30)
    ch.close()
    assert err is not None and err.code() == \
        grpc.StatusCode.RESOURCE_EXHAUSTED, err
    assert "after_seq" in err.details(), err.details()
    # What arrived before the end has no gap.
    got = []
    while not r.q.empty():
        got.append(r.q.get().seq)
    assert got == list(range(got[0], got[0] + len(got))), got


def test_kmsd_stops_cleanly_with_a_stream_open(tmp_root):
    k = Kmsd(make_home(tmp_root, "watch-stop-home"), tmp_root / "ws-work")
    k.start()
    d = k.home / "pki" / "clients"
    # A client of its own: stop_clean closes the cached ones first.
    c = Client(k.addr, k.ca, d / "auditor.pem", d / "auditor.key")
    try:
        r = Reader(c.kms.WatchAuditRecords(pb.WatchAuditRecordsRequest(),
                                           timeout=120))
        r.until(lambda rec, got: True)
        t0 = time.monotonic()
        k.stop_clean()
        assert time.monotonic() - t0 < 10
        err = r.end()
        assert grpc_code_of(err) == grpc.StatusCode.UNAVAILABLE, err
        assert "stopping" in err.details()
    finally:
        c.close()


def kmsctl_follow(k, *args):
    argv = [str(KMSCTL), "--addr", k.addr, "--as", "auditor", "--json",
            "audit", "list", "--follow"] + list(args)
    return subprocess.Popen(argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=k.env())


def test_kmsctl_follow_adds_one_record_and_shows_new_ones(wk):
    chain = last_seq(wk)
    before = records_on_disk(wk, chain)
    start = before[-1]["seq"]
    p = kmsctl_follow(wk, "--after", str(start))
    try:
        time.sleep(10)
        added = [x for x in records_on_disk(wk, chain)
                 if x["seq"] > start and x["rpc"] != "Checkpoint"]
        assert len(added) <= 1, added
        assert [x["rpc"] for x in added] == ["WatchAuditRecords"], added
        seqs = sign(wk, 4, "follow")
        deadline = time.monotonic() + 20
        lines = []
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(json.loads(line))
            if seqs[-1] in [x["seq"] for x in lines]:
                break
        shown = [x["seq"] for x in lines]
        assert all(s in shown for s in seqs), (shown, seqs)
        assert lines[0]["rpc"] == "WatchAuditRecords"
    finally:
        p.kill()
        p.wait()
    # kmsctl's --limit ends the stream by itself.
    q = wk.kmsctl("--json", "audit", "list", "--follow", "--after",
                  str(start), "--limit", "2", identity="auditor",
                  timeout=30)
    assert len(q.stdout.decode().splitlines()) == 2
