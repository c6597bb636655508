#!/usr/bin/env bash
# Writes the seed corpora fuzz/seeds/<target>/ from the mqtt-packet vectors
# (tools/vectors/cases.json, encoded by the independent codec in tools/vectors).
#
#   decode:    one file per vector (its bytes), plus whole sessions per version: CONNECT then
#              every client-to-server vector ("stream_server_vN"), and CONNACK then every
#              server-to-client vector ("stream_client_vN"), so the fresh decoders get past
#              their first packet.
#   roundtrip: the same single-packet files. That target reads its input through `arbitrary`,
#              so they are only a varied starting point, not packets.
#
# Needs node and `npm ci` in tools/vectors (done here if missing). Idempotent: rewrites the
# generated seeds; inputs found by fuzzing (seeds/*/crash-*) are kept. The seeds are
# committed: rerun after cases.json changes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
vectors="$here/../tools/vectors"
if [ ! -d "$vectors/node_modules/mqtt-packet" ]; then
  (cd "$vectors" && npm ci --no-audit --no-fund --loglevel=error)
fi
json=$(mktemp)
trap 'rm -f "$json"' EXIT
node "$vectors/gen.js" "$vectors/cases.json" >"$json"

SEEDS="$here/seeds" JSON="$json" node - <<'EOF'
const fs = require('fs');
const path = require('path');
const cases = JSON.parse(fs.readFileSync(process.env.JSON, 'utf8'));
const bad = cases.filter((c) => c.error);
if (bad.length) {
  console.error('gen.js failed for:', bad.map((c) => `${c.name}: ${c.error}`).join('; '));
  process.exit(1);
}
const root = process.env.SEEDS;
const targets = ['decode', 'roundtrip'];
// Inputs the fuzzers found (crash-*, kept as regression seeds) survive a rerun.
for (const t of targets) {
  const dir = path.join(root, t);
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(dir)) if (!f.startsWith('crash-')) fs.rmSync(path.join(dir, f));
}
const write = (t, name, buf) => fs.writeFileSync(path.join(root, t, name), buf);
for (const c of cases) {
  for (const t of targets) write(t, c.name, Buffer.from(c.hex, 'hex'));
}
// Whole sessions for the fresh server and client decoders. Vectors over 4 KiB are left out
// of the streams (they are seeds on their own).
const toServer = /^(publish|puback|pubrec|pubrel|pubcomp|subscribe|unsubscribe|pingreq|disconnect|auth)_/;
const toClient = /^(publish|puback|pubrec|pubrel|pubcomp|suback|unsuback|pingresp|disconnect|auth)_/;
let streams = 0;
for (const v of [3, 4, 5]) {
  const mine = cases.filter((c) => c.version === v && c.hex.length <= 8192);
  const first = (kind) => mine.find((c) => c.name.startsWith(kind + '_'));
  const session = (head, re, skip) =>
    Buffer.concat([head, ...mine.filter((c) => re.test(c.name) && !skip(c)).map((c) => c.hex)]
      .map((h) => (Buffer.isBuffer(h) ? h : Buffer.from(h, 'hex'))));
  // A client never sends Subscription Identifiers in PUBLISH, and a v3/v4 server never
  // sends DISCONNECT.
  const server = session(Buffer.from(first('connect').hex, 'hex'), toServer,
    (c) => c.name.includes('subscription_identifiers'));
  write('decode', `stream_server_v${v}`, server);
  const client = session(Buffer.from(first('connack').hex, 'hex'), toClient,
    (c) => v !== 5 && c.name.startsWith('disconnect_'));
  write('decode', `stream_client_v${v}`, client);
  streams += 2;
}
console.log(`wrote ${cases.length} vectors to ${targets.join(', ')} and ${streams} streams to decode`);
EOF
