//! The on-disk format: segment headers, framed records, and the scan that recovers records
//! from a segment's bytes, reporting damage instead of failing.
//!
//! ```text
//! segment  = header (32 bytes) record*
//! header   = "MQTTSEG\0" | format u32 | kind u32 | shard u32 | crc u32 | seq u64
//! record   = magic u32 | len u32 | crc u32 | kind u16 | version u16 | payload[len] | pad
//! ```
//!
//! Integers are little-endian. Every record starts at a multiple of [`ALIGN`] bytes from the
//! start of the file and is padded to the next one, so a payload read into an aligned buffer is
//! aligned too (rkyv reads it in place). A record's CRC32C covers its length, kind, version and
//! payload; a header's covers the other header fields. The magic lets the scan find the next
//! record after a damaged one.

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"MQTTSEG\0";
/// Version of the framing (not of the records: those carry their own).
pub const FORMAT_VERSION: u32 = 1;
/// Length of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// First four bytes of every record.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"REC\x01");
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 16;
/// Records start at multiples of this.
pub const ALIGN: usize = 16;
/// Largest payload of one record: a 256 MiB MQTT message plus its topic and properties.
pub const MAX_PAYLOAD: usize = 300 << 20;

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentKind {
    /// Records appended as the state changes.
    Log,
    /// A part of a snapshot: the live state at one point.
    Snapshot,
}

impl SegmentKind {
    fn code(self) -> u32 {
        match self {
            Self::Log => 1,
            Self::Snapshot => 2,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Log),
            2 => Some(Self::Snapshot),
            _ => None,
        }
    }
}

/// A segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub kind: SegmentKind,
    /// The shard that wrote it.
    pub shard: u32,
    /// Log segments: their sequence number. Snapshot parts: the first log segment to replay
    /// after the snapshot, times 2^16, plus the part number.
    pub seq: u64,
}

impl SegmentHeader {
    /// The header's 32 bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[0..8].copy_from_slice(&SEGMENT_MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.kind.code().to_le_bytes());
        h[16..20].copy_from_slice(&self.shard.to_le_bytes());
        h[24..32].copy_from_slice(&self.seq.to_le_bytes());
        let crc = header_crc(&h);
        h[20..24].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Reads a header from the start of a segment.
    pub fn decode(b: &[u8]) -> Result<Self, HeaderError> {
        let h = b.get(..SEGMENT_HEADER_LEN).ok_or(HeaderError::Short)?;
        if h[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Magic);
        }
        if u32_at(h, 20) != header_crc(h) {
            return Err(HeaderError::Checksum);
        }
        let format = u32_at(h, 8);
        if format != FORMAT_VERSION {
            return Err(HeaderError::Format(format));
        }
        let kind = SegmentKind::from_code(u32_at(h, 12)).ok_or(HeaderError::Kind)?;
        Ok(Self {
            kind,
            shard: u32_at(h, 16),
            seq: u64::from_le_bytes(h[24..32].try_into().unwrap_or_default()),
        })
    }
}

fn header_crc(h: &[u8]) -> u32 {
    let c = crc32c::crc32c(&h[0..20]);
    crc32c::crc32c_append(c, &h[24..32])
}

/// Why a segment's header is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than 32 bytes.
    Short,
    /// Not a segment file.
    Magic,
    /// The header's checksum does not match.
    Checksum,
    /// A framing version this build does not know.
    Format(u32),
    /// An unknown segment kind.
    Kind,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Short => f.write_str("shorter than a segment header"),
            Self::Magic => f.write_str("not a segment file (bad magic)"),
            Self::Checksum => f.write_str("segment header checksum mismatch"),
            Self::Format(v) => write!(f, "segment format {v} is newer than this broker's"),
            Self::Kind => f.write_str("unknown segment kind"),
        }
    }
}

/// Bytes a record with a payload of `len` bytes takes, padding included.
pub const fn record_len(len: usize) -> usize {
    (RECORD_HEADER_LEN + len).next_multiple_of(ALIGN)
}

/// Appends a framed record to `out`, which must hold a whole number of records (its length a
/// multiple of [`ALIGN`], counted from the start of the segment or of an aligned batch).
pub fn encode_record(out: &mut Vec<u8>, kind: u16, version: u16, payload: &[u8]) {
    debug_assert!(out.len() % ALIGN == 0);
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let len = payload.len() as u32;
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[12..14].copy_from_slice(&kind.to_le_bytes());
    h[14..16].copy_from_slice(&version.to_le_bytes());
    let crc = record_crc(&h, payload);
    h[8..12].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let end = out.len().next_multiple_of(ALIGN);
    out.resize(end, 0);
}

fn record_crc(h: &[u8], payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&h[4..8]);
    let c = crc32c::crc32c_append(c, &h[12..16]);
    crc32c::crc32c_append(c, payload)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// One record found by [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset of the record in its segment.
    pub offset: u64,
    pub kind: u16,
    pub version: u16,
    pub payload: &'a [u8],
}

/// Why bytes of a segment were skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Not the start of a record.
    Magic,
    /// A length beyond the largest record, or beyond the end of the segment.
    Length,
    /// The checksum does not match the record's bytes.
    Checksum,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Magic => "no record header",
            Self::Length => "record length out of range",
            Self::Checksum => "checksum mismatch",
        })
    }
}

/// Bytes skipped in the middle of a segment: valid records follow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub offset: u64,
    pub len: u64,
    pub why: Damage,
}

/// What [`scan`] found besides the records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Records found.
    pub records: u64,
    /// Damaged stretches with valid records after them.
    pub skipped: Vec<Skipped>,
    /// Where the valid data ends: the segment's length, or the start of a torn tail.
    pub valid_end: u64,
    /// Bytes after the last valid record that are not a record (a write cut short by a
    /// crash), and why the first of them is not one.
    pub torn_tail: Option<(u64, Damage)>,
}

/// Calls `f` for each valid record of a segment's bytes `seg` (header included), in order.
/// A damaged stretch followed by valid records is skipped and reported; damage with no valid
/// record after it is a torn tail. Never fails on any input once the header is valid.
pub fn scan<'a>(seg: &'a [u8], mut f: impl FnMut(Record<'a>)) -> ScanReport {
    let mut report = ScanReport::default();
    let mut pos = SEGMENT_HEADER_LEN.min(seg.len());
    while pos < seg.len() {
        match parse(seg, pos) {
            Ok((r, next)) => {
                f(r);
                report.records += 1;
                pos = next;
            }
            Err(why) => match resync(seg, pos + ALIGN) {
                Some(next) => {
                    report.skipped.push(Skipped {
                        offset: pos as u64,
                        len: (next - pos) as u64,
                        why,
                    });
                    pos = next;
                }
                None => {
                    report.torn_tail = Some((pos as u64, why));
                    break;
                }
            },
        }
    }
    report.valid_end = pos as u64;
    report
}

/// The record at `pos` and where the next one starts.
fn parse(seg: &[u8], pos: usize) -> Result<(Record<'_>, usize), Damage> {
    let h = seg
        .get(pos..pos + RECORD_HEADER_LEN)
        .ok_or(Damage::Length)?;
    if u32_at(h, 0) != RECORD_MAGIC {
        return Err(Damage::Magic);
    }
    let len = u32_at(h, 4) as usize;
    if len > MAX_PAYLOAD {
        return Err(Damage::Length);
    }
    let start = pos + RECORD_HEADER_LEN;
    let payload = seg.get(start..start + len).ok_or(Damage::Length)?;
    if u32_at(h, 8) != record_crc(h, payload) {
        return Err(Damage::Checksum);
    }
    let next = (start + len).next_multiple_of(ALIGN);
    Ok((
        Record {
            offset: pos as u64,
            kind: u16::from_le_bytes([h[12], h[13]]),
            version: u16::from_le_bytes([h[14], h[15]]),
            payload,
        },
        // A record whose padding was cut off is whole.
        next.min(seg.len()),
    ))
}

/// The first aligned offset at or after `from` where a valid record starts.
fn resync(seg: &[u8], from: usize) -> Option<usize> {
    let mut pos = from.next_multiple_of(ALIGN);
    while pos + RECORD_HEADER_LEN <= seg.len() {
        if u32_at(seg, pos) == RECORD_MAGIC && parse(seg, pos).is_ok() {
            return Some(pos);
        }
        pos += ALIGN;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(payloads: &[&[u8]]) -> Vec<u8> {
        let mut s = SegmentHeader {
            kind: SegmentKind::Log,
            shard: 3,
            seq: 7,
        }
        .encode()
        .to_vec();
        for (i, p) in payloads.iter().enumerate() {
            encode_record(&mut s, i as u16, 1, p);
        }
        s
    }

    fn records(seg: &[u8]) -> (Vec<Vec<u8>>, ScanReport) {
        let mut out = Vec::new();
        let r = scan(seg, |r| out.push(r.payload.to_vec()));
        (out, r)
    }

    #[test]
    fn header_round_trip_and_damage() {
        let h = SegmentHeader {
            kind: SegmentKind::Snapshot,
            shard: 1,
            seq: 1 << 40,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        assert_eq!(SegmentHeader::decode(&b[..10]), Err(HeaderError::Short));
        let mut bad = b;
        bad[25] ^= 1;
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::Checksum));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderError::Magic));
    }

    #[test]
    fn records_round_trip_aligned() {
        let seg = segment(&[b"", b"a", &[7u8; 15], &[9u8; 16], &[1u8; 1000]]);
        let mut offsets = Vec::new();
        let (got, report) = {
            let mut out = Vec::new();
            let r = scan(&seg, |r| {
                offsets.push(r.offset);
                out.push((r.kind, r.payload.to_vec()));
            });
            (out, r)
        };
        assert_eq!(report.records, 5);
        assert_eq!(report.valid_end, seg.len() as u64);
        assert!(report.skipped.is_empty() && report.torn_tail.is_none());
        assert!(offsets.iter().all(|o| o % ALIGN as u64 == 0));
        assert_eq!(got[3], (3, vec![9u8; 16]));
        assert_eq!(seg.len() % ALIGN, 0);
    }

    #[test]
    fn torn_tail_at_every_cut() {
        let seg = segment(&[b"one", &[2u8; 40], b"three"]);
        // (payload end, padded end) of each record.
        let mut spans = Vec::new();
        scan(&seg, |r| {
            let end = r.offset as usize + RECORD_HEADER_LEN + r.payload.len();
            spans.push((end, end.next_multiple_of(ALIGN)));
        });
        for cut in SEGMENT_HEADER_LEN..seg.len() {
            let (got, report) = records(&seg[..cut]);
            // Every record whose payload is wholly before the cut survives, nothing else.
            let whole = spans.iter().filter(|&&(end, _)| end <= cut).count();
            assert_eq!(got.len(), whole, "cut at {cut}");
            let valid = match whole {
                0 => SEGMENT_HEADER_LEN,
                n => spans[n - 1].1.min(cut),
            };
            assert_eq!(report.valid_end as usize, valid, "cut at {cut}");
            assert_eq!(report.torn_tail.is_some(), cut > valid, "cut at {cut}");
            assert!(report.skipped.is_empty());
        }
    }

    #[test]
    fn flipped_byte_in_the_middle_skips_one_record() {
        let seg = segment(&[b"one", &[2u8; 40], b"three", b"four"]);
        let mut starts = Vec::new();
        scan(&seg, |r| starts.push(r.offset as usize));
        // Every byte of the second record, header included.
        for at in starts[1]..starts[2] {
            let mut bad = seg.clone();
            bad[at] ^= 0x40;
            let (got, report) = records(&bad);
            let (ok, skipped) = (got.len(), &report.skipped);
            if ok == 4 {
                // A flip in the padding changes nothing.
                assert!(at >= starts[1] + RECORD_HEADER_LEN + 40, "at {at}");
                continue;
            }
            assert_eq!(ok, 3, "at {at}");
            assert_eq!(got[1], b"three".to_vec());
            assert_eq!(skipped.len(), 1);
            assert_eq!(skipped[0].offset as usize, starts[1]);
            assert_eq!(skipped[0].len as usize, starts[2] - starts[1]);
            assert!(report.torn_tail.is_none());
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100, 4096] {
            let mut b = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            let report = scan(&b, |_| {});
            assert!(report.valid_end as usize <= b.len());
        }
    }
}
