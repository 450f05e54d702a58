"""Splits the peak heap of a valgrind --tool=massif run of kmsd by owner.

    python3 bench/massif.py MASSIF_OUT

Each allocation path in massif's peak snapshot is charged to the first frame,
going outward from malloc, that belongs to an owner: SoftHSM2 (a frame in
libsofthsm2.so), kmsd's own source (kms/*.c, per file and function), gRPC
(libgrpc) or OpenSSL (libssl/libcrypto called by none of these).  Frames of
libc, libstdc++, jansson and the allocation functions belong to whoever
called them.  Prints one JSON object: bytes per owner, and kmsd's own
bytes per function.
"""

import glob
import json
import os
import re
import sys

FRAME = re.compile(r"^( *)n(\d+): (\d+) (.*)$")


KMS_SOURCES = {os.path.basename(p) for p in glob.glob(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kms",
                 "*.c"))}


def owner(label):
    """The owner a frame names, or None for a frame that owns nothing."""
    # SoftHSM2 is the only C++ here with line information (when built
    # from source); Debian's module has none, only its file name.
    if "libsofthsm2" in label or re.search(r"\.(cpp|h):\d+\)$", label):
        return "SoftHSM2"
    m = re.search(r": (\w+) \((\w+\.c):\d+\)$", label)
    if m and m.group(2) in KMS_SOURCES:
        return "kmsd %s %s" % (m.group(2), m.group(1))
    if "libgrpc" in label or "libgpr" in label or "libupb" in label \
            or "libabsl" in label:
        return "gRPC"
    return None


def parse(path):
    lines = open(path).read().splitlines()
    start = None
    for i, line in enumerate(lines):
        if line == "heap_tree=peak":
            start = i + 1
    if start is None:
        # No peak marked (a short run): the last detailed snapshot.
        for i, line in enumerate(lines):
            if line == "heap_tree=detailed":
                start = i + 1
    if start is None:
        raise SystemExit("massif.py: no detailed snapshot in %s" % path)
    snap = {}
    j = start - 1
    while j > 0 and not lines[j].startswith("snapshot="):
        k, _, v = lines[j].partition("=")
        snap[k] = v
        j -= 1
    nodes = []
    for line in lines[start:]:
        m = FRAME.match(line)
        if not m:
            break
        nodes.append((len(m.group(1)), int(m.group(2)), int(m.group(3)),
                      m.group(4)))
    return snap, nodes


def charge(nodes):
    """Bytes per owner, walking the tree with the owner found so far."""
    totals = {}
    stack = []      # (depth, owner)
    for i, (depth, nchild, size, label) in enumerate(nodes):
        while stack and stack[-1][0] >= depth:
            stack.pop()
        inherited = stack[-1][1] if stack else None
        own = inherited or (owner(label) if depth > 0 else None)
        stack.append((depth, own))
        if nchild == 0 and depth > 0:
            key = own or ("below threshold" if "below massif" in label
                          else "other libraries")
            totals[key] = totals.get(key, 0) + size
    return totals


def main():
    snap, nodes = parse(sys.argv[1])
    totals = charge(nodes)
    out = {"heap_bytes": int(snap.get("mem_heap_B", 0)),
           "heap_extra_bytes": int(snap.get("mem_heap_extra_B", 0)),
           "owners": {}, "kmsd_functions": {}}
    for k, v in sorted(totals.items(), key=lambda kv: -kv[1]):
        if k.startswith("kmsd "):
            out["kmsd_functions"][k[5:]] = v
            out["owners"]["kmsd"] = out["owners"].get("kmsd", 0) + v
        else:
            out["owners"][k] = out["owners"].get(k, 0) + v
    print(json.dumps(out))


main()
