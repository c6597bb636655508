#!/bin/bash
# The cost of scraping /metrics: 100 QoS 1 pairs at 10,000 msg/s for 2 s + 10 s, with a
# Python client fetching /metrics HZ times a second meanwhile (0: none); prints the broker's
# CPU seconds, delivered/s, lost and latency. Needs `cargo build --release -p broker -p perf`.
# usage: tools/bench/scrape.sh TAG HZ
tag=$1; hz=$2
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
B="$root/target/release/broker"; P="$root/target/release/perf"
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
hport=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
rm -rf /tmp/scr-data
$B run --cores 2 --set node.data_dir=/tmp/scr-data --set listeners.tcp.default.bind=127.0.0.1:$port --set listeners.ws.default.bind=127.0.0.1:0 --set listeners.quic.default.bind=127.0.0.1:0 --set dashboard.listeners.http.bind=127.0.0.1:$hport > /tmp/scr-$tag.log 2>&1 &
bp=$!; sleep 0.8
if [ "$hz" != 0 ]; then
  python3 - $hport $hz > /tmp/scr-$tag-scrapes.txt <<'PY' &
import sys, time, urllib.request
port, hz = sys.argv[1], float(sys.argv[2]); n = 0; t_end = time.time() + 13
while time.time() < t_end:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read(); n += 1
    time.sleep(1/hz)
print(n)
PY
  sp=$!
fi
t0=$(awk '{print $14+$15}' /proc/$bp/stat)
$P bench -h 127.0.0.1 -p $port --pubs 100 --subs 100 -t 'sc/%i' --sub-topic 'sc/%i' -q 1 -s 64 --rate 10000 --warmup 2s --duration 10s --json /tmp/scr-$tag.json > /tmp/scr-$tag.txt 2>&1
t1=$(awk '{print $14+$15}' /proc/$bp/stat)
[ "$hz" != 0 ] && wait $sp
kill $bp; wait $bp 2>/dev/null
python3 - "$tag" "$t0" "$t1" <<'PY'
import json,sys
tag,t0,t1=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])
j=json.load(open(f"/tmp/scr-{tag}.json")); r=j["receive"]; lat=r.get("latency_us",{})
try: n=open(f"/tmp/scr-{tag}-scrapes.txt").read().strip()
except Exception: n="0"
print(tag, "scrapes", n, "cpu_s=%.2f"%((t1-t0)/100), "rate=%.0f"%r["arrival_rate_per_s"], "lost", r["lost"], "p50 %.3f p99 %.3f ms"%(lat["p50"]/1000, lat["p99"]/1000))
PY
