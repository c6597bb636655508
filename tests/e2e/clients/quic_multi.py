"""MQTT 5 over QUIC in multi-stream mode (EMQX EIP-0023) with aioquic, an independent QUIC
implementation, driven command by command from standard input so the test decides exactly
what goes on which stream and asserts on exactly what comes back on which stream.

The first client-initiated bidirectional stream (id 0) is the control stream; the others
(4, 8, 12, ...) are data streams. Stream ids are chosen by the test; aioquic opens a stream on
its first write.

Usage: quic_multi.py PORT

Prints {"phase": "ready"} once the QUIC handshake is done, then reads one JSON command per
line and answers each with exactly one line {"phase": "reply", "op": ..., "closed": ...}:

  {"op": "send", "sends": [[STREAM, KIND, ARGS...], ...]}
      Writes the packets in order, all in the same event-loop turn (so they leave together,
      before any answer can be read), then transmits. KIND and ARGS:
        connect CLIENT_ID | subscribe PID FILTER QOS | unsubscribe PID FILTER |
        publish TOPIC QOS PID PAYLOAD | puback PID | pubrec PID | pubrel PID | pubcomp PID |
        pingreq | disconnect | raw HEX
      Reply: "received": {STREAM: packets received on it so far} at the time of writing.
  {"op": "read", "stream": S, "timeout": SECONDS}
      The next MQTT packet the broker sent on S ("packet": {...}), or how the wait ended
      ("end": "reset" | "fin" | "closed" | "timeout"); "stream" has S's state.
  {"op": "reset", "stream": S, "code": N, "stop": BOOL}
      RESET_STREAM (our sending side) with code N; with "stop", also STOP_SENDING (abort).
  {"op": "fin", "stream": S}
      Ends our sending side of S (FIN).
  {"op": "status"}
      Every stream's state: unread packets, reset / stop-sending codes from the broker, FIN.
  {"op": "wait_closed", "timeout": SECONDS}
      Waits for the connection to end.

A packet is {"type": first byte & 0xF0, "first": first byte, ...fields by type...}. A stream's
state is {"pending": [packets], "received": N, "reset": CODE|null, "stop_sending": CODE|null,
"fin": BOOL}. At the end of standard input: {"ok": true}.
"""

import asyncio
import json
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionTerminated,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

from quic import packet, s


def varint(b, at):
    """A variable byte integer at b[at:]: (value, index after it)."""
    value, shift = 0, 0
    while True:
        byte = b[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def describe(first, body):
    """What the test asserts on: the packet type and its fields."""
    kind = first & 0xF0
    p = {"type": kind, "first": first, "hex": body.hex()}
    try:
        if kind == 0x20:  # CONNACK
            p["session_present"] = bool(body[0] & 1)
            p["reason"] = body[1]
        elif kind == 0x30:  # PUBLISH
            qos = (first >> 1) & 3
            n = int.from_bytes(body[:2], "big")
            p["qos"] = qos
            p["topic"] = body[2:2 + n].decode()
            at = 2 + n
            if qos:
                p["pid"] = int.from_bytes(body[at:at + 2], "big")
                at += 2
            plen, at = varint(body, at)
            p["payload"] = body[at + plen:].decode(errors="replace")
        elif kind in (0x40, 0x50, 0x60, 0x70):  # PUBACK PUBREC PUBREL PUBCOMP
            p["pid"] = int.from_bytes(body[:2], "big")
            p["reason"] = body[2] if len(body) > 2 else 0
        elif kind in (0x90, 0xB0):  # SUBACK UNSUBACK
            p["pid"] = int.from_bytes(body[:2], "big")
            plen, at = varint(body, 2)
            p["reasons"] = list(body[at + plen:])
        elif kind == 0xE0:  # DISCONNECT
            p["reason"] = body[0] if body else 0
    except (IndexError, UnicodeDecodeError) as e:
        p["parse_error"] = str(e)
    return p


def build(kind, *args):
    """An MQTT 5 packet by hand."""
    if kind == "connect":
        (cid,) = args
        return packet(0x10, s("MQTT") + bytes([5, 0x02, 0, 60, 0]) + s(cid))
    if kind == "subscribe":
        pid, flt, qos = args
        return packet(0x82, pid.to_bytes(2, "big") + bytes([0]) + s(flt) + bytes([qos]))
    if kind == "unsubscribe":
        pid, flt = args
        return packet(0xA2, pid.to_bytes(2, "big") + bytes([0]) + s(flt))
    if kind == "publish":
        topic, qos, pid, payload = args
        body = s(topic) + (pid.to_bytes(2, "big") if qos else b"") + bytes([0])
        return packet(0x30 | (qos << 1), body + payload.encode())
    if kind in ("puback", "pubrec", "pubrel", "pubcomp"):
        (pid,) = args
        first = {"puback": 0x40, "pubrec": 0x50, "pubrel": 0x62, "pubcomp": 0x70}[kind]
        return packet(first, pid.to_bytes(2, "big"))
    if kind == "pingreq":
        return packet(0xC0, b"")
    if kind == "disconnect":
        return packet(0xE0, bytes([0, 0]))
    if kind == "raw":
        return bytes.fromhex(args[0])
    raise ValueError(f"unknown packet kind {kind}")


class Stream:
    def __init__(self):
        self.buf = bytearray()
        self.pending = []
        self.received = 0
        self.reset = None
        self.stop_sending = None
        self.fin = False

    def split(self):
        """Moves every whole packet from the buffer to `pending`."""
        while len(self.buf) >= 2:
            length, mult, at = 0, 1, 1
            while True:
                if at >= len(self.buf):
                    return
                b = self.buf[at]
                at += 1
                length += (b & 0x7F) * mult
                mult *= 128
                if not b & 0x80:
                    break
            if len(self.buf) < at + length:
                return
            self.pending.append(describe(self.buf[0], bytes(self.buf[at:at + length])))
            self.received += 1
            del self.buf[:at + length]

    def state(self):
        return {
            "pending": self.pending,
            "received": self.received,
            "reset": self.reset,
            "stop_sending": self.stop_sending,
            "fin": self.fin,
            "partial": self.buf.hex(),
        }


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.streams = {}
        self.closed = None
        self.changed = asyncio.Event()

    def stream(self, sid):
        return self.streams.setdefault(sid, Stream())

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            st = self.stream(event.stream_id)
            st.buf += event.data
            st.split()
            if event.end_stream:
                st.fin = True
        elif isinstance(event, StreamReset):
            self.stream(event.stream_id).reset = event.error_code
        elif isinstance(event, StopSendingReceived):
            self.stream(event.stream_id).stop_sending = event.error_code
        elif isinstance(event, ConnectionTerminated):
            self.closed = {"error_code": event.error_code, "reason": event.reason_phrase}
        self.changed.set()

    async def wait(self, pred, timeout):
        """Waits until pred() holds; False at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not pred():
            left = deadline - loop.time()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                return pred()
        return True

    async def command(self, cmd):
        op = cmd["op"]
        out = {}
        if op == "send":
            out["received"] = {str(k): v.received for k, v in self.streams.items()}
            try:
                for sid, kind, *args in cmd["sends"]:
                    self.stream(sid)
                    self._quic.send_stream_data(sid, build(kind, *args))
            except Exception as e:  # noqa: BLE001 - reported to the test
                out["error"] = repr(e)
            self.transmit()
        elif op == "read":
            sid = cmd["stream"]
            st = self.stream(sid)
            await self.wait(
                lambda: st.pending or st.reset is not None or st.fin or self.closed,
                cmd.get("timeout", 3),
            )
            if st.pending:
                out["packet"] = st.pending.pop(0)
            elif st.reset is not None:
                out["end"] = "reset"
            elif st.fin:
                out["end"] = "fin"
            elif self.closed:
                out["end"] = "closed"
            else:
                out["end"] = "timeout"
            out["stream"] = st.state()
        elif op == "reset":
            sid = cmd["stream"]
            self._quic.reset_stream(sid, cmd.get("code", 0))
            if cmd.get("stop"):
                self._quic.stop_stream(sid, cmd.get("code", 0))
            self.transmit()
        elif op == "fin":
            self._quic.send_stream_data(cmd["stream"], b"", end_stream=True)
            self.transmit()
        elif op == "status":
            out["streams"] = {str(k): v.state() for k, v in self.streams.items()}
        elif op == "wait_closed":
            await self.wait(lambda: self.closed, cmd.get("timeout", 3))
        else:
            out["error"] = f"unknown op {op}"
        out.update({"phase": "reply", "op": op, "closed": self.closed})
        return out


async def main():
    port = int(sys.argv[1])
    config = QuicConfiguration(is_client=True, alpn_protocols=["mqtt"], idle_timeout=30)
    config.verify_mode = ssl.CERT_NONE
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with connect(
        "127.0.0.1", port, configuration=config, create_protocol=Client
    ) as client:
        print(json.dumps({"phase": "ready"}), flush=True)
        while True:
            line = await stdin.readline()
            if not line:
                break
            if not line.strip():
                continue
            reply = await client.command(json.loads(line))
            print(json.dumps(reply), flush=True)
        client.close()
    print(json.dumps({"ok": True}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
