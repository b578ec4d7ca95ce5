#!/usr/bin/env python3
"""Summarizes a data-plane.sh output directory as Markdown tables.

    loadgen/bench/summarize.py OUT_DIR [LABEL_A LABEL_B]

One row per (scenario, server): medians over the repeated runs (with the range), then the
ratio of LABEL_A to LABEL_B for each scenario, computed from the medians (by default, of
`tandem` to every other label). Every number
comes from the runs' report.json files; nothing is typed in by hand.
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def load(out):
    runs = defaultdict(list)
    for report in sorted(Path(out).glob("*/report.json")):
        r = json.loads(report.read_text())
        scenario = r["scenario"]["name"]
        runs[(scenario, r["label"])].append(r)
    return runs


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def fmt(x, digits=0):
    if x != x:  # NaN
        return "-"
    return f"{x:,.{digits}f}"


def span(values, digits=0):
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return fmt(med(values), digits)
    return f"{fmt(med(values), digits)} ({fmt(min(values), digits)}-{fmt(max(values), digits)})"


def main():
    out = sys.argv[1]
    runs = load(out)
    scenarios = sorted({s for s, _ in runs})
    print("| scenario | server | runs | converged | delivered/s | per server CPU-s | per server user CPU-s | "
          "server cores used | ack p50 ms | ack p99 ms | propagation p99 ms | RSS per connection |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    medians = {}
    for scenario in scenarios:
        for label in sorted(l for s, l in runs if s == scenario):
            rs = runs[(scenario, label)]
            per_cpu = [r["server"]["delivered_per_cpu_s"] for r in rs]
            per_user = [r["server"]["delivered_per_user_cpu_s"] for r in rs]
            rss = [r["server"]["rss_per_connection_bytes"] for r in rs if r["server"].get("rss_per_connection_bytes")]
            m = {
                "per_cpu": med(per_cpu),
                "per_user": med(per_user),
                "rss": med(rss),
                "ack_p99": med([r["ack_latency_ms"]["p99"] for r in rs]),
                "prop_p99": med([r["propagation_latency_ms"]["p99"] for r in rs]),
            }
            medians[(scenario, label)] = m
            print(f"| {scenario} | {label} | {len(rs)} | {all(r['converged'] for r in rs)} | "
                  f"{fmt(med([r['delivered_per_s'] for r in rs]))} | {span(per_cpu)} | {span(per_user)} | "
                  f"{fmt(med([r['server']['cpu_util'] for r in rs]), 2)} | "
                  f"{fmt(med([r['ack_latency_ms']['p50'] for r in rs]), 2)} | {fmt(m['ack_p99'], 2)} | "
                  f"{fmt(m['prop_p99'], 2)} | {fmt(m['rss'])} B |")
    print()
    labels = sorted({l for _, l in runs})
    if len(sys.argv) == 4:
        first, others = sys.argv[2], [sys.argv[3]]
    else:
        first, others = "tandem", [l for l in labels if l != "tandem"]
    if first in labels:
        for other in others:
            print(f"{first} / {other} (medians; above 1 is better for {first}, except latency and memory where "
                  "below 1 is):")
            print()
            print("| scenario | delivered per server CPU-s | per user CPU-s | ack p99 | propagation p99 | "
                  "RSS per connection |")
            print("|---|---:|---:|---:|---:|---:|")
            for scenario in scenarios:
                a, b = medians.get((scenario, first)), medians.get((scenario, other))
                if not a or not b:
                    continue

                def ratio(key):
                    x, y = a[key], b[key]
                    if x != x or y != y or x <= 0 or y <= 0:
                        return "-"
                    return fmt(x / y, 2) + "x"

                print(f"| {scenario} | {ratio('per_cpu')} | {ratio('per_user')} | {ratio('ack_p99')} | "
                      f"{ratio('prop_p99')} | {ratio('rss')} |")
            print()


if __name__ == "__main__":
    main()
