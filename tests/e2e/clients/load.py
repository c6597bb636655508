"""One slice of a many-client load: subscribe to your own topic, publish to k others.

usage: load.py HOST PORT PROTO QOS TOTAL FIRST COUNT K MSGS RUN

This process runs clients FIRST..FIRST+COUNT of TOTAL. Client i subscribes to `load/RUN/<i>`
and, once the test writes `go` on standard input, publishes MSGS messages `i:seq` and an end
marker `i:end` to the topics of the K clients (i + d) % TOTAL, d in OFFSETS[:K]. So client i
receives from exactly the K clients (i - d) % TOTAL.

Before `go`, every client publishes `warm:<i>` to its K targets every 0.3 s (see
`common.warm_up` for why); the process prints `{"phase": "ready"}` once each of its clients
has a warm message from each of its K senders, so when every process is ready every route is
in place. The result counts, over this process's clients, messages missing, duplicated (QoS 2
must have none) and unexpected, and the PUBLISH packets its clients sent and received (warm-up
included) for the test to compare with the broker's counters.
"""

import sys
import time

from common import WARM, Failure, Loop, check, emit, is_warm, run

OFFSETS = [1, 17, 251, 500, 999, 3, 42, 613]


def scenario():
    host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    qos, total, first, count, k, msgs = (int(a) for a in sys.argv[4:10])
    tag = sys.argv[10]
    offsets = [d % total for d in OFFSETS[:k]]
    check(len(set(offsets)) == k and 0 not in offsets,
          f"offsets {offsets} not distinct mod {total}")
    started = time.monotonic()
    loop = Loop(host, port)
    loop.watch_stdin()
    ids = range(first, first + count)
    clients = {i: loop.client(f"load-{tag}-{i}", proto=proto) for i in ids}
    loop.connect_all(list(clients.values()), 60)
    loop.subscribe_all([(c, [f"load/{tag}/{i}"]) for i, c in clients.items()], qos, 60)

    def warmed(i, c):
        senders = {m[1] for m in c.messages if is_warm(m[1])}
        return len(senders) == k

    ready = False
    deadline = time.monotonic() + 120
    while "go" not in loop.stdin_lines:
        check(time.monotonic() < deadline, "timed out waiting for 'go'")
        check(not loop.stdin_eof, "standard input closed before 'go'")
        for i, c in clients.items():
            for d in offsets:
                c.publish(f"load/{tag}/{(i + d) % total}", WARM + f":{i}".encode(), 1)
        end = time.monotonic() + 0.3
        while time.monotonic() < end and "go" not in loop.stdin_lines:
            loop.step(0.02)
            if not ready and all(warmed(i, c) for i, c in clients.items()):
                ready = True
                emit({"phase": "ready", "clients": count,
                      "elapsed": round(time.monotonic() - started, 3)})
    check(ready, "'go' before every client was warmed up")
    go = time.monotonic()

    for seq in range(msgs + 1):
        body = "end" if seq == msgs else str(seq)
        for i, c in clients.items():
            for d in offsets:
                c.publish(f"load/{tag}/{(i + d) % total}", f"{i}:{body}".encode(), qos)
        loop.step(0)

    def done():
        for c in clients.values():
            if sum(1 for m in c.messages if m[1].endswith(b":end")) < k:
                return False
        return True

    timed_out = None
    try:
        loop.run_until(done, 90, "every end marker")
        loop.wait_acked(list(clients.values()), 30)
    except Failure as e:
        timed_out = str(e)

    missing = duplicates = unexpected = wrong_qos = received = 0
    examples = []
    for i, c in clients.items():
        counts = {}
        for t, payload, q, _dup in c.messages:
            if is_warm(payload):
                continue
            received += 1
            if q != qos:
                wrong_qos += 1
            counts[(t, payload)] = counts.get((t, payload), 0) + 1
        expect = {(f"load/{tag}/{i}", f"{(i - d) % total}:{'end' if n == msgs else n}".encode())
                  for d in offsets for n in range(msgs + 1)}
        for key in expect:
            n = counts.get(key, 0)
            if n == 0:
                missing += 1
                if len(examples) < 5:
                    examples.append(f"client {i} missing {key}")
            duplicates += max(0, n - 1)
        for key, n in counts.items():
            if key not in expect:
                unexpected += n
                if len(examples) < 5:
                    examples.append(f"client {i} unexpected {key}")
    disconnected = [c.client_id for c in clients.values() if c.disconnects]
    ok = (timed_out is None and missing == 0 and unexpected == 0 and wrong_qos == 0
          and not disconnected and (qos != 2 or duplicates == 0))
    return {"ok": ok, "clients": count, "expected": count * k * (msgs + 1), "received": received,
            "missing": missing, "duplicates": duplicates, "unexpected": unexpected,
            "wrong_qos": wrong_qos, "disconnected": disconnected[:5], "examples": examples,
            "timed_out": timed_out,
            "publish_packets_sent": sum(len(c.published) for c in clients.values()),
            "publish_packets_received": sum(len(c.messages) for c in clients.values()),
            "publish_to_done": round(time.monotonic() - go, 3),
            "elapsed": round(time.monotonic() - started, 3)}


if __name__ == "__main__":
    run(scenario)
