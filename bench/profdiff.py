"""Where kmsd's CPU per call goes, against the floor's: bench/run.sh
profiles both at 16 in flight (perf record --call-graph dwarf, and
perf trace -s for the system calls), and this turns the two profiles into
microseconds of CPU per call, side by side, in OUT/profile-16.md.

  profdiff.py OUT TRACE_SECONDS

reads OUT/perf-floor.data, OUT/perf-kmsd.data, OUT/profile-floor-16.json
and OUT/profile-kmsd-16.json (the kmsload result of the profiled run, with
the server's CPU per call from /proc) and, when present,
OUT/trace-floor.txt and OUT/trace-kmsd.txt (perf trace -s of TRACE_SECONDS
inside a run under load, whose result is OUT/trace-WHO.json).  A sample's
share of a process's samples times that process's CPU per call is its
microseconds per call."""

import json
import re
import subprocess
import sys

out, trace_seconds = sys.argv[1], float(sys.argv[2])
WHO = ("floor", "kmsd")


def perf_report(who, *args):
    p = subprocess.run(["perf", "report", "-i", "%s/perf-%s.data" % (out, who),
                        "--stdio", "-g", "none", "--percent-limit", "0.1",
                        *args], capture_output=True, text=True)
    return p.stdout.splitlines()


def dso_name(d):
    """A DSO's short name; the program (floor or kmsd) is "the program"."""
    d = d.strip("[]")
    if d in WHO:
        return "the program"
    return re.sub(r"\.so[.\d]*$", "", d)


run = {w: json.load(open("%s/profile-%s-16.json" % (out, w))) for w in WHO}
cpu = {w: run[w]["server_cpu_us_per_op"] for w in WHO}


def per_call(who, pct):
    return float(pct) / 100.0 * cpu[who]


# Self time per DSO and per symbol.
self_re = re.compile(r"^\s+([\d.]+)%\s+(\S+)\s+\[[^\]]\]\s+(.+?)\s*$")
dso_re = re.compile(r"^\s+([\d.]+)%\s+(\S+)\s*$")
by_dso = {w: {} for w in WHO}
by_sym = {w: {} for w in WHO}
for w in WHO:
    for line in perf_report(w, "--no-children", "--sort", "dso"):
        m = dso_re.match(line)
        if m:
            by_dso[w][dso_name(m.group(2))] = per_call(w, m.group(1))
    for line in perf_report(w, "--no-children", "--sort", "dso,sym"):
        m = self_re.match(line)
        if m:
            key = "%s\t%s" % (dso_name(m.group(2)), m.group(3))
            by_sym[w][key] = by_sym[w].get(key, 0) + per_call(w, m.group(1))

# Time inside functions, callees included: the program's own, and the
# entry points of the libraries it calls (PKCS#11, gRPC's API, a few
# system calls).
child_re = re.compile(
    r"^\s+([\d.]+)%\s+([\d.]+)%\s+(\S+)\s+\[[^\]]\]\s+(.+?)\s*$")
entry_re = re.compile(r"^(C_\w+|grpc_call_\w+|grpc_completion_queue_next|"
                      r"grpc_byte_buffer\w*|tcp_send|tcp_read\w*|"
                      r"__libc_sendmsg|__libc_recvmsg|fdatasync|"
                      r"__libc_pwrite\w*|pwritev\w*|epoll_wait)$")
inside = {w: {} for w in WHO}
for w in WHO:
    for line in perf_report(w, "--children", "--sort", "dso,sym"):
        m = child_re.match(line)
        if m and (m.group(3) == w or entry_re.match(m.group(4))):
            name = m.group(4).replace(" (inlined)", "")
            inside[w][name] = inside[w].get(name, 0) + per_call(
                w, m.group(1))


md = ["Profiled at 16 in flight, each in a run of its own: the floor at "
      "%.0f calls/s, %.1f µs of CPU per call; kmsd at %.0f calls/s, %.1f "
      "µs (`perf record -F 999 --call-graph dwarf`, %s). µs/call is a "
      "share of the process's samples times its CPU per call." % (
          run["floor"]["ops_per_s"], cpu["floor"], run["kmsd"]["ops_per_s"],
          cpu["kmsd"], "perf trace -s for the system calls"), "",
      "| library (self time) | floor µs/call | kmsd µs/call | kmsd - floor |",
      "|---|---|---|---|"]
dsos = sorted(set(by_dso["floor"]) | set(by_dso["kmsd"]),
              key=lambda d: -(by_dso["kmsd"].get(d, 0) -
                              by_dso["floor"].get(d, 0)))
for d in dsos:
    f, k = by_dso["floor"].get(d, 0), by_dso["kmsd"].get(d, 0)
    if max(f, k) < 0.5:
        continue
    md.append("| %s | %.1f | %.1f | %+.1f |" % (
        dso_name(d.replace("floor", "the program").replace(
            "kmsd", "the program")), f, k, k - f))
md.append("| total | %.1f | %.1f | %+.1f |" % (cpu["floor"], cpu["kmsd"],
                                                cpu["kmsd"] - cpu["floor"]))

syms = sorted(set(by_sym["floor"]) | set(by_sym["kmsd"]),
              key=lambda s: -(by_sym["kmsd"].get(s, 0) -
                              by_sym["floor"].get(s, 0)))
md += ["", "The functions whose self time grew most, and fell most:", "",
       "| function (library) | floor µs/call | kmsd µs/call | kmsd - floor |",
       "|---|---|---|---|"]
pick = syms[:25] + [s for s in syms[-5:] if s not in syms[:25]]
for s in pick:
    f, k = by_sym["floor"].get(s, 0), by_sym["kmsd"].get(s, 0)
    d, name = s.split("\t", 1)
    md.append("| %s (%s) | %.1f | %.1f | %+.1f |" % (
        name.replace("|", "\\|"), dso_name(d), f, k, k - f))

names = sorted(set(inside["floor"]) | set(inside["kmsd"]),
               key=lambda n: -max(inside["floor"].get(n, 0),
                                  inside["kmsd"].get(n, 0)))
md += ["", "Time inside functions, callees included (each program's own "
       "functions, and the PKCS#11, gRPC and system-call entry points it "
       "reaches), µs/call:", "",
       "| function | floor | kmsd |", "|---|---|---|"]
for n in names:
    f, k = inside["floor"].get(n), inside["kmsd"].get(n)
    if max(f or 0, k or 0) < 1.0 or n in ("main", "worker_main"):
        continue
    md.append("| %s | %s | %s |" % (n, "-" if f is None else "%.1f" % f,
                                    "-" if k is None else "%.1f" % k))

# System calls: perf trace -s prints, per thread, each call's count, errors,
# total, min, avg and max ms.  Per call of the server: the count over the
# calls served in the traced window.
call_re = re.compile(r"^\s+(\w+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s")
sc = {}
for w in WHO:
    try:
        lines = open("%s/trace-%s.txt" % (out, w)).read().splitlines()
        tr = json.load(open("%s/trace-%s.json" % (out, w)))
    except OSError:
        continue
    tot = {}
    for line in lines:
        m = call_re.match(line)
        if m:
            c, t = tot.get(m.group(1), (0, 0.0))
            tot[m.group(1)] = (c + int(m.group(2)), t + float(m.group(4)))
    served = max(tr["ops_per_s"] * trace_seconds, 1)
    sc[w] = {n: (c / served, t * 1000 / c) for n, (c, t) in tot.items()}
if sc:
    md += ["", "System calls per call, every thread (`perf trace -s` for %g "
           "s of a run of its own at 16 in flight; the mean time of a "
           "call includes its waiting):" % trace_seconds, "",
           "| system call | floor per call | kmsd per call | floor mean µs "
           "| kmsd mean µs |", "|---|---|---|---|---|"]
    calls = sorted(set().union(*sc.values()),
                   key=lambda n: -max(x.get(n, (0, 0))[0]
                                      for x in sc.values()))
    for n in calls:
        f, k = sc.get("floor", {}).get(n), sc.get("kmsd", {}).get(n)
        if max((f or (0,))[0], (k or (0,))[0]) < 0.01:
            continue
        md.append("| %s | %s | %s | %s | %s |" % (
            n, "-" if f is None else "%.2f" % f[0],
            "-" if k is None else "%.2f" % k[0],
            "-" if f is None else "%.0f" % f[1],
            "-" if k is None else "%.0f" % k[1]))

open(out + "/profile-16.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
