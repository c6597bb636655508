//! Codec throughput: `cargo bench -p net --bench codec` (results in docs/benchmarks.md).
//!
//! Every benchmark is measured twice, as `<name>/bytes` (criterion `Throughput::Bytes`: wire
//! bytes decoded or produced per second) and `<name>/pkts` (`Throughput::Elements`: packets per
//! second), because criterion 0.5 takes one throughput unit per benchmark.
//!
//! * `decode/*`: one whole packet in the read buffer → `Decoder::decode` (resumed server for
//!   PUBLISH, fresh server for CONNECT). The buffer is filled outside the timed part, as a
//!   socket read would.
//! * `encode/*`: `Packet::encode` into a reused, cleared write buffer.
//! * `fanout/*`: one PUBLISH v5 (two properties, 1 KiB payload) to one more receiver:
//!   `PublishEncoder::encode_head` (the payload goes to a vectored write untouched) against
//!   `PublishEncoder::encode` (head + one payload copy) and re-encoding the whole packet with
//!   `Packet::encode`. Bytes are the packet's size on the wire in every case.
//! * `stream/*`: 1000 back-to-back PUBLISH with 64 B payloads in one read buffer, decoded
//!   until the buffer is empty.
#![allow(clippy::unwrap_used, clippy::expect_used)] // setup failures should abort the bench

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use net::mqtt::{
    Connect, Decoder, Delivery, LastWill, MAX_PACKET_SIZE, Packet, ProtocolVersion, Publish,
    PublishEncoder, QoS, Role,
};

use ProtocolVersion::{V3_1_1, V5};

/// A PUBLISH as a client sends it: topic of 24 bytes; v5 adds Message Expiry Interval and
/// one User Property.
fn publish(v: ProtocolVersion, qos: QoS, payload_len: usize) -> Publish {
    let mut p = Publish::new(
        "sensors/building-7/floor3",
        Bytes::from(vec![0xA5; payload_len]),
    );
    p.qos = qos;
    if qos != QoS::AtMostOnce {
        p.packet_id = 4242;
    }
    if v == V5 {
        p.properties.message_expiry_interval = Some(3600);
        p.properties
            .user_properties
            .push(("trace-id".into(), "4bf92f3577b34da6".into()));
    }
    p
}

/// CONNECT v5 with session expiry, receive maximum, two user properties, a will with
/// properties, user name and password.
fn connect_v5() -> Connect {
    let mut c = Connect::new(V5, "client-0123456789abcdef");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(86_400);
    c.properties.receive_maximum = Some(100);
    c.properties.user_properties = vec![
        ("region".into(), "eu-west-1".into()),
        ("app".into(), "telemetry/2.4.1".into()),
    ];
    let mut will = LastWill {
        topic: "clients/client-0123456789abcdef/status".into(),
        payload: Bytes::from_static(b"{\"online\":false}"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
    };
    will.properties.will_delay_interval = Some(30);
    will.properties.message_expiry_interval = Some(600);
    will.properties.content_type = Some("application/json".into());
    will.properties
        .user_properties
        .push(("reason".into(), "unexpected".into()));
    c.will = Some(will);
    c.username = Some("device-0123".into());
    c.password = Some(Bytes::from_static(b"s3cr3t-t0ken-0123456789"));
    c
}

fn encode(p: &Packet, v: ProtocolVersion) -> Bytes {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf).unwrap();
    buf.freeze()
}

fn vname(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V3_1 => "v3",
        V3_1_1 => "v4",
        V5 => "v5",
    }
}

/// Registers `f` twice: `<name>/bytes` and `<name>/pkts`.
fn both(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    bytes: usize,
    packets: u64,
    mut f: impl FnMut(&mut criterion::Bencher<'_>),
) {
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function(format!("{name}/bytes"), &mut f);
    g.throughput(Throughput::Elements(packets));
    g.bench_function(format!("{name}/pkts"), &mut f);
}

/// Decodes one packet from a buffer filled outside the timed part.
fn bench_decode(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    frame: &Bytes,
    decoder: &Decoder,
) {
    both(g, name, frame.len(), 1, |b| {
        b.iter_batched_ref(
            || (BytesMut::from(&frame[..]), decoder.clone()),
            |(buf, d)| {
                let p = d.decode(buf).unwrap().unwrap();
                black_box(p);
            },
            BatchSize::SmallInput,
        );
    });
}

fn bench_encode(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, p: &Packet, v: ProtocolVersion) {
    let len = p.encoded_len(v).unwrap();
    let mut buf = BytesMut::with_capacity(len);
    both(g, name, len, 1, |b| {
        b.iter(|| {
            buf.clear();
            black_box(p).encode(v, &mut buf).unwrap();
            black_box(&buf);
        });
    });
}

fn publish_cases() -> Vec<(String, ProtocolVersion, Packet)> {
    let mut cases = Vec::new();
    for v in [V3_1_1, V5] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for (size, label) in [(64, "64B"), (1024, "1KiB")] {
                let name = format!("publish_{}_qos{}_{label}", vname(v), qos as u8);
                cases.push((name, v, Packet::Publish(publish(v, qos, size))));
            }
        }
    }
    cases
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (name, v, p) in publish_cases() {
        let d = Decoder::resume(Role::Server, v, MAX_PACKET_SIZE);
        bench_decode(&mut g, &name, &encode(&p, v), &d);
    }
    let connect = Packet::Connect(Box::new(connect_v5()));
    bench_decode(
        &mut g,
        "connect_v5_props_will_auth",
        &encode(&connect, V5),
        &Decoder::server(MAX_PACKET_SIZE),
    );
    g.finish();
}

fn encode_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (name, v, p) in publish_cases() {
        bench_encode(&mut g, &name, &p, v);
    }
    let connect = Packet::Connect(Box::new(connect_v5()));
    bench_encode(&mut g, "connect_v5_props_will_auth", &connect, V5);
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    let p = publish(V5, QoS::AtLeastOnce, 1024);
    let packet = Packet::Publish(p.clone());
    let len = packet.encoded_len(V5).unwrap();
    let enc = PublishEncoder::new(&p, V5).unwrap();
    let d = Delivery {
        packet_id: 17,
        ..Delivery::of(&p)
    };
    let mut buf = BytesMut::with_capacity(len);
    both(&mut g, "publish_v5_1KiB/encode_head", len, 1, |b| {
        b.iter(|| {
            buf.clear();
            enc.encode_head(black_box(&d), &mut buf).unwrap();
            black_box((&buf, enc.payload()));
        });
    });
    both(&mut g, "publish_v5_1KiB/encoder_encode", len, 1, |b| {
        b.iter(|| {
            buf.clear();
            enc.encode(black_box(&d), &mut buf).unwrap();
            black_box(&buf);
        });
    });
    both(&mut g, "publish_v5_1KiB/packet_encode", len, 1, |b| {
        b.iter(|| {
            buf.clear();
            black_box(&packet).encode(V5, &mut buf).unwrap();
            black_box(&buf);
        });
    });
    g.finish();
}

fn stream(c: &mut Criterion) {
    const N: usize = 1000;
    let mut g = c.benchmark_group("stream");
    for (v, qos) in [(V3_1_1, QoS::AtMostOnce), (V5, QoS::AtLeastOnce)] {
        let frame = encode(&Packet::Publish(publish(v, qos, 64)), v);
        let all: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * N)
            .collect();
        let d = Decoder::resume(Role::Server, v, MAX_PACKET_SIZE);
        let name = format!("1000x_publish_{}_qos{}_64B", vname(v), qos as u8);
        both(&mut g, &name, all.len(), N as u64, |b| {
            b.iter_batched_ref(
                || (BytesMut::from(&all[..]), d.clone()),
                |(buf, d)| {
                    let mut n = 0;
                    while let Some(p) = d.decode(buf).unwrap() {
                        black_box(p);
                        n += 1;
                    }
                    assert_eq!(n, N);
                },
                BatchSize::LargeInput,
            );
        });
    }
    g.finish();
}

criterion_group!(benches, decode, encode_benches, fanout, stream);
criterion_main!(benches);
