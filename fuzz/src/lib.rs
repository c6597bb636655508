//! Checks shared by the fuzz targets in `fuzz_targets/`.
//!
//! Everything here panics on a broken invariant: that is how a fuzz target reports a bug.

use bytes::BytesMut;
use net::mqtt::{
    Decoder, Delivery, Error, MAX_PACKET_SIZE, Packet, ProtocolVersion, PublishEncoder, Role,
};

/// A decoder in the state in which `packet` may arrive on a connection of `version` whose
/// receiving end is `role`: fresh for CONNECT (server) and CONNACK (client), resumed
/// otherwise. No size limit beyond the protocol's.
pub fn decoder_for(packet: &Packet, version: ProtocolVersion, role: Role) -> Decoder {
    match packet {
        Packet::Connect(_) => Decoder::server(MAX_PACKET_SIZE),
        Packet::ConnAck(_) => Decoder::client(version, MAX_PACKET_SIZE),
        _ => Decoder::resume(role, version, MAX_PACKET_SIZE),
    }
}

/// Decodes `bytes`, which must be exactly one whole packet, with `decoder`.
pub fn decode_one(mut decoder: Decoder, bytes: &[u8]) -> Result<Packet, Error> {
    let mut buf = BytesMut::from(bytes);
    match decoder.decode(&mut buf)? {
        Some(p) => {
            assert!(
                buf.is_empty(),
                "decoding one encoded packet left {} bytes: {:02x?}",
                buf.len(),
                &buf[..]
            );
            Ok(p)
        }
        None => panic!(
            "an encoded packet does not decode as a whole packet (needed {}): {:02x?}",
            decoder.needed(),
            bytes
        ),
    }
}

/// Encodes `packet` with [`Packet::encode`] and checks what must hold of any successful
/// encoding: the length agrees with [`Packet::encoded_len`], a failed encode writes nothing,
/// and for PUBLISH the fan-out [`PublishEncoder`] writes the same bytes (whole, and as head +
/// payload).
pub fn encode_checked(packet: &Packet, version: ProtocolVersion) -> Option<BytesMut> {
    let mut buf = BytesMut::new();
    let res = packet.encode(version, &mut buf);
    let len = packet.encoded_len(version);
    if let Packet::Publish(p) = packet {
        check_publish_encoder(p, version, res.is_ok().then_some(&buf[..]));
    }
    match res {
        Ok(()) => {
            assert_eq!(
                len.as_ref().ok(),
                Some(&buf.len()),
                "encoded_len disagrees with encode for {packet:?}"
            );
            Some(buf)
        }
        Err(e) => {
            assert!(
                buf.is_empty(),
                "encode failed ({e}) but wrote {} bytes",
                buf.len()
            );
            assert_eq!(len, Err(e), "encoded_len and encode disagree on the error");
            None
        }
    }
}

/// [`PublishEncoder`] with [`Delivery::of`] must write exactly what [`Packet::encode`] writes
/// (`expected`, or `None` if `Packet::encode` failed, in which case it must fail too).
fn check_publish_encoder(
    p: &net::mqtt::Publish,
    version: ProtocolVersion,
    expected: Option<&[u8]>,
) {
    let d = Delivery::of(p);
    let enc = PublishEncoder::new(p, version);
    let mut whole = BytesMut::new();
    let res = enc
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|e| e.encode(&d, &mut whole));
    match (expected, res) {
        (Some(expected), Ok(())) => {
            assert_eq!(
                &whole[..],
                expected,
                "PublishEncoder::encode differs from Packet::encode"
            );
            let Ok(enc) = enc else { unreachable!() };
            assert_eq!(enc.encoded_len(&d).ok(), Some(expected.len()));
            let mut head = BytesMut::new();
            assert!(enc.encode_head(&d, &mut head).is_ok());
            head.extend_from_slice(enc.payload());
            assert_eq!(
                &head[..],
                expected,
                "encode_head + payload differs from Packet::encode"
            );
        }
        (None, Err(_)) => {}
        (Some(_), Err(e)) => panic!("PublishEncoder fails ({e}) where Packet::encode succeeds"),
        (None, Ok(())) => panic!("PublishEncoder succeeds where Packet::encode fails"),
    }
}

/// Round-trip of a packet that was *decoded* on a connection of `version` by `role`: it must
/// encode in that version, decode again (in the same state) to an equal packet, and encoding
/// that gives the same bytes (encode is a fixed point).
pub fn check_reencode(packet: &Packet, version: ProtocolVersion, role: Role) {
    let Some(bytes) = encode_checked(packet, version) else {
        panic!("a decoded packet does not encode in {version:?}: {packet:?}");
    };
    let again = match decode_one(decoder_for(packet, version, role), &bytes) {
        Ok(p) => p,
        Err(e) => panic!(
            "re-encoded packet does not decode ({e}) in {version:?} as {role:?}\n  packet: {packet:?}\n  bytes: {}",
            hex(&bytes)
        ),
    };
    assert_eq!(
        &again,
        packet,
        "decode(encode(p)) != p in {version:?} as {role:?}; bytes {}",
        hex(&bytes)
    );
    let Some(bytes2) = encode_checked(&again, version) else {
        panic!("re-decoded packet does not encode");
    };
    assert_eq!(bytes, bytes2, "encode is not a fixed point");
}

/// Lower-case hex, for panic messages.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
