#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine of this kind; idempotent and quick
# when everything is already there. Called by tools/test.sh and .ci/run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v stdbuf >/dev/null 2>&1 || need_apt+=(coreutils)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "tools/setup.sh: please install: ${need_apt[*]} (apt-get install -y ...)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need_apt[@]}" >/dev/null
fi

# paho-mqtt 2.2 or newer: 2.1 misreads some MQTT 5 reason codes.
if ! python3 -c 'import paho.mqtt, sys; v = tuple(int(x) for x in paho.mqtt.__version__.split(".")[:2]); sys.exit(0 if v >= (2, 2) else 1)' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check 'paho-mqtt==2.2.0'
fi

# aioquic: an independent QUIC implementation for the MQTT over QUIC interop tests.
if ! python3 -c 'import aioquic' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check 'aioquic==1.7.2'
fi
# prometheus_client: its parser checks the broker's /metrics output.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check 'prometheus-client==0.21.1'
fi
# schemathesis: checks the REST API against its OpenAPI document (/api-docs).
if ! command -v schemathesis >/dev/null 2>&1 || [ "$(schemathesis --version 2>/dev/null)" != "schemathesis, version 4.32.5" ]; then
  python3 -m pip install -q --disable-pip-version-check 'schemathesis==4.32.5'
fi

if ! command -v node >/dev/null 2>&1; then
  echo "tools/setup.sh: node (>= 18) is required by the interoperability tests" >&2
  exit 1
fi
if [ ! -d tools/vectors/node_modules/mqtt-packet ]; then
  (cd tools/vectors && npm ci --no-audit --no-fund --loglevel=error)
fi
# MQTT.js, for the WebSocket end-to-end tests.
if [ ! -d tests/e2e/clients/js/node_modules/mqtt ]; then
  (cd tests/e2e/clients/js && npm ci --no-audit --no-fund --loglevel=error)
fi
