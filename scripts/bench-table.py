#!/usr/bin/env python3
"""The before/after table of `scripts/bench --compare` (issue 14's matrix).

Reads the `tally bench --json` files the compare run wrote, named
ROW.LABEL.I.json with ROW = WORKLOAD-ACCOUNTS-CLIENTS-BATCH and LABEL one of before,
after, postgres, cluster-before, cluster-after, and prints one Markdown table: each
build's range over its runs, the ratio of the medians, the server's (with the ratio of
its medians) and the load generator's CPU per transfer, Tally after / PostgreSQL's faster mode, and a cluster's
throughput as a share of the same build's one node; then the server's CPU per transfer by
thread (http, executor, flusher, log, ...), for builds whose `tally bench` reports it.

Usage: bench-table.py RUNS_DIR BEFORE_BIN AFTER_BIN
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def load(runs: Path):
    """{(row, label): [report, ...]} over every JSON file of the run."""
    out = defaultdict(list)
    for f in sorted(runs.glob("*.json")):
        row, label, _i, _ext = f.name.rsplit(".", 3)
        for r in json.loads(f.read_text())["reports"]:
            out[(row, label)].append(r)
    return out


def rng(values, fmt="{:,.0f}"):
    if not values:
        return "–"
    lo, hi = min(values), max(values)
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"


def med(values):
    return statistics.median(values) if values else None


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "–"


def cpu(reports, key):
    return [r["cpu"][key] for r in reports if r.get("cpu") and r["cpu"].get(key) is not None]


def cpu_ratio(before, after):
    """` (after / before)` of the medians of the server's CPU per transfer, the issue's
    "a quarter of the starting head's" read off the table; empty without both."""
    b, a = med(server_cpu(before)), med(server_cpu(after))
    return f" ({a / b:.3f}×)" if a and b else ""


def server_cpu(reports):
    """Server µs per transfer where it was measured (a cluster's members only by builds
    that take `--server-pid`)."""
    return [v for v in cpu(reports, "server_us_per_transfer") if v > 0]


def threads(reports, role):
    """Server µs per transfer of one thread role (`tally bench`'s per-thread split)."""
    return [
        r["cpu"]["server_threads_us_per_transfer"].get(role, 0.0)
        for r in reports
        if r.get("cpu") and r["cpu"].get("server_threads_us_per_transfer")
    ]


ROLES = ["http", "executor", "flusher", "log", "leaf index", "long queries", "other"]


def shows(reports, role):
    """Whether a role took at least half a µs per transfer in any of `reports`."""
    return max(threads(reports, role), default=0.0) >= 0.5


def thread_table(data, rows):
    """Each row's server CPU per transfer by thread role, before → after (builds whose
    `tally bench` reports no split are left out)."""
    shown = [row for row in rows if threads(data.get((row, "after"), []), "http")
             or threads(data.get((row, "before"), []), "http")]
    if not shown:
        return
    runs = [data.get((row, lab), []) for row in shown for lab in ("before", "after")]
    roles = [r for r in ROLES if any(shows(reports, r) for reports in runs)]
    print("\nServer CPU per transfer by thread (µs, before → after):\n")
    print("| workload | accounts | clients | per request | " + " | ".join(roles) + " |")
    print("|---|---:|---:|---:|" + "---|" * len(roles))
    for row in shown:
        wl, acc, cl, b = row.split("-")
        before, after = data.get((row, "before"), []), data.get((row, "after"), [])
        cells = [f"{rng(threads(before, r))} → {rng(threads(after, r))}" for r in roles]
        print(f"| {wl} | {int(acc):,} | {cl} | {b} | " + " | ".join(cells) + " |")


def main():
    runs, before_bin, after_bin = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    data = load(runs)
    rows = sorted({row for row, _ in data}, key=lambda r: (r.split("-")[0], *map(int, r.split("-")[1:])))
    print(f"before: `{before_bin}`  \nafter: `{after_bin}`\n")
    print(
        "| workload | accounts | clients | per request | before /s | after /s | after / before "
        "| server µs/op before → after | load generator µs/op before → after | after / PostgreSQL best |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---|")
    one_node = {}
    for row in rows:
        wl, acc, cl, b = row.split("-")
        before, after = data.get((row, "before"), []), data.get((row, "after"), [])
        if not before and not after:
            continue
        bt = [r["transfers_per_s"] for r in before]
        at = [r["transfers_per_s"] for r in after]
        one_node[row] = (med(bt), med(at))
        pg = [r for r in data.get((row, "postgres"), []) if r["system"] != "tally"]
        best = max((r["transfers_per_s"] for r in pg), default=None)
        pg_cell = "–"
        if best:
            mode = max(pg, key=lambda r: r["transfers_per_s"])["variant"]
            pg_cell = f"{ratio(med(at), best)} ({best:,.0f}/s, `{mode}`)"
        print(
            f"| {wl} | {int(acc):,} | {cl} | {b} | {rng(bt)} | {rng(at)} | {ratio(med(at), med(bt))} "
            f"| {rng(cpu(before, 'server_us_per_transfer'))} → {rng(cpu(after, 'server_us_per_transfer'))}"
            f"{cpu_ratio(before, after)} "
            f"| {rng(cpu(before, 'client_us_per_transfer'))} → {rng(cpu(after, 'client_us_per_transfer'))} "
            f"| {pg_cell} |"
        )
    thread_table(data, rows)
    cluster_rows = [row for row in rows if data.get((row, "cluster-after")) or data.get((row, "cluster-before"))]
    if cluster_rows:
        print("\n| 3-member cluster, through the leader | before /s | after /s | share of one node, before → after "
              "| members' CPU µs/op before → after (by thread, after) |")
        print("|---|---:|---:|---|---|")
        for row in cluster_rows:
            wl, acc, cl, b = row.split("-")
            bt = [r["transfers_per_s"] for r in data.get((row, "cluster-before"), [])]
            at = [r["transfers_per_s"] for r in data.get((row, "cluster-after"), [])]
            nb, na = one_node.get(row, (None, None))
            share = lambda c, n: f"{100 * c / n:.0f} %" if c and n else "–"
            cb, ca = data.get((row, "cluster-before"), []), data.get((row, "cluster-after"), [])
            split = ", ".join(f"{r} {rng(threads(ca, r))}" for r in ROLES if shows(ca, r))
            print(
                f"| {wl}, {int(acc):,} accounts, {cl} clients, {b} per request | {rng(bt)} | {rng(at)} "
                f"| {share(med(bt), nb)} → {share(med(at), na)} "
                f"| {rng(server_cpu(cb))} → {rng(server_cpu(ca))}"
                f"{f' ({split})' if split else ''} |"
            )


if __name__ == "__main__":
    main()
