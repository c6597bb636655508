"""Conformance scenarios modelled on the Eclipse Paho interoperability suite.

usage: conformance.py HOST PORT SCENARIO PROTO TAG

The behaviours of paho.mqtt.testing's `client_test.py` (MQTT 3.1.1) and `client_test5.py`
(MQTT 5), each scenario a function of this file, run with paho-mqtt (>= 2.2) against the
broker. PROTO is `5` or `311` (not every scenario has both), TAG makes client ids and topics
unique. Every scenario asserts what a client can observe, prints one JSON result line with
`"ok"` and exits non-zero on the first failed assertion (see `common.run`).

Clients run paho's own network thread (`loop_start`) with automatic reconnection off, so a
connection the broker closes stays closed; every wait has a deadline. Where a scenario needs
what the paho client refuses to send (an invalid topic filter, a refused client id) it writes
the packet itself, as the Paho suite does.

The broker runs with two shards and the kernel spreads connections over them, so the several
clients of a scenario usually sit on both shards.
"""

import select
import socket
import struct
import sys
import threading
import time

from common import Failure, check, emit, run

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

PROTOCOLS = {"5": mqtt.MQTTv5, "311": mqtt.MQTTv311}

TIMEOUT = 10  # seconds, for anything that should happen at once

# A message published by another connection right after a DISCONNECT can still find the
# session attached (then QoS 0 is lost legitimately); the Paho suite sleeps as well.
SETTLE = 0.3

# Where nothing must arrive: how long to keep listening.
QUIET = 0.7

PROPS = ["PayloadFormatIndicator", "MessageExpiryInterval", "ContentType", "ResponseTopic",
         "CorrelationData", "SubscriptionIdentifier", "UserProperty", "TopicAlias"]


def props_of(props):
    """The PUBLISH properties a scenario looks at, JSON-friendly."""
    out = {}
    if props is None:
        return out
    for name in PROPS:
        if hasattr(props, name):
            v = getattr(props, name)
            if isinstance(v, bytes):
                v = v.hex()
            elif name == "UserProperty":
                v = [list(kv) for kv in v]
            out[name] = v
    return out


class C:
    """One paho client on its own network thread, recording what it observes."""

    def __init__(self, host, port, cid, proto="5", clean=True, expiry=None, keepalive=60,
                 manual_ack=False, receive_max=None, will=None, connect_props=None):
        self.host, self.port, self.cid, self.proto = host, port, cid, proto
        self.v5 = proto == "5"
        self.clean, self.expiry, self.keepalive = clean, expiry, keepalive
        self.receive_max = receive_max
        # More CONNECT properties (MQTT 5), by paho name: {"MaximumPacketSize": 256}.
        self.connect_props = connect_props or {}
        self.p = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid,
                             protocol=PROTOCOLS[proto],
                             clean_session=None if self.v5 else clean,
                             manual_ack=manual_ack, reconnect_on_failure=False)
        self.cv = threading.Condition()
        self.connack = None  # (session_present, reason code, CONNACK properties)
        self.disconnects = []  # (reason code, from server)
        self.messages = []  # dicts, in arrival order
        self.subacks = {}  # mid -> [reason codes]
        self.acked = set()  # mids of own publishes whose flow completed
        if will is not None:
            self.p.will_set(**will)
        self.p.on_connect = self._on_connect
        self.p.on_disconnect = self._on_disconnect
        self.p.on_message = self._on_message
        self.p.on_subscribe = self._on_subscribe
        self.p.on_publish = self._on_publish

    # ---- callbacks (network thread) ------------------------------------------------------

    def _note(self, f):
        with self.cv:
            f()
            self.cv.notify_all()

    def _on_connect(self, _c, _u, flags, rc, props):
        self._note(lambda: setattr(self, "connack", (bool(flags.session_present), rc.value,
                                                     props)))

    def _on_disconnect(self, _c, _u, flags, rc, _props):
        self._note(lambda: self.disconnects.append(
            (rc.value, bool(flags.is_disconnect_packet_from_server))))

    def _on_message(self, _c, _u, msg):
        m = {"topic": msg.topic, "payload": bytes(msg.payload).decode("utf-8", "replace"),
             "qos": msg.qos, "retain": bool(msg.retain), "dup": bool(msg.dup), "mid": msg.mid,
             "props": props_of(msg.properties), "at": time.monotonic()}
        self._note(lambda: self.messages.append(m))

    def _on_subscribe(self, _c, _u, mid, rcs, _props):
        self._note(lambda: self.subacks.__setitem__(mid, [r.value for r in rcs]))

    def _on_publish(self, _c, _u, mid, _rc, _props):
        self._note(lambda: self.acked.add(mid))

    # ---- waiting -------------------------------------------------------------------------

    def wait(self, pred, timeout, what):
        """Waits until `pred()` holds (evaluated under the lock); fails naming `what` at the
        deadline or as soon as the connection is lost."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while not pred():
                left = deadline - time.monotonic()
                if self.disconnects:
                    raise Failure(f"{self.cid}: connection lost {self.disconnects} while "
                                  f"waiting for {what}; messages {self.brief()}")
                if left <= 0:
                    raise Failure(f"{self.cid}: timed out after {timeout}s waiting for {what}; "
                                  f"messages {self.brief()}")
                self.cv.wait(min(left, 0.1))

    def brief(self, msgs=None):
        return [(m["topic"], m["payload"], m["qos"]) for m in (msgs or self.messages)][:30]

    def wait_messages(self, n, timeout=TIMEOUT, topic_prefix=""):
        """Waits for `n` messages on topics starting with `topic_prefix`; returns them."""
        def matching():
            return [m for m in self.messages if m["topic"].startswith(topic_prefix)]
        self.wait(lambda: len(matching()) >= n, timeout, f"{n} messages on {topic_prefix!r}*")
        return matching()

    def snapshot(self):
        with self.cv:
            return list(self.messages)

    # ---- actions -------------------------------------------------------------------------

    def connect(self, clean=None, expect_rc=0):
        """Connects (synchronously sends CONNECT), starts the network thread and waits for
        CONNACK; returns (session present, reason code, properties)."""
        clean = self.clean if clean is None else clean
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            if self.expiry is not None:
                props.SessionExpiryInterval = self.expiry
            if self.receive_max is not None:
                props.ReceiveMaximum = self.receive_max
            for name, value in self.connect_props.items():
                setattr(props, name, value)
            self.p.connect(self.host, self.port, self.keepalive, clean_start=clean,
                           properties=props)
        else:
            self.p.connect(self.host, self.port, self.keepalive)
        self.p.loop_start()
        self.wait(lambda: self.connack is not None or self.disconnects, TIMEOUT, "CONNACK")
        check(self.connack is not None, f"{self.cid}: closed before CONNACK {self.disconnects}")
        check(self.connack[1] == expect_rc,
              f"{self.cid}: CONNACK reason {self.connack[1]}, wanted {expect_rc}")
        return self.connack

    def subscribe(self, filters, qos=None, sub_id=None, expect=None, options=None):
        """One SUBSCRIBE of `filters` (a list of (filter, qos)); waits for SUBACK and checks
        its reason codes (default: the requested QoS each); returns them. `options` (MQTT 5):
        more subscription options for every filter, by paho name (`noLocal`,
        `retainAsPublished`, `retainHandling`)."""
        props = None
        if sub_id is not None:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sub_id
        if self.v5:
            topics = [(f, SubscribeOptions(qos=q, **(options or {}))) for f, q in filters]
        else:
            topics = list(filters)
        rc, mid = self.p.subscribe(topics, properties=props)
        check(rc == mqtt.MQTT_ERR_SUCCESS, f"{self.cid}: subscribe failed: {rc}")
        self.wait(lambda: mid in self.subacks, TIMEOUT, f"SUBACK of {filters}")
        want = [q for _f, q in filters] if expect is None else expect
        check(self.subacks[mid] == want,
              f"{self.cid}: SUBACK {self.subacks[mid]} for {filters}, wanted {want}")
        return self.subacks[mid]

    def publish(self, topic, payload, qos, retain=False, props=None):
        info = self.p.publish(topic, payload, qos, retain=retain, properties=props)
        check(info.rc == mqtt.MQTT_ERR_SUCCESS, f"{self.cid}: publish failed: {info.rc}")
        if qos == 0:
            self._note(lambda: self.acked.add(info.mid))
        return info.mid

    def wait_acked(self, mids, timeout=TIMEOUT):
        self.wait(lambda: set(mids) <= self.acked, timeout,
                  f"acknowledgements of {sorted(set(mids) - self.acked)}")

    def disconnect(self):
        """A normal DISCONNECT (reason 0), then the network thread stops."""
        self.p.disconnect()
        self.wait(lambda: self.disconnects, TIMEOUT, "the end of the connection")
        self.p.loop_stop()

    def drop(self):
        """Closes the socket without DISCONNECT (network thread stopped first); returns
        when."""
        self.stop()
        return self.close_socket()

    def close_socket(self):
        """Closes the socket under a stopped network thread; returns when."""
        sock = self.p.socket()
        check(sock is not None, f"{self.cid}: no socket to drop")
        sock.close()
        return time.monotonic()

    def stop(self):
        """Stops the network thread (within paho's 1 s select), leaving the connection as it
        is."""
        self.p.loop_stop()


def publish_props(**kw):
    props = Properties(PacketTypes.PUBLISH)
    for k, v in kw.items():
        if k == "UserProperty":
            for pair in v:
                props.UserProperty = pair
        else:
            setattr(props, k, v)
    return props


def quiet(seconds=QUIET):
    time.sleep(seconds)


# ---------------------------------------------------------------------------------------------
# Scenarios. Each takes (host, port, proto, tag) and returns the result dict.
# ---------------------------------------------------------------------------------------------


def basic(host, port, proto, tag):
    """Connect, subscribe, publish QoS 0/1/2 to itself, receive the three, disconnect."""
    topic = f"{tag}/basic"
    c = C(host, port, f"{tag}-basic", proto)
    present, _rc, _ = c.connect()
    check(not present, "a clean session reported Session Present")
    c.subscribe([(topic, 2)])
    mids = [c.publish(topic, f"qos {q}".encode(), q) for q in (0, 1, 2)]
    c.wait_acked(mids)
    msgs = c.wait_messages(3)
    quiet(0.3)
    msgs = c.snapshot()
    got = sorted((m["payload"], m["qos"]) for m in msgs)
    check(got == [("qos 0", 0), ("qos 1", 1), ("qos 2", 2)], f"received {c.brief()}")
    check(not any(m["retain"] or m["dup"] for m in msgs), f"retain or dup set: {msgs}")
    c.disconnect()
    check(c.disconnects[0][1] is False, f"disconnect came from the server: {c.disconnects}")
    return {"ok": True, "received": [[p, q] for p, q in got]}


def retained(host, port, proto, tag):
    """Three retained messages (QoS 0/1/2) reach a new wildcard subscriber with RETAIN 1;
    cleared with empty payloads, a newer subscriber gets none."""
    base = f"{tag}/ret"
    topics = [f"{base}/q{q}" for q in range(3)]
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    mids = [pub.publish(t, f"retained {q}".encode(), q, retain=True)
            for q, t in enumerate(topics)]
    pub.wait_acked(mids)
    # Retained messages are stored on the shard owning the topic, asynchronously (the Paho
    # suite sleeps a second here).
    quiet(SETTLE)
    s1 = C(host, port, f"{tag}-s1", proto)
    s1.connect()
    s1.subscribe([(f"{base}/#", 2)])
    s1.wait_messages(3)
    quiet()
    first = s1.snapshot()
    got = sorted((m["topic"], m["payload"], m["qos"], m["retain"]) for m in first)
    want = [(t, f"retained {q}", q, True) for q, t in enumerate(topics)]
    check(got == want, f"first subscriber got {got}, wanted {want}")
    # Clear them: an empty retained payload deletes the retained message [MQTT-3.3.1-6]; the
    # current subscriber still gets the empty messages, as live ones (RETAIN 0, 3.3.1.3).
    mids = [pub.publish(t, b"", 1, retain=True) for t in topics]
    pub.wait_acked(mids)
    s1.wait_messages(6)
    live = s1.snapshot()[3:]
    check(all(m["payload"] == "" and not m["retain"] for m in live),
          f"the clearing messages reached the subscriber as {live}")
    quiet(SETTLE)
    s2 = C(host, port, f"{tag}-s2", proto)
    s2.connect()
    s2.subscribe([(f"{base}/#", 2)])
    # A live marker after the SUBSCRIBE: once it is in, any retained message would be too
    # (they are sent after SUBACK), then a quiet period for good measure.
    pub.wait_acked([pub.publish(f"{base}/marker", b"marker", 1)])
    s2.wait_messages(1, topic_prefix=f"{base}/marker")
    quiet()
    after = [m for m in s2.snapshot() if m["topic"] != f"{base}/marker"]
    check(not after, f"a subscriber after clearing got {s2.brief(after)}")
    for c in (pub, s1, s2):
        c.disconnect()
    return {"ok": True, "retained": [list(g) for g in got], "after_clear": len(after)}


def will(host, port, proto, tag):
    """A dropped connection's will is published; a DISCONNECTed one's is not. MQTT 5: with a
    Will Delay Interval of 2 s the will comes after about 2 s; a reconnection within the
    delay cancels it."""
    base = f"{tag}/will"
    w = C(host, port, f"{tag}-watch", proto)
    w.connect()
    w.subscribe([(f"{base}/#", 2)])

    def with_will(name, delay=None, expiry=None):
        props = None
        if delay is not None:
            props = Properties(PacketTypes.WILLMESSAGE)
            props.WillDelayInterval = delay
        return C(host, port, f"{tag}-{name}", proto, expiry=expiry,
                 will={"topic": f"{base}/{name}", "payload": f"{name} is gone".encode(),
                       "qos": 1, "retain": False, "properties": props})

    polite = with_will("polite")
    polite.connect()
    dying = with_will("dying")
    dying.connect()
    polite.disconnect()
    dropped_at = dying.drop()
    m = w.wait_messages(1, topic_prefix=f"{base}/dying")[0]
    check(m["payload"] == "dying is gone" and m["qos"] == 1,
          f"will of the dropped client arrived as {m}")
    immediate_after = m["at"] - dropped_at
    result = {"ok": True, "immediate_after": round(immediate_after, 3)}
    if proto == "5":
        # Session Expiry above the delay: otherwise the session's end publishes the will
        # at once (3.1.3.2.2).
        delayed = with_will("delayed", delay=2, expiry=10)
        delayed.connect()
        cancelled = with_will("cancelled", delay=2, expiry=10)
        cancelled.connect()
        delayed.stop()
        cancelled.stop()
        dropped_at = delayed.close_socket()
        cancelled.close_socket()
        time.sleep(0.5)
        back = C(host, port, f"{tag}-cancelled", proto, clean=False, expiry=10)
        present, _rc, _ = back.connect()
        check(present, "the reconnection within the will delay found no session")
        m = w.wait_messages(1, timeout=8, topic_prefix=f"{base}/delayed")[0]
        delay = m["at"] - dropped_at
        check(1.7 <= delay <= 6, f"delayed will (2 s) arrived after {delay:.3f}s")
        # The cancelled will would be due at the same time; give it a second more.
        quiet(1.0)
        cancelled_got = [x for x in w.snapshot() if x["topic"] == f"{base}/cancelled"]
        check(not cancelled_got,
              f"the will of a client that reconnected within the delay was published "
              f"{cancelled_got[0]['at'] - dropped_at:.3f}s after the drop"
              if cancelled_got else "")
        back.disconnect()
        result["delayed_after"] = round(delay, 3)
    quiet(0.3)
    polite_got = [x for x in w.snapshot() if x["topic"] == f"{base}/polite"]
    check(not polite_got, f"the will of a client that sent DISCONNECT was published: "
          f"{polite_got}")
    w.disconnect()
    result["topics"] = sorted({x["topic"].rsplit("/", 1)[1] for x in w.snapshot()})
    return result


def read_packet(sock, deadline):
    """One MQTT packet (first byte, body) from a raw socket, or None at EOF."""
    def read(n):
        buf = b""
        while len(buf) < n:
            left = deadline - time.monotonic()
            check(left > 0, "timed out reading from the broker")
            sock.settimeout(left)
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf
    head = read(1)
    if head is None:
        return None
    length, shift = 0, 0
    while True:
        b = read(1)
        check(b is not None, "EOF inside a remaining length")
        length |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            break
    body = read(length) if length else b""
    check(body is not None, "EOF inside a packet")
    return head[0], body


def zero_length_id(host, port, proto, tag):
    """An empty client id: 3.1.1 with Clean Session 1 is accepted; 3.1.1 with Clean Session
    0 gets CONNACK 2 (identifier rejected) and the close [MQTT-3.1.3-8]; MQTT 5 is accepted
    with an Assigned Client Identifier [MQTT-3.2.2-16]."""
    if proto == "311":
        c = C(host, port, "", "311", clean=True)
        present, _rc, _ = c.connect()
        check(not present, "Session Present for an empty client id")
        topic = f"{tag}/zero"
        c.subscribe([(topic, 1)])
        c.wait_acked([c.publish(topic, b"hello", 1)])
        c.wait_messages(1)
        c.disconnect()
        # paho refuses to send this one: CONNECT, MQTT 3.1.1, Clean Session 0, empty id.
        body = struct.pack("!H", 4) + b"MQTT" + bytes([4, 0x00]) + struct.pack("!HH", 60, 0)
        sock = socket.create_connection((host, port), TIMEOUT)
        sock.sendall(bytes([0x10, len(body)]) + body)
        deadline = time.monotonic() + TIMEOUT
        pkt = read_packet(sock, deadline)
        check(pkt is not None, "closed without CONNACK (wanted CONNACK 0x02)")
        check(pkt == (0x20, b"\x00\x02"), f"got {pkt[0]:#04x} {pkt[1].hex()}, wanted "
              "CONNACK 20 02 00 02 (identifier rejected)")
        rest = read_packet(sock, deadline)
        check(rest is None, f"after the refusal the broker sent {rest}, wanted the close")
        sock.close()
        return {"ok": True, "clean_accepted": True, "persistent_refused": 2}
    ids = []
    clients = []
    for _ in range(2):
        c = C(host, port, "", "5")
        _present, _rc, props = c.connect()
        assigned = getattr(props, "AssignedClientIdentifier", None)
        check(assigned, f"CONNACK without Assigned Client Identifier: {props}")
        ids.append(assigned)
        clients.append(c)
    check(ids[0] != ids[1], f"two connections were assigned the same id {ids[0]}")
    # The connection works under its assigned id.
    topic = f"{tag}/zero"
    c = clients[0]
    c.subscribe([(topic, 1)])
    c.wait_acked([c.publish(topic, b"hello", 1)])
    c.wait_messages(1)
    for c in clients:
        c.disconnect()
    return {"ok": True, "assigned": ids}


def offline_queue(host, port, proto, tag):
    """A persistent session subscribed at QoS 2 receives, on reconnection with Session
    Present, the QoS 0, 1 and 2 messages published while it was offline."""
    base = f"{tag}/offline"
    sid = f"{tag}-sub"
    v5 = proto == "5"
    s = C(host, port, sid, proto, clean=True if v5 else False, expiry=60 if v5 else None)
    s.connect()
    s.subscribe([(f"{base}/#", 2)])
    s.disconnect()
    quiet(SETTLE)
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    mids = [pub.publish(f"{base}/{q}", f"offline qos {q}".encode(), q) for q in (0, 1, 2)]
    pub.wait_acked(mids)
    quiet(SETTLE)
    s2 = C(host, port, sid, proto, clean=False, expiry=60 if v5 else None)
    present, _rc, _ = s2.connect()
    check(present, "reconnection to the persistent session: Session Present 0")
    # QoS 1 and 2 are certain to come; the QoS 0 one was queued before them.
    s2.wait_messages(1, topic_prefix=f"{base}/1")
    s2.wait_messages(1, topic_prefix=f"{base}/2")
    quiet(0.3)
    got = sorted((m["topic"].rsplit("/", 1)[1], m["payload"], m["qos"]) for m in s2.snapshot())
    want = [(str(q), f"offline qos {q}", q) for q in (0, 1, 2)]
    check(got == want, f"queued messages: {got}, wanted {want}")
    # A clean start ends the session.
    s2.disconnect()
    pub.disconnect()
    return {"ok": True, "session_present": present, "received": [list(g) for g in got]}


def redelivery(host, port, proto, tag):
    """QoS 1 messages received but not acknowledged are sent again, DUP 1, when the
    persistent session reconnects [MQTT-4.4.0-1]."""
    topic = f"{tag}/redeliver"
    sid = f"{tag}-sub"
    v5 = proto == "5"
    expiry = 60 if v5 else None
    s = C(host, port, sid, proto, clean=True if v5 else False, expiry=expiry, manual_ack=True)
    s.connect()
    s.subscribe([(topic, 1)])
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    mids = [pub.publish(topic, f"m{i}".encode(), 1) for i in range(3)]
    pub.wait_acked(mids)
    first = s.wait_messages(3)
    check(not any(m["dup"] for m in first), f"first deliveries with DUP: {first}")
    s.disconnect()  # without acknowledging any
    quiet(SETTLE)
    s2 = C(host, port, sid, proto, clean=False, expiry=expiry, manual_ack=True)
    present, _rc, _ = s2.connect()
    check(present, "reconnection: Session Present 0")
    again = s2.wait_messages(3)
    for m in again:
        s2.p.ack(m["mid"], m["qos"])
    quiet(0.5)
    again = s2.snapshot()
    check(sorted(m["payload"] for m in again) == ["m0", "m1", "m2"],
          f"redelivered {s2.brief()}, wanted m0 m1 m2 once each")
    check(all(m["dup"] and m["qos"] == 1 for m in again),
          f"redeliveries without DUP 1 or at the wrong QoS: "
          f"{[(m['payload'], m['qos'], m['dup']) for m in again]}")
    s2.disconnect()
    pub.disconnect()
    return {"ok": True, "redelivered": [[m["payload"], m["dup"]] for m in again]}


def overlapping(host, port, proto, tag):
    """`a/#` at QoS 2 (Subscription Identifier 1) and `a/+` at QoS 1 (identifier 2): one
    QoS 2 publish to a/b arrives once, at QoS 2, carrying both identifiers (3.3.4). MQTT
    3.1.1 (no identifiers): one copy at QoS 2, the highest granted (3.3.5, the choice the
    Paho 3.1.1 suite's overlapping test accepts besides one copy per subscription)."""
    base = f"{tag}/ov"
    v5 = proto == "5"
    s = C(host, port, f"{tag}-sub", proto)
    s.connect()
    s.subscribe([(f"{base}/#", 2)], sub_id=1 if v5 else None)
    s.subscribe([(f"{base}/+", 1)], sub_id=2 if v5 else None)
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    pub.wait_acked([pub.publish(f"{base}/b", b"overlap", 2)])
    s.wait_messages(1)
    quiet()
    msgs = s.snapshot()
    check(len(msgs) == 1, f"received {len(msgs)} copies: {s.brief()}")
    m = msgs[0]
    ids = sorted(m["props"].get("SubscriptionIdentifier", []))
    check(m["qos"] == 2, f"delivered at QoS {m['qos']}, wanted 2 (the highest matching)")
    check(ids == ([1, 2] if v5 else []), f"Subscription Identifiers {ids}")
    s.disconnect()
    pub.disconnect()
    return {"ok": True, "copies": len(msgs), "qos": m["qos"], "sub_ids": ids}


def keepalive(host, port, proto, tag):
    """Keep Alive 2 s and a silent client: the broker disconnects it after 1.5 x 2 s
    (DISCONNECT 0x8D for MQTT 5), not before 2 s."""
    c = C(host, port, f"{tag}-ka", proto, keepalive=2)
    c.connect()
    connack_at = time.monotonic()
    woke, closed, reason = silent_until_closed(c, connack_at, proto)
    check(2.0 <= woke <= 6.0, f"the broker acted {woke:.3f}s after CONNACK, wanted 2..6 "
          "(Keep Alive 2 s x 1.5)")
    return {"ok": True, "after": round(woke, 3), "closed_after": round(closed, 3),
            "reason": reason}


def silent_until_closed(c, connack_at, proto):
    """Stops `c`'s network thread (no PINGREQ from then on) and reads its socket until the
    broker closes it: MQTT 5 wants one DISCONNECT 0x8D (Keep Alive timeout) first, 3.1.1
    nothing. Returns (seconds from `connack_at` to the broker's first action, to the close,
    the DISCONNECT reason or None)."""
    sock = c.p.socket()
    c.stop()  # no PINGREQ from now on, nothing read by paho
    readable, _, _ = select.select([sock], [], [], 15)
    check(readable, "the broker did not act within 15 s")
    woke = time.monotonic() - connack_at
    deadline = time.monotonic() + TIMEOUT
    packets = []
    while True:
        try:
            pkt = read_packet(sock, deadline)
        except (ConnectionResetError, BrokenPipeError):
            pkt = None
        if pkt is None:
            break
        packets.append(pkt)
    closed = time.monotonic() - connack_at
    sock.close()
    reason = None
    if proto == "5":
        check(len(packets) == 1 and packets[0][0] == 0xE0,
              f"wanted one DISCONNECT before the close, got {packets}")
        reason = packets[0][1][0] if packets[0][1] else 0
        check(reason == 0x8D, f"DISCONNECT reason {reason:#04x}, wanted 0x8D")
    else:
        check(not packets, f"got {packets} before the close")
    return woke, closed, reason


def flow_control(host, port, proto, tag):
    """Receive Maximum 2: with 10 QoS 1 messages waiting, exactly 2 are sent until the client
    acknowledges; each PUBACK lets one more through (4.9)."""
    topic = f"{tag}/flow"
    n = 10
    s = C(host, port, f"{tag}-sub", proto, manual_ack=True, receive_max=2)
    s.connect()
    s.subscribe([(topic, 1)])
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    mids = [pub.publish(topic, f"{i}".encode(), 1) for i in range(n)]
    pub.wait_acked(mids)
    s.wait_messages(2)
    quiet(1.0)
    before = len(s.snapshot())
    check(before == 2, f"{before} messages unacknowledged at once, Receive Maximum is 2: "
          f"{s.brief()}")
    max_outstanding = before
    acked = 0
    while acked < n:
        msgs = s.snapshot()
        check(acked < len(msgs), f"nothing left to acknowledge after {acked}")
        m = msgs[acked]
        s.p.ack(m["mid"], m["qos"])
        acked += 1
        if acked < n - 1:
            # One more may come, never two.
            s.wait_messages(acked + 2)
        quiet(0.02)
        max_outstanding = max(max_outstanding, len(s.snapshot()) - acked)
        check(max_outstanding <= 2,
              f"{len(s.snapshot()) - acked} outstanding after {acked} PUBACKs")
    quiet(0.3)
    msgs = s.snapshot()
    payloads = [m["payload"] for m in msgs]
    check(payloads == [str(i) for i in range(n)], f"received {payloads}")
    check(not any(m["dup"] for m in msgs), "a message came twice (DUP 1)")
    s.disconnect()
    pub.disconnect()
    return {"ok": True, "before_ack": before, "max_outstanding": max_outstanding,
            "received": len(msgs)}


def subscribe_failure(host, port, proto, tag):
    """SUBSCRIBE with a valid filter and the invalid `a/#/b`: SUBACK grants the first and
    answers 0x8F (Topic Filter invalid) for the second; the connection stays usable."""
    ok_topic = f"{tag}/ok"
    bad = "a/#/b"
    s = C(host, port, f"{tag}-sub", proto)
    s.connect()
    # paho refuses to send an invalid filter; its packet writer does not check.
    rc, mid = s.p._send_subscribe(False, [(ok_topic.encode(), SubscribeOptions(qos=1)),
                                          (bad.encode(), SubscribeOptions(qos=1))])
    check(rc == mqtt.MQTT_ERR_SUCCESS, f"cannot send SUBSCRIBE: {rc}")
    s.wait(lambda: mid in s.subacks or s.disconnects, TIMEOUT, "SUBACK")
    check(not s.disconnects, f"the broker closed the connection: {s.disconnects}")
    codes = s.subacks[mid]
    check(codes == [1, 0x8F], f"SUBACK reason codes {codes}, wanted [1, 0x8F]")
    s.wait_acked([s.publish(ok_topic, b"still here", 1)])
    s.wait_messages(1)
    check(not s.disconnects, f"connection lost: {s.disconnects}")
    s.disconnect()
    return {"ok": True, "suback": codes}


def properties(host, port, proto, tag):
    """Payload Format Indicator, Content Type, User Properties (order and duplicates kept),
    Response Topic and Correlation Data reach the subscriber unchanged."""
    topic = f"{tag}/props"
    s = C(host, port, f"{tag}-sub", proto)
    s.connect()
    s.subscribe([(topic, 2)])
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    sent = {"PayloadFormatIndicator": 1, "ContentType": "text/plain; charset=utf-8",
            "UserProperty": [("k1", "v1"), ("k2", "v2"), ("k1", "v3")],
            "ResponseTopic": f"{tag}/reply", "CorrelationData": b"\x00\x01corr\xff"}
    mids = [pub.publish(topic, "pr\u00e9cis".encode(), q, props=publish_props(**sent))
            for q in (0, 1, 2)]
    pub.wait_acked(mids)
    msgs = s.wait_messages(3)
    want = {k: (v.hex() if isinstance(v, bytes) else
                [list(kv) for kv in v] if k == "UserProperty" else v)
            for k, v in sent.items()}
    for m in msgs:
        got = {k: v for k, v in m["props"].items() if k in want}
        check(got == want, f"QoS {m['qos']}: properties {m['props']}, wanted {want}")
        check(m["payload"] == "pr\u00e9cis", f"payload {m['payload']!r}")
    s.disconnect()
    pub.disconnect()
    return {"ok": True, "received": [m["props"] for m in msgs]}


def message_expiry(host, port, proto, tag):
    """Message Expiry Interval 1 s to an offline session, 2 s later: dropped. 60 s: delivered
    with the remaining interval (3.3.2.3.3)."""
    base = f"{tag}/exp"
    sid = f"{tag}-sub"
    s = C(host, port, sid, proto, expiry=60)
    s.connect()
    s.subscribe([(f"{base}/#", 1)])
    s.disconnect()
    quiet(SETTLE)
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    mids = [pub.publish(f"{base}/short", b"short", 1, props=publish_props(MessageExpiryInterval=1)),
            pub.publish(f"{base}/long", b"long", 1, props=publish_props(MessageExpiryInterval=60))]
    pub.wait_acked(mids)
    published = time.monotonic()
    time.sleep(2.2)
    s2 = C(host, port, sid, proto, clean=False, expiry=60)
    present, _rc, _ = s2.connect()
    check(present, "reconnection: Session Present 0")
    s2.wait_messages(1, topic_prefix=f"{base}/long")
    waited = time.monotonic() - published
    quiet(0.5)
    msgs = s2.snapshot()
    short = [m for m in msgs if m["topic"] == f"{base}/short"]
    check(not short, f"a message with expiry 1 s was delivered {waited:.1f}s later: {short}")
    long_ = [m for m in msgs if m["topic"] == f"{base}/long"]
    check(len(long_) == 1, f"the 60 s message arrived {len(long_)} times")
    remaining = long_[0]["props"].get("MessageExpiryInterval")
    check(remaining is not None, "the 60 s message arrived without Message Expiry Interval")
    # It waited about 2.2 s in the broker: 58 (57 to 59 with rounding) must remain.
    check(1 <= remaining <= 59, f"remaining Message Expiry Interval {remaining}, wanted at "
          f"most 60 - {waited:.1f}")
    s2.disconnect()
    pub.disconnect()
    return {"ok": True, "remaining": remaining, "short_delivered": len(short)}


def shared(host, port, proto, tag):
    """Two members of $share/g/x share 20 messages, each exactly once in total, both get some;
    a plain subscriber to x gets all 20."""
    return share_split(host, port, proto, tag, f"$share/g{tag}/")


def queue(host, port, proto, tag):
    """EMQX's `$queue/x` (the group `$queue`): two members share 20 messages, each exactly
    once in total, both get some; a plain subscriber to x gets all 20."""
    return share_split(host, port, proto, tag, "$queue/")


def share_split(host, port, proto, tag, prefix):
    """Two members of `{prefix}x` and a plain subscriber of x, 20 messages to x."""
    topic = f"{tag}/x"
    n = 20
    m1 = C(host, port, f"{tag}-m1", proto)
    m2 = C(host, port, f"{tag}-m2", proto)
    plain = C(host, port, f"{tag}-plain", proto)
    for c in (m1, m2, plain):
        c.connect()
    m1.subscribe([(f"{prefix}{topic}", 1)])
    m2.subscribe([(f"{prefix}{topic}", 1)])
    plain.subscribe([(topic, 1)])
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    mids = [pub.publish(topic, f"{i}".encode(), 1) for i in range(n)]
    pub.wait_acked(mids)
    plain.wait_messages(n)
    deadline = time.monotonic() + TIMEOUT
    while len(m1.snapshot()) + len(m2.snapshot()) < n:
        check(time.monotonic() < deadline,
              f"members got {len(m1.snapshot())} + {len(m2.snapshot())} of {n}")
        time.sleep(0.02)
    quiet()
    a = [m["payload"] for m in m1.snapshot()]
    b = [m["payload"] for m in m2.snapshot()]
    p = [m["payload"] for m in plain.snapshot()]
    want = sorted(str(i) for i in range(n))
    check(sorted(a + b) == want, f"members got {sorted(a)} and {sorted(b)}, each of "
          f"0..{n - 1} exactly once wanted")
    check(a and b, f"one member got everything: {len(a)} / {len(b)}")
    check(sorted(p) == want, f"the plain subscriber got {sorted(p)}")
    for c in (m1, m2, plain, pub):
        c.disconnect()
    return {"ok": True, "member_counts": [len(a), len(b)], "plain": len(p)}


def topic_alias(host, port, proto, tag):
    """A publisher defines Topic Alias 1, then publishes with an empty topic and the alias;
    redefines it and uses it again: the subscriber sees the right topics (3.3.2.3.4)."""
    t1, t2 = f"{tag}/alias/one", f"{tag}/alias/two"
    s = C(host, port, f"{tag}-sub", proto)
    s.connect()
    s.subscribe([(f"{tag}/alias/#", 1)])
    pub = C(host, port, f"{tag}-pub", proto)
    _present, _rc, props = pub.connect()
    alias_max = getattr(props, "TopicAliasMaximum", 0)
    check(alias_max >= 1, f"CONNACK Topic Alias Maximum {alias_max}")
    sends = [(t1, "define one"), ("", "alias one"), (t2, "redefine two"), ("", "alias two")]
    mids = []
    for topic, payload in sends:
        mids.append(pub.publish(topic, payload.encode(), 1, props=publish_props(TopicAlias=1)))
        # In order: the alias in force is the one the previous PUBLISH set.
        pub.wait_acked(mids)
    check(not pub.disconnects, f"publisher disconnected: {pub.disconnects}")
    s.wait_messages(4)
    quiet(0.3)
    got = [(m["topic"], m["payload"]) for m in s.snapshot()]
    want = [(t1, "define one"), (t1, "alias one"), (t2, "redefine two"), (t2, "alias two")]
    check(got == want, f"received {got}, wanted {want}")
    s.disconnect()
    pub.disconnect()
    return {"ok": True, "received": [list(g) for g in got], "alias_max": alias_max}


def dollar_topics(host, port, proto, tag):
    """`#` and `+/...` do not match `$SYS/...` topics; `$SYS/#` does: it sees the client
    connected event of a new client (4.7.2)."""
    everything = C(host, port, f"{tag}-all", proto)
    everything.connect()
    everything.subscribe([("#", 0), ("+/brokers/#", 0)])
    sys_sub = C(host, port, f"{tag}-sys", proto)
    sys_sub.connect()
    sys_sub.subscribe([("$SYS/#", 0)])
    visitor_id = f"{tag}-visitor"
    visitor = C(host, port, visitor_id, proto)
    visitor.connect()
    suffix = f"/clients/{visitor_id}/connected"
    sys_sub.wait(lambda: any(m["topic"].endswith(suffix) for m in sys_sub.messages), TIMEOUT,
                 f"$SYS/brokers/+{suffix}")
    event = next(m for m in sys_sub.snapshot() if m["topic"].endswith(suffix))
    check(event["topic"].startswith("$SYS/brokers/"), f"event topic {event['topic']}")
    # The event has reached every subscriber it would; a marker proves `#` is live.
    marker = f"{tag}/marker"
    visitor.wait_acked([visitor.publish(marker, b"marker", 1)])
    everything.wait_messages(1, topic_prefix=marker)
    quiet(0.3)
    dollar = [m["topic"] for m in everything.snapshot() if m["topic"].startswith("$")]
    check(not dollar, f"`#` / `+/brokers/#` received $ topics: {dollar[:5]}")
    sys_topics = sorted({m["topic"] for m in sys_sub.snapshot()})
    check(all(t.startswith("$SYS/") for t in sys_topics), f"$SYS/# got {sys_topics}")
    for c in (everything, sys_sub, visitor):
        c.disconnect()
    return {"ok": True, "event_topic": event["topic"], "sys_topics": len(sys_topics),
            "dollar_on_hash": len(dollar)}


# ---------------------------------------------------------------------------------------------
# Subscription options, identifiers and the broker's optional features (MQTT 5).
# ---------------------------------------------------------------------------------------------


def live_marker(pub, subs, topic):
    """Publishes a live QoS 1 marker to `topic` and waits until every one of `subs` has it,
    then listens a while: what the SUBSCRIBEs before would bring has arrived by then."""
    pub.wait_acked([pub.publish(topic, b"marker", 1)])
    for s in subs:
        s.wait(lambda s=s: any(m["payload"] == "marker" for m in s.messages), TIMEOUT,
               f"the marker on {topic}")
    quiet()


def retain_handling(host, port, proto, tag):
    """Retain Handling (3.8.3.1), each client subscribing twice to a topic with a retained
    message: 0 sends it at both SUBSCRIBEs, 1 only at the first (the subscription is new),
    2 at neither. The live message after them arrives once, RETAIN 0."""
    topic = f"{tag}/rh"
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    pub.wait_acked([pub.publish(topic, b"kept", 1, retain=True)])
    subs = []
    for rh in (0, 1, 2):
        s = C(host, port, f"{tag}-rh{rh}", proto)
        s.connect()
        s.subscribe([(topic, 1)], options={"retainHandling": rh})
        s.subscribe([(topic, 1)], options={"retainHandling": rh})
        subs.append(s)
    live_marker(pub, subs, topic)
    retained_counts, live_counts = [], []
    for rh, s in enumerate(subs):
        msgs = s.snapshot()
        kept = [m for m in msgs if m["payload"] == "kept"]
        live = [m for m in msgs if m["payload"] == "marker"]
        check(all(m["retain"] for m in kept), f"RH {rh}: a retained copy without RETAIN 1: "
              f"{kept}")
        check(len(live) == 1 and not live[0]["retain"],
              f"RH {rh}: the live message arrived as {live}")
        retained_counts.append(len(kept))
        live_counts.append(len(live))
    check(retained_counts == [2, 1, 0], f"retained copies for RH 0, 1, 2: {retained_counts}, "
          "wanted [2, 1, 0]")
    for c in (pub, *subs):
        c.disconnect()
    return {"ok": True, "retained": retained_counts, "live": live_counts}


def retain_as_published(host, port, proto, tag):
    """Retain As Published (3.8.3.1): a live PUBLISH with RETAIN 1 keeps the flag for a
    subscription with RAP 1 and loses it with RAP 0; RETAIN 0 stays 0 for both."""
    topic = f"{tag}/rap"
    keep = C(host, port, f"{tag}-rap1", proto)
    clear = C(host, port, f"{tag}-rap0", proto)
    for c, rap in ((keep, True), (clear, False)):
        c.connect()
        c.subscribe([(topic, 1)], options={"retainAsPublished": rap})
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    pub.wait_acked([pub.publish(topic, b"flagged", 1, retain=True),
                    pub.publish(topic, b"plain", 1)])
    got = {}
    for name, c in (("rap1", keep), ("rap0", clear)):
        c.wait_messages(2)
        quiet(0.3)
        got[name] = [[m["payload"], m["retain"]] for m in c.snapshot()]
    check(got["rap1"] == [["flagged", True], ["plain", False]],
          f"RAP 1 received {got['rap1']}, wanted flagged with RETAIN 1, plain without")
    check(got["rap0"] == [["flagged", False], ["plain", False]],
          f"RAP 0 received {got['rap0']}, wanted both with RETAIN 0")
    for c in (keep, clear, pub):
        c.disconnect()
    return {"ok": True, **got}


def no_local(host, port, proto, tag):
    """No Local (3.8.3.1): a client's own PUBLISH is not sent back on a subscription with
    No Local 1, is on one with No Local 0; another client's PUBLISH comes on both."""
    base = f"{tag}/nl"
    a = C(host, port, f"{tag}-a", proto)
    a.connect()
    a.subscribe([(f"{base}/on", 1)], options={"noLocal": True})
    a.subscribe([(f"{base}/off", 1)], options={"noLocal": False})
    b = C(host, port, f"{tag}-b", proto)
    b.connect()
    a.wait_acked([a.publish(f"{base}/on", b"own", 1), a.publish(f"{base}/off", b"own", 1)])
    b.wait_acked([b.publish(f"{base}/on", b"other", 1), b.publish(f"{base}/off", b"other", 1)])
    a.wait_messages(3)
    quiet()
    got = sorted([m["topic"].rsplit("/", 1)[1], m["payload"]] for m in a.snapshot())
    want = [["off", "other"], ["off", "own"], ["on", "other"]]
    check(got == want, f"received {got}, wanted {want} (not its own message on No Local 1)")
    a.disconnect()
    b.disconnect()
    return {"ok": True, "received": got}


def subscription_identifier(host, port, proto, tag):
    """A SUBSCRIBE with Subscription Identifier 42: the messages it matches carry 42; those of
    a subscription without one carry none (3.3.2.3.8)."""
    base = f"{tag}/sid"
    s = C(host, port, f"{tag}-sub", proto)
    s.connect()
    s.subscribe([(f"{base}/with", 1)], sub_id=42)
    s.subscribe([(f"{base}/without", 1)])
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    pub.wait_acked([pub.publish(f"{base}/with", b"w", 1),
                    pub.publish(f"{base}/without", b"o", 1)])
    s.wait_messages(2)
    quiet(0.3)
    ids = {m["topic"].rsplit("/", 1)[1]: m["props"].get("SubscriptionIdentifier")
           for m in s.snapshot()}
    check(len(s.snapshot()) == 2, f"received {s.brief()}")
    check(ids == {"with": [42], "without": None},
          f"Subscription Identifiers {ids}, wanted [42] on `with` and none on `without`")
    s.disconnect()
    pub.disconnect()
    return {"ok": True, "ids": ids}


def features_off(host, port, proto, tag):
    """With `mqtt.shared_subscription`, `mqtt.subscription_identifiers` and
    `mqtt.wildcard_subscription` off: CONNACK says each is unavailable (value 0); SUBACK
    answers 0x9E for `$share/...`, 0xA1 for a SUBSCRIBE with an identifier, 0xA2 for `+` and
    `#`; a plain subscription works and the refused ones deliver nothing."""
    base = f"{tag}/off"
    c = C(host, port, f"{tag}-c", proto)
    _present, _rc, props = c.connect()
    flags = {n: getattr(props, n, None) for n in ("SharedSubscriptionAvailable",
                                                  "SubscriptionIdentifierAvailable",
                                                  "WildcardSubscriptionAvailable")}
    check(all(v == 0 for v in flags.values()), f"CONNACK availability properties {flags}, "
          "wanted 0 each")
    codes = [c.subscribe([(f"$share/g/{base}/x", 1)], expect=[0x9E])[0],
             c.subscribe([(f"$queue/{base}/x", 1)], expect=[0x9E])[0],
             c.subscribe([(f"{base}/x", 1)], sub_id=7, expect=[0xA1])[0],
             c.subscribe([(f"{base}/+", 1)], expect=[0xA2])[0],
             c.subscribe([(f"{base}/#", 1)], expect=[0xA2])[0]]
    c.subscribe([(f"{base}/x", 1)])
    c.wait_acked([c.publish(f"{base}/x", b"once", 1)])
    c.wait_messages(1)
    quiet()
    msgs = c.snapshot()
    check(len(msgs) == 1, f"received {c.brief()}: wanted one copy (the plain subscription)")
    check("SubscriptionIdentifier" not in msgs[0]["props"],
          f"a refused identifier came with the message: {msgs[0]['props']}")
    c.disconnect()
    return {"ok": True, "connack": flags, "suback": codes}


# ---------------------------------------------------------------------------------------------
# Shared subscription strategies and redispatch.
# ---------------------------------------------------------------------------------------------


def wait_total(members, n, what):
    """Waits until `members` hold `n` messages between them."""
    deadline = time.monotonic() + TIMEOUT
    while sum(len(m.snapshot()) for m in members) < n:
        check(time.monotonic() < deadline,
              f"{what}: members got {[len(m.snapshot()) for m in members]} of {n}")
        time.sleep(0.02)
    quiet()
    counts = [len(m.snapshot()) for m in members]
    check(sum(counts) == n, f"{what}: members got {counts}, {n} in total wanted")
    return counts


def shared_sticky(host, port, proto, tag):
    """`mqtt.shared_subscription_strategy = sticky`: one member gets every message of the
    group while it is a member; when it leaves, the other gets the rest."""
    topic = f"{tag}/sticky"
    group = f"$share/g{tag}/{topic}"
    members = [C(host, port, f"{tag}-m{i}", proto) for i in range(2)]
    for m in members:
        m.connect()
        m.subscribe([(group, 1)])
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    pub.wait_acked([pub.publish(topic, f"a{i}".encode(), 1) for i in range(20)])
    counts = wait_total(members, 20, "while both are members")
    check(sorted(counts) == [0, 20], f"sticky: the 20 messages were split {counts}")
    chosen = counts.index(20)
    stayed = members[1 - chosen]
    members[chosen].disconnect()
    quiet(SETTLE)
    pub.wait_acked([pub.publish(topic, f"b{i}".encode(), 1) for i in range(10)])
    stayed.wait_messages(10)
    quiet()
    got = sorted(m["payload"] for m in stayed.snapshot())
    check(got == sorted(f"b{i}" for i in range(10)),
          f"after the sticky member left the other got {got}")
    stayed.disconnect()
    pub.disconnect()
    return {"ok": True, "while_both": counts, "after_leave": len(got)}


def shared_hash_clientid(host, port, proto, tag):
    """`mqtt.shared_subscription_strategy = hash_clientid`: all messages of one publisher go
    to the same member; four publishers, 10 messages each."""
    topic = f"{tag}/hash"
    group = f"$share/g{tag}/{topic}"
    members = [C(host, port, f"{tag}-m{i}", proto) for i in range(2)]
    for m in members:
        m.connect()
        m.subscribe([(group, 1)])
    pubs = [C(host, port, f"{tag}-pub{i}", proto) for i in range(4)]
    for i, p in enumerate(pubs):
        p.connect()
        p.wait_acked([p.publish(topic, f"p{i}-{k}".encode(), 1) for k in range(10)])
    wait_total(members, 40, "hash_clientid")
    by_pub = {}
    for j, m in enumerate(members):
        for msg in m.snapshot():
            by_pub.setdefault(msg["payload"].split("-")[0], set()).add(j)
    spread = {p: sorted(s) for p, s in sorted(by_pub.items())}
    check(len(spread) == 4 and all(len(s) == 1 for s in spread.values()),
          f"members that received each publisher's messages: {spread}, wanted one each")
    for c in (*members, *pubs):
        c.disconnect()
    return {"ok": True, "member_of_publisher": spread}


def shared_redispatch(host, port, proto, tag):
    """A member of a shared group receives a QoS 1 message and disconnects without PUBACK:
    the message goes to the other member (EMQX's redispatch, docs/mqtt-implementation.md)."""
    topic = f"{tag}/job"
    group = f"$share/g{tag}/{topic}"
    members = [C(host, port, f"{tag}-m{i}", proto, manual_ack=True) for i in range(2)]
    for m in members:
        m.connect()
        m.subscribe([(group, 1)])
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    pub.wait_acked([pub.publish(topic, b"job", 1)])
    deadline = time.monotonic() + TIMEOUT
    while not any(m.snapshot() for m in members):
        check(time.monotonic() < deadline, "no member received the message")
        time.sleep(0.02)
    first = next(i for i, m in enumerate(members) if m.snapshot())
    other = members[1 - first]
    check(not other.snapshot(), "both members received the message")
    left_at = time.monotonic()
    members[first].disconnect()  # without PUBACK
    m = other.wait_messages(1)[0]
    other.p.ack(m["mid"], m["qos"])
    quiet()
    got = [x["payload"] for x in other.snapshot()]
    check(got == ["job"], f"the other member received {got}, wanted the job once")
    other.disconnect()
    pub.disconnect()
    return {"ok": True, "redispatched_after": round(m["at"] - left_at, 3),
            "dup": m["dup"], "qos": m["qos"]}


# ---------------------------------------------------------------------------------------------
# CONNECT and CONNACK properties.
# ---------------------------------------------------------------------------------------------


def client_max_packet(host, port, proto, tag):
    """A client's Maximum Packet Size of 256 (3.1.2.11.4): a 1,000-byte message is not sent
    to it, a small one after it is; a subscriber without a limit gets both."""
    topic = f"{tag}/mps"
    small = C(host, port, f"{tag}-small", proto, connect_props={"MaximumPacketSize": 256})
    big = C(host, port, f"{tag}-big", proto)
    for c in (small, big):
        c.connect()
        c.subscribe([(topic, 1)])
    pub = C(host, port, f"{tag}-pub", proto)
    pub.connect()
    pub.wait_acked([pub.publish(topic, b"x" * 1000, 1), pub.publish(topic, b"small", 1)])
    big.wait_messages(2)
    small.wait(lambda: any(m["payload"] == "small" for m in small.messages), TIMEOUT,
               "the small message")
    quiet()
    got = [len(m["payload"]) for m in small.snapshot()]
    check(got == [5], f"the client with Maximum Packet Size 256 received payloads of {got} "
          "bytes, wanted only the 5-byte one")
    check(not small.disconnects, f"disconnected: {small.disconnects}")
    all_sizes = [len(m["payload"]) for m in big.snapshot()]
    check(all_sizes == [1000, 5], f"the unlimited client received {all_sizes}")
    for c in (small, big, pub):
        c.disconnect()
    return {"ok": True, "limited": got, "unlimited": all_sizes}


def server_keepalive(host, port, proto, tag):
    """`mqtt.server_keepalive = 2`: a client asking for Keep Alive 60 gets Server Keep Alive 2
    in CONNACK, and once silent is disconnected (0x8D) after 1.5 x 2 s, not 60."""
    c = C(host, port, f"{tag}-ska", proto, keepalive=60)
    _present, _rc, props = c.connect()
    connack_at = time.monotonic()
    ska = getattr(props, "ServerKeepAlive", None)
    check(ska == 2, f"CONNACK Server Keep Alive {ska}, wanted 2")
    woke, closed, reason = silent_until_closed(c, connack_at, proto)
    check(2.5 <= woke <= 4.5, f"the broker acted {woke:.3f}s after CONNACK, wanted about 3 "
          "(Server Keep Alive 2 s x 1.5)")
    return {"ok": True, "server_keep_alive": ska, "after": round(woke, 3),
            "closed_after": round(closed, 3), "reason": reason}


def response_information(host, port, proto, tag):
    """`mqtt.response_information = some/prefix`: CONNACK carries it as Response Information
    to a client that set Request Response Information 1, not to one that set 0 or nothing."""
    got = {}
    for name, props in (("requested", {"RequestResponseInformation": 1}),
                        ("declined", {"RequestResponseInformation": 0}),
                        ("silent", {})):
        c = C(host, port, f"{tag}-{name}", proto, connect_props=props)
        _present, _rc, connack = c.connect()
        got[name] = getattr(connack, "ResponseInformation", None)
        c.disconnect()
    check(got == {"requested": "some/prefix", "declined": None, "silent": None},
          f"Response Information {got}, wanted some/prefix only when requested")
    return {"ok": True, "response_information": got}


def auth_method(host, port, proto, tag):
    """CONNECT with an Authentication Method (enhanced authentication, not implemented):
    CONNACK 0x8C (Bad authentication method), then the close; a plain CONNECT works."""
    c = C(host, port, f"{tag}-auth", proto,
          connect_props={"AuthenticationMethod": "SCRAM-SHA-1"})
    _present, rc, _props = c.connect(expect_rc=0x8C)
    c.wait(lambda: c.disconnects, TIMEOUT, "the close after CONNACK 0x8C")
    c.p.loop_stop()
    plain = C(host, port, f"{tag}-plain", proto)
    plain.connect()
    plain.disconnect()
    return {"ok": True, "connack": rc}


# ---------------------------------------------------------------------------------------------
# Wills.
# ---------------------------------------------------------------------------------------------


def will_watcher(host, port, proto, tag, base):
    w = C(host, port, f"{tag}-watch", proto)
    w.connect()
    w.subscribe([(f"{base}/#", 1)])
    return w


def will_takeover(host, port, proto, tag):
    """A second connection with the same client id takes the session over: the first
    connection's will (no delay) is published (3.1.4-3); MQTT 5: the first gets DISCONNECT
    0x8E (Session taken over)."""
    base = f"{tag}/will"
    w = will_watcher(host, port, proto, tag, base)
    cid = f"{tag}-twin"
    first = C(host, port, cid, proto,
              will={"topic": f"{base}/first", "payload": b"first is gone", "qos": 1})
    first.connect()
    second = C(host, port, cid, proto)
    second.connect()
    taken_at = time.monotonic()
    m = w.wait_messages(1, topic_prefix=f"{base}/first")[0]
    first.wait(lambda: first.disconnects, TIMEOUT, "the end of the first connection")
    reason = first.disconnects[0]
    if proto == "5":
        check(reason == (0x8E, True), f"the first connection ended with {reason}, wanted "
              "DISCONNECT 0x8E from the broker")
    check(m["payload"] == "first is gone", f"will arrived as {m}")
    second.disconnect()
    quiet(0.3)
    wills = [x["payload"] for x in w.snapshot()]
    check(wills == ["first is gone"], f"wills published: {wills}")
    first.p.loop_stop()
    w.disconnect()
    return {"ok": True, "after": round(m["at"] - taken_at, 3), "first_end": list(reason)}


def will_keepalive(host, port, proto, tag):
    """A client with Keep Alive 2 and a will stops sending (the socket stays open): after
    1.5 x 2 s the broker closes it and publishes the will. The will goes out when the
    connection has ended: the broker's lingering close waits up to 1 s more for this client,
    which neither reads nor closes, so it comes after 3 to 4 s."""
    base = f"{tag}/will"
    w = will_watcher(host, port, proto, tag, base)
    c = C(host, port, f"{tag}-quiet", proto, keepalive=2,
          will={"topic": f"{base}/quiet", "payload": b"timed out", "qos": 1})
    c.connect()
    silent_at = time.monotonic()
    c.stop()  # no PINGREQ from now on
    m = w.wait_messages(1, topic_prefix=f"{base}/quiet")[0]
    after = m["at"] - silent_at
    check(m["payload"] == "timed out", f"will arrived as {m}")
    check(2.5 <= after <= 6.0, f"will published {after:.3f}s after the client fell silent, "
          "wanted about 3 (Keep Alive 2 s x 1.5)")
    c.close_socket()
    w.disconnect()
    return {"ok": True, "after": round(after, 3)}


def will_session_end(host, port, proto, tag):
    """Will Delay Interval 10 s, Session Expiry Interval 1 s: the session ends first, and the
    will is published then, about 1 s after the drop (3.1.3.2.2)."""
    base = f"{tag}/will"
    w = will_watcher(host, port, proto, tag, base)
    props = Properties(PacketTypes.WILLMESSAGE)
    props.WillDelayInterval = 10
    c = C(host, port, f"{tag}-short", proto, expiry=1,
          will={"topic": f"{base}/short", "payload": b"session over", "qos": 1,
                "properties": props})
    c.connect()
    dropped_at = c.drop()
    m = w.wait_messages(1, timeout=15, topic_prefix=f"{base}/short")[0]
    after = m["at"] - dropped_at
    check(0.7 <= after <= 5.0, f"will published {after:.3f}s after the drop, wanted about 1 "
          "(session expiry 1 s, will delay 10 s)")
    w.disconnect()
    return {"ok": True, "after": round(after, 3)}


def will_properties(host, port, proto, tag):
    """A retained QoS 1 will with Payload Format Indicator, Content Type, User Properties,
    Response Topic, Correlation Data: a subscriber gets them all (RETAIN 0, live), and a
    later subscriber gets the will as a retained message with the same properties."""
    base = f"{tag}/will"
    w = will_watcher(host, port, proto, tag, base)
    sent = {"PayloadFormatIndicator": 1, "ContentType": "application/json",
            "UserProperty": [("k1", "v1"), ("k2", "v2"), ("k1", "v3")],
            "ResponseTopic": f"{tag}/reply", "CorrelationData": b"\x00will\xff"}
    props = Properties(PacketTypes.WILLMESSAGE)
    for k, v in sent.items():
        if k == "UserProperty":
            for pair in v:
                props.UserProperty = pair
        else:
            setattr(props, k, v)
    c = C(host, port, f"{tag}-rich", proto,
          will={"topic": f"{base}/rich", "payload": b'{"gone": true}', "qos": 1,
                "retain": True, "properties": props})
    c.connect()
    c.drop()
    want = {k: (v.hex() if isinstance(v, bytes) else
                [list(kv) for kv in v] if k == "UserProperty" else v)
            for k, v in sent.items()}
    live = w.wait_messages(1, topic_prefix=f"{base}/rich")[0]
    later = C(host, port, f"{tag}-later", proto)
    later.connect()
    later.subscribe([(f"{base}/#", 1)])
    kept = later.wait_messages(1, topic_prefix=f"{base}/rich")[0]
    for name, m, retain in (("live", live, False), ("retained", kept, True)):
        got = {k: v for k, v in m["props"].items() if k in want}
        check(got == want, f"{name} will: properties {m['props']}, wanted {want}")
        check(m["payload"] == '{"gone": true}' and m["qos"] == 1,
              f"{name} will arrived as {m}")
        check(m["retain"] == retain, f"{name} will: RETAIN {m['retain']}, wanted {retain}")
    w.disconnect()
    later.disconnect()
    return {"ok": True, "live": live["props"], "retained": kept["props"],
            "retain_flags": [live["retain"], kept["retain"]]}


SCENARIOS = {
    "basic": (basic, ("5", "311")),
    "retained": (retained, ("5", "311")),
    "will": (will, ("5", "311")),
    "zero_length_id": (zero_length_id, ("5", "311")),
    "offline_queue": (offline_queue, ("5", "311")),
    "redelivery": (redelivery, ("5", "311")),
    "overlapping": (overlapping, ("5", "311")),
    "keepalive": (keepalive, ("5", "311")),
    "flow_control": (flow_control, ("5",)),
    "subscribe_failure": (subscribe_failure, ("5",)),
    "properties": (properties, ("5",)),
    "message_expiry": (message_expiry, ("5",)),
    "shared": (shared, ("5", "311")),
    "topic_alias": (topic_alias, ("5",)),
    "dollar_topics": (dollar_topics, ("5", "311")),
    "retain_handling": (retain_handling, ("5",)),
    "retain_as_published": (retain_as_published, ("5",)),
    "no_local": (no_local, ("5",)),
    "subscription_identifier": (subscription_identifier, ("5",)),
    "features_off": (features_off, ("5",)),
    "queue": (queue, ("5", "311")),
    "shared_sticky": (shared_sticky, ("5", "311")),
    "shared_hash_clientid": (shared_hash_clientid, ("5",)),
    "shared_redispatch": (shared_redispatch, ("5", "311")),
    "client_max_packet": (client_max_packet, ("5",)),
    "server_keepalive": (server_keepalive, ("5",)),
    "response_information": (response_information, ("5",)),
    "auth_method": (auth_method, ("5",)),
    "will_takeover": (will_takeover, ("5", "311")),
    "will_keepalive": (will_keepalive, ("5", "311")),
    "will_session_end": (will_session_end, ("5",)),
    "will_properties": (will_properties, ("5",)),
}


def main():
    if len(sys.argv) != 6:
        emit({"ok": False, "error": f"usage: {sys.argv[0]} HOST PORT SCENARIO PROTO TAG"})
        sys.exit(2)
    host, port, name, proto, tag = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
    check(name in SCENARIOS, f"unknown scenario {name!r}; known: {sorted(SCENARIOS)}")
    f, protos = SCENARIOS[name]
    check(proto in protos, f"scenario {name} runs with protocol {protos}, not {proto!r}")
    started = time.monotonic()
    result = f(host, port, proto, tag)
    result.update({"scenario": name, "proto": proto,
                   "elapsed": round(time.monotonic() - started, 3)})
    return result


if __name__ == "__main__":
    run(main)
