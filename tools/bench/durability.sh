#!/usr/bin/env bash
# Durable sessions: QoS 1 throughput and latency per durability.fsync policy against clean
# (in-memory) sessions, and recovery of a large offline queue after kill -9 (time to serve
# again, disk bytes per queued message).
#
# Usage: tools/bench/durability.sh [--queued N] [--rate R] [--duration S]
# Writes tools/bench/results/<UTC date>-<HHMM>-durability/{results.md,*.json,*.log}.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
queued=1000000
rate=10000
duration=10
while [ $# -gt 0 ]; do
    case "$1" in
        --queued) queued="$2"; shift 2 ;;
        --rate) rate="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
cargo build --release -p broker -p perf >&2
broker="$root/target/release/broker"
perf="$root/target/release/perf"
out="$root/tools/bench/results/$(date -u +%Y-%m-%d-%H%M)-durability"
mkdir -p "$out"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"; kill $(jobs -p) 2>/dev/null || true' EXIT

free_port() {
    python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# start_broker NAME DATADIR SETS... : starts `broker run --cores 2`, waits for its TCP
# listener; sets $bpid and $port.
start_broker() {
    local name="$1" data="$2"
    shift 2
    port=$(free_port)
    "$broker" run --cores 2 --set "node.data_dir=$data" \
        --set "listeners.tcp.default.bind=127.0.0.1:$port" \
        --set listeners.ws.default.bind=127.0.0.1:0 \
        --set listeners.quic.default.bind=127.0.0.1:0 \
        --set dashboard.listeners.http.bind=127.0.0.1:0 "$@" >"$out/$name.log" 2>&1 &
    bpid=$!
    for _ in $(seq 1 600); do
        grep -q "listening on tcp" "$out/$name.log" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "broker $name did not start" >&2
    cat "$out/$name.log" >&2
    exit 1
}

cpu_s() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }

echo "| sessions | durability.fsync | sent/s | delivered/s | lost | p50 ms | p99 ms | broker CPU s | CPU s per 10⁶ delivered | disk written MiB |" > "$out/results.md"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" >> "$out/results.md"

# 1. Throughput and latency: 100 QoS 1 pairs at $rate msg/s, persistent subscribers (-C false
#    -x 3600) under each policy, and clean subscribers (nothing written) as the baseline.
for mode in ${modes:-clean always interval never}; do
    data="$scratch/$mode"
    if [ "$mode" = clean ]; then
        start_broker "tput-$mode" "$data"
        sess=(-C true)
    else
        start_broker "tput-$mode" "$data" --set "durability.fsync=$mode"
        sess=(-C false -x 3600)
    fi
    c0=$(cpu_s $bpid)
    w0=$(awk '/^write_bytes/ {print $2}' /proc/$bpid/io)
    "$perf" bench -h 127.0.0.1 -p "$port" --pubs 100 --subs 100 -t 'dur/%i' --sub-topic 'dur/%i' \
        -q 1 -s 64 --rate "$rate" --warmup 2s --duration "${duration}s" "${sess[@]}" \
        --json "$out/tput-$mode.json" >"$out/tput-$mode.txt" 2>&1
    c1=$(cpu_s $bpid)
    w1=$(awk '/^write_bytes/ {print $2}' /proc/$bpid/io)
    kill $bpid; wait $bpid 2>/dev/null || true
    python3 - "$out/tput-$mode.json" "$mode" "$c0" "$c1" "$w0" "$w1" >>"$out/results.md" <<'PY'
import json, sys
path, mode, c0, c1, w0, w1 = sys.argv[1:]
j = json.load(open(path))
r = j["receive"]; lat = r.get("latency_us") or {}
sent = j.get("publish", {}).get("rate_per_s") or 0
got = r.get("arrival_rate_per_s") or 0
cpu = float(c1) - float(c0)
delivered = (r.get("received") or 0) + (r.get("warmup_received") or 0)
per = cpu / max(delivered, 1) * 1e6
label = "clean (in memory)" if mode == "clean" else "persistent"
pol = "–" if mode == "clean" else mode
print(f"| {label} | {pol} | {sent:,.0f} | {got:,.0f} | {r.get('lost')} | {lat.get('p50', 0)/1000:.2f} | "
      f"{lat.get('p99', 0)/1000:.2f} | {cpu:.2f} | {per:.2f} | {(int(w1)-int(w0))/2**20:.1f} |")
PY
done

# 2. Recovery: one offline persistent subscriber, $queued QoS 1 messages of 64 B queued for it,
#    kill -9, restart: time until the broker listens again, and the bytes on disk.
data="$scratch/recovery"
start_broker "queue" "$data" --set "mqtt.max_mqueue_len=$((queued + 1000))"
"$perf" sub -h 127.0.0.1 -p "$port" -c 1 -t 'rq/#' -q 1 -C false -x 86400 --duration 1s \
    >"$out/queue-sub.txt" 2>&1
"$perf" pub -h 127.0.0.1 -p "$port" -c 10 -I 0 -t 'rq/%i' -q 1 -s 64 -L "$((queued / 10))" \
    --json "$out/queue-pub.json" >"$out/queue-pub.txt" 2>&1
sleep 0.5
disk=$(du -sb "$data/storage" | awk '{print $1}')
rss=$(awk '/VmRSS/ {print $2}' /proc/$bpid/status)
kill -9 $bpid; wait $bpid 2>/dev/null || true
t0=$(date +%s.%N)
start_broker "recover" "$data" --set "mqtt.max_mqueue_len=$((queued + 1000))"
# Listening sockets exist before recovery ends; a CONNECT is answered once every shard has
# restored its state and written its startup snapshot.
mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t probe -m up
t1=$(date +%s.%N)
recovered=$(grep -o "recovered .*" "$out/recover.log" | head -1)
disk_after=$(du -sb "$data/storage" | awk '{print $1}')
kill $bpid; wait $bpid 2>/dev/null || true
{
    echo
    echo "Recovery of $queued queued 64 B QoS 1 messages (one offline session), kill -9, restart:"
    echo
    echo "- log line: \`$recovered\`"
    echo "- start to the first CONNACK and PUBACK: $(python3 -c "print(f'{$t1-$t0:.2f}')") s (reading the logs, restoring the session, writing and fsyncing the startup snapshot)"
    echo "- disk before the kill: $disk bytes ($(python3 -c "print(f'{$disk/$queued:.1f}')") bytes per queued message); after the startup snapshot: $disk_after bytes ($(python3 -c "print(f'{$disk_after/$queued:.1f}')") per message)"
    echo "- broker RSS with the queue: $((rss / 1024)) MiB"
} >>"$out/results.md"
cat "$out/results.md"
echo "results: $out" >&2
