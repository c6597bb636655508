"""Shared helpers of the end-to-end client scripts.

Every script drives its paho-mqtt (>= 2.2) clients from one thread with a `selectors` loop
(`Loop`): paho's external event-loop interface (`loop_read`, `loop_write`, `loop_misc`), so a
process can hold hundreds of connections without a thread each. A script prints JSON lines on
standard output: progress lines (`{"phase": ...}`) the Rust test may wait for, and one final
result line with `"ok"`. It exits 0 only when the scenario passed, 1 when an assertion
failed, 2 on an unexpected error. Every wait has a deadline.

Standard input, when a script asks for it (`Loop.watch_stdin`), carries one-word commands
from the test (`go`, `stop`), so the test can order steps across processes without sleeping.
"""

import json
import os
import selectors
import sys
import time
import traceback

PIP = "pip install paho-mqtt==2.2.0"

try:
    import paho.mqtt
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError as e:  # pragma: no cover - reported to the Rust test
    print(json.dumps({"ok": False, "error": f"paho-mqtt missing: {e}; {PIP}"}), flush=True)
    sys.exit(3)

# 2.2.0 is the first to read the reason code of a DISCONNECT without properties (`e0 01 8e`).
if tuple(int(x) for x in paho.mqtt.__version__.split(".")[:2]) < (2, 2):
    too_old = f"paho-mqtt {paho.mqtt.__version__} is too old; {PIP}"
    print(json.dumps({"ok": False, "error": too_old}), flush=True)
    sys.exit(3)

PROTOCOLS = {"5": mqtt.MQTTv5, "311": mqtt.MQTTv311, "31": mqtt.MQTTv31}


class Failure(Exception):
    """An assertion of the scenario failed."""


def emit(obj):
    """Prints one JSON line and flushes it, so the test sees it at once."""
    print(json.dumps(obj, sort_keys=True), flush=True)


def run(scenario):
    """Runs `scenario()` (which returns a dict with "ok"), prints its result and exits."""
    try:
        result = scenario()
    except Failure as e:
        emit({"ok": False, "error": str(e)})
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - everything unexpected is a failure too
        traceback.print_exc()
        emit({"ok": False, "error": f"unexpected {type(e).__name__}: {e}"})
        sys.exit(2)
    emit(result)
    sys.exit(0 if result.get("ok") else 1)


def check(cond, message):
    if not cond:
        raise Failure(message)


class Client:
    """One paho client driven by a `Loop`, with everything it observed recorded."""

    def __init__(self, loop, client_id, proto="5", clean=True, keepalive=60, expiry=None,
                 log_errors=False):
        self.loop = loop
        self.client_id = client_id
        self.proto = proto
        self.v5 = proto == "5"
        self.clean = clean
        self.keepalive = keepalive
        self.expiry = expiry
        self.paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                protocol=PROTOCOLS[proto],
                                clean_session=None if self.v5 else clean)
        self.connack = None  # (session_present, reason code)
        self.disconnects = []  # dicts: reason, from_server, at
        self.messages = []  # (topic, payload bytes, qos, dup)
        self.subacks = {}  # mid -> [reason codes]
        self.published = []  # mids of every publish()
        self.acked = set()  # mids whose QoS flow completed (or QoS 0 written)
        self.pause_misc = False
        self.socket_errors = []  # paho log lines about failed socket I/O (with log_errors)
        self.sock = None
        p = self.paho
        p.on_connect = self._on_connect
        p.on_disconnect = self._on_disconnect
        p.on_message = self._on_message
        p.on_subscribe = self._on_subscribe
        p.on_publish = self._on_publish
        p.on_socket_open = self._on_socket_open
        p.on_socket_close = self._on_socket_close
        if log_errors:
            # paho formats a log line per packet once on_log is set: only where needed.
            p.on_log = self._on_log

    # ---- paho callbacks ------------------------------------------------------------------

    def _on_connect(self, _c, _u, flags, rc, _props):
        self.connack = (bool(flags.session_present), rc.value)

    def _on_disconnect(self, _c, _u, flags, rc, _props):
        self.disconnects.append({"reason": rc.value,
                                 "from_server": bool(flags.is_disconnect_packet_from_server),
                                 "at": time.monotonic()})

    def _on_message(self, _c, _u, msg):
        self.messages.append((msg.topic, bytes(msg.payload), msg.qos, bool(msg.dup)))

    def _on_subscribe(self, _c, _u, mid, rcs, _props):
        self.subacks[mid] = [r.value for r in rcs]

    def _on_publish(self, _c, _u, mid, _rc, _props):
        self.acked.add(mid)

    def _on_log(self, _c, _u, _level, buf):
        if "Errno" in buf or "failed to" in buf:
            self.socket_errors.append(buf)

    def _on_socket_open(self, _c, _u, sock):
        self.sock = sock
        self.loop.register(sock, self)

    def _on_socket_close(self, _c, _u, sock):
        self.loop.unregister(sock)
        self.sock = None

    # ---- actions -------------------------------------------------------------------------

    def connect(self, host, port):
        """Opens the socket and sends CONNECT; `Loop.wait_connected` waits for CONNACK."""
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            if self.expiry is not None:
                props.SessionExpiryInterval = self.expiry
            self.paho.connect(host, port, self.keepalive, clean_start=self.clean,
                              properties=props)
        else:
            self.paho.connect(host, port, self.keepalive)
        return self

    def subscribe(self, topics, qos):
        """Sends one SUBSCRIBE for `topics` (a list of filters); returns its mid."""
        rc, mid = self.paho.subscribe([(t, qos) for t in topics])
        check(rc == mqtt.MQTT_ERR_SUCCESS, f"{self.client_id}: subscribe failed: {rc}")
        return mid

    def publish(self, topic, payload, qos):
        info = self.paho.publish(topic, payload, qos)
        check(info.rc == mqtt.MQTT_ERR_SUCCESS, f"{self.client_id}: publish failed: {info.rc}")
        self.published.append(info.mid)
        return info.mid

    @property
    def unacked(self):
        """Publishes whose QoS 1/2 flow has not completed (QoS 0: not yet written)."""
        return len(set(self.published) - self.acked)

    @property
    def connected(self):
        return self.connack is not None and self.sock is not None

    @property
    def closed(self):
        return self.sock is None


class Loop:
    """A single-threaded event loop over many paho clients and, optionally, standard input."""

    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.sel = selectors.DefaultSelector()
        self.clients = []
        self.interest = {}
        self.stdin_lines = []
        self.stdin_eof = False
        self._stdin_buf = b""
        self._last_misc = time.monotonic()

    def client(self, client_id, **kw):
        c = Client(self, client_id, **kw)
        self.clients.append(c)
        return c

    def register(self, sock, client):
        self.sel.register(sock, selectors.EVENT_READ, client)
        self.interest[sock] = selectors.EVENT_READ

    def unregister(self, sock):
        if sock in self.interest:
            del self.interest[sock]
            self.sel.unregister(sock)

    def watch_stdin(self):
        fd = sys.stdin.fileno()
        os.set_blocking(fd, False)
        self.sel.register(fd, selectors.EVENT_READ, "stdin")

    def _read_stdin(self):
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except BlockingIOError:
            return
        if not data:
            self.stdin_eof = True
            self.sel.unregister(sys.stdin.fileno())
            return
        self._stdin_buf += data
        while b"\n" in self._stdin_buf:
            line, self._stdin_buf = self._stdin_buf.split(b"\n", 1)
            self.stdin_lines.append(line.decode().strip())

    def step(self, timeout=0.05):
        for c in self.clients:
            s = c.sock
            if s is None:
                continue
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.paho.want_write() else 0)
            if self.interest.get(s) != want:
                self.interest[s] = want
                self.sel.modify(s, want, c)
        for key, mask in self.sel.select(timeout):
            if key.data == "stdin":
                self._read_stdin()
                continue
            c = key.data
            if mask & selectors.EVENT_WRITE and c.sock is key.fileobj:
                c.paho.loop_write()
            if mask & selectors.EVENT_READ and c.sock is key.fileobj:
                c.paho.loop_read()
        now = time.monotonic()
        if now - self._last_misc > 0.2:
            self._last_misc = now
            for c in self.clients:
                if c.sock is not None and not c.pause_misc:
                    c.paho.loop_misc()

    def run_until(self, pred, timeout, what):
        """Steps until `pred()` holds; raises Failure naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                lost = [f"{c.client_id}: {c.disconnects[0]} {c.socket_errors[:1]}"
                        for c in self.clients if c.disconnects]
                raise Failure(f"timed out after {timeout}s waiting for {what}"
                              + (f"; connections lost: {lost[:5]}" if lost else ""))
            self.step()

    def run_for(self, seconds):
        """Keeps the clients serviced for `seconds` (pacing, not synchronisation)."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.step(min(left, 0.05))

    def wait_stdin(self, word, timeout):
        """Keeps the clients serviced until the test writes `word` on standard input."""
        def seen():
            check(not self.stdin_eof or word in self.stdin_lines,
                  f"standard input closed before {word!r}")
            return word in self.stdin_lines
        self.run_until(seen, timeout, f"{word!r} on standard input")

    def connect_all(self, clients, timeout, session_present=None):
        """Connects `clients` and waits for every CONNACK; checks each succeeded."""
        for c in clients:
            c.connect(self.host, self.port)
            # Keep the broker's accept queue and our receive buffers moving while connecting.
            self.step(0)
        self.run_until(lambda: all(c.connack is not None or c.disconnects for c in clients),
                       timeout, f"CONNACK for {len(clients)} clients")
        for c in clients:
            check(c.connack is not None, f"{c.client_id}: closed before CONNACK: {c.disconnects}")
            check(c.connack[1] == 0, f"{c.client_id}: CONNACK reason {c.connack[1]}")
            if session_present is not None:
                check(c.connack[0] == session_present,
                      f"{c.client_id}: session present {c.connack[0]}, wanted {session_present}")

    def wait_acked(self, clients, timeout):
        """Waits until every publish of `clients` is acknowledged (PUBACK / PUBCOMP)."""
        self.run_until(lambda: all(c.unacked == 0 for c in clients), timeout,
                       "acknowledgements of every publish")

    def subscribe_all(self, subs, qos, timeout):
        """`subs` is a list of (client, [filters]); waits for every SUBACK and checks the
        granted QoS."""
        mids = [(c, c.subscribe(filters, qos), len(filters)) for c, filters in subs]
        self.run_until(lambda: all(mid in c.subacks for c, mid, _ in mids), timeout,
                       f"SUBACK for {len(mids)} clients")
        for c, mid, n in mids:
            check(c.subacks[mid] == [qos] * n,
                  f"{c.client_id}: SUBACK {c.subacks[mid]}, wanted granted QoS {qos} x{n}")


WARM = b"warm"


def is_warm(payload):
    return payload.startswith(WARM)


def warm_up(loop, pairs, timeout, qos=1, interval=0.3):
    """Waits until each subscriber of `pairs` (publisher, topic, subscriber) has received a
    message published on its topic after its SUBACK.

    The broker acknowledges a SUBSCRIBE before the new route has reached the other shards, so
    a message published at once on another shard can find no subscriber (a known broker issue,
    tested on its own by the Rust test `subscription_is_effective_on_every_shard_once_acked`).
    Scenarios that test something else first publish `warm` messages until every subscriber
    sees one, publishing again every `interval` seconds for the topics still waiting. Warm
    messages are left out of the counts (`is_warm`). Returns how many were published.
    """
    def satisfied(topic, sub):
        return any(m[0] == topic and is_warm(m[1]) for m in sub.messages)

    def all_satisfied():
        return all(satisfied(t, s) for _p, t, s in pairs)

    published = 0
    deadline = time.monotonic() + timeout
    while not all_satisfied():
        check(time.monotonic() < deadline, f"timed out after {timeout}s warming up routes")
        todo = {(p, t) for p, t, s in pairs if not satisfied(t, s)}
        for p, t in todo:
            p.publish(t, WARM, qos)
            published += 1
        end = time.monotonic() + interval
        while time.monotonic() < end and not all_satisfied():
            loop.step(0.02)
    return published
