#!/usr/bin/env bash
# Side-by-side benchmark: this broker, Mosquitto and rumqttd under the same perf scenarios.
# Usage: tools/bench/run.sh [--duration SECONDS] [--only ours,mosquitto,rumqttd]
# See tools/bench/README.md.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

echo "== build: cargo build --release -p broker -p perf" >&2
if ! cargo build --release -p broker -p perf; then
    echo "build failed" >&2
    exit 1
fi

notes=()

# Mosquitto (Debian package).
if [ ! -x /usr/sbin/mosquitto ]; then
    echo "== installing mosquitto" >&2
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get install -y mosquitto >&2 || notes+=("mosquitto: apt-get install failed")
fi

# rumqttd 0.20.0 into a tools-local root (gitignored). No --locked: its lock file pins
# crates that no longer build on current toolchains.
rumqttd="$here/.bin/bin/rumqttd"
if [ ! -x "$rumqttd" ]; then
    echo "== installing rumqttd 0.20.0 into $here/.bin (log: $here/.bin/install.log)" >&2
    mkdir -p "$here/.bin"
    if ! cargo install rumqttd --version 0.20.0 --root "$here/.bin" >"$here/.bin/install.log" 2>&1; then
        tail -20 "$here/.bin/install.log" >&2
        notes+=("rumqttd: cargo install rumqttd --version 0.20.0 failed (see tools/bench/.bin/install.log); skipped")
    fi
fi

# 5,000 connections per process in the storm; stay under the 20,000 fd limit.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

note_args=()
for n in ${notes[@]+"${notes[@]}"}; do note_args+=(--note "$n"); done

exec python3 "$here/bench.py" --root "$root" --rumqttd "$rumqttd" --cmdline "$*" \
    ${note_args[@]+"${note_args[@]}"} "$@"
