//! A connection's outgoing bytes: small packets are encoded into one buffer; large payloads are
//! appended as the shared `Bytes` they arrived in, so the driver can hand everything to one
//! vectored write without copying them.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Payloads at least this large are queued by reference instead of copied.
pub const SHARE_PAYLOAD_FROM: usize = 1024;

/// The bytes waiting to be written to one connection, in order.
#[derive(Debug, Default)]
pub struct OutQueue {
    /// Chunks ready to write, oldest first.
    chunks: VecDeque<Bytes>,
    /// The chunk being filled.
    head: BytesMut,
    /// Total bytes queued.
    len: usize,
}

impl OutQueue {
    /// Total bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer to encode the next packet into; call [`OutQueue::wrote`] after writing.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.head
    }

    /// Appends a payload: copied when small, shared when large.
    pub fn push_payload(&mut self, payload: &Bytes) {
        if payload.len() < SHARE_PAYLOAD_FROM {
            self.head.extend_from_slice(payload);
        } else {
            if !self.head.is_empty() {
                self.chunks.push_back(self.head.split().freeze());
            }
            self.chunks.push_back(payload.clone());
        }
        self.len += payload.len();
    }

    /// Accounts for `n` bytes just encoded into [`OutQueue::buf`].
    pub fn wrote(&mut self, n: usize) {
        self.len += n;
    }

    /// Takes everything queued, oldest first.
    pub fn take(&mut self, into: &mut Vec<Bytes>) {
        into.extend(self.chunks.drain(..));
        if !self.head.is_empty() {
            into.push(self.head.split().freeze());
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_payloads_are_copied_large_shared() {
        let mut q = OutQueue::default();
        q.buf().extend_from_slice(b"hd");
        q.wrote(2);
        q.push_payload(&Bytes::from_static(b"small"));
        let big = Bytes::from(vec![7u8; SHARE_PAYLOAD_FROM]);
        q.buf().extend_from_slice(b"h2");
        q.wrote(2);
        q.push_payload(&big);
        assert_eq!(q.len(), 2 + 5 + 2 + big.len());
        let mut out = Vec::new();
        q.take(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(&out[0][..], b"hdsmallh2");
        assert_eq!(
            out[1].as_ptr(),
            big.as_ptr(),
            "large payload is shared, not copied"
        );
        assert!(q.is_empty());
    }
}
