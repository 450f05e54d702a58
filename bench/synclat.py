"""How long one durable append of an audit batch takes on the file system
of DIR, three ways (the group commit of kms/audit.c waits for this once
per batch, so at a given number of calls in flight it bounds kmsd's rate):

  append     write(2) at the end of an O_APPEND file, then fdatasync: the
             file grows at every sync (what kmsd does), so the sync also
             commits the size change to the file system's journal;
  prealloc   pwrite(2) into a segment written with zeros and synced
             beforehand, then fdatasync: no size or extent change, so only
             the data and the device's cache flush;
  range      the same, then sync_file_range(WAIT_BEFORE | WRITE |
             WAIT_AFTER): no journal and no cache flush, so NOT durable
             across a power loss (shown for scale only).

  synclat.py DIR [COUNT] [BYTES]

Prints one JSON object: per way, the median, p99 and mean microseconds of
COUNT (default 300) syncs of BYTES (default 1200, a batch of about four
Sign records).  The files are made in DIR and removed."""

import ctypes
import json
import os
import sys
import time

d = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 300
size = int(sys.argv[3]) if len(sys.argv) > 3 else 1200
rec = b"x" * (size - 1) + b"\n"
libc = ctypes.CDLL(None, use_errno=True)
SFR = 1 | 2 | 4         # SYNC_FILE_RANGE_WAIT_BEFORE | WRITE | WAIT_AFTER


def stats(us):
    us = sorted(us)
    return {"p50_us": round(us[len(us) // 2], 1),
            "p99_us": round(us[min(len(us) - 1, int(len(us) * 0.99))], 1),
            "mean_us": round(sum(us) / len(us), 1)}


def run(way):
    path = os.path.join(d, "synclat-%d-%s" % (os.getpid(), way))
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if way == "append":
        flags |= os.O_APPEND
    fd = os.open(path, flags, 0o600)
    try:
        if way != "append":
            zero = b"\0" * (1 << 20)
            for _ in range((count * size) // len(zero) + 1):
                os.write(fd, zero)
            os.fsync(fd)
        us = []
        for i in range(count):
            t = time.perf_counter()
            if way == "append":
                os.write(fd, rec)
            else:
                os.pwrite(fd, rec, i * size)
            if way == "range":
                if libc.sync_file_range(fd, ctypes.c_longlong(i * size),
                                        ctypes.c_longlong(size), SFR) != 0:
                    raise OSError(ctypes.get_errno(), "sync_file_range")
            else:
                os.fdatasync(fd)
            us.append((time.perf_counter() - t) * 1e6)
        return stats(us)
    finally:
        os.close(fd)
        os.unlink(path)


res = {"dir": d, "count": count, "bytes": size,
       "load1": float(open("/proc/loadavg").read().split()[0])}
for way in ("append", "prealloc", "range"):
    res[way] = run(way)
print(json.dumps(res))
