#!/usr/bin/env bash
# The REST API's cost (docs/benchmarks.md "REST API"): 10,000 idle clients (two `perf conn`
# processes), each call timed once; then 10 QoS 1 pairs at 10,000 msg/s, quiet, while a loop
# of curl calls GET /api/v5/stats (the client loop's own cost), and while it lists clients
# (each listing a pass over every shard's sessions). Needs release builds:
#   cargo build --release -p broker -p perf && tools/bench/api.sh
set -e
ulimit -n 20000
root=$(cd "$(dirname "$0")/../.." && pwd)
D=$(mktemp -d)
B=$root/target/release/broker
P=$root/target/release/perf
$B run --cores 2 --set dashboard.listeners.http.bind=127.0.0.1:0 --set listeners.tcp.default.bind=127.0.0.1:0 --set listeners.ws.default.enable=false --set listeners.quic.default.enable=false --set node.data_dir=$D > $D/log 2>&1 &
BP=$!
sleep 1
H=$(grep -o "http [0-9.:]*" $D/log | awk '{print $2}')
T=$(grep -o "listening on tcp [0-9.:]*" $D/log | awk '{print $4}'); PORT=${T##*:}
PW=$(cat $D/dashboard/initial_admin_password)
TOK=$(curl -s -XPOST $H/api/v5/login -d "{\"username\":\"admin\",\"password\":\"$PW\"}" | python3 -c "import json,sys;print(json.load(sys.stdin)['token'])")
A="Authorization: Bearer $TOK"
$P conn -h 127.0.0.1 -p $PORT -c 5000 --prefix a --duration 300 > $D/conn1 2>&1 &
C1=$!
$P conn -h 127.0.0.1 -p $PORT -c 5000 --prefix b --duration 300 > $D/conn2 2>&1 &
C2=$!
for i in $(seq 60); do n=$(curl -s -H "$A" "$H/api/v5/stats?aggregate=true" | python3 -c "import json,sys;print(json.load(sys.stdin)['live_connections.count'])"); [ "$n" -ge 10000 ] && break; sleep 1; done
echo "connected: $n"
t() { curl -s -o /dev/null -H "$A" -w "%{http_code} %{time_total}s %{size_download}B  $1\n" "$H$1"; }
t "/api/v5/clients?limit=100"
t "/api/v5/clients?page=100&limit=100"
t "/api/v5/clients?limit=10000"
t "/api/v5/clients?like_clientid=a-conn-42"
t "/api/v5/clients/a-conn-4242"
t "/api/v5/subscriptions?limit=100"
t "/api/v5/stats"
t "/metrics"
# under load: QoS 1 pairs while listing in a loop
$P bench -h 127.0.0.1 -p $PORT --pubs 10 --subs 10 -t 'b/%i' --sub-topic 'b/%i' -q 1 -s 64 --rate 10000 --warmup 2s --duration 10s > $D/bench_quiet 2>&1
for what in stats clients; do
case $what in stats) U="/api/v5/stats";; clients) U="/api/v5/clients?limit=100";; esac
( end=$((SECONDS+13)); n=0; while [ $SECONDS -lt $end ]; do curl -s -o /dev/null -H "$A" "$H$U"; n=$((n+1)); done; echo "$what calls: $n" >> $D/listings ) &
L=$!
$P bench -h 127.0.0.1 -p $PORT --pubs 10 --subs 10 -t "c$what/%i" --sub-topic "c$what/%i" -q 1 -s 64 --rate 10000 --warmup 2s --duration 10s > $D/bench_$what 2>&1
wait $L
echo "--- during $what calls"; grep -E "^ *(ack|receive) " $D/bench_$what
done
sleep 1
cat $D/listings
echo "--- quiet"; grep -E "^ *(e2e|ack|connect) " $D/bench_quiet
kill $C1 $C2 $BP || true; sleep 1
rm -rf $D
