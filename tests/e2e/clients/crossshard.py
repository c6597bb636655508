"""Cross-shard delivery: many subscribers and publishers, every message accounted for.

usage: crossshard.py HOST PORT PROTO QOS SUBS PUBS COUNT FANOUT RUN

Publisher j sends COUNT messages `j:seq` to `cs/RUN/p<j>/data`, then one end marker `j:end`.
Subscriber i subscribes to the topics of FANOUT publishers (i*FANOUT+f) % PUBS, alternating
the exact topic, `+` and `#` filters. With enough clients both shards of the broker hold
publishers and subscribers, so most messages cross shards. The scenario waits until every
subscriber has every end marker (messages of one publisher on one topic arrive in order), then
checks: nothing missing, nothing unexpected, the granted QoS, and for QoS 2 nothing duplicated
(QoS 1 reports duplicates). QoS 0 is published at a low rate, so on loopback every message must
arrive. The result also gives the PUBLISH packets sent and received by all clients, warm-up
included, for the test to compare with the broker's counters.
"""

import sys
import time

from common import Failure, Loop, is_warm, run, warm_up


def scenario():
    host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    qos, nsubs, npubs, count, fanout = (int(a) for a in sys.argv[4:9])
    tag = sys.argv[9]
    started = time.monotonic()
    loop = Loop(host, port)

    subs = [loop.client(f"cs-{tag}-s{i}", proto=proto) for i in range(nsubs)]
    pubs = [loop.client(f"cs-{tag}-p{j}", proto=proto) for j in range(npubs)]
    loop.connect_all(subs + pubs, 20)

    def topic(j):
        return f"cs/{tag}/p{j}/data"

    forms = [topic, lambda j: f"cs/{tag}/p{j}/+", lambda j: f"cs/{tag}/p{j}/#"]
    wanted = {}  # subscriber index -> publisher indexes
    plan = []
    for i, s in enumerate(subs):
        js = sorted({(i * fanout + f) % npubs for f in range(fanout)})
        wanted[i] = js
        plan.append((s, [forms[(i + k) % len(forms)](j) for k, j in enumerate(js)]))
    loop.subscribe_all(plan, qos, 20)
    warm = warm_up(loop, [(pubs[j], topic(j), s) for i, s in enumerate(subs) for j in wanted[i]],
                   20)

    # Publish: one message per publisher per round; QoS 0 rounds are paced.
    for seq in range(count + 1):
        body = "end" if seq == count else str(seq)
        for j, p in enumerate(pubs):
            p.publish(topic(j), f"{j}:{body}".encode(), qos)
        if qos == 0:
            loop.run_for(0.01)
        else:
            loop.step(0)

    def all_ends():
        for i, s in enumerate(subs):
            if sum(1 for m in s.messages if m[1].endswith(b":end")) < len(wanted[i]):
                return False
        return True

    timed_out = None
    try:
        loop.run_until(all_ends, 60, "every end marker at every subscriber")
        loop.wait_acked(pubs, 20)
    except Failure as e:
        timed_out = str(e)

    missing = duplicates = unexpected = wrong_qos = 0
    examples = []
    for i, s in enumerate(subs):
        counts = {}
        for t, payload, q, _dup in s.messages:
            if is_warm(payload):
                continue
            counts[(t, payload)] = counts.get((t, payload), 0) + 1
            if q != qos:
                wrong_qos += 1
        expect = {(topic(j), f"{j}:{'end' if n == count else n}".encode())
                  for j in wanted[i] for n in range(count + 1)}
        for key in expect:
            n = counts.get(key, 0)
            if n == 0:
                missing += 1
                if len(examples) < 5:
                    examples.append(f"s{i} missing {key}")
            duplicates += max(0, n - 1)
        for key, n in counts.items():
            if key not in expect:
                unexpected += n
                if len(examples) < 5:
                    examples.append(f"s{i} unexpected {key}")
    disconnected = [f"{c.client_id}: {c.disconnects[0]}" for c in subs + pubs if c.disconnects]
    ok = (timed_out is None and missing == 0 and unexpected == 0 and wrong_qos == 0
          and not disconnected and (qos != 2 or duplicates == 0))
    return {"ok": ok, "timed_out": timed_out, "clients": nsubs + npubs,
            "expected": sum(len(wanted[i]) for i in range(nsubs)) * (count + 1),
            "missing": missing, "duplicates": duplicates, "unexpected": unexpected,
            "wrong_qos": wrong_qos, "examples": examples, "disconnected": disconnected[:5],
            "warm_published": warm,
            "publish_packets_sent": npubs * (count + 1) + warm,
            "publish_packets_received": sum(len(s.messages) for s in subs),
            "elapsed": round(time.monotonic() - started, 3)}


if __name__ == "__main__":
    run(scenario)
