"""Secrets do not linger: after 1,000 Wraps of a marker plaintext, kmsd's
memory (read through /proc/PID/mem, with the test's own ptrace permission)
holds the marker at most WIPE_BOUND times.  kmsd wipes every buffer of its
own that held a plaintext (the request as gRPC handed it over, the decoded
message, the TLS front's buffers); what may remain is in buffers of gRPC
and OpenSSL that kmsd cannot reach: the HTTP/2 transport's last read
slices and the TLS record buffer of the connection, overwritten by the
next call, so the count does not grow with the number of calls."""

import os

import pytest

from conftest import Kmsd, make_home, pb

CALLS = 1000
# A bounded handful, whatever the number of calls (see above); seen: 0
# after the Wraps, 1 after the Unwraps.
WIPE_BOUND = 4


def count_in_memory(pid, needle):
    """Occurrences of needle in the readable mappings of pid, read in
    chunks (ASan's shadow mappings span terabytes: skipped)."""
    hits, chunk = 0, 1 << 20
    with open("/proc/%d/maps" % pid) as maps:
        regions = [l.split() for l in maps]
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        for r in regions:
            if not r[1].startswith("r"):
                continue
            if len(r) >= 6 and r[5].startswith("[v"):
                continue
            start, end = (int(x, 16) for x in r[0].split("-"))
            if end - start > (4 << 30):
                continue
            tail = b""
            for off in range(start, end, chunk):
                try:
                    mem.seek(off)
                    data = mem.read(min(chunk, end - off))
                except OSError:
                    break
                buf = tail + data
                hits += buf.count(needle)
                # The last len(needle) - 1 bytes hold no whole match; kept,
                # a match across the chunk boundary is found in the next.
                tail = buf[-(len(needle) - 1):]
    return hits


@pytest.fixture(scope="module")
def wk(tmp_root):
    k = Kmsd(make_home(tmp_root, "wipe-home"), tmp_root / "wipe-work")
    (tmp_root / "wipe-work").mkdir(exist_ok=True)
    # ASan's quarantine keeps freed blocks from reuse, which would keep
    # old buffers of gRPC alive far longer than the allocator does.
    env = k.env()
    env["ASAN_OPTIONS"] += ":quarantine_size_mb=0"
    k.env = lambda: env
    k.start()
    k.client("officer").kms.CreateKey(pb.CreateKeyRequest(
        name="release/wipe/kek", algorithm=pb.AES_256_KWP), timeout=60)
    yield k
    k.stop_clean()


def test_wrap_plaintexts_are_wiped(wk):
    marker = b"KMS-WIPE-MARKER-" + os.urandom(16).hex().encode()
    assert count_in_memory(wk.proc.pid, marker) == 0
    kms = wk.client("ci").kms
    for _ in range(CALLS):
        kms.Wrap(pb.WrapRequest(name="release/wipe/kek", plaintext=marker),
                 timeout=30)
    n = count_in_memory(wk.proc.pid, marker)
    print("marker found %d times after %d Wraps" % (n, CALLS))
    assert n <= WIPE_BOUND


def test_unwrap_plaintexts_are_wiped(wk):
    marker = b"KMS-WIPE-UNWRAP-" + os.urandom(16).hex().encode()
    kms = wk.client("ci").kms
    wrapped = kms.Wrap(pb.WrapRequest(name="release/wipe/kek",
                                      plaintext=marker), timeout=30).wrapped
    un = wk.client("unwrapper").kms
    for _ in range(CALLS):
        assert un.Unwrap(pb.UnwrapRequest(name="release/wipe/kek",
                                          wrapped=wrapped),
                         timeout=30).plaintext == marker
    n = count_in_memory(wk.proc.pid, marker)
    print("marker found %d times after %d Unwraps" % (n, CALLS))
    assert n <= WIPE_BOUND
