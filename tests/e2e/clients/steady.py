"""A steady publisher/subscriber pair, for tests that misbehave next to it.

usage: steady.py HOST PORT PROTO RUN

A subscriber (QoS 1 on `steady/RUN`) and a publisher connect; after a warm-up the scenario
prints `{"phase": "running"}` and the publisher sends a QoS 1 message every 5 ms until the
test writes `stop` on standard input, then an end marker. Every 10 messages received it prints
`{"phase": "progress", "received": N}`, so the test can interleave its steps with traffic. Once the subscriber has the marker
the result lists the messages missing or out of order; any disconnect fails the scenario.
"""

import sys
import time

from common import Loop, check, emit, is_warm, run, warm_up


def scenario():
    host, port, proto, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    loop = Loop(host, port)
    loop.watch_stdin()
    topic = f"steady/{tag}"
    sub = loop.client(f"steady-{tag}-sub", proto=proto)
    pub = loop.client(f"steady-{tag}-pub", proto=proto)
    loop.connect_all([sub, pub], 10)
    loop.subscribe_all([(sub, [topic])], 1, 10)
    warm_up(loop, [(pub, topic, sub)], 10)
    emit({"phase": "running"})
    sent = 0
    progress = 0
    deadline = time.monotonic() + 60
    while "stop" not in loop.stdin_lines:
        check(time.monotonic() < deadline, "no 'stop' within 60s")
        check(not loop.stdin_eof, "standard input closed before 'stop'")
        pub.publish(topic, str(sent).encode(), 1)
        sent += 1
        loop.run_for(0.005)
        n = sum(1 for m in sub.messages if not is_warm(m[1]))
        if n // 10 > progress:
            progress = n // 10
            emit({"phase": "progress", "received": n})
    pub.publish(topic, b"end", 1)
    loop.run_until(lambda: any(m[1] == b"end" for m in sub.messages), 10, "the end marker")
    got = [int(m[1]) for m in sub.messages if not is_warm(m[1]) and m[1] != b"end"]
    missing = sorted(set(range(sent)) - set(got))
    in_order = got == sorted(got)
    disconnects = [d for c in (sub, pub) for d in c.disconnects]
    return {"ok": not missing and in_order and not disconnects, "sent": sent,
            "received": len(got), "missing": len(missing), "missing_examples": missing[:10],
            "in_order": in_order, "disconnects": disconnects}


if __name__ == "__main__":
    run(scenario)
