"""Session takeover, repeated: a persistent session moves from connection to connection.

usage: takeover.py HOST PORT PROTO ROUNDS MODE RUN

Client id X connects with a persistent session (MQTT 5: Clean Start 0, Session Expiry 300 s;
3.1.1: Clean Session 0) and subscribes to `to/RUN/#` at QoS 2. Each round a new connection
with id X (Clean Start 0) connects and the scenario checks:

- its CONNACK has Session Present 1;
- the previous connection is closed by the broker, for MQTT 5 after a DISCONNECT with reason
  0x8E (Session taken over);
- a QoS 2 probe `probe:<round>` published by another client P after the CONNACK reaches the
  new connection exactly once, and not the old one.

MODE `quiet`: nothing else is in flight; before the next round the new connection has
finished the probe's handshake, so at takeover the old connection writes nothing and the
DISCONNECT must be read every time.

MODE `stream`: P also streams QoS 1 messages `s:<n>` to `to/RUN/stream` the whole time, so
deliveries are in flight at every takeover. At the end P publishes `s:end`; once the last
connection has it, every stream message must have reached one of X's connections
(duplicates across connections are allowed by QoS 1 and counted). Here an old MQTT 5
connection may be acknowledging a message when the broker closes it: the write meets a reset
and paho drops the connection before reading the DISCONNECT. Such rounds are counted as
`reason_lost_to_reset`, not failed; every other round must show 0x8E.

The kernel spreads connections over the shards, so the session moves between shards many
times; the test checks that on the broker's counters.
"""

import sys
import time

from common import Loop, check, is_warm, run, warm_up


def scenario():
    host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rounds, mode, tag = int(sys.argv[4]), sys.argv[5], sys.argv[6]
    check(mode in ("quiet", "stream"), f"unknown mode {mode}")
    streaming = mode == "stream"
    v5 = proto == "5"
    started = time.monotonic()
    loop = Loop(host, port)
    xid = f"takeover-{tag}"
    base = f"to/{tag}"

    def new_x():
        return loop.client(xid, proto=proto, clean=False, expiry=300 if v5 else None,
                           log_errors=True)

    pub = loop.client(f"takeover-{tag}-pub", proto=proto, log_errors=True)
    first = new_x()
    loop.connect_all([pub, first], 10)
    loop.subscribe_all([(first, [f"{base}/#"])], 2, 10)
    warm_up(loop, [(pub, f"{base}/warm", first)], 10)

    stream = {"next": 0, "start": time.monotonic()}

    def pump():
        # One message per millisecond on average, in bursts when the loop was busy.
        due = int((time.monotonic() - stream["start"]) * 1000)
        for _ in range(min(due - stream["next"], 10) if streaming else 0):
            pub.publish(f"{base}/stream", f"s:{stream['next']}".encode(), 1)
            stream["next"] += 1

    def run_until(pred, timeout, what):
        def p():
            pump()
            return pred()
        loop.run_until(p, timeout, what)

    conns = [first]
    reasons = {}
    reason_lost = 0
    for r in range(rounds):
        old = conns[-1]
        new = new_x()
        conns.append(new)
        new.connect(host, port)
        run_until(lambda: new.connack is not None or new.disconnects, 10, f"round {r}: CONNACK")
        check(new.connack is not None,
              f"round {r}: new connection closed before CONNACK: {new.disconnects}")
        check(new.connack == (True, 0),
              f"round {r}: CONNACK (session present, reason) = {new.connack}, wanted (True, 0)")
        run_until(lambda: old.closed, 10, f"round {r}: old connection closed")
        check(old.disconnects, f"round {r}: old connection closed without a report")
        d = old.disconnects[0]
        if d["from_server"]:
            reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
        if v5:
            if streaming and not d["from_server"] and old.socket_errors:
                reason_lost += 1
            else:
                check(d["from_server"] and d["reason"] == 0x8E,
                      f"round {r}: old connection got {d} (socket errors {old.socket_errors}), "
                      "wanted DISCONNECT 0x8E from the server")
        else:
            check(not d["from_server"], f"round {r}: unexpected {d}")
        probe = f"probe:{r}".encode()
        probe_mid = pub.publish(f"{base}/probe", probe, 2)
        run_until(lambda: any(m[1] == probe for m in new.messages), 10,
                  f"round {r}: probe at the new connection")
        # Let the probe's handshake finish: the new connection has nothing left to write.
        run_until(lambda: not new.paho.want_write() and probe_mid in pub.acked, 10,
                  f"round {r}: probe handshake")
        check(sum(1 for m in new.messages if m[1] == probe) == 1,
              f"round {r}: probe delivered twice")
        check(not any(m[1] == probe for m in old.messages),
              f"round {r}: probe reached the old connection")

    last = conns[-1]
    stream_missing = []
    duplicates = 0
    sent = stream["next"]
    if streaming:
        pub.publish(f"{base}/stream", b"s:end", 1)
        loop.run_until(lambda: any(m[1] == b"s:end" for m in last.messages), 10,
                       "the end of the stream")
        seen = {}
        for c in conns:
            for t, payload, _q, _dup in c.messages:
                if t.endswith("/stream"):
                    seen[payload] = seen.get(payload, 0) + 1
        stream_missing = [n for n in range(sent) if f"s:{n}".encode() not in seen]
        duplicates = sum(n - 1 for n in seen.values())
    check(all(c.closed for c in conns[:-1]), "an old connection is still open")
    check(last.connected and not last.disconnects, f"last connection lost: {last.disconnects}")
    unexpected = [m for c in conns for m in c.messages
                  if not (is_warm(m[1]) or m[1].startswith(b"probe:") or m[1].startswith(b"s:"))]
    return {"ok": not stream_missing and not unexpected, "rounds": rounds, "mode": mode,
            "stream_sent": sent, "stream_missing": len(stream_missing),
            "missing_examples": stream_missing[:10], "stream_duplicates": duplicates,
            "unexpected": unexpected[:5], "disconnect_reasons": reasons,
            "reason_lost_to_reset": reason_lost,
            "elapsed": round(time.monotonic() - started, 3)}


if __name__ == "__main__":
    run(scenario)
