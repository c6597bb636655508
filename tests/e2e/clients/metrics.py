"""Reads the broker's Prometheus endpoint and parses it with prometheus_client's parser.

usage: metrics.py URL

Prints one JSON result line: {"ok": true, "content_type": ..., "families": {name: {"type":
..., "samples": [[sample name, labels, value], ...]}}}. Fails (ok false) when the text does not
parse.
"""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    url = sys.argv[1]
    with urllib.request.urlopen(url, timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode()
    try:
        families = {}
        for f in text_string_to_metric_families(text):
            families[f.name] = {
                "type": f.type,
                "samples": [[s.name, s.labels, s.value] for s in f.samples],
            }
    except Exception as e:  # noqa: BLE001 - any parse error fails the check
        print(json.dumps({"ok": False, "error": f"does not parse: {e}", "text": text[:2000]}))
        sys.exit(1)
    print(json.dumps({"ok": True, "content_type": ctype, "families": families}))


main()
