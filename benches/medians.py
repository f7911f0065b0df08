#!/usr/bin/env python3
"""Prints the median (and its 95% interval) of every criterion benchmark under
target/criterion, as a Markdown table: criterion's console line shows the mean,
the targets in BENCHMARKS.md are medians. Usage: python3 benches/medians.py [DIR]"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "target", "criterion")


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


rows = []
for dirpath, _dirs, files in os.walk(root):
    if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
        continue
    with open(os.path.join(dirpath, "benchmark.json")) as f:
        bench = json.load(f)
    with open(os.path.join(dirpath, "estimates.json")) as f:
        est = json.load(f)
    med = est["median"]
    ci = med["confidence_interval"]
    rows.append((bench["full_id"], med["point_estimate"], ci["lower_bound"],
                 ci["upper_bound"], est["mean"]["point_estimate"]))

rows.sort()
print("| benchmark | median | median 95% CI | mean |")
print("|---|---:|---:|---:|")
for name, m, lo, hi, mean in rows:
    print(f"| {name} | {fmt(m)} | {fmt(lo)} – {fmt(hi)} | {fmt(mean)} |")
