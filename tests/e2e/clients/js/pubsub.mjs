// MQTT.js round trip for the end-to-end tests: a subscriber and a publisher over the URL given
// (ws://, wss://, mqtt://), N QoS 1 messages, then one JSON line with what arrived.
// Usage: node pubsub.mjs URL PROTOCOL_VERSION COUNT [CA_FILE]
import { readFileSync } from "node:fs";
import mqtt from "mqtt";

const [url, version, count, ca] = process.argv.slice(2);
const n = Number(count);
const opts = { protocolVersion: Number(version), reconnectPeriod: 0, connectTimeout: 10000 };
if (ca) opts.ca = readFileSync(ca);
const topic = `js/${process.pid}`;
const got = [];
const done = (result) => {
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
};
setTimeout(() => done({ ok: false, error: "timeout", got }), 15000);

const sub = mqtt.connect(url, { ...opts, clientId: `jsub-${process.pid}` });
sub.on("error", (e) => done({ ok: false, error: `subscriber: ${e.message}`, got }));
sub.on("message", (t, payload) => {
  got.push(payload.toString());
  if (got.length === n) done({ ok: true, got });
});
sub.on("connect", () => {
  sub.subscribe(topic, { qos: 1 }, (err) => {
    if (err) return done({ ok: false, error: `subscribe: ${err.message}`, got });
    const pub = mqtt.connect(url, { ...opts, clientId: `jpub-${process.pid}` });
    pub.on("error", (e) => done({ ok: false, error: `publisher: ${e.message}`, got }));
    pub.on("connect", () => {
      for (let i = 0; i < n; i++) pub.publish(topic, `m${i}`, { qos: 1 });
    });
  });
});
