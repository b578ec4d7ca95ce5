#!/usr/bin/env python3
"""Tables for two builds of Tandem run side by side by data-plane.sh (TAG=before and
TAG=after, alternating, in one batch): each scenario's runs, then the ratio after/before of
the means. Every number comes from the runs' report.json files.

    loadgen/bench/before-after.py OUT_DIR [BEFORE_TAG AFTER_TAG]
"""
import json
import sys
from pathlib import Path
from statistics import mean


def main():
    out = Path(sys.argv[1])
    tags = sys.argv[2:4] or ["before", "after"]
    runs = {}
    for p in sorted(out.glob("*/report.json")):
        r = json.loads(p.read_text())
        # Labels are "<server>-<tag>" (data-plane.sh's TAG).
        tag = r["label"].partition("-")[2]
        tag = tag if tag in tags else None
        if tag:
            runs.setdefault(r["scenario"]["name"], {}).setdefault(tag, []).append((p.parent.name, r))
    metrics = [
        ("edits/s", lambda r: r["sent_per_s"]),
        ("delivered/s", lambda r: r["delivered_per_s"]),
        ("ack p50 ms", lambda r: r["ack_latency_ms"]["p50"]),
        ("ack p99 ms", lambda r: r["ack_latency_ms"]["p99"]),
        ("propagation p99 ms", lambda r: r["propagation_latency_ms"]["p99"]),
        ("connect p99 ms", lambda r: (r.get("connect_ms") or {}).get("p99")),
        ("join p99 ms", lambda r: (r.get("join_ms") or {}).get("p99")),
        ("server cores", lambda r: r["server"]["cpu_util"]),
    ]
    for sc, by_tag in runs.items():
        print(f"\n### {sc}\n")
        print("| run | converged | errors | " + " | ".join(m for m, _ in metrics) + " | commit |")
        print("|---|---|---:|" + "---:|" * len(metrics) + "---|")
        for tag in tags:
            for name, r in by_tag.get(tag, []):
                vals = " | ".join(f"{f(r) or 0:,.2f}" for _, f in metrics)
                print(f"| {name} | {r['converged']} | {r.get('errors', 0)} | {vals} | `{r['provenance']['commit']}` |")
        if all(t in by_tag for t in tags):
            ratios = []
            for _, f in metrics:
                b = mean(f(r) or 0 for _, r in by_tag[tags[0]])
                a = mean(f(r) or 0 for _, r in by_tag[tags[1]])
                ratios.append(f"{a / b:.3f}" if b else "-")
            print(f"| **{tags[1]} / {tags[0]}** (means) | | | " + " | ".join(ratios) + " | |")


if __name__ == "__main__":
    main()
