"""Graceful shutdown as clients see it.

usage: shutdown.py HOST PORT V5_CLIENTS V311_CLIENTS

Connects the clients, prints `{"phase": "connected"}`, then waits (up to 30 s) until the
broker has closed every connection. The result gives, per protocol, the DISCONNECT reason
codes received from the server (MQTT 5 must get 0x8B, Server shutting down) and how many
connections were closed without one.
"""

import sys
import time

from common import Loop, emit, run


def scenario():
    host, port, n5, n311 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    loop = Loop(host, port)
    tag = time.monotonic_ns()
    v5 = [loop.client(f"down-{tag}-5-{i}", proto="5") for i in range(n5)]
    v311 = [loop.client(f"down-{tag}-3-{i}", proto="311") for i in range(n311)]
    loop.connect_all(v5 + v311, 10)
    emit({"phase": "connected"})
    loop.run_until(lambda: all(c.closed for c in v5 + v311), 30, "every connection closed")

    def summary(clients):
        reasons = {}
        silent = 0
        for c in clients:
            d = c.disconnects[0]
            if d["from_server"]:
                reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
            else:
                silent += 1
        return {"reasons": reasons, "closed_without_disconnect": silent}

    return {"ok": True, "v5": summary(v5), "v311": summary(v311)}


if __name__ == "__main__":
    run(scenario)
