"""MQTT 5 over QUIC with aioquic, an independent QUIC implementation: ALPN `mqtt`, one
bidirectional stream (single-stream mode), CONNECT, SUBSCRIBE, PUBLISH QoS 1 to itself; prints
one JSON line with the MQTT packet types received in order.

Usage: quic.py PORT CLIENT_ID
"""

import asyncio
import json
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration


def packet(kind, body):
    out = bytearray([kind])
    n = len(body)
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + body


def s(text):
    b = text.encode()
    return len(b).to_bytes(2, "big") + b


async def read_packet(reader):
    first = (await reader.readexactly(1))[0]
    mult, length = 1, 0
    while True:
        b = (await reader.readexactly(1))[0]
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    body = await reader.readexactly(length)
    return first, body


async def main():
    port, cid = int(sys.argv[1]), sys.argv[2]
    config = QuicConfiguration(is_client=True, alpn_protocols=["mqtt"])
    config.verify_mode = ssl.CERT_NONE
    got = []
    async with connect("127.0.0.1", port, configuration=config) as client:
        reader, writer = await client.create_stream()
        writer.write(packet(0x10, s("MQTT") + bytes([5, 0x02, 0, 60, 0]) + s(cid)))
        writer.write(packet(0x82, bytes([0, 1, 0]) + s("q/t") + bytes([1])))
        writer.write(packet(0x32, s("q/t") + bytes([0, 2, 0]) + b"hi"))
        for _ in range(4):
            first, body = await asyncio.wait_for(read_packet(reader), 10)
            got.append(first & 0xF0)
            if first & 0xF0 == 0x30:
                topic_len = int.from_bytes(body[:2], "big")
                got.append(body[2:2 + topic_len].decode())
        writer.write(packet(0xE0, bytes([0, 0])))
        await asyncio.sleep(0.05)
    print(json.dumps({"ok": True, "got": got}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
