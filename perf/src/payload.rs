//! The measurement header every payload starts with.
//!
//! ```text
//! offset size field
//!      0    4 magic "PRF1"
//!      4    1 clock of the timestamp (0 monotonic, 1 realtime)
//!      5    3 reserved, 0
//!      8    4 run id: random per `perf` process, so two processes' publishers never mix
//!     12    4 publisher id: 0.. within the run
//!     16    8 sequence number: 0, 1, 2, ... per publisher
//!     24    8 timestamp, ns: the *intended* send time (see README, coordinated omission)
//!     32    - padding (zeros) up to --size
//! ```
//!
//! Little-endian throughout. A payload that is shorter or does not start with the magic is
//! "foreign": counted, never timed.

use bytes::{BufMut, BytesMut};

use crate::clock::Clock;

/// The size of the header, hence the smallest `--size`.
pub(crate) const HEADER_LEN: usize = 32;

const MAGIC: &[u8; 4] = b"PRF1";

/// The fields of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Clock of `timestamp`.
    pub(crate) clock: Clock,
    /// Run id.
    pub(crate) run: u32,
    /// Publisher id.
    pub(crate) publisher: u32,
    /// Sequence number.
    pub(crate) seq: u64,
    /// Intended send time, ns on `clock`.
    pub(crate) timestamp: u64,
}

impl Header {
    /// Appends the header and `size - HEADER_LEN` zero bytes (`size` is at least
    /// [`HEADER_LEN`], checked when the scenario is built).
    pub(crate) fn write(&self, size: usize, buf: &mut BytesMut) {
        buf.reserve(size.max(HEADER_LEN));
        buf.put_slice(MAGIC);
        buf.put_u8(self.clock as u8);
        buf.put_bytes(0, 3);
        buf.put_u32_le(self.run);
        buf.put_u32_le(self.publisher);
        buf.put_u64_le(self.seq);
        buf.put_u64_le(self.timestamp);
        buf.put_bytes(0, size.saturating_sub(HEADER_LEN));
    }

    /// Reads the header of a received payload; `None` for a foreign payload.
    pub(crate) fn read(payload: &[u8]) -> Option<Self> {
        let h = payload.get(..HEADER_LEN)?;
        if &h[..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| h.get(i..i + 4).and_then(|b| b.try_into().ok());
        let u64_at = |i: usize| h.get(i..i + 8).and_then(|b| b.try_into().ok());
        Some(Self {
            clock: Clock::from_u8(h[4])?,
            run: u32::from_le_bytes(u32_at(8)?),
            publisher: u32::from_le_bytes(u32_at(12)?),
            seq: u64::from_le_bytes(u64_at(16)?),
            timestamp: u64::from_le_bytes(u64_at(24)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let h = Header {
            clock: Clock::Realtime,
            run: 0xdead_beef,
            publisher: 7,
            seq: 1 << 40,
            timestamp: 123_456_789,
        };
        for size in [HEADER_LEN, 64, 1000] {
            let mut buf = BytesMut::new();
            h.write(size, &mut buf);
            assert_eq!(buf.len(), size);
            assert_eq!(Header::read(&buf), Some(h));
            assert!(buf[HEADER_LEN..].iter().all(|&b| b == 0));
        }
    }

    /// What a publisher appends (the codec's PUBLISH head, then this header and padding)
    /// decodes as back-to-back PUBLISH packets with the broker's decoder.
    #[test]
    fn publisher_output_decodes() {
        use net::mqtt::{
            Decoder, Delivery, MAX_PACKET_SIZE, Packet, ProtocolVersion, Publish, PublishEncoder,
            QoS, Role,
        };
        for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let size = 100;
            let template = Publish::new("perf/1", bytes::Bytes::from(vec![0u8; size]));
            let enc = PublishEncoder::new(&template, v).unwrap();
            let mut out = BytesMut::new();
            for seq in 0..3u64 {
                let d = Delivery {
                    qos: QoS::AtLeastOnce,
                    packet_id: 10 + seq as u16,
                    ..Delivery::default()
                };
                enc.encode_head(&d, &mut out).unwrap();
                let h = Header {
                    clock: Clock::Monotonic,
                    run: 1,
                    publisher: 2,
                    seq,
                    timestamp: 1000 + seq,
                };
                h.write(size, &mut out);
            }
            let mut dec = Decoder::resume(Role::Server, v, MAX_PACKET_SIZE);
            for seq in 0..3u64 {
                let Some(Packet::Publish(p)) = dec.decode(&mut out).unwrap() else {
                    panic!("not a PUBLISH")
                };
                assert_eq!(p.packet_id, 10 + seq as u16);
                assert_eq!(p.topic, "perf/1");
                assert_eq!(p.payload.len(), size);
                assert_eq!(Header::read(&p.payload).unwrap().seq, seq);
            }
            assert!(out.is_empty());
        }
    }

    #[test]
    fn foreign_payloads() {
        assert_eq!(Header::read(b""), None);
        assert_eq!(Header::read(b"hello"), None);
        assert_eq!(Header::read(&[0u8; 64]), None);
        let mut buf = BytesMut::new();
        Header {
            clock: Clock::Monotonic,
            run: 1,
            publisher: 2,
            seq: 3,
            timestamp: 4,
        }
        .write(HEADER_LEN, &mut buf);
        assert_eq!(Header::read(&buf[..HEADER_LEN - 1]), None);
        buf[4] = 9; // unknown clock
        assert_eq!(Header::read(&buf), None);
    }
}
