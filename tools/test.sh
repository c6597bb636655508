#!/usr/bin/env bash
# Runs the whole test suite. Installs the test-time helpers the suite needs first (the
# independent MQTT codec in tools/vectors, from the npm registry); idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! command -v node >/dev/null 2>&1; then
  echo "tools/test.sh: node (>= 18) is required by the interoperability tests" >&2
  exit 1
fi
if [ ! -d tools/vectors/node_modules/mqtt-packet ]; then
  (cd tools/vectors && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo test --workspace --locked "$@"
