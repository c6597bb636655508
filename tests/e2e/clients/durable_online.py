"""Durability with the broker killed mid-stream (paho-mqtt, MQTT 5, QoS 1).

usage: durable_online.py HOST PORT ROLE TAG [COUNT]

- ROLE sub1: the persistent session `dur-TAG` (Session Expiry Interval 3600) subscribes to
  `dur/TAG/#` at QoS 1, prints {"phase": "subscribed"}, then receives until its connection
  drops (the broker is killed); the result lists the payloads received.
- ROLE pub: publishes COUNT QoS 1 messages (payloads "0", "1", ...) to `dur/TAG/x`, at most
  100 unacknowledged at a time, printing {"phase": "acked", "n": K} every 1,000
  acknowledgements, until every one is acknowledged or the connection drops; the result lists
  the payloads whose PUBACK arrived.
- ROLE sub2: the same session connects again with Clean Start 0 (session present must be 1)
  and receives until 3 s pass without a message; the result lists the payloads.
"""

import sys
import time

from common import Loop, check, mqtt, run

WINDOW = 100


def scenario():
    host, port, role, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    count = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    loop = Loop(host, port)
    if role in ("sub1", "sub2"):
        c = loop.client(f"dur-{tag}", clean=(role == "sub1"), expiry=3600)
        loop.connect_all([c], 20, session_present=(role == "sub2"))
        if role == "sub1":
            loop.subscribe_all([(c, [f"dur/{tag}/#"])], 1, 20)
            print('{"phase": "subscribed"}', flush=True)
            loop.run_until(lambda: c.closed, 120, "the broker to go away")
        else:
            last = [time.monotonic(), 0]

            def quiet():
                if len(c.messages) != last[1]:
                    last[0], last[1] = time.monotonic(), len(c.messages)
                return time.monotonic() - last[0] > 3

            loop.run_until(quiet, 120, "the queue to drain")
        return {"ok": True, "received": [m[1].decode() for m in c.messages]}
    p = loop.client(f"dur-{tag}-pub")
    loop.connect_all([p], 20)
    mids = {}
    sent = 0
    reported = 0
    lost = False
    while not p.closed and not lost and (sent < count or p.unacked):
        while sent < count and p.unacked < WINDOW and not p.closed:
            info = p.paho.publish(f"dur/{tag}/x", str(sent).encode(), 1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                # The broker went away (it is killed mid-stream): stop publishing.
                lost = True
                break
            p.published.append(info.mid)
            mids[info.mid] = sent
            sent += 1
        loop.step(0.01)
        done = len(p.acked)
        if done // 1000 > reported:
            reported = done // 1000
            print(f'{{"phase": "acked", "n": {done}}}', flush=True)
    check(sent > 0, "nothing published")
    return {"ok": True, "acked": sorted(mids[m] for m in p.acked if m in mids), "sent": sent}


run(scenario)
