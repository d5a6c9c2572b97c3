#!/usr/bin/env python3
"""bench/memreport.py RESULTS_DIR OUT_MD

The memory scenario of bench/run (RESULTS_DIR/mem.jsonl, info.json) as a
section of OUT_MD: put between its markers when OUT_MD has them, else
before its "## Caveats", else at its end; and its row of the "Targets"
table.  The rest of OUT_MD is left as it is, so that a run of the memory
scenario alone updates only these.
Standard library only.
"""

import json
import os
import statistics
import sys

RES, OUT = sys.argv[1:3]

BEGIN = ("<!-- replay-memory: begin (bench/memreport.py; "
         "`BENCH_TESTS=memory make bench` rewrites this section only) -->")
END = "<!-- replay-memory: end -->"
KINDS = ["pool", "buffers", "row", "tls"]
TARGET = 0.20
ROW = "| issue #15:"


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def mib(n):
    return "%.1f MiB" % (n / 1048576.0)


def kib(n):
    return "%.1f KiB" % (n / 1024.0)


def load():
    rows = []
    with open(os.path.join(RES, "mem.jsonl")) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    info = {}
    path = os.path.join(RES, "info.json")
    if os.path.exists(path):
        with open(path) as f:
            info = json.load(f)
    return rows, info


def sample(row, s):
    """One sample: what the requests hold, the workers' growth, by kind."""
    st = s["status"]
    kinds = dict.fromkeys(KINDS, 0)
    for loc in st["replay_location_memory_bytes"].values():
        for k in KINDS:
            kinds[k] += loc[k]
    return {
        "in_flight": st["replay_requests_in_flight"],
        "memory": st["replay_memory_bytes"],
        "rss": (s["rss_kib"] - row["idle_rss_kib"]) * 1024,
        "anon": (s["anon_kib"] - row["idle_anon_kib"]) * 1024,
        "kinds": kinds,
        "temp": sum(st["replay_location_temp_file_bytes"].values()),
    }


def stats(rows, proto):
    """Medians over the samples of every run of one protocol."""
    ss = [sample(r, s) for r in rows if r["proto"] == proto
          for s in r["samples"]]
    rs = [r for r in rows if r["proto"] == proto]
    if not ss:
        return None
    out = {k: med([s[k] for s in ss])
           for k in ("in_flight", "memory", "rss", "anon", "temp")}
    out["kinds"] = {k: med([s["kinds"][k] for s in ss]) for k in KINDS}
    out["diff"] = (out["memory"] - out["rss"]) / out["rss"]
    out["diff_anon"] = (out["memory"] - out["anon"]) / out["anon"]
    out["runs"] = len(rs)
    out["clients"] = rs[0]["clients"]
    out["workers"] = rs[0]["workers"]
    out["ok"] = min(r["client"]["ok"] for r in rs)
    out["failed"] = max(r["client"]["failed"] for r in rs)
    out["access_count"] = med([r["access"]["count"] for r in rs])
    out["access_memory"] = med([r["access"]["memory"] for r in rs])
    out["access_bound"] = med([r["access"]["bound"] for r in rs])
    out["stopped"] = max(r["stopped"] for r in rs)
    out["foreign"] = max(r["load"]["foreign_pct"] for r in rs)
    out["met"] = abs(out["diff"]) <= TARGET
    return out


def section(rows, info):
    S = {p: stats(rows, p) for p in ("http", "https")}
    S = {p: s for p, s in S.items() if s}
    any_s = next(iter(S.values()))
    L = []
    w = L.append

    w(BEGIN)
    w("## (c) `$replay_memory` against the workers' resident memory")
    w("")
    if info:
        w("Measured %s on this machine (%s, %d CPUs), commit %s%s, "
          "module build `%s`, nginx %s." % (
              info.get("date", "?"), info.get("cpu", "?"),
              info.get("nproc", 0), info.get("commit", "?"),
              " plus uncommitted changes" if info.get("dirty") else "",
              info.get("module_sha256", "?"), info.get("nginx", "?")))
        w("")
    w("%d clients download a 50 MiB object each through the module "
      "(`replay_key_query`, SigV4, `replay_buffering off`, "
      "`proxy_buffer_size 64k`) from one nginx with `worker_processes %d`, "
      "all at once, reading slowly: 16 KiB/s each through a 16 KiB receive "
      "buffer (nginx's send buffers `sndbuf=32k`, the origin's 64k), so "
      "that every request is in flight with its buffer full. Each "
      "protocol gets a fresh nginx, warmed up (database connections, TLS) "
      "and read idle; then, with every client in flight, five samples 1 s "
      "apart of `replay_memory_bytes` in `replay_status` (the sum of what "
      "the requests in flight hold, each as `$replay_memory` last measured "
      "it) and of the workers' `VmRSS` and `RssAnon` "
      "(`/proc/PID/status`), less their idle values. Medians of the "
      "samples%s." % (any_s["clients"], any_s["workers"],
                      " and runs" if any_s["runs"] > 1 else ""))
    w("")
    w("**Target: the sum of `$replay_memory` over the requests in flight "
      "agrees with the growth of the workers' resident memory within "
      "20 %.**")
    w("")
    w("| clients | requests in flight | Σ `$replay_memory` | RSS growth "
      "| difference | target | `RssAnon` growth | per request, measured "
      "| per request, RSS |")
    w("|---|---|---|---|---|---|---|---|---|")
    for p, s in S.items():
        n = s["in_flight"] or 1
        w("| %s | %d | %s | %s | %+.1f %% | **%s** | %s | %s | %s |" % (
            p.upper(), s["in_flight"], mib(s["memory"]), mib(s["rss"]),
            100 * s["diff"], "met" if s["met"] else "NOT met",
            mib(s["anon"]), kib(s["memory"] / n), kib(s["rss"] / n)))
    w("")
    w("What a request holds, by kind (`replay_location_memory_bytes` over "
      "the requests in flight):")
    w("")
    w("| clients | pool | buffers | row | TLS | temporary files (disk) |")
    w("|---|---|---|---|---|---|")
    for p, s in S.items():
        n = s["in_flight"] or 1
        w("| %s | %s | %s | %s | %s | %s |" % (
            p.upper(), kib(s["kinds"]["pool"] / n),
            kib(s["kinds"]["buffers"] / n), kib(s["kinds"]["row"] / n),
            kib(s["kinds"]["tls"] / n), mib(s["temp"])))
    w("")
    for p, s in S.items():
        n = s["access_count"] or 1
        w("- %s: %d of %d clients got their 200 and were in flight (%d "
          "failed); once they left, the access log's `$replay_memory` "
          "(each request's peak) averaged %s, its `$replay_memory_bound` "
          "%s; %d requests were stopped by a limit (none is set); other "
          "processes took at most %.0f %% of the machine during the "
          "measurement." % (
              p.upper(), s["ok"], s["clients"], s["failed"],
              kib(s["access_memory"] / n), kib(s["access_bound"] / n),
              s["stopped"], s["foreign"]))
    w("")
    w("Verdict: " + "; ".join(
        "%s **%s** (%+.1f %%)" % (p.upper(),
                                 "met" if s["met"] else "NOT met",
                                 100 * s["diff"])
        for p, s in S.items()) + ".")
    w("")
    w("What resident memory holds and `$replay_memory` does not count "
      "(docs/design.md, \"Memory\"): nginx's `ngx_connection_t` and its "
      "two events for each client and each connection to the origin "
      "(preallocated, touched for the first time here); over HTTPS, "
      "OpenSSL's state of a connection beyond its SSL object and record "
      "buffers (keys, cipher contexts, the session: about 6.5 KiB with "
      "OpenSSL 3.0); the allocator's free space between what is held. The "
      "kernel's socket buffers are not the workers' memory.")
    w(END)
    return "\n".join(L) + "\n"


def target_row(rows, info):
    """The scenario's row of the report's "Targets" table."""
    S = [(p, stats(rows, p)) for p in ("http", "https")]
    S = [(p, s) for p, s in S if s]
    met = all(s["met"] for p, s in S)
    return ("%s Σ `$replay_memory` of %d slow 50 MiB downloads in flight "
            "within 20 %% of the workers' RSS growth, %s "
            "([(c)](#c-replay_memory-against-the-workers-resident-memory), "
            "measured %s) | %s | **%s** |" % (
                ROW, S[0][1]["clients"], " and ".join(p.upper() for p, s in S),
                info.get("date", "?"),
                " / ".join("%s %s vs %s = **%+.1f %%**" % (
                    p.upper(), mib(s["memory"]), mib(s["rss"]),
                    100 * s["diff"]) for p, s in S),
                "met" if met else "NOT met"))


def splice_row(text, row):
    """Puts the row in the "Targets" table, in place of its last one."""
    lines = text.split("\n")
    try:
        t = lines.index("## Targets")
    except ValueError:
        return text
    for i in range(t, len(lines)):
        if lines[i].startswith(ROW):
            lines[i] = row
            return "\n".join(lines)
    last = None
    for i in range(t + 1, len(lines)):
        if lines[i].startswith("## "):
            break
        if lines[i].startswith("|"):
            last = i
    if last is not None:
        lines.insert(last + 1, row)
    return "\n".join(lines)


def splice(text, sec):
    if BEGIN.split(" (")[0] in text and END in text:
        a = text.index(BEGIN.split(" (")[0])
        b = text.index(END) + len(END)
        return text[:a] + sec.rstrip("\n") + text[b:]
    i = text.rfind("\n## Caveats")
    if i >= 0:
        return text[:i + 1] + sec + "\n" + text[i + 1:]
    return text.rstrip("\n") + "\n\n" + sec


def main():
    rows, info = load()
    if not rows:
        sys.exit("memreport: no memory measurement in %s" % RES)
    sec = section(rows, info)
    text = ""
    if os.path.exists(OUT):
        with open(OUT) as f:
            text = f.read()
    if not text:
        text = "# Benchmarks\n"
    with open(OUT, "w") as f:
        f.write(splice_row(splice(text, sec), target_row(rows, info)))


main()
