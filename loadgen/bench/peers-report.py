#!/usr/bin/env python3
"""Tables for a peer-comparison directory (data-plane.sh with SERVERS including sharedb and
y-websocket): one table per scenario, the max-throughput knees, and idle memory. Every number
comes from the runs' report.json (and search.json) files.

    loadgen/bench/peers-report.py OUT_DIR
"""
import json
import sys
from pathlib import Path

ORDER = ["tandem", "tandem-nocursors", "tandem-memory", "tokio-baseline", "sharedb", "y-websocket"]


def load(out):
    runs = {}
    for p in sorted(Path(out).glob("*/report.json")):
        r = json.loads(p.read_text())
        runs[(r["scenario"]["name"], r["label"])] = (p.parent, r)
    return runs


def fmt(x, nd=2):
    return "-" if x is None else f"{x:,.{nd}f}"


def main():
    out = sys.argv[1]
    runs = load(out)
    scenarios = sorted({s for s, _ in runs})
    for sc in [s for s in ["typing-room", "office", "fanout"] if s in scenarios]:
        print(f"\n### {sc}\n")
        print("| server | converged | edits/s | ack p50 ms | ack p99 ms | propagation p99 ms | delivered/s | server cores | delivered per server CPU-s | commit |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for label in ORDER:
            if (sc, label) not in runs:
                continue
            _, r = runs[(sc, label)]
            a, p, s = r["ack_latency_ms"], r["propagation_latency_ms"], r["server"]
            print(f"| {label} | {r['converged']} | {r['sent_per_s']:,.0f} | {fmt(a['p50'])} | {fmt(a['p99'])} | {fmt(p['p99'])} | "
                  f"{r['delivered_per_s']:,.0f} | {s['cpu_util']:.2f} | {fmt(s['delivered_per_cpu_s'], 0)} | `{r['provenance']['commit']}` |")
    print("\n### max-throughput: the knee (last step with ack p99 <= 50 ms)\n")
    print("| server | knee edits/s | delivered/s | ack p99 ms | server cores | generator cores | vs ShareDB | commit |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    knees = {label: r for (sc, label), (_, r) in runs.items() if sc == "max-throughput"}
    base = knees.get("sharedb")
    for label in ORDER:
        if label not in knees:
            continue
        r = knees[label]
        ratio = f"{r['sent_per_s'] / base['sent_per_s']:.2f}x" if base else "-"
        print(f"| {label} | {r['sent_per_s']:,.0f} | {r['delivered_per_s']:,.0f} | {fmt(r['ack_latency_ms']['p99'])} | "
              f"{r['server']['cpu_util']:.2f} | {r['generator']['cpu_util']:.2f} | {ratio} | `{r['provenance']['commit']}` |")
    print("\n### idle: server memory per connection (15,000 connections)\n")
    print("| server | bytes per connection | RSS before | RSS with the users |")
    print("|---|---:|---:|---:|")
    for label in ORDER:
        if ("idle", label) not in runs:
            continue
        _, r = runs[("idle", label)]
        s = r["server"]
        print(f"| {label} | {fmt(s['rss_per_connection_bytes'], 0)} | {s['rss_before_bytes'] / 2**20:.1f} MiB | {s['rss_start_bytes'] / 2**20:.1f} MiB |")


if __name__ == "__main__":
    main()
