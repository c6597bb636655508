//! TLS for a connection, sans-IO: ciphertext from the socket in, plaintext for the MQTT decoder
//! out, and the reverse for output. rustls does the protocol; this module only moves bytes
//! between its buffers and ours, so the driver can run it inside the shard's event loop.

use std::io::{self, Read as _, Write as _};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use rustls::pki_types::CertificateDer;
use rustls::{ServerConfig, ServerConnection};

/// One TLS server connection.
#[derive(Debug)]
pub struct TlsConn {
    conn: ServerConnection,
}

/// What [`TlsConn::decrypt`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decrypted {
    /// More records may follow.
    Open,
    /// The client sent `close_notify`: no more plaintext will come.
    Closed,
}

impl TlsConn {
    /// A connection that will handshake with `config`.
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: ServerConnection::new(config)?,
        })
    }

    /// Takes the ciphertext in `raw` (consumed bytes are removed; an incomplete record stays)
    /// and appends the plaintext it carries to `plain`. On an error the connection is dead; an
    /// alert for the client may be pending ([`TlsConn::wants_write`]).
    pub fn decrypt(&mut self, raw: &mut BytesMut, plain: &mut BytesMut) -> io::Result<Decrypted> {
        loop {
            let n = if raw.is_empty() {
                0
            } else {
                let mut reader: &[u8] = raw;
                let n = self.conn.read_tls(&mut reader)?;
                raw.advance(n);
                n
            };
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let available = state.plaintext_bytes_to_read();
            if available > 0 {
                let at = plain.len();
                plain.resize(at + available, 0);
                self.conn.reader().read_exact(&mut plain[at..])?;
            }
            if state.peer_has_closed() {
                return Ok(Decrypted::Closed);
            }
            if n == 0 || raw.is_empty() {
                return Ok(Decrypted::Open);
            }
        }
    }

    /// Queues `plaintext` for the client; [`TlsConn::write_records`] takes the records.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> io::Result<()> {
        self.conn.writer().write_all(plaintext)
    }

    /// Appends the TLS records waiting to go to the client (handshake messages, alerts,
    /// encrypted data) to `out`.
    pub fn write_records(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(out)?;
        }
        Ok(())
    }

    /// Whether records are waiting to go out.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Whether the handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Sends `close_notify` (taken by the next [`TlsConn::write_records`]).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// The client's certificate, once the handshake has verified it.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.conn.peer_certificates().and_then(|c| c.first())
    }
}
