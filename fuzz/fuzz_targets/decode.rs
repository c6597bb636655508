//! Arbitrary bytes into every decoder flavour.
//!
//! For each flavour (server before CONNECT; server resumed in 3.1 / 3.1.1 / 5.0, one of them
//! with a small Maximum Packet Size; client before CONNACK in 3.1 / 3.1.1 / 5.0; client
//! resumed in 3.1.1 / 5.0) the input is decoded three ways: in one piece, split in two at a
//! point taken from the first byte, and in fixed-size chunks (size also from the first byte).
//! All three must give the same packets, then the same first error or the same leftover bytes
//! and `needed()`. Every decoded packet is re-encoded in the connection's version and must
//! decode again to an equal packet whose encoding is the same bytes (see
//! `net_fuzz::check_reencode`), so this target also covers decode → encode → decode.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use net::mqtt::{Decoder, Error, MAX_PACKET_SIZE, Packet, ProtocolVersion, Role};
use net_fuzz::check_reencode;

use ProtocolVersion::{V3_1, V3_1_1, V5};

const MAX: u32 = MAX_PACKET_SIZE;

fn flavours() -> [(&'static str, Decoder); 10] {
    [
        ("server", Decoder::server(MAX)),
        (
            "server v3 resumed",
            Decoder::resume(Role::Server, V3_1, MAX),
        ),
        (
            "server v4 resumed",
            Decoder::resume(Role::Server, V3_1_1, MAX),
        ),
        ("server v5 resumed", Decoder::resume(Role::Server, V5, MAX)),
        (
            "server v5 resumed max 64",
            Decoder::resume(Role::Server, V5, 64),
        ),
        ("client v3", Decoder::client(V3_1, MAX)),
        ("client v4", Decoder::client(V3_1_1, MAX)),
        ("client v5", Decoder::client(V5, MAX)),
        (
            "client v4 resumed",
            Decoder::resume(Role::Client, V3_1_1, MAX),
        ),
        ("client v5 resumed", Decoder::resume(Role::Client, V5, MAX)),
    ]
}

#[derive(Debug, PartialEq)]
struct Outcome {
    /// Each packet with the connection's version once it was decoded.
    packets: Vec<(Packet, Option<ProtocolVersion>)>,
    /// The first error; decoding stops there.
    error: Option<Error>,
    /// Without an error: the bytes left in the buffer and `needed()`.
    leftover: Option<(Vec<u8>, usize)>,
}

fn run<'a>(mut d: Decoder, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(p)) => packets.push((p, d.version())),
                Ok(None) => {
                    assert!(d.needed() >= 1, "Ok(None) with needed() == 0");
                    break;
                }
                Err(e) => {
                    return Outcome {
                        packets,
                        error: Some(e),
                        leftover: None,
                    };
                }
            }
        }
    }
    Outcome {
        packets,
        error: None,
        leftover: Some((buf.to_vec(), d.needed())),
    }
}

fuzz_target!(|data: &[u8]| {
    let first = data.first().copied().unwrap_or(0) as usize;
    let split = first % (data.len() + 1);
    let chunk = (first >> 4) + 1;
    for (name, d) in flavours() {
        let role = if name.starts_with("server") {
            Role::Server
        } else {
            Role::Client
        };
        let whole = run(d.clone(), [data]);
        let halves = run(d.clone(), [&data[..split], &data[split..]]);
        assert_eq!(whole, halves, "{name}: split at {split} differs");
        let chunked = run(d, data.chunks(chunk));
        assert_eq!(whole, chunked, "{name}: chunks of {chunk} differ");
        for (p, v) in &whole.packets {
            let v =
                v.unwrap_or_else(|| panic!("{name}: a packet decoded before the version is known"));
            check_reencode(p, v, role);
        }
    }
});
