#!/usr/bin/env python3
"""Medians of a benchmark sitting and the ratios issue 7 names.

    python3 bench/compare.py bench/results/<UTC>

Reads drove.jsonl (drove bench --json), peers.jsonl (the peer lab) and sqlite_limit.txt from
the directory; prints a Markdown report: every Drove figure (median and spread of its runs),
then each target as a ratio against the baseline measured in the same sitting.
"""
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values):
    values = [v for v in values if v is not None]
    return (min(values), max(values)) if values else (None, None)


def fmt(v, digits=0):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:,.{digits}f}"


def load(d):
    drove = defaultdict(list)
    for line in (d / "drove.jsonl").read_text().splitlines():
        r = json.loads(line)
        s = r["settings"]
        drove[(r["workload"], r["store"], r["mode"], s["durability"])].append(r)
    peers = defaultdict(list)
    p = d / "peers.jsonl"
    if p.exists():
        for line in p.read_text().splitlines():
            r = json.loads(line)
            if "error" not in r:
                peers[(r["variant"], r["scenario"])].append(r)
    limit = None
    t = d / "sqlite_limit.txt"
    if t.exists():
        m = re.search(r"claim\+complete 512/txn durable: (\d+)", t.read_text())
        limit = float(m.group(1)) if m else None
    return drove, peers, limit


def dm(drove, key, field):
    return median([r.get(field) for r in drove.get(key, [])])


def pm(peers, variant, scenario, path):
    vals = []
    for r in peers.get((variant, scenario), []):
        v = r
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        vals.append(v)
    return median(vals)


def main():
    d = Path(sys.argv[1])
    drove, peers, limit = load(d)
    out = [f"# Benchmark sitting {d.name}", ""]
    machine = (d / "machine.txt").read_text().strip().splitlines() if (d / "machine.txt").exists() else []
    if machine:
        out += ["Machine: " + " / ".join(machine), ""]
    out += ["## Drove, every figure (median of runs, [min, max])", ""]
    out += ["| workload | store | mode | durability | figure | median | spread | runs |", "|---|---|---|---|---|---|---|---|"]
    for (w, store, mode, dur), rows in sorted(drove.items()):
        fields = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "run"]
        for f in fields:
            vals = [r.get(f) for r in rows]
            lo, hi = spread(vals)
            out.append(f"| {w} | {store} | {mode} | {dur} | {f} | {fmt(median(vals), 2)} | [{fmt(lo, 2)}, {fmt(hi, 2)}] | {len(rows)} |")
    out += ["", "## Targets (ratios in this sitting)", "", "| target | Drove | baseline | ratio | goal | met |", "|---|---|---|---|---|---|"]

    def row(name, ours, base, goal, higher_is_better=True, ratio=None):
        if ratio is None and ours is not None and base:
            ratio = ours / base
        met = None
        if ratio is not None:
            met = ratio >= goal if higher_is_better else ratio <= goal
        out.append(f"| {name} | {fmt(ours, 1)} | {fmt(base, 1)} | {fmt(ratio, 2)} | {'>=' if higher_is_better else '<='} {goal} | {fmt(met)} |")

    bull_w2 = pm(peers, "bullmq", "W2", ["jobs_per_s"])
    row("W2 drain, SQLite, in-process (jobs/s) vs BullMQ", dm(drove, ("w2", "sqlite", "inproc", "full"), "jobs_per_s"), bull_w2, 5)
    row("W2 drain, SQLite, HTTP workers (jobs/s) vs BullMQ", dm(drove, ("w2", "sqlite", "http", "full"), "jobs_per_s"), bull_w2, 2)
    gw = pm(peers, "graphile-worker-tuned", "W2", ["jobs_per_s"])
    row("W2 drain, PostgreSQL, in-process vs graphile-worker tuned", dm(drove, ("w2", "postgres", "inproc", "full"), "jobs_per_s"), gw, 3)
    row("W2 drain, PostgreSQL, HTTP workers vs graphile-worker tuned", dm(drove, ("w2", "postgres", "http", "full"), "jobs_per_s"), gw, 3)
    for mode in ("inproc", "http"):
        k = ("w1", "sqlite", mode, "full")
        row(f"W1 one-by-one, 8 producers, durable, {mode}: vs physical limit (producers / fsync)",
            dm(drove, k, "jobs_per_s"), dm(drove, k, "physical_limit_jobs_per_s"), 0.9)
        row(f"W1 one-by-one, relaxed, {mode} vs BullMQ", dm(drove, ("w1", "sqlite", mode, "relaxed"), "jobs_per_s"),
            pm(peers, "bullmq", "W1", ["single_jobs_per_s"]), 2)
        row(f"W1 batches of 1,000, durable, {mode} vs BullMQ bulk", dm(drove, k, "bulk_jobs_per_s"),
            pm(peers, "bullmq", "W1", ["bulk_jobs_per_s"]), 2)
    bull_w3 = pm(peers, "bullmq", "W3", ["latency_ms", "p99"])
    for store in ("sqlite", "postgres"):
        for mode in ("inproc", "http"):
            row(f"W3 enqueue->start p99 ms, {store} {mode} vs BullMQ", dm(drove, ("w3", store, mode, "full"), "p99_ms"), bull_w3, 1, higher_is_better=False)
    bull_w4 = pm(peers, "bullmq", "W4", ["modes", "jobId", "all_results_ms"])
    for store in ("sqlite", "postgres"):
        for mode in ("inproc", "http"):
            k = ("w4", store, mode, "full")
            ex, ans, last = dm(drove, k, "executions"), dm(drove, k, "answered"), dm(drove, k, "last_answer_s")
            out.append(f"| W4 {store} {mode}: executions / answered / last answer | {fmt(ex)} / {fmt(ans)} / {fmt(last, 3)} s | BullMQ last {fmt((bull_w4 or 0) / 1000, 3)} s | - | 10 / 500 / <= BullMQ | {fmt(ex == 10 and ans == 500 and last is not None and bull_w4 is not None and last <= bull_w4 / 1000)} |")
    for store in ("sqlite", "postgres"):
        for mode in ("inproc", "http"):
            k = ("w5", store, mode, "full")
            lost, after, twice, inflight = (dm(drove, k, f) for f in ("lost", "done_after_kill_s", "run_twice", "in_flight_at_kill"))
            out.append(f"| W5 {store} {mode}: lost / done after kill / run twice (in flight) | {fmt(lost)} / {fmt(after, 1)} s / {fmt(twice)} ({fmt(inflight)}) | BullMQ {fmt(pm(peers, 'bullmq', 'W5', ['all_done_s_since_kill']), 1)} s | - | 0 / <= 15 s / <= in flight | {fmt(lost == 0 and after is not None and after <= 15 and twice is not None and inflight is not None and twice <= inflight)} |")
    for store in ("sqlite", "postgres"):
        for mode in ("inproc", "http"):
            w6, w2 = dm(drove, ("w6", store, mode, "full"), "jobs_per_s"), dm(drove, ("w2", store, mode, "full"), "jobs_per_s")
            row(f"W6 (1M queued behind) vs W2, {store} {mode}", w6, w2, 0.7)
            k = ("w6", store, mode, "full")
            out.append(f"| W6 {store} {mode}: store RSS before / after draining (MiB) | {fmt(dm(drove, k, 'store_rss_mib_before'), 0)} / {fmt(dm(drove, k, 'store_rss_mib_after'), 0)} | - | - | does not grow with the backlog | - |")
    row("W2 in-process vs raw SQLite claim+complete (sqlite_limit.py)", dm(drove, ("w2", "sqlite", "inproc", "full"), "jobs_per_s"), limit, 0.5)
    print("\n".join(out))


if __name__ == "__main__":
    main()
