"""Clients for the REST API tests: connects them, holds them and does what the test says.

usage: api_clients.py HOST PORT SPEC...

Each SPEC is `ID:USER:PROTO:CLEAN:EXPIRY`: client id, user name (`-` for none), protocol
(`5`, `311`, `31`), Clean Start / Clean Session (`1` or `0`) and, for MQTT 5, the Session
Expiry Interval in seconds (`-` for none). Once every CONNACK has arrived the script prints
{"phase": "connected", "clients": [IDS]}.

Commands on standard input, one per line (each answered by a phase line once done):

- `connect SPEC...`: more clients; {"phase": "connected", ...}.
- `sub ID QOS FILTER`: SUBSCRIBE; {"phase": "subscribed", "client": ID, "granted": [...]}.
- `pub ID QOS TOPIC PAYLOAD`: PUBLISH, waits for its acknowledgement;
  {"phase": "published", "client": ID}.
- `disconnect ID`: DISCONNECT (normal); {"phase": "disconnected", "client": ID}.
- `ping WORD`: {"phase": "pong", "word": WORD} (everything received before it was printed).

Whatever happens meanwhile is printed as it happens: every message received as
{"phase": "message", "client", "topic", "payload", "qos", "retain"} and every connection the
client did not end as {"phase": "lost", "client", "reason", "from_server"} (MQTT 5: the
DISCONNECT's reason code; 3.1.1: paho's code for a lost connection). At the end of standard
input the script disconnects the others and prints the result, with the messages and losses
of each client.
"""

import sys

from common import Failure, Loop, check, emit, run

TIMEOUT = 20


def parse(loop, spec):
    cid, user, proto, clean, expiry = spec.split(":")
    check(proto in ("5", "311", "31"), f"bad protocol in {spec}")
    c = loop.client(cid, proto=proto, clean=clean == "1",
                    expiry=None if expiry == "-" else int(expiry))
    if user != "-":
        c.paho.username_pw_set(user)
    c.messages_seen = 0
    c.losses_seen = 0
    c.ended = False  # the script ended the connection itself
    c.lost = []  # reason codes of the connections it did not end
    return c


def scenario():
    host, port = sys.argv[1], int(sys.argv[2])
    loop = Loop(host, port)
    by_id = {}

    def connect(specs):
        new = [parse(loop, s) for s in specs]
        for c in new:
            check(c.client_id not in by_id, f"{c.client_id} twice")
            by_id[c.client_id] = c
        loop.connect_all(new, TIMEOUT)
        emit({"phase": "connected", "clients": [c.client_id for c in new]})

    def report():
        """Prints what arrived since the last call."""
        for c in loop.clients:
            for topic, payload, qos, _dup in c.messages[c.messages_seen:]:
                emit({"phase": "message", "client": c.client_id, "topic": topic,
                      "payload": payload.decode(errors="replace"), "qos": qos})
            c.messages_seen = len(c.messages)
            for d in c.disconnects[c.losses_seen:]:
                if not c.ended:
                    c.lost.append(d["reason"])
                    emit({"phase": "lost", "client": c.client_id, "reason": d["reason"],
                          "from_server": d["from_server"]})
            c.losses_seen = len(c.disconnects)

    def client(cid):
        check(cid in by_id, f"unknown client {cid}")
        return by_id[cid]

    def command(words):
        if words[0] == "connect":
            connect(words[1:])
        elif words[0] == "sub":
            c, qos, topic = client(words[1]), int(words[2]), words[3]
            mid = c.subscribe([topic], qos)
            loop.run_until(lambda: mid in c.subacks, TIMEOUT, f"SUBACK for {c.client_id}")
            emit({"phase": "subscribed", "client": c.client_id, "granted": c.subacks[mid]})
        elif words[0] == "pub":
            c, qos, topic, payload = client(words[1]), int(words[2]), words[3], words[4]
            c.publish(topic, payload.encode(), qos)
            loop.wait_acked([c], TIMEOUT)
            emit({"phase": "published", "client": c.client_id})
        elif words[0] == "disconnect":
            c = client(words[1])
            c.ended = True
            c.paho.disconnect()
            loop.run_until(lambda: c.closed, TIMEOUT, f"{c.client_id} to close")
            emit({"phase": "disconnected", "client": c.client_id})
        elif words[0] == "ping":
            report()
            emit({"phase": "pong", "word": words[1] if len(words) > 1 else ""})
        else:
            raise Failure(f"unknown command {words}")

    connect(sys.argv[3:])
    loop.watch_stdin()
    done = 0
    while not loop.stdin_eof or done < len(loop.stdin_lines):
        loop.step(0.02)
        report()
        while done < len(loop.stdin_lines):
            words = loop.stdin_lines[done].split()
            done += 1
            if words:
                command(words)
                report()
    report()
    for c in loop.clients:
        if not c.closed:
            c.ended = True
            c.paho.disconnect()
    loop.run_until(lambda: all(c.closed for c in loop.clients), TIMEOUT, "every client to close")
    return {"ok": True, "clients": {
        c.client_id: {"messages": [[m[0], m[1].decode(errors="replace")] for m in c.messages],
                      "lost": c.lost}
        for c in loop.clients}}


run(scenario)
