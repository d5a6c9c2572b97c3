#!/usr/bin/env python3
"""bench/report.py RESULTS_DIR OUT_MD PNG_DIR

Turns what bench/run measured (RESULTS_DIR: results.jsonl, info.json,
pgbench-*.txt, samples-*.txt, series-*.txt) into OUT_MD (markdown) and its
plots PNG_DIR/bench-*.png (gnuplot, pngcairo).  Standard library only.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

RES, OUT, PNGDIR = sys.argv[1:4]

LABEL = {
    "ceiling": "(1) origin, direct",
    "proxy": "(2) nginx proxy_pass, fixed key",
    "module": "(3) replay module: lookup + SigV4 + stream",
    "onebyone": "(3o) (3), one query at a time (pipeline=off)",
    "default": "(3d) replay module, default config (no upstream block), key fixed",
    "cached": "(3c) replay module + replay_key_cache (ids cached)",
    "stale": "(3s) replay module + replay_key_cache, PostgreSQL stopped (stale entries)",
    "pcache": "(3p) replay module + proxy_cache hits",
    "redirect": "(4) replay module, 302 only",
    "follow": "(4) replay module, 302 + follow",
    "baseline": "(5) fetch-whole-object proxy",
}
SHORT = {
    "ceiling": "(1) origin",
    "proxy": "(2) proxy_pass",
    "module": "(3) module",
    "onebyone": "(3o) one at a time",
    "default": "(3d) default config",
    "cached": "(3c) module+cache",
    "stale": "(3s) stale, no DB",
    "pcache": "(3p) proxy_cache hits",
    "redirect": "(4) 302",
    "follow": "(4) 302+follow",
    "baseline": "(5) fetch-all",
}
ORDER = ["ceiling", "proxy", "module", "onebyone", "default", "cached",
         "stale", "pcache", "redirect", "follow", "baseline"]
PAGE_KIB = 4


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(p / 100.0 * (len(xs) - 1) + 0.5))]


def load():
    rows = []
    with open(os.path.join(RES, "results.jsonl")) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    with open(os.path.join(RES, "info.json")) as f:
        info = json.load(f)
    return rows, info


def pgbench_ms(name):
    path = os.path.join(RES, name)
    if not os.path.exists(path):
        return None
    text = open(path).read()
    lat = re.search(r"latency average = ([0-9.]+) ms", text)
    lag = re.search(r"rate limit schedule lag: avg ([0-9.]+)", text)
    if not lat:
        return None
    return float(lat.group(1)) - (float(lag.group(1)) if lag else 0.0)


def samples(name, conc, runs):
    ttfb = []
    for run in runs:
        path = os.path.join(RES, "samples-%s-%d-%d.txt" % (name, conc, run))
        if os.path.exists(path):
            with open(path) as f:
                ttfb += [float(l.split()[0]) for l in f if l.strip()]
    return ttfb


def large_stats(rows):
    """(name, conc) -> dict of medians over runs"""
    out = {}
    groups = {}
    for r in rows:
        if r["test"] == "large":
            groups.setdefault((r["name"], r["conc"]), []).append(r)
    for (name, conc), rs in groups.items():
        res = [r["result"] for r in rs]
        runs = [r["run"] for r in rs]
        mib = [x["mib_per_s"] for x in res]
        rps = [x["requests"] / x["wall_s"] for x in res]
        mem = [max(0, x["peak_rss_kib"] - x["idle_rss_kib"]) / conc for x in res]
        cpu = [x["cpu_ticks"] / x["clk_tck"] / (x["bytes"] / 2**30)
               if x["bytes"] else float("nan") for x in res]
        tt = samples(name, conc, runs)
        dbt = [r["db_time"]["p50_ms"] for r in rs if r.get("db_time")]
        out[(name, conc)] = {
            "db_time": med(dbt),
            "runs": len(rs),
            "mib": med(mib), "mib_min": min(mib), "mib_max": max(mib),
            "rps": med(rps),
            "ttfb50": med(tt) if tt else med([x["ttfb_p50_ms"] for x in res]),
            "ttfb90": pct(tt, 90) if tt else med([x["ttfb_p90_ms"] for x in res]),
            "ttfb_n": len(tt),
            "mem": med(mem), "mem_min": min(mem), "mem_max": max(mem),
            "idle": med([x["idle_rss_kib"] for x in res]),
            "peak": med([x["peak_rss_kib"] for x in res]),
            "cpu_gib": med(cpu),
            "requests": res[0]["requests"],
        }
    return out


def small_stats(rows):
    out = {}
    groups = {}
    for r in rows:
        if r["test"] == "small":
            groups.setdefault(r["name"], []).append(r)
    for name, rs in groups.items():
        rps, p50, p99, srv, org, db, errs, stale = [], [], [], [], [], [], [], []
        for r in rs:
            x = r["result"]
            n = x["requests"]
            t = r["clk_tck"]
            rps.append(n / x["duration_us"] * 1e6)
            p50.append(x["lat_p50_us"] / 1e3)
            p99.append(x["lat_p99_us"] / 1e3)
            srv.append(r["serving_ticks"] / t / n * 1e6)
            org.append(r["origin_ticks"] / t / n * 1e6)
            db.append(r["db_ticks"] / t / n * 1e6)
            errs.append(x["err_connect"] + x["err_read"] + x["err_write"]
                        + x["err_status"] + x["err_timeout"])
            stale.append(r.get("stale_served", 0) / n if n else 0)
        out[name] = {
            "runs": len(rs), "rps": med(rps), "rps_min": min(rps),
            "rps_max": max(rps), "p50": med(p50), "p99": med(p99),
            "srv": med(srv), "org": med(org), "db": med(db),
            "errors": sum(errs), "stale_share": med(stale),
        }
    return out


# ------------------------------------------------------------------ plots

def gnuplot(script, data):
    with tempfile.TemporaryDirectory() as d:
        for name, text in data.items():
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        subprocess.run(["gnuplot"], input=script, text=True, cwd=d,
                       check=True)


TERM = ('set terminal pngcairo size %d,%d font "DejaVu Sans,9" noenhanced\n'
        'set style data histogram\nset style histogram cluster gap 1\n'
        'set style fill solid 0.85 border -1\nset boxwidth 0.9\n'
        'set grid ytics lc rgb "#dddddd"\nset xtics rotate by -25 scale 0\n'
        'set key top left\nset bmargin 5\n')


def plot_large(L, path):
    names = [n for n in ORDER if (n, 1) in L or (n, 16) in L]
    lines = []
    for n in names:
        a, b = L.get((n, 1), {}), L.get((n, 16), {})
        thr = lambda s: s.get("mib", 0) if n != "redirect" else 0
        lines.append('"%s" %.1f %.1f %.4f %.4f %.2f %.2f' % (
            SHORT[n], thr(a), thr(b),
            max(a.get("ttfb50", 0.001), 0.001), max(b.get("ttfb50", 0.001), 0.001),
            max(a.get("mem", 0), 1), max(b.get("mem", 0), 1)))
    data = "\n".join(lines) + "\n"
    script = TERM % (1150, 380) + (
        'set output "%s"\nset multiplot layout 1,3 title '
        '"50 MiB objects: 1 and 16 concurrent downloads (medians)"\n'
        'set title "throughput, MiB/s (higher is better)"\nset yrange [0:*]\n'
        'plot "d" using 2:xtic(1) title "1 download" lc rgb "#4477aa", '
        '"" using 3 title "16 downloads" lc rgb "#ee6677"\n'
        'set title "time to first byte, ms (log)"\nset logscale y\n'
        'set yrange [0.01:*]\n'
        'plot "d" using 4:xtic(1) title "1 download" lc rgb "#4477aa", '
        '"" using 5 title "16 downloads" lc rgb "#ee6677"\n'
        'set title "memory per in-flight request, KiB (log)"\n'
        'set yrange [1:*]\n'
        'plot "d" using 6:xtic(1) title "1 download" lc rgb "#4477aa", '
        '"" using 7 title "16 downloads" lc rgb "#ee6677"\n'
        'unset multiplot\n') % path
    gnuplot(script, {"d": data})


def plot_small(S, path):
    names = [n for n in ORDER if n in S]
    data = "\n".join('"%s" %.0f %.3f %.3f %.1f %.1f %.1f' % (
        SHORT[n], S[n]["rps"], S[n]["p50"], S[n]["p99"], S[n]["srv"],
        S[n]["org"], S[n]["db"]) for n in names) + "\n"
    script = TERM % (1150, 380) + (
        'set output "%s"\nset multiplot layout 1,3 title '
        '"16 KiB objects, 50 connections (wrk; medians)"\n'
        'set title "requests/s (higher is better)"\nset yrange [0:*]\n'
        'plot "d" using 2:xtic(1) notitle lc rgb "#4477aa"\n'
        'set title "latency, ms"\n'
        'plot "d" using 3:xtic(1) title "p50" lc rgb "#4477aa", '
        '"" using 4 title "p99" lc rgb "#ee6677"\n'
        'set title "CPU per request, microseconds"\n'
        'plot "d" using 5:xtic(1) title "server under test" lc rgb "#4477aa", '
        '"" using 6 title "origin" lc rgb "#ccbb44", '
        '"" using 7 title "PostgreSQL" lc rgb "#228833"\n'
        'unset multiplot\n') % path
    gnuplot(script, {"d": data})


def plot_memory20(L, rows, path):
    """bars of memory per request at 20, and RSS over time of the median run"""
    files = {}
    for name in ("module", "baseline"):
        rs = [r for r in rows if r["test"] == "large" and r["name"] == name
              and r["conc"] == 20]
        if not rs:
            return False
        rs.sort(key=lambda r: r["result"]["peak_rss_kib"] - r["result"]["idle_rss_kib"])
        r = rs[len(rs) // 2]
        src = os.path.join(RES, "series-%s-20-%d.txt" % (name, r["run"]))
        if not os.path.exists(src):
            return False
        with open(src) as f:
            pts = [l.split() for l in f if l.strip()]
        t0 = int(pts[0][0]) if pts else 0
        files["s-" + name] = "".join("%.3f %.3f\n" % ((int(t) - t0) / 1e3,
                                                      int(k) / 1024.0)
                                     for t, k in pts)
    files["bars"] = '"%s" %.1f %d\n"%s" %.1f %d\n' % (
        SHORT["module"], max(L[("module", 20)]["mem"], 1), 0x4477aa,
        SHORT["baseline"], max(L[("baseline", 20)]["mem"], 1), 0xee6677)
    script = (
        'set terminal pngcairo size 1000,360 font "DejaVu Sans,9" noenhanced\n'
        'set output "%s"\nset multiplot layout 1,2 title '
        '"20 concurrent 50 MiB downloads (issue #5)"\n'
        'set grid ytics lc rgb "#dddddd"\n'
        'set title "memory per in-flight request, KiB (log; median of runs)"\n'
        'set style fill solid 0.85 border -1\n'
        'set boxwidth 0.5\nset logscale y\nset yrange [1:*]\n'
        'set xrange [-0.6:1.6]\n'
        'plot "bars" using 0:2:3:xtic(1) with boxes lc rgb variable notitle, '
        '"" using 0:2:(sprintf("%%.0f KiB", $2)) with labels offset 0,0.8 notitle\n'
        'set title "resident memory of the serving processes, '
        'MiB (log), during the median run"\nset xlabel "seconds"\n'
        'set key bottom right\nset yrange [*:*]\nset xrange [0:*]\n'
        'plot "s-module" using 1:2 with lines lw 2 lc rgb "#4477aa" '
        'title "(3) module: nginx workers", '
        '"s-baseline" using 1:2 with lines lw 2 lc rgb "#ee6677" '
        'title "(5) fetch-all process"\n'
        'unset multiplot\n') % path
    gnuplot(script, files)
    return True


# ------------------------------------------------------------------ text

def f1(x):
    return "—" if x != x else "%.1f" % x


def f2(x):
    return "—" if x != x else "%.2f" % x


def fmt_kib(k):
    if k != k:
        return "—"
    if k >= 10240:
        return "%.1f MiB" % (k / 1024.0)
    return "%.0f KiB" % k


def verdict(ok):
    return "**met**" if ok else "**NOT met**"


def main():
    rows, info = load()
    L = large_stats(rows)
    S = small_stats(rows)
    hot = pgbench_ms("pgbench-hot.txt")
    cold = pgbench_ms("pgbench-cold.txt")

    os.makedirs(PNGDIR, exist_ok=True)
    reldir = os.path.relpath(PNGDIR, os.path.dirname(os.path.abspath(OUT)))
    png = {}
    if L:
        plot_large(L, os.path.join(PNGDIR, "bench-large.png"))
        png["large"] = reldir + "/bench-large.png"
        if plot_memory20(L, rows, os.path.join(PNGDIR, "bench-memory-20.png")):
            png["mem20"] = reldir + "/bench-memory-20.png"
    if S:
        plot_small(S, os.path.join(PNGDIR, "bench-small.png"))
        png["small"] = reldir + "/bench-small.png"

    o = []
    w = o.append
    w("# Benchmarks\n")
    w("Generated by `make bench` (`bench/run`, see [bench/README.md](../bench/README.md)) "
      "on %s. Every number below is from that one run; rerun `make bench` to "
      "measure again.\n" % info["date"])
    w("| | |\n|---|---|")
    w("| machine | %s, %d cores, %.1f GiB RAM (a VM) |" % (info["cpu"], info["nproc"], info["mem_gib"]))
    w("| system | %s, kernel %s |" % (info["os"], info["kernel"]))
    w("| software | nginx %s, %s, wrk %s |" % (info["nginx"], info["postgres"], info["wrk"]))
    w("| module | commit %s%s |" % (info["commit"], " plus uncommitted changes" if info["dirty"] else ""))
    w("| runs | 50 MiB: %d of each measurement; 16 KiB: %d runs of %d s of wrk; medians reported, runs interleaved (odd runs in order, even runs reversed) |"
      % (info["runs"], info.get("small_runs", info["runs"]), info["wrk_seconds"]))
    loads = [r["load"] for r in rows if r.get("load")]
    if loads:
        fp = [x["foreign_pct"] for x in loads]
        st = [x["steal_pct"] for x in loads]
        bp = [x["before_pct"] for x in loads]
        w("| other load | CPU of processes not of this benchmark, during the %d measurements: median %.1f%%, max %.1f%% of the machine (busy before them: median %d%%, max %d%%; waited %d s for quiet); hypervisor steal: median %.1f%%, max %.1f%% |"
          % (len(loads), med(fp), max(fp), med(bp), max(bp), info.get("quiet_waited_s", 0), med(st), max(st)))
    w("| module build | `%s` (sha256 prefix of the .so loaded) |" % info.get("module_sha256", "?"))
    w("| nginx under test | `worker_processes %d`, `proxy_buffer_size 64k`, unbuffered, keep-alive upstream (`keepalive 64`) — the same for (2) and (3) |" % info["workers"])
    w("")

    noisy = [r for r in rows if r.get("load") and r["load"]["foreign_pct"] > info.get("quiet_pct", 10)]
    if noisy:
        w("**Warning: the machine was shared.** During %d of %d measurements other "
          "processes used more than %d%% of the CPU (up to %.0f%%): %s. Those "
          "measurements are slower than the machine can do, and ratios that "
          "involve them are off by an unknown amount.\n"
          % (len(noisy), len(loads), info.get("quiet_pct", 10),
             max(r["load"]["foreign_pct"] for r in noisy),
             ", ".join("%s %s run %d (%.0f%%)" % (r["test"], SHORT[r["name"]] +
                       (" c=%d" % r["conc"] if r["test"] == "large" else ""),
                       r["run"], r["load"]["foreign_pct"]) for r in noisy[:12])
             + (", ..." if len(noisy) > 12 else "")))

    # ---------------------------------------------------------- targets
    w("## Targets\n")
    w("Ratios are (3) the module over (2) nginx's own `proxy_pass` with the "
      "key fixed in the configuration, measured in this run.\n")
    w("| target | measured | verdict |\n|---|---|---|")
    for conc in (1, 16):
        m, p = L.get(("module", conc)), L.get(("proxy", conc))
        if m and p:
            r = m["mib"] / p["mib"]
            w("| 50 MiB throughput ≥ 0.95 × (2), %d concurrent | %.0f / %.0f MiB/s = **%.2f** | %s |"
              % (conc, m["mib"], p["mib"], r, verdict(r >= 0.95)))
    if "module" in S and "proxy" in S:
        r = S["module"]["rps"] / S["proxy"]["rps"]
        w("| 16 KiB requests/s ≥ 0.8 × (2) | %.0f / %.0f req/s = **%.2f** | %s |"
          % (S["module"]["rps"], S["proxy"]["rps"], r, verdict(r >= 0.8)))
    if "cached" in S and "proxy" in S:
        r = S["cached"]["rps"] / S["proxy"]["rps"]
        w("| 16 KiB requests/s ≥ 0.8 × (2), with `replay_key_cache` (every id already cached: no lookup in the database) | %.0f / %.0f req/s = **%.2f** | %s |"
          % (S["cached"]["rps"], S["proxy"]["rps"], r, verdict(r >= 0.8)))
    for conc in (1, 16):
        m, p = L.get(("module", conc)), L.get(("proxy", conc))
        if m and p and hot is not None:
            d = m["ttfb50"] - p["ttfb50"]
            rtt = max(hot, cold if cold is not None else hot)
            rtt_s = ("one round trip (pgbench): %.3f ms back to back, %.3f ms to an idle backend; "
                     "the module's own lookups in these runs: %s ms median ($replay_db_time)"
                     % (hot, cold if cold is not None else float("nan"), f1(m["db_time"])))
            if d <= rtt:
                v = verdict(True)
            elif m["db_time"] == m["db_time"] and d <= max(m["db_time"], 1.0):
                v = ("**NOT met** against pgbench's round trip; within the module's own "
                     "lookup time at this load")
            else:
                v = verdict(False)
            w("| 50 MiB TTFB within one DB round trip of (2)'s, %d concurrent | median %.3f − %.3f ms = **%+.3f ms**; %s | %s |"
              % (conc, m["ttfb50"], p["ttfb50"], d, rtt_s, v))
    for t in issue14_targets(L, S):
        w(t)
    for conc in (1, 16, 20):
        m, b = L.get(("module", conc)), L.get(("baseline", conc))
        if m and b:
            mm = max(m["mem"], PAGE_KIB)
            r = b["mem"] / mm
            bound = "≥ " if m["mem"] < PAGE_KIB else ""
            label = ("memory per in-flight request ≤ 1/100 of (5), %d concurrent" % conc
                     if conc != 20 else "issue #5: memory per in-flight request, 20 concurrent, ≥ 100× less than (5)")
            w("| %s | %s vs %s = **%s%.0f× less** | %s |"
              % (label, fmt_kib(m["mem"]), fmt_kib(b["mem"]), bound, r, verdict(r >= 100)))
    w("")

    # ---------------------------------------------------------- setup
    w("## What is measured\n")
    w("All on 127.0.0.1, one machine. The S3 stand-in is a second, plain nginx "
      "(`worker_processes 1`, `sendfile on`) serving the objects from disk "
      "(page cache) at `/BUCKET/KEY`: S3 emulators are slow and would hide "
      "the differences. **It does not check signatures** (the module still "
      "computes and sends them; `t/010-sigv4.t` checks them against a "
      "verifying server) and ignores the presigned URLs' query strings. "
      "PostgreSQL 15 runs in a temporary cluster with a `games` table of "
      "%d rows; every lookup contender asks for distinct ids in turn "
      "(`SELECT replay_url FROM games WHERE id = $1::bigint`).\n" % (2020))
    for n in ORDER:
        w("- **%s**: %s" % (LABEL[n], {
            "ceiling": "the client fetches from the origin nginx itself: the ceiling.",
            "proxy": "`proxy_pass http://localhost/replays/...` (an `upstream localhost` with `keepalive`), "
                     "`proxy_buffering off`, `proxy_buffer_size 64k`: no lookup, no signing.",
            "module": "`replay_key_query` + `replay_s3_endpoint http://localhost` (the same upstream block), "
                      "path-style, default `replay_buffering off`, in the same server as (2). `replay_db ... pool=4`.",
            "cached": "(3) plus `replay_key_cache bench_keys:16m valid=1h`, small objects only: the "
                      "1 s warm-up asks for every id once, so the measured requests find their key in "
                      "the cache and never reach PostgreSQL (replays asked for again, as popular ones "
                      "are). Lookup, signing and streaming otherwise as (3).",
            "onebyone": "(3) on a `replay_db` of its own with `pipeline=off`: each connection "
                        "sends one query and waits for its answer before the next, as the module "
                        "did before issue #14; (3) batches the queries that wait for a connection "
                        "(libpq's pipeline mode, `pipeline=32` by default). Both `pool=4` per worker.",
            "default": "`replay_s3_endpoint http://127.0.0.1:PORT` written as the docs show it, no "
                       "`upstream` block (the module's own keep-alive, `keepalive=32` by default), "
                       "`replay_s3_key` fixed: no lookup. Compared with (2), which has the key "
                       "fixed too.",
            "stale": "(3) plus `replay_key_cache ... valid=1s stale=1h`, small objects only: the 1 s "
                     "warm-up fills the cache, 1.2 s later (every entry expired) PostgreSQL is "
                     "stopped for the measurement and started again after it. Every request tries "
                     "the database, fails (connection refused) and is served its expired entry "
                     "(`STALE`).",
            "pcache": "(3) plus `proxy_cache` (`proxy_cache_valid 200 1h`, `sendfile on`), large "
                      "objects only: the warm-up fetches the %d objects measured into the cache, "
                      "the measured requests are hits (the lookup still runs: the cache key is "
                      "the object's). Compared with (1), the origin's own `sendfile`." % 4,
            "redirect": "`replay_redirect 302`: lookup and presigning, the client gets the `Location` only "
                        "(its time to first byte is that of the 302).",
            "follow": "the same, and the client then fetches the presigned URL from the origin "
                      "(time to first byte: from the first request to the object's first byte).",
            "baseline": "the pattern people replace: `bench/baseline.c`, a threaded C server with blocking "
                        "sockets that looks the key up (libpq, a pool of %d connections), signs with the "
                        "same SigV4 code, reads the WHOLE object from the origin into a heap buffer that "
                        "doubles as it fills, then writes it to the client." % (4 * info["workers"]),
        }[n]))
    w("")
    w("- **Throughput**: bytes of the bodies / wall time of the run (each run: "
      "20 sequential downloads at 1 concurrent, 2 per connection at 16 and 20), "
      "by `bench/loadgen.c` (keep-alive, 256 KiB reads, every size checked).")
    w("- **TTFB**: from the start of a request to the first byte of the response, "
      "median of every request of every run.")
    w("- **Memory per in-flight request**: the serving processes' resident memory "
      "(sum of `/proc/PID/statm` of the nginx workers, or of the (5) process) sampled "
      "every 2 ms during the run, peak minus idle (idle: just before, after a warm-up), "
      "divided by the concurrency. Each measurement gets a freshly started server.")
    w("- **Small objects**: `wrk -t%d -c%d -d%ds` with `bench/ids.lua` (distinct ids), "
      "after a 1 s warm-up; CPU per request from `/proc/PID/stat` utime+stime deltas of "
      "the server under test, of the origin nginx and of all PostgreSQL processes."
      % (info["wrk_threads"], info["wrk_conns"], info["wrk_seconds"]))
    w("- **DB round trip**: `pgbench -M prepared -c 1` with the lookup's query over TCP: "
      "back to back (%.3f ms) and paced at 200/s so that each query wakes an idle "
      "backend as a lone request does (%.3f ms, latency less pgbench's schedule lag).\n"
      % (hot if hot is not None else float("nan"), cold if cold is not None else float("nan")))

    # ---------------------------------------------------------- large
    if L:
        w("## (a) 50 MiB objects\n")
        if "large" in png:
            w("![50 MiB objects](%s)\n" % png["large"])
        for conc in (1, 16):
            p = L.get(("proxy", conc))
            w("### %d concurrent download%s\n" % (conc, "s" if conc > 1 else ""))
            w("| contender | throughput MiB/s (min–max) | vs (2) | TTFB p50 ms | TTFB p90 ms | memory per in-flight request | server CPU s/GiB |")
            w("|---|---|---|---|---|---|---|")
            for n in ORDER:
                s = L.get((n, conc))
                if not s:
                    continue
                if n == "redirect":
                    thr = "— (%.0f redirects/s)" % s["rps"]
                    ratio = "—"
                else:
                    thr = "%.0f (%.0f–%.0f)" % (s["mib"], s["mib_min"], s["mib_max"])
                    ratio = "%.2f" % (s["mib"] / p["mib"]) if p else "—"
                cpu = "—" if n == "redirect" else f2(s["cpu_gib"])
                w("| %s | %s | %s | %.3f | %.3f | %s | %s |" % (
                    LABEL[n], thr, ratio, s["ttfb50"], s["ttfb90"], fmt_kib(s["mem"]), cpu))
            w("")
        w("Server CPU for (1) is the origin's; for (4) + follow it is only the "
          "nginx under test (the body comes from the origin). Memory for (4) is "
          "that of answering the 302s.\n")

    # ---------------------------------------------------------- issue 5
    if ("module", 20) in L and ("baseline", 20) in L:
        m, b = L[("module", 20)], L[("baseline", 20)]
        w("## Issue #5: memory at 20 concurrent 50 MiB downloads\n")
        if "mem20" in png:
            w("![memory at 20 concurrent downloads](%s)\n" % png["mem20"])
        w("| contender | memory per in-flight request (min–max of runs) | peak RSS above idle | idle RSS | throughput MiB/s |")
        w("|---|---|---|---|---|")
        for n, s in (("module", m), ("baseline", b)):
            w("| %s | %s (%s–%s) | %s | %s | %.0f |" % (
                LABEL[n], fmt_kib(s["mem"]), fmt_kib(s["mem_min"]), fmt_kib(s["mem_max"]),
                fmt_kib(s["peak"] - s["idle"]), fmt_kib(s["idle"]), s["mib"]))
        w("\nThe module holds one `proxy_buffer_size` buffer (64 KiB) per request "
          "plus the request's pool; (5) holds each object whole, in a buffer "
          "grown by doubling (50 MiB of data in a 64 MiB allocation, with "
          "`realloc` copies on the way).\n")

    # ---------------------------------------------------------- small
    if S:
        w("## (b) 16 KiB objects, %d connections\n" % info["wrk_conns"])
        if "small" in png:
            w("![16 KiB objects](%s)\n" % png["small"])
        p = S.get("proxy")
        w("| contender | requests/s (min–max) | vs (2) | p50 ms | p99 ms | server CPU µs/req | origin CPU µs/req | PostgreSQL CPU µs/req | errors |")
        w("|---|---|---|---|---|---|---|---|---|")
        for n in ORDER:
            s = S.get(n)
            if not s:
                continue
            w("| %s | %.0f (%.0f–%.0f) | %s | %.2f | %.2f | %.1f | %.1f | %.1f | %d |" % (
                LABEL[n], s["rps"], s["rps_min"], s["rps_max"],
                "%.2f" % (s["rps"] / p["rps"]) if p else "—",
                s["p50"], s["p99"], s["srv"], s["org"], s["db"], s["errors"]))
        w("\nFor (1) the server under test is the origin itself. (4) answers "
          "the 302 only; nothing is fetched from the origin.\n")

    # ---------------------------------------------------------- analysis
    w("## Reading the results\n")
    notes = analysis(L, S, hot, cold, info)
    for n in notes:
        w("- " + n)
    w("")

    w("## Caveats\n")
    w("- Loopback only, one machine: client, nginx under test, origin nginx and "
      "PostgreSQL share the %d cores. Whatever one of them spends, the others "
      "lack; absolute numbers say little about a real deployment, the ratios "
      "measured side by side in one run say more." % info["nproc"])
    w("- The origin is not S3 and no S3 emulator is used: it answers in "
      "microseconds, from the page cache, without checking signatures. Against "
      "real S3 (tens of ms to the first byte, a per-connection bandwidth cap) "
      "the differences in TTFB between (2) and (3) shrink relative to S3's own.")
    w("- The database is local: a lookup's round trip over loopback TCP is "
      "tens to hundreds of microseconds here, more across a network.")
    w("- This machine is a VM: wake-ups and loopback packets are comparatively "
      "expensive, and run-to-run noise is visible in the min–max columns.")
    w("- (5) is written in plain C with blocking sockets and one thread per "
      "connection; a runtime with a garbage collector would hold more memory, "
      "not less.")
    w("")
    w("Raw data of the last run (JSON lines, per-request samples, memory "
      "series): `build/bench/last/` (not committed).")

    with open(OUT, "w") as f:
        f.write("\n".join(o) + "\n")


def issue14_targets(L, S):
    """the rows of issue #14's targets"""
    rows = []
    if "default" in S and "proxy" in S:
        r = S["default"]["rps"] / S["proxy"]["rps"]
        rows.append("| issue #14: default configuration (no `upstream` block), key fixed, 16 KiB at %d connections ≥ 0.9 × (2) | %.0f / %.0f req/s = **%.2f** | %s |"
                    % (50, S["default"]["rps"], S["proxy"]["rps"], r, verdict(r >= 0.9)))
    if "module" in S and "proxy" in S:
        r = S["module"]["rps"] / S["proxy"]["rps"]
        rows.append("| issue #14: a lookup on every request (batched), 16 KiB ≥ 0.7 × (2) | %.0f / %.0f req/s = **%.2f** | %s |"
                    % (S["module"]["rps"], S["proxy"]["rps"], r, verdict(r >= 0.7)))
    if "module" in S and "onebyone" in S:
        a, b = S["module"]["db"], S["onebyone"]["db"]
        cut = 1 - a / b if b else float("nan")
        rows.append("| issue #14: PostgreSQL CPU per lookup ≥ 30 %% lower batched than one at a time, same run | %.1f vs %.1f µs = **%.0f %% lower** (requests/s: %.0f vs %.0f) | %s |"
                    % (a, b, cut * 100, S["module"]["rps"], S["onebyone"]["rps"], verdict(cut >= 0.3)))
    for conc in (1, 16):
        c, o = L.get(("pcache", conc)), L.get(("ceiling", conc))
        if c and o:
            r = c["mib"] / o["mib"]
            rows.append("| issue #14: `proxy_cache` hits of 50 MiB ≥ 0.9 × (1) the origin, %d concurrent | %.0f / %.0f MiB/s = **%.2f** | %s |"
                        % (conc, c["mib"], o["mib"], r, verdict(r >= 0.9)))
    m, p = L.get(("module", 1)), L.get(("proxy", 1))
    if m and p and m["db_time"] == m["db_time"]:
        d = m["ttfb50"] - p["ttfb50"]
        allowed = m["db_time"] + 0.2
        rows.append("| issue #14: TTFB at 1 concurrent within 0.2 ms of (2) + the lookup | (3) %.3f ms − (2) %.3f ms = **%+.3f ms**; the lookup (`$replay_db_time`, median): %.3f ms; allowed %.3f ms | %s |"
                    % (m["ttfb50"], p["ttfb50"], d, m["db_time"], allowed, verdict(d <= allowed)))
    if "stale" in S and "proxy" in S:
        st = S["stale"]
        rows.append("| issue #14: `replay_key_cache` with the database stopped (no target: measured) | %.0f req/s = %.2f × (2), %.0f %% of them served `STALE`, %d errors | — |"
                    % (st["rps"], st["rps"] / S["proxy"]["rps"], st["stale_share"] * 100, st["errors"]))
    return rows


def analysis(L, S, hot, cold, info):
    notes = []
    for conc in (1, 16):
        m, p = L.get(("module", conc)), L.get(("proxy", conc))
        if not (m and p):
            continue
        r = m["mib"] / p["mib"]
        overlap = m["mib_max"] >= p["mib_min"]
        notes.append(
            "50 MiB, %d concurrent: the module streams at %.2f of `proxy_pass` "
            "(runs: %.0f–%.0f vs %.0f–%.0f MiB/s, %s). Both move the body through "
            "the same unbuffered upstream code with the same 64 KiB buffer; nginx "
            "CPU per GiB is %.2f s for the module vs %.2f s for (2). The module's "
            "extra work per request (a lookup, a signature, a variable in "
            "`proxy_pass`) is paid once per 50 MiB."
            % (conc, r, m["mib_min"], m["mib_max"], p["mib_min"], p["mib_max"],
               "the ranges overlap: within this machine's noise" if overlap
               else "the ranges do not overlap",
               m["cpu_gib"], p["cpu_gib"]))
    for conc in (1, 16):
        m, p = L.get(("module", conc)), L.get(("proxy", conc))
        if not (m and p) or hot is None:
            continue
        d = m["ttfb50"] - p["ttfb50"]
        notes.append(
            "TTFB, %d concurrent: the module's median is %+.3f ms from (2)'s "
            "(%d and %d requests); one lookup round trip is %.3f ms back to back, "
            "%.3f ms when the backend was idle, and the module's lookups took "
            "%s ms (median of `$replay_db_time`, queue included) during these "
            "very runs. The lookup happens before the S3 request, so the module "
            "is later by one lookup plus the signing (microseconds)%s."
            % (conc, d, m["ttfb_n"], p["ttfb_n"], hot,
               cold if cold is not None else float("nan"), f1(m["db_time"]),
               ". At this concurrency the lookup of a new request waits for the "
               "CPU with the downloads in flight (PostgreSQL's backend, then "
               "the nginx worker's event loop, each behind 64 KiB copies of "
               "the other streams), so one round trip under this load is far "
               "longer than pgbench's idle one" if conc > 1 else ""))
    if "module" in S and "proxy" in S:
        m, p = S["module"], S["proxy"]
        r = m["rps"] / p["rps"]
        rd = S.get("redirect")
        notes.append(
            "16 KiB, requests/s: the module reaches %.2f of `proxy_pass`. Per "
            "request, the nginx under test spends %.1f µs of CPU for the module "
            "vs %.1f µs for (2) (+%.1f µs)%s, and PostgreSQL spends %.1f µs per "
            "lookup, on the same %d cores that wrk, the origin and nginx use. "
            "A lookup is an extra loopback TCP round trip (a send and a receive in "
            "nginx, two wake-ups, the backend's parse/bind/execute), which on this "
            "VM costs about as much kernel time as the proxied fetch itself; "
            "profiling the worker (`perf`) showed the kernel's socket and wake-up "
            "paths dominating, the module's own code (signing, libpq, the pool) a "
            "few per cent (a development profile, see bench/README.md). The 0.8 target holds only where the lookup is cheap "
            "next to the fetch: with the database on its own machine, or a "
            "cache in front of it."
            % (r, m["srv"], p["srv"], m["srv"] - p["srv"],
               (" (%.1f µs in redirect mode, which is a lookup and a presign "
                "without any upstream)" % rd["srv"]) if rd else "",
               m["db"], info["nproc"]))
    if "cached" in S and "proxy" in S:
        c, p = S["cached"], S["proxy"]
        notes.append(
            "16 KiB with `replay_key_cache` (3c): %.2f of `proxy_pass`, at %.1f µs of "
            "nginx CPU per request (%+.1f µs over (2): the cache lookup under a shared "
            "mutex and the signature) and %.1f µs of PostgreSQL's: the cost (3) pays "
            "over (2) is the database round trip, and a cache of keys, which do not "
            "change once a game is over, removes it for every replay asked for again."
            % (c["rps"] / p["rps"], c["srv"], c["srv"] - p["srv"], c["db"]))
    if "baseline" in S and "module" in S:
        b, m = S["baseline"], S["module"]
        notes.append(
            "The fetch-whole-object proxy (5) does the same lookup and signing "
            "and gets %.2f of the module's requests/s at %.1f µs of CPU per "
            "request (thread per connection, blocking I/O, a copy through a heap "
            "buffer)." % (b["rps"] / m["rps"], b["srv"]))
    if "module" in S and "onebyone" in S:
        m, o = S["module"], S["onebyone"]
        notes.append(
            "Batched lookups (3) against one at a time (3o), same pool size, "
            "same run: %.0f vs %.0f requests/s, PostgreSQL CPU %.1f vs %.1f µs "
            "per lookup, nginx CPU %.1f vs %.1f µs per request. A batch costs "
            "the server one wake-up and one read for many queries; one at a "
            "time, each query waits for the previous one's answer on its "
            "connection, so at 50 connections most lookups queue."
            % (m["rps"], o["rps"], m["db"], o["db"], m["srv"], o["srv"]))
    if "default" in S and "proxy" in S:
        d, p = S["default"], S["proxy"]
        notes.append(
            "The default configuration (3d: the endpoint's URL, no `upstream` "
            "block, key fixed) keeps its connections to the origin (the "
            "module's own `keepalive=32`): %.2f of `proxy_pass` with its "
            "keep-alive upstream, at %.1f vs %.1f µs of nginx CPU per request "
            "(the signature is the difference)."
            % (d["rps"] / p["rps"], d["srv"], p["srv"]))
    if "stale" in S:
        st = S["stale"]
        notes.append(
            "With PostgreSQL stopped (3s) every request still tries the "
            "database (a refused connection), logs it, and is served its "
            "expired entry: %.0f requests/s, %.1f µs of nginx CPU per request."
            % (st["rps"], st["srv"]))
    for conc in (1, 16):
        c, o = L.get(("pcache", conc)), L.get(("ceiling", conc))
        if c and o:
            notes.append(
                "`proxy_cache` hits, 50 MiB, %d concurrent (3p): %.0f MiB/s "
                "against the origin's own %.0f (both `sendfile` from the page "
                "cache); each hit still runs its lookup (the cache key is the "
                "object's), once per 50 MiB."
                % (conc, c["mib"], o["mib"]))
    for conc in (1, 16, 20):
        m, b = L.get(("module", conc)), L.get(("baseline", conc))
        if m and b:
            notes.append(
                "Memory, %d concurrent: %s per in-flight request for the module "
                "(one 64 KiB buffer and the request's pool), %s for (5) (the "
                "object itself). (5)'s TTFB is the whole download from the "
                "origin (%.0f ms median) since it writes nothing before it has "
                "everything." % (conc, fmt_kib(m["mem"]), fmt_kib(b["mem"]), b["ttfb50"]))
    return notes


if __name__ == "__main__":
    main()
