"""Reads the broker's Prometheus endpoint and parses it with prometheus_client's parser.

usage: metrics.py URL

Prints one JSON result line: {"ok": true, "content_type": ..., "families": {name: {"type":
..., "samples": [[sample name, labels, value], ...]}}}. Fails (ok false) when the text does not
parse, or when a histogram is not well formed: per series (labels but `le`), `_bucket`s with
increasing `le`, cumulative (non-decreasing) counts, a `+Inf` bucket equal to `_count`, and a
`_sum`.
"""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def check_histogram(f):
    """Raises ValueError unless histogram family `f` is well formed (see the module doc)."""
    series = {}
    for s in f.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        key = tuple(sorted(labels.items()))
        h = series.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if s.name == f.name + "_bucket":
            h["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name == f.name + "_sum":
            h["sum"] = s.value
        elif s.name == f.name + "_count":
            h["count"] = s.value
    for key, h in series.items():
        les = [le for le, _ in h["buckets"]]
        counts = [c for _, c in h["buckets"]]
        if les != sorted(les) or len(set(les)) != len(les):
            raise ValueError(f"{f.name}{key}: buckets out of order: {les}")
        if any(a > b for a, b in zip(counts, counts[1:])):
            raise ValueError(f"{f.name}{key}: buckets not cumulative: {counts}")
        if not les or les[-1] != float("inf"):
            raise ValueError(f"{f.name}{key}: no +Inf bucket")
        if h["count"] is None or counts[-1] != h["count"]:
            raise ValueError(f"{f.name}{key}: +Inf bucket {counts[-1]} != _count {h['count']}")
        if h["sum"] is None or h["sum"] < 0:
            raise ValueError(f"{f.name}{key}: no _sum")


def main():
    url = sys.argv[1]
    with urllib.request.urlopen(url, timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode()
    try:
        families = {}
        for f in text_string_to_metric_families(text):
            if f.type == "histogram":
                check_histogram(f)
            families[f.name] = {
                "type": f.type,
                "samples": [[s.name, s.labels, s.value] for s in f.samples],
            }
    except Exception as e:  # noqa: BLE001 - any parse error fails the check
        print(json.dumps({"ok": False, "error": f"does not parse: {e}", "text": text[:4000]}))
        sys.exit(1)
    print(json.dumps({"ok": True, "content_type": ctype, "families": families}))


main()
