#!/usr/bin/env python3
"""Runs the perf scenarios against this broker, Mosquitto and rumqttd; writes the raw JSON into
tools/bench/results/<date>/ and prints a markdown table. Called by run.sh (which builds and
installs); see tools/bench/README.md. TLS and WSS scenarios use a test CA and server certificate
generated into the results directory; rumqttd runs the plain TCP scenarios only."""

import argparse
import atexit
import datetime
import json
import os
import secrets
import select
import shutil
import shlex
import signal
import socket
import subprocess
import tempfile
import sys
import time
from collections import namedtuple

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MQTT = ["-V", "4"]  # MQTT 3.1.1 everywhere: rumqttd 0.20's v5 listener is partial.
# Every `perf bench` scenario excludes its first 2 s: a broker in its own session (scheduler
# autogroup) waits ~1 s in the run queue when publishing starts next to a busy perf.
WARMUP = ["--warmup", "2s"]


# ---------------------------------------------------------------- process sampling

def proc_sample(pid):
    """CPU seconds (utime+stime of the whole process) and RSS bytes."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14, 15 of stat(5)
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * PAGE
    return {"t": time.time(), "cpu_s": cpu, "rss_bytes": rss}


def socket_fds(pid):
    """Sockets the broker holds (fds linking to socket:[...]): one per accepted connection.
    (/proc/net/tcp is not read consistently while thousands of sockets churn.)"""
    n = 0
    d = f"/proc/{pid}/fd"
    for fd in os.listdir(d):
        try:
            if os.readlink(f"{d}/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_accepting(port, proc, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ---------------------------------------------------------------- certificates

def make_certs(outdir):
    """A test CA and a server certificate for 127.0.0.1 / localhost (ECDSA P-256), written with
    the openssl CLI into outdir. World-readable: Mosquitto started as root reads them as the
    `mosquitto` user. The CA key is deleted once the server certificate is signed."""
    ca_key, ca = os.path.join(outdir, "ca.key"), os.path.join(outdir, "ca.pem")
    key, csr = os.path.join(outdir, "server.key"), os.path.join(outdir, "server.csr")
    cert, ext = os.path.join(outdir, "server.pem"), os.path.join(outdir, "server.ext")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    with open(ext, "w") as f:
        f.write("basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, digitalSignature\n"
                "extendedKeyUsage = serverAuth\n"
                "subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    for argv in (
        ["openssl", "req", "-x509", "-new"] + ec + ["-keyout", ca_key, "-out", ca,
         "-days", "3650", "-subj", "/CN=tools-bench test CA",
         "-addext", "basicConstraints = critical, CA:TRUE",
         "-addext", "keyUsage = critical, keyCertSign, cRLSign"],
        ["openssl", "req", "-new"] + ec + ["-keyout", key, "-out", csr,
         "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
         "-set_serial", "0x" + secrets.token_hex(8), "-days", "3650", "-sha256",
         "-extfile", ext, "-out", cert],
    ):
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)}: {r.stderr.strip()[-500:]}")
    for f in (ca_key, csr, ext):
        os.remove(f)
    for f in (ca, key, cert):
        os.chmod(f, 0o644)
    return {"cacertfile": ca, "certfile": cert, "keyfile": key}


# ---------------------------------------------------------------- brokers

class Broker:
    """argv_fn(port, cfg, tls) and cfg_fn(port, tls): tls is None for plain TCP, else a dict
    with transport ("tls" | "wss"), certfile and keyfile; PORT is then that listener's port."""

    def __init__(self, name, label, argv_fn, version, cfg_fn=None, transports=("tcp",)):
        self.name, self.label, self.argv_fn, self.version, self.cfg_fn = (
            name, label, argv_fn, version, cfg_fn)
        self.transports = transports
        self.proc = None

    def start(self, outdir, tag, tls=None):
        self.port = free_port()
        cfg = None
        if self.cfg_fn:
            # rumqttd picks the parser from the extension.
            ext = "toml" if self.name == "rumqttd" else "conf"
            suffix = f"-{tls['transport']}" if tls else ""
            cfg = os.path.join(outdir, f"{self.name}{suffix}.{ext}")
            with open(cfg, "w") as f:
                f.write(self.cfg_fn(self.port, tls))
        argv = self.argv_fn(self.port, cfg, tls)
        self.argv = argv
        log = open(os.path.join(outdir, f"{self.name}-{tag}.log"), "w")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if not wait_accepting(self.port, self.proc):
            self.stop()
            raise RuntimeError(f"{self.name} did not accept connections on {self.port}")
        time.sleep(0.3)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def version_of(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        out = (r.stdout + r.stderr).strip().splitlines()
        return out[0].strip() if out else "?"
    except Exception as e:  # noqa: BLE001
        return f"? ({e})"


# Data directories of the brokers started, removed when the script ends.
DATA_DIRS = []
atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in DATA_DIRS])


def ours_argv(bdir, cores, port, tls):
    # A fresh data directory per broker: nothing recovered from an earlier scenario's log.
    data = tempfile.mkdtemp(prefix="bench-data-")
    DATA_DIRS.append(data)
    argv = [os.path.join(bdir, "broker"), "run", "--cores", str(cores),
            "--set", f"node.data_dir={data}"]
    if tls is not None and tls["transport"] == "net":
        # The network scenarios (--transports): TCP on PORT, TLS and QUIC (UDP) on their own
        # ports, both with the test certificate; WS off to 127.0.0.1:0, WSS off (no cert).
        return argv + ["--set", f"listeners.tcp.default.bind=127.0.0.1:{port}",
                       "--set", "listeners.ws.default.bind=127.0.0.1:0",
                       "--set", f"listeners.ssl.default.bind=127.0.0.1:{tls['tls_port']}",
                       "--set", f"listeners.ssl.default.ssl_options.certfile={tls['certfile']}",
                       "--set", f"listeners.ssl.default.ssl_options.keyfile={tls['keyfile']}",
                       "--set", "listeners.quic.default.enable=true",
                       "--set", f"listeners.quic.default.bind=127.0.0.1:{tls['quic_port']}",
                       "--set", "dashboard.listeners.http.bind=127.0.0.1:0",
                       "--set", f"listeners.quic.default.ssl_options.certfile={tls['certfile']}",
                       "--set", f"listeners.quic.default.ssl_options.keyfile={tls['keyfile']}"]
    if tls is None:
        return argv + ["--set", f"listeners.tcp.default.bind=127.0.0.1:{port}",
                       "--set", "listeners.ws.default.bind=127.0.0.1:0",
                       "--set", "listeners.quic.default.bind=127.0.0.1:0",
                   "--set", "dashboard.listeners.http.bind=127.0.0.1:0"]
    # TLS / WSS: that listener on PORT with the test certificate; TCP and WS on free ports
    # nobody uses (the other TLS listener stays off: it has no certificate).
    lst = {"tls": "ssl", "wss": "wss"}[tls["transport"]]
    return argv + ["--set", "listeners.tcp.default.bind=127.0.0.1:0",
                   "--set", "listeners.ws.default.bind=127.0.0.1:0",
                   "--set", "listeners.quic.default.bind=127.0.0.1:0",
                   "--set", "dashboard.listeners.http.bind=127.0.0.1:0",
                   "--set", f"listeners.{lst}.default.bind=127.0.0.1:{port}",
                   "--set", f"listeners.{lst}.default.ssl_options.certfile={tls['certfile']}",
                   "--set", f"listeners.{lst}.default.ssl_options.keyfile={tls['keyfile']}"]


def mosquitto_conf(port, tls):
    if tls is None:
        return f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"
    s = f"listener {port} 127.0.0.1\n"
    if tls["transport"] == "wss":
        s += "protocol websockets\n"
    s += (f"certfile {tls['certfile']}\nkeyfile {tls['keyfile']}\n"
          "allow_anonymous true\nmax_connections -1\n")
    if tls["transport"] == "wss":
        # Mosquitto 2.0.11 refuses to start with WebSocket listeners only.
        s += f"listener {free_port()} 127.0.0.1\n"
    # Without it Mosquitto's CONNACK over TLS waits 40 ms (Nagle behind its session tickets).
    return s + "set_tcp_nodelay true\n"


def make_brokers(root, rumqttd, cores):
    bdir = os.path.join(root, "target", "release")
    ours = Broker(
        "ours", f"this broker, `--cores {cores}`",
        lambda port, _cfg, tls: ours_argv(bdir, cores, port, tls),
        version_of([os.path.join(bdir, "broker"), "--version"]),
        transports=("tcp", "tls", "wss"))
    mosq = Broker(
        "mosquitto", "Mosquitto",
        lambda port, cfg, _tls: ["/usr/sbin/mosquitto", "-c", cfg],
        version_of(["/usr/sbin/mosquitto", "-h"]),
        mosquitto_conf, transports=("tcp", "tls", "wss"))
    # rumqttd: one v4 listener; limits matched to the others (no connect throttling,
    # room for the storm, payloads above 1 KiB, inflight above perf's 32).
    rum = Broker(
        "rumqttd", "rumqttd",
        lambda port, cfg, _tls: [rumqttd, "-q", "-c", cfg],
        version_of([rumqttd, "--version"]),
        lambda port, _tls: f"""id = 0

[router]
id = 0
max_connections = 20000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 1048576
    max_inflight_count = 100
    dynamic_filters = true
""")
    return ours, mosq, rum


# ---------------------------------------------------------------- scenarios

# transport: "tcp" | "tls" | "wss" (the broker's listener on PORT, perf's flags in args).
# storm: for connection storms, the connections opened, held idle for `hold` s; the broker's
# sockets and RSS are sampled while they connect (see one()).
Scenario = namedtuple("Scenario", "key title args transport storm hold",
                      defaults=("tcp", None, None))


def scenarios(d, ca="CA"):
    bench = ["bench", "-h", "127.0.0.1"] + MQTT
    fan_in = ["--pubs", "100", "--subs", "1", "-t", "bench/in/%i", "--sub-topic", "bench/in/#",
              "-q", "0", "-s", "64"]
    fan_out = ["--pubs", "1", "--subs", "100", "-t", "bench/out", "--sub-topic", "bench/out",
               "-q", "0", "-s", "64"]
    pairs = ["--pubs", "100", "--subs", "100", "-t", "bench/pair/%i",
             "--sub-topic", "bench/pair/%i", "-q", "1", "--rate", "10000"]
    dur = WARMUP + ["--duration", f"{d}s"]
    conn = ["conn", "-h", "127.0.0.1"] + MQTT
    tls = ["--tls", "--cacertfile", ca]

    def storm(n, hold):
        return ["-c", str(n), "-i", "0", "--connect-timeout", "30", "--duration", f"{hold}s"]

    S = Scenario
    return [
        S("fan-in", "fan-in 100→1, QoS 0, 64 B, max rate", bench + fan_in + dur),
        S("fan-out", "fan-out 1→100, QoS 0, 64 B, 1,000 msg/s in", bench + fan_out
          + ["--rate", "1000"] + dur),
        S("fan-out-max", "fan-out 1→100, QoS 0, 64 B, max rate", bench + fan_out + dur),
        S("pairs-64", "100 pairs, QoS 1, 64 B, 10,000 msg/s", bench + pairs + ["-s", "64"]
          + dur),
        S("pairs-1k", "100 pairs, QoS 1, 1 KiB, 10,000 msg/s", bench + pairs + ["-s", "1024"]
          + dur),
        S("storm", "connection storm: 5,000 connects, -i 0", conn + storm(5000, max(d, 8)),
          storm=5000, hold=max(d, 8)),
        # latency: fan-in shape at a fixed rate filled in once Mosquitto's fan-in is known.
        S("latency", "fan-in 100→1, QoS 0, 64 B, fixed rate (50 % of Mosquitto's fan-in)",
          bench + fan_in + dur),
        # 10,000 TLS connections: perf holds 10,000 sockets, under the 20,000 open files.
        S("tls-storm", "TLS connection storm: 10,000 connects, -i 0",
          conn + tls + storm(10000, 12), transport="tls", storm=10000, hold=12),
        # 2,000: Mosquitto's libwebsockets answers each upgrade ~200 ms late.
        S("wss-storm", "WSS connection storm: 2,000 connects, -i 0",
          conn + tls + ["--ws"] + storm(2000, 12), transport="wss", storm=2000, hold=12),
    ]


def run_perf(perf, args, port, json_path, timeout):
    argv = [perf] + args[:1] + ["-p", str(port), "--json", json_path] + args[1:]
    t0 = time.time()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return argv, r, time.time() - t0


def one(broker, perf, outdir, sc, args, dur, certs=None):
    """Fresh broker per scenario, so CPU and RSS deltas belong to that scenario alone."""
    key = sc.key
    res = {"broker": broker.name, "scenario": key, "ok": False}
    if sc.transport != "tcp":
        res["transport"] = sc.transport
    if sc.storm:
        res["storm"] = sc.storm
    jpath = os.path.join(outdir, f"{broker.name}-{key}.json")
    tls = None if sc.transport == "tcp" else dict(certs, transport=sc.transport)
    try:
        broker.start(outdir, key, tls)
    except Exception as e:  # noqa: BLE001
        res["error"] = str(e)
        return res
    try:
        res["broker_argv"] = broker.argv
        pid = broker.proc.pid
        before = proc_sample(pid)
        if sc.storm:
            # Connection storm: count the broker's sockets while perf connects; once it holds
            # all sc.storm of them (and the count stopped moving), wait 1 s and sample RSS.
            wait = max(dur, sc.hold) + 45
            argv = [perf] + args[:1] + ["-p", str(broker.port), "--json", jpath] + args[1:]
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            base = socket_fds(pid)
            peak, settled, at_peak, prev = 0, None, None, -1
            t_end = time.time() + wait
            while p.poll() is None and time.time() < t_end:
                n = socket_fds(pid) - base
                if settled is None and n > 0 and n >= peak:
                    at_peak = proc_sample(pid)
                    at_peak["established"] = n
                peak = max(peak, n)
                if settled is None and n >= sc.storm and n == prev:
                    time.sleep(1.0)  # let the broker finish its per-connection setup
                    settled = proc_sample(pid)
                    settled["established"] = socket_fds(pid) - base
                prev = n
                time.sleep(0.25)
            try:
                out, err = p.communicate(timeout=wait)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            res["rc"], res["argv"] = p.returncode, argv
            res["peak_established"] = peak
            # A broker that never reaches sc.storm: its RSS at the most connections it held.
            res["idle_sample"] = settled or at_peak
            stdout, stderr = out, err
        else:
            argv, r, _ = run_perf(perf, args, broker.port, jpath, dur + 60)
            res["rc"], res["argv"] = r.returncode, argv
            stdout, stderr = r.stdout, r.stderr
        after = proc_sample(pid)
        res["before"], res["after"] = before, after
        with open(os.path.join(outdir, f"{broker.name}-{key}.perf.txt"), "w") as f:
            f.write(stdout)
            f.write(stderr[-4000:])
        if os.path.exists(jpath):
            with open(jpath) as f:
                res["perf"] = json.load(f)
            res["ok"] = res["rc"] == 0
        else:
            res["error"] = f"perf rc={res['rc']}, no JSON: {stderr.strip()[-300:]}"
        res["broker_alive"] = broker.proc.poll() is None
    except Exception as e:  # noqa: BLE001
        res["error"] = repr(e)
    finally:
        broker.stop()
    return res


# ---------------------------------------------------------------- figures

def figures(res):
    f = {}
    p = res.get("perf")
    if not p:
        return f
    cpu = res["after"]["cpu_s"] - res["before"]["cpu_s"]
    f["cpu_s"] = cpu
    f["rss_after_mib"] = res["after"]["rss_bytes"] / 2**20
    f["rss_before_mib"] = res["before"]["rss_bytes"] / 2**20
    rcv = p.get("receive")
    if rcv:
        f["delivered"] = rcv["received"]
        # Throughput by arrival after the warm-up (a backlog sent during the warm-up and
        # delivered later counts); older reports have only the intended-time rate.
        f["delivered_per_s"] = rcv.get("arrival_rate_per_s") or rcv["rate_per_s"]
        f["lost"] = rcv["lost"]
        f["dup"] = rcv["duplicated"]
        f["ooo"] = rcv["out_of_order"]
        # The broker's CPU delta spans the whole run, warm-up included: divide by everything
        # it delivered (receive.received counts the measured phase only).
        total = rcv["received"] + rcv.get("warmup_received", 0)
        f["cpu_per_m"] = cpu / (total / 1e6) if total else None
        lat = rcv.get("latency_us") or {}
        f["p50_ms"] = lat.get("p50", 0) / 1000 if lat.get("count") else None
        f["p99_ms"] = lat.get("p99", 0) / 1000 if lat.get("count") else None
    pub = p.get("publish")
    if pub:
        f["published_per_s"] = pub["rate_per_s"]
    c = p["connections"]
    f["connected"] = c["connected"]
    f["failed"] = c["failed"]
    f["dropped"] = c["dropped"]
    f["connects_per_s"] = c["connect_rate_per_s"]
    f["errors"] = p["errors"]["total"]
    storm = res.get("storm") or (5000 if res["scenario"] == "storm" else None)
    if storm:
        s = res.get("idle_sample")
        if s:
            f["rss_idle_mib"] = s["rss_bytes"] / 2**20
            f["idle_conns"] = s["established"]
            f["rss_per_conn_kib"] = ((s["rss_bytes"] - res["before"]["rss_bytes"]) / 1024
                                     / s["established"])

        def ms(name, q):
            h = c.get(name)
            return h[q] / 1000 if h and h.get("count") and h.get(q) is not None else None

        # connect_*: CONNECT → CONNACK; tls_*: TCP connected → TLS handshake done; ws_*: the
        # upgrade; setup_*: TCP connect started → CONNACK, every handshake included.
        for fig, name in (("connect", "handshake_us"), ("tls", "tls_handshake_us"),
                          ("ws", "ws_handshake_us"), ("setup", "setup_us")):
            for q in ("p50", "p99"):
                v = ms(name, q)
                if v is not None:
                    f[f"{fig}_{q}_ms"] = v
        if c["connected"]:
            f["cpu_ms_per_conn"] = cpu * 1000 / c["connected"]
    return f


def fmt(x, nd=0):
    if x is None:
        return "–"
    if isinstance(x, float) and nd:
        return f"{x:,.{nd}f}"
    return f"{x:,.0f}"


def ratio(a, b, nd=2):
    if a is None or b in (None, 0):
        return "–"
    return f"{a / b:.{nd}f}×"


def table(results, brokers, meta):
    names = [b.name for b in brokers]
    labels = {b.name: b.label for b in brokers}
    F = {(r["broker"], r["scenario"]): figures(r) for r in results}
    R = {(r["broker"], r["scenario"]): r for r in results}
    out = []
    w = out.append
    w(f"- date: {meta['date']} (UTC, started {meta['started']})")
    w(f"- machine: {meta['machine']}")
    w(f"- versions: " + "; ".join(f"{labels[n]}: {meta['versions'][n]}" for n in names)
      + f"; perf: {meta['versions']['perf']}")
    w(f"- command: `{meta['command']}`")
    w(f"- load average before: {meta['loadavg_before']}; after: {meta['loadavg_after']}")
    w("")
    hdr = ["scenario", "metric"] + [labels[n] for n in names] + ["ours / Mosquitto",
                                                                  "ours / rumqttd"]
    w("| " + " | ".join(hdr) + " |")
    w("| " + " | ".join(["---", "---"] + ["---:"] * (len(names) + 2)) + " |")

    def row(sc, metric, key, nd=0, note=None):
        vals = [F.get((n, sc), {}).get(key) for n in names]
        cells = []
        for n, v in zip(names, vals):
            r = R.get((n, sc))
            if r is None:
                cells.append("not run")
            elif not r.get("perf"):
                cells.append("failed")
            else:
                cells.append(fmt(v, nd))
        o = F.get(("ours", sc), {}).get(key)
        m = F.get(("mosquitto", sc), {}).get(key)
        q = F.get(("rumqttd", sc), {}).get(key)
        rm, rq = (ratio(o, m), ratio(o, q)) if key != "lost" else ("", "")
        w(f"| {sc} | {metric} | " + " | ".join(cells) + f" | {rm} | {rq} |")

    for sc in meta["scenarios"]:
        key, storm = sc[0], sc[4]
        tp = {"tls": "TLS ", "wss": "WSS "}.get(sc[3], "")
        if storm:
            if tp:
                row(key, f"connects/s (each a full {tp}handshake)", "connects_per_s")
            else:
                row(key, "connects/s", "connects_per_s")
            row(key, f"connected (of {storm:,})", "connected")
            if sc[3] == "tls":
                row(key, "TLS handshake p50 ms", "tls_p50_ms", 2)
                row(key, "TLS handshake p99 ms", "tls_p99_ms", 2)
            if sc[3] == "wss":
                row(key, "setup (TCP connect → CONNACK) p50 ms", "setup_p50_ms", 2)
                row(key, "setup (TCP connect → CONNACK) p99 ms", "setup_p99_ms", 2)
            else:
                row(key, "CONNECT→CONNACK p50 ms", "connect_p50_ms", 2)
                row(key, "CONNECT→CONNACK p99 ms", "connect_p99_ms", 2)
            row(key, "RSS before, MiB", "rss_before_mib", 1)
            row(key, "idle connections at the RSS sample", "idle_conns")
            row(key, "RSS with the idle connections, MiB", "rss_idle_mib", 1)
            row(key, f"RSS per idle {tp}connection, KiB", "rss_per_conn_kib", 2)
            row(key, "broker CPU s", "cpu_s", 2)
            if tp:
                row(key, "broker CPU ms per connection", "cpu_ms_per_conn", 3)
            continue
        row(key, "delivered msgs/s", "delivered_per_s")
        if key in ("fan-in", "fan-out-max"):
            row(key, "published msgs/s", "published_per_s")
        row(key, "CPU s per 10⁶ delivered", "cpu_per_m", 2)
        row(key, "RSS after, MiB", "rss_after_mib", 1)
        if key in ("latency", "pairs-64", "pairs-1k", "fan-out"):
            row(key, "latency p50 ms", "p50_ms", 3)
            row(key, "latency p99 ms", "p99_ms", 3)
        row(key, "lost (QoS 0 drops at max rate)", "lost")
    w("")
    w("Per-run delivery accounting (lost / duplicated / out of order / errors):")
    w("")
    for r in results:
        f = F[(r["broker"], r["scenario"])]
        if r.get("perf"):
            w(f"- {r['broker']} {r['scenario']}: lost {fmt(f.get('lost'))}, dup "
              f"{fmt(f.get('dup'))}, ooo {fmt(f.get('ooo'))}, errors {f['errors']} "
              f"{r['perf']['errors']['by_kind'] or ''}, connected {f['connected']}, "
              f"dropped {f['dropped']}, broker alive at end: {r.get('broker_alive')}")
        else:
            w(f"- {r['broker']} {r['scenario']}: FAILED: {r.get('error')}")
    return "\n".join(out)


# ---------------------------------------------------------------- network scenarios (--transports)

# Network conditions: None = plain loopback, else the relay's round-trip time and loss. The
# relay (tools/relay) sits between perf and the broker: a TCP relay for tcp and tls, a UDP relay
# (--udp) for quic. Fixed seeds, so a condition drops the same pattern from run to run (per
# TCP connection in accept order; per UDP client port, which is ephemeral).
NetCondition = namedtuple("NetCondition", "key title rtt_ms loss seed")
NET_CONDITIONS = [
    NetCondition("loopback", "plain loopback (no relay)", None, None, None),
    NetCondition("rtt50-loss0", "relay: 50 ms RTT, no loss", 50, 0.0, 1),
    NetCondition("rtt50-loss1", "relay: 50 ms RTT, 1 % loss", 50, 0.01, 1),
    NetCondition("rtt50-loss5", "relay: 50 ms RTT, 5 % loss", 50, 0.05, 1),
]
NET_TRANSPORTS = ("tcp", "tls", "quic")
NET_CONN = ["conn", "-h", "127.0.0.1"] + MQTT + ["-c", "200", "-i", "5", "--duration", "3s"]


def net_bench(d):
    return (["bench", "-h", "127.0.0.1"] + MQTT
            + ["--pubs", "10", "--subs", "10", "-t", "bench/q/%i", "--sub-topic", "bench/q/%i",
               "-q", "1", "-s", "256", "--rate", "2000"] + WARMUP + ["--duration", f"{d}s"])


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def udp_bound(port):
    """Some socket bound to 127.0.0.1:port (UDP), from /proc/net/udp."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as f:
        return any(line.split()[1] == want for line in f.readlines()[1:])


class Relay:
    """tools/relay in front of the broker: `relay [--udp] --listen 127.0.0.1:0 --upstream
    127.0.0.1:PORT --rtt-ms N --loss P --seed S`; its first stdout line names its address."""

    def __init__(self, binary, upstream_port, udp, cond, log_path):
        self.argv = [binary] + (["--udp"] if udp else []) + [
            "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream_port}",
            "--rtt-ms", str(cond.rtt_ms), "--loss", str(cond.loss), "--seed", str(cond.seed)]
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        r, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline().strip() if r else ""
        if not line.startswith("relay listening on "):
            self.stop()
            raise RuntimeError(f"relay did not start: {line!r} ({shlex.join(self.argv)})")
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()


def net_one(broker, perf, relay_bin, outdir, cond, transport, kind, args, certs, dur):
    """One perf run (kind "conn" or "bench") over one transport under one condition: a fresh
    broker with its TCP, TLS and QUIC listeners, a fresh relay when the condition has one."""
    key = f"{cond.key}-{transport}-{kind}"
    res = {"broker": broker.name, "scenario": key, "condition": cond.key,
           "transport": transport, "kind": kind, "ok": False}
    jpath = os.path.join(outdir, f"{broker.name}-{key}.json")
    tls = dict(certs, transport="net", tls_port=free_port(), quic_port=free_udp_port())
    relay = None
    try:
        broker.start(outdir, key, tls)
        res["broker_argv"] = broker.argv
        t_end = time.time() + 10
        while not udp_bound(tls["quic_port"]) and time.time() < t_end:
            time.sleep(0.05)
        if not udp_bound(tls["quic_port"]):
            raise RuntimeError(f"broker's QUIC listener not bound on udp {tls['quic_port']}")
        target = {"tcp": broker.port, "tls": tls["tls_port"], "quic": tls["quic_port"]}[transport]
        if cond.rtt_ms is not None:
            relay = Relay(relay_bin, target, transport == "quic", cond,
                          os.path.join(outdir, f"relay-{key}.log"))
            res["relay_argv"] = relay.argv
            target = relay.port
        flags = {"tcp": [], "tls": ["--tls", "--cacertfile", certs["cacertfile"]],
                 "quic": ["--quic", "--cacertfile", certs["cacertfile"]]}[transport]
        args = args[:1] + flags + args[1:]
        pid = broker.proc.pid
        before = proc_sample(pid)
        rbefore = proc_sample(relay.proc.pid) if relay else None
        argv, r, took = run_perf(perf, args, target, jpath, dur + 90)
        res["rc"], res["argv"], res["wall_s"] = r.returncode, argv, took
        res["before"], res["after"] = before, proc_sample(pid)
        if relay:
            res["relay_cpu_s"] = proc_sample(relay.proc.pid)["cpu_s"] - rbefore["cpu_s"]
        with open(os.path.join(outdir, f"{broker.name}-{key}.perf.txt"), "w") as f:
            f.write(r.stdout)
            f.write(r.stderr[-4000:])
        if os.path.exists(jpath):
            with open(jpath) as f:
                res["perf"] = json.load(f)
            res["ok"] = r.returncode == 0
        else:
            res["error"] = f"perf rc={r.returncode}, no JSON: {r.stderr.strip()[-300:]}"
        res["broker_alive"] = broker.proc.poll() is None
        res["relay_alive"] = relay.proc.poll() is None if relay else None
    except Exception as e:  # noqa: BLE001
        res["error"] = repr(e)
    finally:
        if relay:
            relay.stop()
        broker.stop()
    return res


def net_figures(res):
    f = {}
    p = res.get("perf")
    if not p:
        return f
    c = p["connections"]
    f["connected"], f["clients"], f["failed"] = c["connected"], c["clients"], c["failed"]
    f["dropped"] = c["dropped"]
    f["errors"] = p["errors"]["total"]
    f["cpu_s"] = res["after"]["cpu_s"] - res["before"]["cpu_s"]
    for name, h in (("setup", c.get("setup_us")), ("connect", c.get("handshake_us")),
                    ("tls", c.get("tls_handshake_us")), ("quic", c.get("quic_handshake_us"))):
        if h and h.get("count"):
            for q in ("p50", "p99", "max"):
                f[f"{name}_{q}_ms"] = h[q] / 1000
    rcv = p.get("receive")
    if rcv:
        f["delivered_per_s"] = rcv.get("arrival_rate_per_s") or rcv["rate_per_s"]
        f["received"], f["expected"] = rcv["received"], rcv.get("expected")
        f["warmup_received"] = rcv.get("warmup_received", 0)
        f["lost"], f["dup"], f["ooo"] = rcv["lost"], rcv["duplicated"], rcv["out_of_order"]
        lat = rcv.get("latency_us") or {}
        if lat.get("count"):
            for q in ("p50", "p99", "max"):
                f[f"lat_{q}_ms"] = lat[q] / 1000
    pub = p.get("publish")
    if pub:
        f["published_per_s"] = pub["rate_per_s"]
        f["sent"], f["acked"] = pub["sent"], pub["acked"]
        lat = pub.get("ack_latency_us") or {}
        if lat.get("count"):
            f["ack_p99_ms"] = lat["p99"] / 1000
    return f


def net_table(results, meta):
    F = {(r["condition"], r["transport"], r["kind"]): net_figures(r) for r in results}
    R = {(r["condition"], r["transport"], r["kind"]): r for r in results}
    out = []
    w = out.append
    w(f"- date: {meta['date']} (UTC, started {meta['started']}, ended {meta['ended']})")
    w(f"- machine: {meta['machine']}")
    w("- versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()))
    w(f"- command: `{meta['command']}`")
    w(f"- load average before: {meta['loadavg_before']}; after: {meta['loadavg_after']}")
    w("")
    w("Time to CONNACK: `perf conn -c 200 -i 5 --duration 3s`; setup = TCP connect (QUIC: first "
      "Initial) started → CONNACK, every handshake included. QoS 1: `perf bench --pubs 10 --subs "
      f"10 -q 1 -s 256 --rate 2000 --warmup 2s --duration {meta['duration']}s` (pairs "
      "bench/q/%i), delivered/s = arrival rate of the measured phase, latency = publish "
      "due time → received (coordinated-omission corrected).")
    w("")
    w("| condition | transport | connected (of 200) | setup p50 ms | setup p99 ms | setup max ms "
      "| delivered/s | latency p50 ms | latency p99 ms | latency max ms | lost | dup | errors |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    def cell(cond, tp, kind, key, nd=0):
        r = R.get((cond, tp, kind))
        if r is None:
            return "not run"
        if not r.get("perf"):
            return "failed"
        return fmt(F[(cond, tp, kind)].get(key), nd)

    for cond in meta["conditions"]:
        for tp in meta["transports"]:
            ce = [cell(cond, tp, "conn", k, 2) for k in ("setup_p50_ms", "setup_p99_ms",
                                                         "setup_max_ms")]
            be = [cell(cond, tp, "bench", k, 2) for k in ("lat_p50_ms", "lat_p99_ms",
                                                          "lat_max_ms")]
            errs = [F.get((cond, tp, k), {}).get("errors") for k in ("conn", "bench")]
            w(f"| {cond} | {tp} | {cell(cond, tp, 'conn', 'connected')} | " + " | ".join(ce)
              + f" | {cell(cond, tp, 'bench', 'delivered_per_s')} | " + " | ".join(be)
              + f" | {cell(cond, tp, 'bench', 'lost')} | {cell(cond, tp, 'bench', 'dup')} | "
              + " / ".join(fmt(e) for e in errs) + " |")
    w("")
    w("errors: conn / bench runs. Per-run accounting:")
    w("")
    for r in results:
        f = net_figures(r)
        name = f"{r['condition']} {r['transport']} {r['kind']}"
        if not r.get("perf"):
            w(f"- {name}: FAILED: {r.get('error')}")
            continue
        s = (f"- {name}: rc {r['rc']}, connected {f['connected']}/{f['clients']}, failed "
             f"{f['failed']}, dropped {f['dropped']}, errors {f['errors']} "
             f"{r['perf']['errors']['by_kind'] or ''}, broker CPU {f['cpu_s']:.2f} s")
        if r.get("relay_cpu_s") is not None:
            s += f", relay CPU {r['relay_cpu_s']:.2f} s"
        if r["kind"] == "conn":
            for n in ("tls", "quic", "connect"):
                if f.get(f"{n}_p50_ms") is not None:
                    s += (f", {n} p50/p99 {f[f'{n}_p50_ms']:.2f}/{f[f'{n}_p99_ms']:.2f} ms")
        else:
            s += (f", measured sent {f.get('sent')} / acked {f.get('acked')} / received "
                  f"{f.get('received')}, whole run received {f['received'] + f['warmup_received']}"
                  f" of {f.get('expected')} expected, lost {f.get('lost')}, dup {f.get('dup')}, "
                  f"ooo {f.get('ooo')}, PUBACK p99 {fmt(f.get('ack_p99_ms'), 2)} ms")
        s += f", broker alive at end: {r.get('broker_alive')}, wall {r['wall_s']:.1f} s"
        w(s)
    return "\n".join(out)


def net_main(a, ap):
    perf = os.path.join(a.root, "target", "release", "perf")
    relay_bin = os.path.join(a.root, "target", "release", "relay")
    for b in (perf, relay_bin, os.path.join(a.root, "target", "release", "broker")):
        if not os.access(b, os.X_OK):
            ap.error(f"{b} missing: cargo build --release -p broker -p perf -p relay")
    conds = NET_CONDITIONS
    if a.conditions:
        keep = a.conditions.split(",")
        unknown = set(keep) - {c.key for c in conds}
        if unknown:
            ap.error(f"unknown condition(s) {', '.join(sorted(unknown))}; known: "
                     + ", ".join(c.key for c in conds))
        conds = [c for c in conds if c.key in keep]
    tps = a.net_transports.split(",")
    if set(tps) - set(NET_TRANSPORTS):
        ap.error(f"--net-transports: one of {', '.join(NET_TRANSPORTS)}")
    if set(a.only.split(",")) - {"ours"}:
        print("note: --transports runs this broker only (the others have no QUIC)",
              file=sys.stderr)
    now = datetime.datetime.now(datetime.timezone.utc)
    date = now.strftime("%Y-%m-%d")
    outdir = a.out or os.path.join(a.root, "tools", "bench", "results",
                                   date + "-" + now.strftime("%H%M") + "-transports")
    os.makedirs(outdir, exist_ok=True)
    ours = make_brokers(a.root, a.rumqttd, a.cores)[0]
    certs = make_certs(outdir)
    notes = list(a.note) + [
        "ECDSA P-256 server certificate for 127.0.0.1 (ca.pem, server.pem, server.key here, made "
        f"with {version_of(['openssl', 'version'])}) on the TLS and QUIC listeners; perf verifies "
        "it with --cacertfile ca.pem (TLS 1.3 over TLS and QUIC)",
        "a fresh broker (and relay) per perf run; TCP, TLS and QUIC listeners on free ports",
        "TCP relay: perf's TCP handshake is with the relay (loopback, no RTT, never lost), the "
        "relay's own connect to the broker too; only the byte stream gets the RTT and loss, so "
        "tcp and tls setup lack the SYN round trip a real network adds (and SYN loss); a lost "
        "chunk is held for max(200 ms, RTT) with everything behind it",
        "TCP relay: the two directions of a connection draw independent loss sequences",
        "UDP relay: every datagram gets the RTT and the loss, the QUIC handshake included",
    ]
    with open("/proc/loadavg") as f:
        load0 = " ".join(f.read().split()[:3])
    meta = {
        "date": date, "started": now.strftime("%H:%M"), "machine": machine(),
        "versions": {"broker": ours.version, "perf": version_of([perf, "--version"]),
                     "relay": version_of([relay_bin, "--version"])},
        "command": "python3 tools/bench/bench.py " + shlex.join(sys.argv[1:]),
        "loadavg_before": load0,
        "ps_before": subprocess.run(["ps", "-eo", "pid,pcpu,rss,etime,comm", "--sort=-pcpu"],
                                    capture_output=True, text=True).stdout.splitlines()[:12],
        "notes": notes, "duration": a.duration,
        "conditions": [c.key for c in conds], "transports": tps,
        "condition_defs": [list(c) for c in conds],
    }
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    results = []
    for cond in conds:
        for tp in tps:
            for kind, args in (("conn", NET_CONN), ("bench", net_bench(a.duration))):
                print(f"== ours: {cond.title}, {tp}, {kind}", file=sys.stderr, flush=True)
                r = net_one(ours, perf, relay_bin, outdir, cond, tp, kind, list(args), certs,
                            a.duration + 5)
                results.append(r)
                f = net_figures(r)
                print(f"   -> {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in f.items()})}"
                      if f else f"   -> FAILED: {r.get('error')}", file=sys.stderr, flush=True)
    with open("/proc/loadavg") as f:
        meta["loadavg_after"] = " ".join(f.read().split()[:3])
    meta["ended"] = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M")
    with open(os.path.join(outdir, "summary.json"), "w") as f:
        json.dump({"meta": meta, "results": results,
                   "figures": [{"condition": r["condition"], "transport": r["transport"],
                                "kind": r["kind"], **net_figures(r)} for r in results]},
                  f, indent=1)
    md = net_table(results, meta) + "\n\nNotes:\n" + "\n".join(f"- {n}" for n in notes)
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(md + "\n")
    print(md)


# ---------------------------------------------------------------- main

def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 2**20
    return f"{model}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, kernel {os.uname().release}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--rumqttd", required=True)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--only", default="mosquitto,ours,rumqttd")
    ap.add_argument("--scenarios", default=None,
                    help="comma-separated scenario keys to run (default: all)")
    ap.add_argument("--latency-rate", type=int, default=None,
                    help="rate of the latency scenario instead of 50 %% of Mosquitto's fan-in")
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--out", default=None)
    ap.add_argument("--cmdline", default=None, help="run.sh's arguments (set by run.sh)")
    ap.add_argument("--transports", action="store_true",
                    help="the network scenarios instead: this broker over tcp, tls and quic, on "
                         "loopback and through tools/relay (see README)")
    ap.add_argument("--conditions", default=None,
                    help="with --transports: comma-separated condition keys (default: all)")
    ap.add_argument("--net-transports", default=",".join(NET_TRANSPORTS),
                    help="with --transports: comma-separated subset of tcp,tls,quic")
    a = ap.parse_args()
    if a.transports:
        return net_main(a, ap)

    perf = os.path.join(a.root, "target", "release", "perf")
    now = datetime.datetime.now(datetime.timezone.utc)
    date = now.strftime("%Y-%m-%d")
    outdir = a.out or os.path.join(a.root, "tools", "bench", "results",
                                   date + "-" + now.strftime("%H%M"))
    os.makedirs(outdir, exist_ok=True)

    ours, mosq, rum = make_brokers(a.root, a.rumqttd, a.cores)
    want = a.only.split(",")
    # Mosquitto first: the latency scenario's rate is half its fan-in.
    brokers = [b for b in (mosq, ours, rum) if b.name in want]
    notes = list(a.note)
    if rum in brokers and not os.access(a.rumqttd, os.X_OK):
        brokers.remove(rum)
        notes.append("rumqttd not installed; skipped")
    if mosq in brokers and not os.access("/usr/sbin/mosquitto", os.X_OK):
        brokers.remove(mosq)
        notes.append("mosquitto not installed; skipped")

    scs = scenarios(a.duration)
    if a.scenarios:
        keep = a.scenarios.split(",")
        unknown = set(keep) - {sc.key for sc in scs}
        if unknown:
            ap.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; known: "
                     + ", ".join(sc.key for sc in scs))
        scs = [sc for sc in scs if sc.key in keep]
    certs = None
    if any(sc.transport != "tcp" for sc in scs):
        certs = make_certs(outdir)
        scs = scenarios(a.duration, certs["cacertfile"])
        scs = [sc for sc in scs if not a.scenarios or sc.key in keep]
        notes.append("TLS / WSS scenarios: ECDSA P-256 server certificate for 127.0.0.1 "
                     "(ca.pem, server.pem, server.key in this directory, made with "
                     f"{version_of(['openssl', 'version'])}); perf verifies it with "
                     "--cacertfile ca.pem")
        skipped = [b.name for b in brokers
                   if any(sc.transport not in b.transports for sc in scs)]
        for n in skipped:
            notes.append(f"{n}: TLS / WSS scenarios not run")
    with open("/proc/loadavg") as f:
        load0 = " ".join(f.read().split()[:3])
    others = subprocess.run(["ps", "-eo", "pid,pcpu,rss,etime,comm", "--sort=-pcpu"],
                            capture_output=True, text=True).stdout.splitlines()[:12]
    meta = {
        "date": date, "started": now.strftime("%H:%M"), "machine": machine(),
        "versions": {b.name: b.version for b in (ours, mosq, rum)},
        "command": (("tools/bench/run.sh " + a.cmdline).strip() if a.cmdline is not None
                    else "python3 tools/bench/bench.py " + shlex.join(sys.argv[1:])),
        "loadavg_before": load0, "ps_before": others, "notes": notes,
        "scenarios": [list(sc) for sc in scs],
    }
    meta["versions"]["perf"] = version_of([perf, "--version"])
    for n in notes:
        print(f"note: {n}", file=sys.stderr)

    results = []
    latency_rate = a.latency_rate
    if latency_rate:
        meta["latency_rate"] = latency_rate
    for b in brokers:
        for sc in scs:
            key, title, args = sc.key, sc.title, list(sc.args)
            if sc.transport not in b.transports:
                print(f"== {b.name}: {title}: not run ({sc.transport})", file=sys.stderr,
                      flush=True)
                continue
            if key == "latency":
                if latency_rate is None:
                    results.append({"broker": b.name, "scenario": key,
                                    "error": "no Mosquitto fan-in rate to derive the rate from"})
                    continue
                args += ["--rate", str(latency_rate)]
            print(f"== {b.name}: {title}", file=sys.stderr, flush=True)
            r = one(b, perf, outdir, sc, args, a.duration, certs)
            r["title"] = title
            results.append(r)
            f = figures(r)
            print(f"   -> {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in f.items()})}"
                  if f else f"   -> FAILED: {r.get('error')}", file=sys.stderr, flush=True)
            if (b.name == "mosquitto" and key == "fan-in" and f.get("delivered_per_s")
                    and a.latency_rate is None):
                latency_rate = int(f["delivered_per_s"] * 0.5)
                meta["latency_rate"] = latency_rate
        # Storm RSS and the rest are per broker; keep the raw record of every run.
    with open("/proc/loadavg") as f:
        meta["loadavg_after"] = " ".join(f.read().split()[:3])
    meta["ended"] = datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M")
    with open(os.path.join(outdir, "summary.json"), "w") as f:
        json.dump({"meta": meta, "results": results,
                   "figures": [{"broker": r["broker"], "scenario": r["scenario"],
                                **figures(r)} for r in results]}, f, indent=1)
    md = table(results, brokers, meta)
    if meta.get("latency_rate"):
        md += (f"\n\nlatency scenario rate: --rate {meta['latency_rate']} "
               "(50 % of Mosquitto's delivered fan-in rate).")
    if notes:
        md += "\n\nNotes:\n" + "\n".join(f"- {n}" for n in notes)
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
