//! Wire primitives: the zero-copy [`Reader`], writers and [`MqttStr`].

use std::fmt;
use std::ops::Deref;

use bytes::{BufMut, Bytes};

use super::error::{EncodeError, Error, Malformed};

/// A UTF-8 encoded string as MQTT defines it (1.5.4): valid UTF-8, no U+0000, at most 65,535
/// bytes. It is a slice of the packet it was decoded from, so decoding copies nothing.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MqttStr(Bytes);

impl MqttStr {
    /// Validates `bytes` as an MQTT string (1.5.4).
    pub fn from_bytes(bytes: Bytes) -> Result<Self, Malformed> {
        Self::validate(&bytes, "string")?;
        Ok(Self(bytes))
    }

    /// A string known at compile time, e.g. a topic or property name.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// The string as `&str`.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor of `MqttStr` either validates the bytes as UTF-8
        // (`from_bytes`, `Reader::read_str`) or takes them from a `&str`/`String`, and the
        // inner `Bytes` is never exposed mutably.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes, sharing the packet's buffer.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` for the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn validate(bytes: &[u8], field: &'static str) -> Result<(), Malformed> {
        if bytes.len() > usize::from(u16::MAX) {
            return Err(Malformed::StringTooLong { field });
        }
        // `from_utf8` also rejects encoded surrogates (U+D800..U+DFFF) and overlong forms,
        // which [MQTT-1.5.4-1] forbids.
        let s = std::str::from_utf8(bytes).map_err(|_| Malformed::InvalidUtf8 { field })?;
        if s.as_bytes().contains(&0) {
            return Err(Malformed::NullCharacter { field });
        }
        Ok(())
    }
}

impl Deref for MqttStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for MqttStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for MqttStr {
    fn from(s: &'static str) -> Self {
        Self::from_static(s)
    }
}

impl From<String> for MqttStr {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl TryFrom<&[u8]> for MqttStr {
    type Error = Malformed;
    fn try_from(b: &[u8]) -> Result<Self, Malformed> {
        Self::from_bytes(Bytes::copy_from_slice(b))
    }
}

impl PartialEq<str> for MqttStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for MqttStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for MqttStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MqttStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cursor over one packet's body. Every read that returns bytes returns a slice of the
/// packet (`Bytes::slice`), never a copy.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn read_u8(&mut self, field: &'static str) -> Result<u8, Malformed> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(Malformed::UnexpectedEnd { field })?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn read_u16(&mut self, field: &'static str) -> Result<u16, Malformed> {
        let s = self.take(2, field)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }

    pub(crate) fn read_u32(&mut self, field: &'static str) -> Result<u32, Malformed> {
        let s = self.take(4, field)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    /// A Variable Byte Integer (1.5.5): at most four bytes, minimally encoded.
    pub(crate) fn read_varint(&mut self, field: &'static str) -> Result<u32, Malformed> {
        match decode_varint(&self.buf[self.pos..]) {
            VarInt::Value { value, len } => {
                self.pos += len;
                Ok(value)
            }
            VarInt::Incomplete => Err(Malformed::UnexpectedEnd { field }),
            VarInt::TooLong => Err(Malformed::VarIntTooLong { field }),
            VarInt::NonMinimal => Err(Malformed::NonMinimalVarInt { field }),
        }
    }

    /// Two-byte length followed by that many bytes (Binary Data, 1.5.6).
    pub(crate) fn read_binary(&mut self, field: &'static str) -> Result<Bytes, Malformed> {
        let len = usize::from(self.read_u16(field)?);
        self.read_bytes(len, field)
    }

    /// A UTF-8 Encoded String (1.5.4).
    pub(crate) fn read_str(&mut self, field: &'static str) -> Result<MqttStr, Malformed> {
        let len = usize::from(self.read_u16(field)?);
        let bytes = self.read_bytes(len, field)?;
        MqttStr::validate(&bytes, field)?;
        Ok(MqttStr(bytes))
    }

    pub(crate) fn read_bytes(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<Bytes, Malformed> {
        if self.remaining() < len {
            return Err(Malformed::UnexpectedEnd { field });
        }
        let b = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(b)
    }

    /// The rest of the packet.
    pub(crate) fn read_rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        b
    }

    /// Splits off the next `len` bytes as their own reader (a property block).
    pub(crate) fn sub_reader(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<Reader, Malformed> {
        Ok(Reader::new(self.read_bytes(len, field)?))
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&[u8], Malformed> {
        if self.remaining() < n {
            return Err(Malformed::UnexpectedEnd { field });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
}

/// The result of reading a Variable Byte Integer from the start of a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarInt {
    Value {
        value: u32,
        len: usize,
    },
    /// The slice ends before the last byte of the integer.
    Incomplete,
    /// A fifth byte would be needed.
    TooLong,
    /// More bytes than necessary were used ([MQTT-1.5.5-1]).
    NonMinimal,
}

pub(crate) fn decode_varint(buf: &[u8]) -> VarInt {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return VarInt::Incomplete;
        };
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            // A last byte of zero after a first byte means the value fits in fewer bytes.
            if i > 0 && b == 0 {
                return VarInt::NonMinimal;
            }
            return VarInt::Value { value, len: i + 1 };
        }
    }
    VarInt::TooLong
}

/// Bytes a Variable Byte Integer takes.
pub(crate) const fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_varint(buf: &mut impl BufMut, mut v: usize) {
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        buf.put_u8(b);
        if v == 0 {
            break;
        }
    }
}

/// Writes a length-prefixed field. The caller has checked the length with [`check_len`].
pub(crate) fn put_binary(buf: &mut impl BufMut, b: &[u8]) {
    debug_assert!(b.len() <= usize::from(u16::MAX));
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}

pub(crate) fn put_str(buf: &mut impl BufMut, s: &str) {
    put_binary(buf, s.as_bytes());
}

/// Checks that a length-prefixed field fits its two-byte length.
pub(crate) fn check_len(b: &[u8], field: &'static str) -> Result<usize, EncodeError> {
    if b.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong {
            field,
            len: b.len(),
        });
    }
    Ok(2 + b.len())
}

impl From<Malformed> for Error {
    fn from(m: Malformed) -> Self {
        Error::Malformed(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries() {
        for (v, bytes) in [
            (0usize, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, bytes, "encode {v}");
            assert_eq!(varint_len(v), bytes.len());
            assert_eq!(
                decode_varint(bytes),
                VarInt::Value {
                    value: v as u32,
                    len: bytes.len()
                }
            );
        }
        assert_eq!(
            decode_varint(&[0x80, 0x80, 0x80, 0x80, 0x01]),
            VarInt::TooLong
        );
        assert_eq!(decode_varint(&[0x80, 0x00]), VarInt::NonMinimal);
        assert_eq!(decode_varint(&[0xFF, 0xFF]), VarInt::Incomplete);
    }

    #[test]
    fn strings_are_validated() {
        assert!(MqttStr::try_from(&b"a/b"[..]).is_ok());
        assert!(matches!(
            MqttStr::try_from(&b"a\0b"[..]),
            Err(Malformed::NullCharacter { .. })
        ));
        // An encoded surrogate, U+D800.
        assert!(matches!(
            MqttStr::try_from(&[0xED, 0xA0, 0x80][..]),
            Err(Malformed::InvalidUtf8 { .. })
        ));
        let s = MqttStr::try_from("héllo".as_bytes()).unwrap();
        assert_eq!(s.as_str(), "héllo");
    }
}
