"""paho-mqtt over WebSocket (and WebSocket over TLS): a subscriber to `ws/#` on the WebSocket
listener reports `{"phase": "subscribed"}`; once the test's TCP publisher's message arrives, a
paho publisher on the WebSocket sends `ws/ws`; the final line lists what arrived, in order.

Usage: ws.py WS_PORT VERSION(5|4) TCP_PORT CLIENT_ID [CA_FILE]   (CA_FILE: use wss://)
"""

import ssl
import sys
import threading

from common import Failure, emit, mqtt, run, CallbackAPIVersion

PROTO = {"5": mqtt.MQTTv5, "4": mqtt.MQTTv311}


def client(cid, version, ca):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, transport="websockets",
                    protocol=PROTO[version])
    c.ws_set_options(path="/mqtt")
    if ca:
        c.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
    return c


def scenario():
    port, version, _tcp_port, cid = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    ca = sys.argv[5] if len(sys.argv) > 5 else None
    got = []
    first = threading.Event()
    both = threading.Event()
    subscribed = threading.Event()

    def on_message(_c, _u, m):
        got.append(f"{m.topic} {m.payload.decode()}")
        first.set()
        if len(got) == 2:
            both.set()

    sub = client(cid + "-s", version, ca)
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", int(port), keepalive=30)
    sub.loop_start()
    sub.subscribe("ws/#", qos=1)
    if not subscribed.wait(10):
        raise Failure("no SUBACK over WebSocket")
    emit({"phase": "subscribed", "ok": True})
    if not first.wait(10):
        raise Failure(f"the TCP publisher's message did not arrive: {got}")
    pub = client(cid + "-p", version, ca)
    pub.connect("127.0.0.1", int(port), keepalive=30)
    pub.loop_start()
    pub.publish("ws/ws", b"from-ws", qos=1).wait_for_publish(10)
    if not both.wait(10):
        raise Failure(f"the WebSocket publisher's message did not arrive: {got}")
    pub.disconnect()
    sub.disconnect()
    pub.loop_stop()
    sub.loop_stop()
    emit({"phase": "done", "got": got})
    return {"ok": True, "got": got}


run(scenario)
