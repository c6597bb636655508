"""Misbehaving MQTT over QUIC clients (aioquic).

  quic_bad.py PORT reset    CONNECT, half a PUBLISH, then a reset of the MQTT stream: the
                            broker must close the connection.
  quic_bad.py PORT streams  CONNECT on the first stream, then more bidirectional streams than
                            allowed, each starting a second CONNECT: a data stream may not
                            carry one, so each is reset; MQTT on the first goes on.

Prints one JSON result line.
"""

import asyncio
import json
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset

from quic import packet, read_packet, s


async def reset(port):
    config = QuicConfiguration(is_client=True, alpn_protocols=["mqtt"])
    config.verify_mode = ssl.CERT_NONE
    terminated = asyncio.get_running_loop().create_future()
    async with connect("127.0.0.1", port, configuration=config) as client:
        original = client.quic_event_received

        def on_event(event):
            if isinstance(event, ConnectionTerminated) and not terminated.done():
                terminated.set_result(event.reason_phrase)
            original(event)

        client.quic_event_received = on_event
        reader, writer = await client.create_stream()
        writer.write(packet(0x10, s("MQTT") + bytes([5, 0x02, 0, 60, 0]) + s("bad-reset")))
        first, _ = await asyncio.wait_for(read_packet(reader), 10)
        assert first & 0xF0 == 0x20, first
        # Half a PUBLISH, then abort the stream.
        writer.write(bytes([0x30, 0x20, 0x00, 0x03]) + b"q/")
        stream_id = writer.get_extra_info("stream_id")
        client._quic.reset_stream(stream_id, 0)
        client.transmit()
        reason = await asyncio.wait_for(terminated, 10)
    return {"ok": True, "closed": True, "reason": reason}


async def streams(port):
    config = QuicConfiguration(is_client=True, alpn_protocols=["mqtt"])
    config.verify_mode = ssl.CERT_NONE
    async with connect("127.0.0.1", port, configuration=config) as client:
        reader, writer = await client.create_stream()
        writer.write(packet(0x10, s("MQTT") + bytes([5, 0x02, 0, 60, 0]) + s("bad-streams")))
        first, _ = await asyncio.wait_for(read_packet(reader), 10)
        assert first & 0xF0 == 0x20, first
        opened, refused = 0, 0
        for _ in range(20):
            try:
                _r, w = await asyncio.wait_for(client.create_stream(), 1)
                w.write(b"\x10")
                opened += 1
            except Exception:  # noqa: BLE001 - aioquic refuses beyond the stream limit
                refused += 1
                break
        # MQTT still works on the first stream.
        writer.write(packet(0xC0, b""))
        pong, _ = await asyncio.wait_for(read_packet(reader), 10)
    return {"ok": pong & 0xF0 == 0xD0, "opened": opened, "refused": refused}


mode = sys.argv[2]
result = asyncio.run({"reset": reset, "streams": streams}[mode](int(sys.argv[1])))
print(json.dumps(result), flush=True)
