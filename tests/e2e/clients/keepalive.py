"""Keep Alive: an MQTT 5 client that stops talking is disconnected by the broker.

usage: keepalive.py HOST PORT KEEPALIVE

A paho client connects with the given Keep Alive (seconds), then its network loop is paused:
no PINGREQ is sent, nothing is read. The scenario only watches its socket for readability (a
DISCONNECT or the close), then lets paho read what came. Result: the seconds from CONNACK
to that moment, and the DISCONNECT reason code if one was read (0x8D, Keep Alive timeout).
"""

import select
import sys
import time

from common import Loop, check, emit, run


def scenario():
    host, port, keepalive = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    loop = Loop(host, port)
    c = loop.client("keepalive-" + str(time.monotonic_ns()), proto="5", keepalive=keepalive)
    c.pause_misc = True  # no PINGREQ from paho's keep-alive logic
    loop.connect_all([c], 10)
    connack_at = time.monotonic()
    emit({"phase": "connected"})
    # The paused loop: wait for the socket to become readable, without reading.
    readable, _, _ = select.select([c.sock], [], [], 10 * keepalive + 5)
    woke = time.monotonic() - connack_at
    check(readable, f"nothing from the broker within {10 * keepalive + 5}s")
    loop.run_until(lambda: c.closed, 5, "the connection to close")
    d = c.disconnects[0] if c.disconnects else {}
    return {"ok": True, "after": round(woke, 3), "reason": d.get("reason"),
            "from_server": d.get("from_server")}


if __name__ == "__main__":
    run(scenario)
