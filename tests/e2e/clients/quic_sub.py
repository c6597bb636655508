"""An MQTT 5 subscriber over QUIC (aioquic, single stream): subscribes to `m/#`, prints
`{"phase": "subscribed"}`, then one `{"phase": "got", "topic": ...}` line per PUBLISH, until
it has received COUNT of them.

Usage: quic_sub.py PORT CLIENT_ID COUNT
"""

import asyncio
import json
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

from quic import packet, read_packet, s


async def main():
    port, cid, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    config = QuicConfiguration(is_client=True, alpn_protocols=["mqtt"], idle_timeout=30)
    config.verify_mode = ssl.CERT_NONE
    async with connect("127.0.0.1", port, configuration=config) as client:
        reader, writer = await client.create_stream()
        writer.write(packet(0x10, s("MQTT") + bytes([5, 0x02, 0, 60, 0]) + s(cid)))
        writer.write(packet(0x82, bytes([0, 1, 0]) + s("m/#") + bytes([0])))
        got = 0
        while got < count:
            first, body = await asyncio.wait_for(read_packet(reader), 20)
            kind = first & 0xF0
            if kind == 0x90:
                print(json.dumps({"phase": "subscribed"}), flush=True)
            elif kind == 0x30:
                n = int.from_bytes(body[:2], "big")
                print(json.dumps({"phase": "got", "topic": body[2:2 + n].decode()}), flush=True)
                got += 1
    print(json.dumps({"ok": True, "got": got}), flush=True)


asyncio.run(main())
