#!/usr/bin/env bash
# Runs the whole test suite. Installs what the suite needs first (tools/setup.sh: the mosquitto
# broker and clients, paho-mqtt, the independent MQTT codec in tools/vectors); idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools/setup.sh
# The end-to-end tests open a few thousand sockets per process.
ulimit -n 20000 2>/dev/null || true
cargo test --workspace --locked "$@"
