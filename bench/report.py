"""Turns the parts measured by bench/run.sh into bench/results/results.json,
a printed table with the targets, and bench/results/summary.md (the section
of docs/performance.md between its markers).  kmsd against the floor goes
to bench/results/floor.json, floor.png, its own section of
docs/performance.md and the README's rows; a BENCH_ONLY=floor run measured
only that, and regenerates only that.  The PKCS#11 module against kmsload
goes to bench/results/pkcs11.json and its own section of
docs/performance.md (BENCH_ONLY=pkcs11: only that).  The audit log v2
against the log before it goes to bench/results/auditv2.json and its own
section of docs/performance.md (BENCH_ONLY=auditv2: only that)."""

import json
import os
import re
import sys

parts_path, out, machine, workers, seconds, batching = sys.argv[1:7]
r = {}
for line in open(parts_path):
    p = json.loads(line)
    r[p["name"]] = p["result"]
topdir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


def regenerate(path, begin, end, lines):
    try:
        text = open(path).read()
        a = text.index(begin)
        b = text.index(end)
        text = text[:a] + begin + "\n" + "\n".join(lines) + text[b:]
        open(path, "w").write(text)
        print("%s: regenerated" % os.path.relpath(path, topdir))
    except (OSError, ValueError):
        print("%s has no bench markers: not updated" %
              os.path.relpath(path, topdir))


def plot(items, title, png):
    """A bar chart of throughput and p99 per (label, result) in items."""
    import shutil
    import subprocess

    dat = png[:-len(".png")] + ".dat"
    with open(dat, "w") as f:
        for label, x in items:
            f.write('"%s" %.1f %s\n' % (label, x["ops_per_s"],
                                        "%.3f" % x["p99_ms"] if "p99_ms"
                                        in x else "NaN"))
    if not shutil.which("gnuplot"):
        print("gnuplot is not installed: no plot")
        return
    script = """
set terminal pngcairo size 1300,950 font ",10" noenhanced
set output "%(png)s"
set multiplot layout 2,1 title "%(title)s"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.8
set xtics rotate by -30 left
set grid ytics
set bmargin 9
set rmargin 14
set ylabel "operations / s"
plot "%(dat)s" using 2:xtic(1) title "throughput" lc rgb "#3366aa"
set ylabel "p99 latency, ms"
plot "%(dat)s" using 3:xtic(1) title "p99" lc rgb "#aa5533"
unset multiplot
""" % {"png": png, "title": title, "dat": dat}
    p = subprocess.run(["gnuplot"], input=script.encode(),
                       capture_output=True)
    if p.returncode == 0:
        print("plot: %s" % png)
    else:
        print("plot failed: %s" % p.stderr.decode(errors="replace"))


# kmsd against the floor (bench/floor.c): both loaded in turn, ROUNDS
# times at 16 and 64 in flight; each figure is the median of the rounds,
# each ratio the ratio of the medians (with the range of the rounds'
# own ratios, floor and kmsd of a round being measured back to back).
def floor_comparison():
    pat = re.compile(r"^cmp-(floor|kmsd)-(\d+)-(\d+)$")
    runs = {}
    for k, x in r.items():
        m = pat.match(k)
        if m:
            runs.setdefault((m.group(1), int(m.group(2))), {})[
                int(m.group(3))] = x
    if not runs:
        return None
    rounds = sorted(runs[("floor", 16)])
    med = {}
    for key, byround in runs.items():
        xs = list(byround.values())
        med[key] = {f: median([x.get(f, float("nan")) for x in xs])
                    for f in ("ops_per_s", "p50_ms", "p99_ms",
                              "server_cpu_us_per_op", "cpu_us_per_op",
                              "server_vcs_per_op", "server_ivcs_per_op")}
        med[key]["min_ops_per_s"] = min(x["ops_per_s"] for x in xs)
        med[key]["max_ops_per_s"] = max(x["ops_per_s"] for x in xs)
        med[key]["errors"] = sum(x.get("errors", 0) for x in xs)

    def per_round(n, f):
        return [runs[("kmsd", n)][i][f] / runs[("floor", n)][i][f]
                for i in rounds]

    targets = [
        ("kmsd Sign rate at 16 in flight >= 0.90x the floor's",
         med[("kmsd", 16)]["ops_per_s"] / med[("floor", 16)]["ops_per_s"],
         per_round(16, "ops_per_s"), 0.90, ">="),
        ("kmsd p99 at 64 in flight <= 1.25x the floor's",
         med[("kmsd", 64)]["p99_ms"] / med[("floor", 64)]["p99_ms"],
         per_round(64, "p99_ms"), 1.25, "<="),
        ("kmsd CPU per call at 16 in flight <= 1.15x the floor's",
         med[("kmsd", 16)]["server_cpu_us_per_op"] /
         med[("floor", 16)]["server_cpu_us_per_op"],
         per_round(16, "server_cpu_us_per_op"), 1.15, "<="),
    ]
    table = ["| server | in flight | calls/s (rounds' range) | p50 ms | "
             "p99 ms | server CPU µs/call | load generator CPU µs/call | "
             "server context switches/call |",
             "|---|---|---|---|---|---|---|---|"]
    for n in (16, 64):
        for who in ("floor", "kmsd"):
            x = med[(who, n)]
            table.append("| %s | %d | %.0f (%.0f–%.0f) | %.2f | %.2f | "
                         "%.0f | %.0f | %.2f + %.2f |" % (
                             who, n, x["ops_per_s"], x["min_ops_per_s"],
                             x["max_ops_per_s"], x["p50_ms"], x["p99_ms"],
                             x["server_cpu_us_per_op"],
                             x["cpu_us_per_op"], x["server_vcs_per_op"],
                             x["server_ivcs_per_op"]))
    tl = ["| target | kmsd / floor | per round | verdict |",
          "|---|---|---|---|"]
    for name, val, pr, goal, op in targets:
        ok = val >= goal if op == ">=" else val <= goal
        tl.append("| %s | %.2f | %.2f–%.2f | %s |" % (
            name, val, min(pr), max(pr), "holds" if ok else "MISSED"))
    before = r.get("cmp-load-before", {}).get("load1")
    after = r.get("cmp-load-after", {}).get("load1")
    errors = sum(x["errors"] for x in med.values())
    quick = "pkcs11tool-ecdsa" not in r
    md = ["Measured by `%smake bench` on %s: the floor (`bench/floor.c`) "
          "and kmsd (audit log durable) on the same configuration (%s "
          "workers, the same certificates, CA, token and P-256 key), both "
          "running, loaded in turn (floor, kmsd, floor, kmsd, ...) by the "
          "same `bench/kmsload.c` (mTLS, 2 client threads, closed loop); "
          "%d rounds of %s s at each load, each after a run of %s s that "
          "is not counted. Each figure is the median of the rounds; a "
          "ratio is kmsd's median over the floor's, and its range the "
          "rounds' own ratios. Server CPU is the process's CPU time (every "
          "thread, from /proc) per call; its context switches are every "
          "thread's, voluntary (it waited) + involuntary. %s" % (
              "BENCH_ONLY=floor " if quick else "", machine, workers,
              len(rounds), seconds, os.environ.get("BENCH_WARMUP", "1"),
              "Failed calls: %d." % errors if errors else
              "No call failed."), ""]
    if before is not None:
        shared = before > 1.5 or (after is not None and after > 3.5)
        md += ["Machine load (1-minute average) before the runs %.2f, "
               "after %.2f (the runs themselves keep about 2 busy). %s" % (
                   before, after if after is not None else float("nan"),
                   "**The machine was shared with other work during this "
                   "run**: absolute rates are lower and noisier than on an "
                   "idle machine; the ratios compare runs taken back to "
                   "back." if shared else "The machine was otherwise "
                   "idle."), ""]
    md += [*table, "", *tl, ""]
    sl = r.get("cmp-synclat")
    if sl:
        md += ["One durable append of %d bytes on the audit log's file "
               "system (`bench/synclat.py`, %d each, load %.1f), p50 / p99 "
               "µs: appended and fdatasync'd (as kmsd does) %.0f / %.0f; "
               "into a preallocated, zero-filled segment and fdatasync'd "
               "%.0f / %.0f; sync_file_range instead, which does not flush "
               "the device's cache and so is not durable, %.0f / %.0f. A "
               "Sign's reply waits for one such sync (its batch's), often "
               "two." % (
                   sl["bytes"], sl["count"], sl["load1"],
                   sl["append"]["p50_us"], sl["append"]["p99_us"],
                   sl["prealloc"]["p50_us"], sl["prealloc"]["p99_us"],
                   sl["range"]["p50_us"], sl["range"]["p99_us"]), ""]
    if os.path.exists(out + "/profile-16.md"):
        md += ["Where the CPU per call goes, both profiled at 16 in flight "
               "in runs of their own (`bench/profdiff.py`; raw profiles in "
               "`bench/results/profile-floor-16.txt` and "
               "`profile-kmsd-16.txt`):", "",
               *open(out + "/profile-16.md").read().splitlines(), ""]
    res = {"machine": machine, "rounds": len(rounds), "synclat": sl,
           "seconds_per_run": int(seconds), "load_before": before,
           "load_after": after,
           "medians": {"%s-%d" % k: v for k, v in med.items()},
           "targets": [{"target": n, "measured": round(v, 3),
                        "per_round": [round(u, 3) for u in pr],
                        "goal": g,
                        "holds": (v >= g if o == ">=" else v <= g)}
                       for n, v, pr, g, o in targets]}
    items = [("%s %d in flight" % (who, n), med[(who, n)])
             for n in (16, 64) for who in ("floor", "kmsd")]
    short = ["kmsd against the floor (a bare gRPC + PKCS#11 server with "
             "kmsd's mTLS, workers and token, `bench/floor.c`): `%smake "
             "bench` on %s, medians of %d rounds of %s s%s; regenerated by "
             "`bench/report.py`:" % (
                 "BENCH_ONLY=floor " if quick else "", machine, len(rounds),
                 seconds, "; the machine was shared with other work (load "
                 "%.1f)" % before if before is not None and before > 1.5
                 else ""), "",
             "| measure | floor | kmsd | kmsd / floor | target | verdict |",
             "|---|---|---|---|---|---|"]
    shown = (("calls/s at 16 in flight", 16, "ops_per_s", "%.0f"),
             ("p99 ms at 64 in flight", 64, "p99_ms", "%.2f"),
             ("CPU µs/call at 16 in flight", 16, "server_cpu_us_per_op",
              "%.0f"))
    for (label, n, f, fmt), (name, val, pr, goal, op) in zip(shown,
                                                            targets):
        ok = val >= goal if op == ">=" else val <= goal
        short.append("| %s | %s | %s | %.2f | %s %.2f | %s |" % (
            label, fmt % med[("floor", n)][f], fmt % med[("kmsd", n)][f],
            val, "≥" if op == ">=" else "≤", goal,
            "holds" if ok else "MISSED"))
    short.append("")
    return md, res, items, short


cmp = floor_comparison()
if cmp is not None:
    cmp_md, cmp_res, cmp_items, cmp_short = cmp
    json.dump(cmp_res, open(out + "/floor.json", "w"), indent=2)
    print("\n".join(cmp_md))
    print("results: %s/floor.json" % out)
    plot(cmp_items, "kmsd against the floor: %s" % machine,
         out + "/floor.png")
    regenerate(os.path.join(topdir, "docs", "performance.md"),
               "<!-- bench:floor:begin -->", "<!-- bench:floor:end -->",
               cmp_md)
    # The README shows this comparison (every other table is in
    # docs/performance.md).
    regenerate(os.path.join(topdir, "README.md"),
               "<!-- bench:readme:begin -->", "<!-- bench:readme:end -->",
               cmp_short)


def auditv2_comparison():
    """Sign at 16 in flight with the audit log v2 and without (v2 = no):
    the median of the rounds, against the 5% target, with each round's own
    ratio (the two runs of a round are back to back) beside it."""
    pat = re.compile(r"^auditv2-(v1|v2)-16-(\d+)$")
    runs = {"v1": {}, "v2": {}}
    for k, x in r.items():
        m = pat.match(k)
        if m:
            runs[m.group(1)][int(m.group(2))] = x
    if not runs["v1"] or not runs["v2"]:
        return None
    med = {m: {f: median([x.get(f, float("nan")) for x in xs.values()])
               for f in ("ops_per_s", "p50_ms", "p99_ms",
                         "kmsd_cpu_us_per_op")}
           for m, xs in runs.items()}
    ratio = med["v2"]["ops_per_s"] / med["v1"]["ops_per_s"]
    cpu = med["v2"]["kmsd_cpu_us_per_op"] / med["v1"]["kmsd_cpu_us_per_op"]
    rounds = sorted(set(runs["v1"]) & set(runs["v2"]))
    per = [runs["v2"][i]["ops_per_s"] / runs["v1"][i]["ops_per_s"]
           for i in rounds]
    ok = ratio >= 0.95
    load = [r.get("auditv2-load-before", {}).get("load1"),
            r.get("auditv2-load-after", {}).get("load1")]
    md = ["Measured by `%smake bench` on %s: %d workers, Sign P-256 at 16 "
          "in flight (2 client threads), %s s per run after a %s s warm-up, "
          "%d rounds, the two kmsd one at a time on the same token and key, "
          "alternately (the order swapped every round); medians. v1 is "
          "`[audit] v2 = no`: the hash chain and signed checkpoints without "
          "the Merkle tree, the batch seals and the HSM anchor (a chain of "
          "its own). Load average %s before, %s after." % (
              "BENCH_ONLY=auditv2 " if "pkcs11tool-ecdsa" not in r else "",
              machine, int(workers), seconds,
              os.environ.get("BENCH_WARMUP", "1"), len(rounds),
              load[0], load[1]), "",
          "| audit log | Sign/s | p50 ms | p99 ms | kmsd CPU µs/op | "
          "runs (Sign/s) |", "|---|---|---|---|---|---|"]
    for m, label in (("v1", "before v2 (v2 = no)"), ("v2", "v2 (as shipped)")):
        x = med[m]
        md.append("| %s | %.0f | %.2f | %.2f | %.0f | %s |" % (
            label, x["ops_per_s"], x["p50_ms"], x["p99_ms"],
            x["kmsd_cpu_us_per_op"],
            ", ".join("%.0f" % runs[m][i]["ops_per_s"] for i in rounds)))
    md += ["", "Target: v2 costs at most 5%% of Sign throughput at 16 in "
           "flight: v2 / v1 = %.3f (>= 0.95): **%s**. Each round's own "
           "ratio: %s (median %.3f); kmsd CPU per Sign v2 / v1 = %.3f." % (
               ratio, "holds" if ok else "MISSED",
               ", ".join("%.2f" % x for x in per), median(per), cpu), ""]
    if load[0] is not None and max(load[0], load[1] or 0) > 1.5:
        md += ["**The machine was shared with other work during this run** "
               "(load %s to %s on %s): the rates and their ratio move by "
               "tens of per cent from run to run; the verdict needs a quiet "
               "machine." % (load[0], load[1], machine.split(",")[0]), ""]
    res = {"v1": med["v1"], "v2": med["v2"], "ratio": ratio,
           "round_ratios": per, "cpu_ratio": cpu, "holds": ok,
           "rounds": len(rounds), "load_before": load[0],
           "load_after": load[1]}
    return md, res


av2 = auditv2_comparison()
if av2 is not None:
    json.dump(av2[1], open(out + "/auditv2.json", "w"), indent=2)
    print("\n".join(av2[0]))
    regenerate(os.path.join(topdir, "docs", "performance.md"),
               "<!-- bench:auditv2:begin -->", "<!-- bench:auditv2:end -->",
               av2[0])
# The PKCS#11 module against kmsload: C_Sign from 16 threads through the
# module, and kmsload at 16 in flight, on the same key, one run each.
def pkcs11_comparison():
    mod, gen = r.get("pkcs11-module-16"), r.get("pkcs11-kmsload-16")
    if mod is None or gen is None:
        return None
    ratio = mod["ops_per_s"] / gen["ops_per_s"] if gen["ops_per_s"] else 0
    ok = ratio >= 0.8
    load1 = r.get("pkcs11-load-before", {}).get("load1")
    quick = "pkcs11tool-ecdsa" not in r
    md = ["Measured by `%smake bench` on %s (kmsd: %s workers, audit log "
          "durable; %s s each, one run, back to back; machine load before "
          "%s): `C_Sign` (CKM_ECDSA, 32-byte digest) through "
          "`build/libkms-pkcs11.so` from 16 threads, one session each "
          "(`tests/p11drive.c`), against `bench/kmsload.c` with 16 calls "
          "in flight (2 threads), the same P-256 key and client identity. "
          "%s" % ("BENCH_ONLY=pkcs11 " if quick else "", machine, workers,
                  seconds, "%.2f" % load1 if load1 is not None else "?",
                  "Failed calls: %d." % (mod["errors"] + gen.get("errors", 0))
                  if mod["errors"] + gen.get("errors", 0) else
                  "No call failed."), "",
          "| client | signatures/s | client CPU µs/call | kmsd CPU µs/call |",
          "|---|---|---|---|",
          "| module, 16 threads | %.0f | %.0f | %.0f |" % (
              mod["ops_per_s"], mod.get("cpu_us_per_op", float("nan")),
              mod.get("kmsd_cpu_us_per_op", float("nan"))),
          "| kmsload, 16 in flight | %.0f | %.0f | %.0f |" % (
              gen["ops_per_s"], gen.get("cpu_us_per_op", float("nan")),
              gen.get("kmsd_cpu_us_per_op", float("nan"))), "",
          "Client CPU is the client process's user + system time (every "
          "thread) per signature; kmsd's from /proc. Both clients and kmsd "
          "share the machine's cores, so a client that spends more CPU "
          "per call leaves less to kmsd.", "",
          "| target | module / kmsload | verdict |", "|---|---|---|",
          "| module C_Sign rate >= 0.8x the load generator's | %.2f | %s |"
          % (ratio, "holds" if ok else "MISSED"), ""]
    if load1 is not None and load1 > 1.5:
        md += ["**The machine was shared with other work during this run** "
               "(load %.1f on %s): absolute rates are lower and noisier "
               "than on an idle machine; the ratio compares two runs taken "
               "back to back." % (load1, machine.split(",")[0]), ""]
    res = {"machine": machine, "seconds_per_run": int(seconds),
           "load_before": load1, "module": mod, "kmsload": gen,
           "target": {"goal": 0.8, "measured": round(ratio, 3),
                      "holds": ok}}
    return md, res


p11 = pkcs11_comparison()
if p11 is not None:
    p11_md, p11_res = p11
    json.dump(p11_res, open(out + "/pkcs11.json", "w"), indent=2)
    print("\n".join(p11_md))
    print("results: %s/pkcs11.json" % out)
    regenerate(os.path.join(topdir, "docs", "performance.md"),
               "<!-- bench:pkcs11:begin -->", "<!-- bench:pkcs11:end -->",
               p11_md)
if "pkcs11tool-ecdsa" not in r:
    sys.exit(0)		# BENCH_ONLY=floor, pkcs11 or auditv2

t = r["pkcs11tool-ecdsa"]
t["seconds"] = t["ns"] / 1e9
t["ops_per_s"] = t["ops"] / t["seconds"] if t["seconds"] else 0.0

rows = [
    ("raw C_Sign P-256, 1 thread", "raw-ecdsa-1"),
    ("raw C_Sign P-256, 2 threads", "raw-ecdsa-2"),
    ("raw C_Sign Ed25519, 1 thread", "raw-eddsa-1"),
    ("raw C_Sign RSA-2048, 1 thread", "raw-rsa-1"),
    ("kms Sign P-256, 1 in flight", "kms-ecdsa-1"),
    ("kms Sign P-256, 16 in flight", "kms-ecdsa-16"),
    ("kms Sign P-256, 64 in flight", "kms-ecdsa-64"),
    ("kms Sign P-256, 16 in flight, audit not synced", "kms-ecdsa-16-nosync"),
    ("kms Sign Ed25519, 1 in flight", "kms-eddsa-1"),
    ("kms Sign Ed25519, 16 in flight", "kms-eddsa-16"),
    ("kms Sign Ed25519, 64 in flight", "kms-eddsa-64"),
    ("kms Sign RSA-2048, 1 in flight", "kms-rsa-1"),
    ("kms Sign RSA-2048, 16 in flight", "kms-rsa-16"),
    ("kms Sign RSA-2048, 64 in flight", "kms-rsa-64"),
    ("kms Wrap 32 B (AES-256 KWP), 16 in flight", "kms-wrap-16"),
    ("kms Unwrap 32 B, 16 in flight", "kms-unwrap-16"),
    ("kms GenerateDataKey 32 B, 16 in flight", "kms-datakey-16"),
    ("p11-kit remote PKCS#11 P-256, 1 thread", "p11kit-ecdsa-1"),
    ("p11-kit remote PKCS#11 P-256, 2 threads", "p11kit-ecdsa-2"),
    ("pkcs11-tool per process P-256", "pkcs11tool-ecdsa"),
]


def cell(x, key, fmt):
    return fmt % x[key] if key in x else "-"


table = ["| setup | ops/s | p50 ms | p99 ms | p99.9 ms | CPU µs/op "
         "| load generator CPU µs/op | cores busy |",
         "|---|---|---|---|---|---|---|---|"]
for label, k in rows:
    x = r[k]
    # kms rows: kmsd's CPU, and the load generator's (kmsload) beside it;
    # the other rows measure their own process.
    if k.startswith("kms-"):
        cpu, gen = x.get("kmsd_cpu_us_per_op"), x.get("cpu_us_per_op")
    else:
        cpu, gen = x.get("cpu_us_per_op"), None
    busy = None
    if cpu is not None:
        busy = (cpu + (gen or 0)) * x["ops_per_s"] / 1e6
    table.append("| %s | %.0f | %s | %s | %s | %s | %s | %s |" % (
        label, x["ops_per_s"], cell(x, "p50_ms", "%.2f"),
        cell(x, "p99_ms", "%.2f"), cell(x, "p999_ms", "%.2f"),
        "-" if cpu is None else "%.0f" % cpu,
        "-" if gen is None else "%.0f" % gen,
        "-" if busy is None else "%.2f" % busy))

raw1 = r["raw-ecdsa-1"]
k16 = r["kms-ecdsa-16"]
k64 = r["kms-ecdsa-64"]
p11 = max(r["p11kit-ecdsa-1"]["ops_per_s"], r["p11kit-ecdsa-2"]["ops_per_s"])
targets = [
    ("kms P-256 Sign at 16 in flight, audit durable >= 0.9x raw "
     "single-thread C_Sign", k16["ops_per_s"] / raw1["ops_per_s"], 0.9,
     ">="),
    ("kmsd CPU per Sign <= 1.3x raw C_Sign CPU",
     k16["kmsd_cpu_us_per_op"] / raw1["cpu_us_per_op"], 1.3, "<="),
    ("p99 <= 5 ms at 64 in flight (ms)", k64["p99_ms"], 5.0, "<="),
    (">= 3x p11-kit remote PKCS#11, same key type",
     k16["ops_per_s"] / p11, 3.0, ">="),
    ("audit durable within 10% of not synced (ratio)",
     k16["ops_per_s"] / r["kms-ecdsa-16-nosync"]["ops_per_s"], 0.9, ">="),
]
if av2 is not None:
    targets.append(("audit log v2 within 5% of the log before it at 16 in "
                    "flight (ratio)", av2[1]["ratio"], 0.95, ">="))
tlines = []
for name, val, goal, op in targets:
    ok = val >= goal if op == ">=" else val <= goal
    tlines.append("| %s | %.2f | %s |" % (name, val,
                                           "holds" if ok else "MISSED"))

# Many keys: per back-end and step, the fill, kmsd's start-up (the median
# of the starts by time to Health) and the Sign rate on that token.
def median_run(x):
    runs = sorted(x["runs"], key=lambda u: u["up_s"])
    return runs[len(runs) // 2]


def steps_of(backend):
    pat = re.compile(r"^startup-%s-(\d+)$" % re.escape(backend))
    return sorted(int(m.group(1)) for m in map(pat.match, r) if m)


many = ["| back-end | keys | fill keys/s | start to log line s | "
        "start to Health s | VmRSS MiB | VmHWM MiB | Sign P-256 16 in "
        "flight ops/s |", "|---|---|---|---|---|---|---|---|"]
earlier = set()
labels = {"file": "file (Debian's module)",
          "db": "db (SQLite, indexed)",
          "db-noindex": "db, no index (as SoftHSM2 makes it)",
          "file-built": "file (the db-capable build)"}
for b in ("file", "db", "db-noindex", "file-built"):
    for n in steps_of(b):
        if "timeout_s" in r["startup-%s-%d" % (b, n)]:
            many.append("| %s | %d | - | > %d | > %d | - | - | - |" % (
                labels[b], n, r["startup-%s-%d" % (b, n)]["timeout_s"],
                r["startup-%s-%d" % (b, n)]["timeout_s"]))
            continue
        st = median_run(r["startup-%s-%d" % (b, n)])
        fill = r.get("fill-%s-%d" % (b, n), {})
        if "earlier" in fill:
            # Filled by an earlier run on the same token (its fill.log).
            earlier.add(fill["earlier"])
            fill = dict(fill["fill"], keys_per_s_note="*")
        sign = r.get("kms-ecdsa-16-%s-%d" % (b, n))
        many.append("| %s | %d | %s | %.2f | %.2f | %.1f | %.1f | %s |" % (
            labels[b], r["startup-%s-%d" % (b, n)]["keys"],
            "%.1f%s" % (fill["keys_per_s"], fill.get("keys_per_s_note", ""))
            if fill.get("made") else "-",
            st["log_s"], st["up_s"], st["rss_kib"] / 1024.0,
            st["hwm_kib"] / 1024.0,
            "%.0f" % sign["ops_per_s"] if sign else "-"))

checks = ["| back-end | create/destroy seen by the other process | stale "
          "handle | filled key = CreateKey key |", "|---|---|---|---|"]
for b in ("file", "db"):
    v = r.get("visibility-%s" % b)
    if v is None:
        continue
    c = r.get("compare-%s" % b, {})
    checks.append("| %s | %s | %s | %s |" % (
        b, "holds" if v.get("holds") else "FAILS",
        ", ".join(v.get("stale_handle_rv", [])) +
        (" (CKR_OBJECT_HANDLE_INVALID)" if v.get("stale_handle_invalid")
         else " (not CKR_OBJECT_HANDLE_INVALID)"),
        "same attributes and metadata" if c.get("same") else "DIFFERENT"))

heap = ["| back-end | keys | heap at peak MiB | SoftHSM2 | kmsd | gRPC | "
        "rest | kmsd's largest |", "|---|---|---|---|---|---|---|---|"]
for b in ("file", "db"):
    for k in sorted(x for x in r if x.startswith("heap-%s-" % b)):
        h = r[k]
        o = h["owners"]
        mib = lambda v: "%.1f" % (v / 1048576.0)
        rest = sum(v for kk, v in o.items()
                   if kk not in ("SoftHSM2", "kmsd", "gRPC"))
        top = sorted(h["kmsd_functions"].items(), key=lambda kv: -kv[1])[:3]
        heap.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            b, k.rsplit("-", 1)[1], mib(h["heap_bytes"]),
            mib(o.get("SoftHSM2", 0)), mib(o.get("kmsd", 0)),
            mib(o.get("gRPC", 0)), mib(rest),
            "; ".join("%s %s" % (f, mib(v)) for f, v in top) or "-"))

for b, tag in (("file", ""), ("db", " (db back-end)")):
    ns = steps_of(b)
    if not ns:
        if b == "file":
            tlines.append("| 10,000 keys: start <= 2 s, RSS <= 32 MiB | not "
                          "measured by this run | - |")
        continue
    n = ns[-1]
    big = r["startup-%s-%d" % (b, n)]
    st = median_run(big)
    for name, val, goal in (
            ("%d keys: start <= 2 s%s (to Health)" % (big["keys"], tag),
             st["up_s"], 2.0),
            ("%d keys: RSS <= 32 MiB%s (VmRSS, MiB)" % (big["keys"], tag),
             st["rss_kib"] / 1024.0, 32.0)):
        ok = val <= goal and big["keys"] >= 10000
        tlines.append("| %s | %.2f | %s |" % (
            name, val, "holds" if ok else "MISSED" if big["keys"] >= 10000
            else "not at 10,000 keys"))
        targets.append((name, val, goal, "<="))

res = {"machine": machine, "command": "make bench", "workers": int(workers),
       "seconds_per_run": int(seconds), "group_commit": batching,
       "kmsd_peak_rss_kib": max(x.get("kmsd_peak_rss_kib", 0)
                                for x in r.values()),
       "results": r,
       "floor": cmp[1] if cmp is not None else None,
       "targets": [{"target": n, "measured": round(v, 3), "goal": g,
                    "holds": (v >= g if o == ">=" else v <= g)}
                   for n, v, g, o in targets]}
json.dump(res, open(out + "/results.json", "w"), indent=2)

md = ["Measured by `make bench` on %s; kmsd with %s HSM workers on SoftHSM2, "
      "load from `bench/kmsload.c` (mTLS gRPC, 2 client threads, closed "
      "loop), %s s per run. CPU µs/op is kmsd's CPU time per operation "
      "(from /proc) for kms rows and the process's own for the others; "
      "the load generator's is kmsload's own (getrusage); cores busy is "
      "both CPU times per operation times ops/s, out of the machine's "
      "%d. kmsd peak RSS: %d KiB. Group commit: %s." % (
          machine, workers, seconds, os.cpu_count(),
          res["kmsd_peak_rss_kib"], batching),
      "", *table, "", "| target | measured | verdict |", "|---|---|---|",
      *tlines, ""]
# What the machine allows: the CPU both processes need per Sign at the
# rate the first target asks, against what this run used.
if "cpu_us_per_op" in k16:
    goal_rate = 0.9 * raw1["ops_per_s"]
    used = k16["kmsd_cpu_us_per_op"] + k16["cpu_us_per_op"]
    md += ["CPU budget: at %.0f Sign/s (0.9x raw) the %d cores allow %.0f "
           "µs of CPU per call for kmsd and the load generator together; "
           "at 16 in flight this run used %.0f (kmsd %.0f, load generator "
           "%.0f), so that rate needs %.2f cores." % (
               goal_rate, os.cpu_count(), os.cpu_count() * 1e6 / goal_rate,
               used, k16["kmsd_cpu_us_per_op"], k16["cpu_us_per_op"],
               used * goal_rate / 1e6), ""]
if len(many) > 2:
    nruns = max(len(x.get("runs", [])) for k, x in r.items()
                if k.startswith("startup-"))
    md += ["Many keys, per SoftHSM2 object store: tokens filled by "
           "`bench/kmsfill.c` (the fill rate is that step's), start-up the "
           "median of %d starts, Sign on one of the token's keys; "
           "profiles of a start in `bench/results/profile-start-*.txt`."
           % nruns, "", *many, "",
           *(["\\* filled by an earlier run on the same token (%s; "
              "`BENCH_REFILL=1` refills)." % ", ".join(sorted(earlier)), ""]
             if earlier else []),
           *checks, "",
           "Heap at the peak of one start (valgrind massif, "
           "`bench/massif.py`):", "", *heap, ""]
open(out + "/summary.md", "w").write("\n".join(md))
print("\n".join(md))
print("results: %s/results.json" % out)

# The plot: throughput and p99 per setup, from the same numbers.
plot([(label.replace(" PKCS#11", ""), r[k]) for label, k in rows] +
     (cmp[2] if cmp is not None else []),
     "kms bench: %s" % machine, out + "/bench.png")

# docs/performance.md holds this summary between its markers.
regenerate(os.path.join(topdir, "docs", "performance.md"),
           "<!-- bench:begin -->", "<!-- bench:end -->", md)
