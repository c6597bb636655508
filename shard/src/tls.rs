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

/// What the broker keeps of a verified client certificate, for `mqtt.peer_cert_as_username`
/// and `mqtt.peer_cert_as_clientid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The subject's Common Name, if it has one.
    pub cn: Option<String>,
    /// The subject's Distinguished Name, RFC 4514 style (`CN=dev-1,O=Example`).
    pub dn: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl PeerCert {
    /// Parses a DER certificate; `None` if it does not parse (the handshake verified it, so
    /// this does not happen for a certificate rustls accepted).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let cn = subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned);
        Some(Self {
            cn,
            dn: subject.to_string(),
            der: der.to_vec(),
        })
    }

    /// The value EMQX's `peer_cert_as_*` option `how` takes from the certificate: `cn`, `dn`,
    /// `crt` (the DER, base64), `pem`, `md5` (of the DER, lower-case hex).
    pub fn field(&self, how: CertField) -> Option<String> {
        use base64::Engine as _;
        use md5::Digest as _;
        let b64 = || base64::engine::general_purpose::STANDARD.encode(&self.der);
        match how {
            CertField::Cn => self.cn.clone(),
            CertField::Dn => Some(self.dn.clone()),
            CertField::Crt => Some(b64()),
            CertField::Pem => {
                let body = b64();
                let lines: Vec<&str> = body
                    .as_bytes()
                    .chunks(64)
                    .filter_map(|c| std::str::from_utf8(c).ok())
                    .collect();
                Some(format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    lines.join("\n")
                ))
            }
            CertField::Md5 => {
                let digest = md5::Md5::digest(&self.der);
                Some(digest.iter().map(|b| format!("{b:02x}")).collect())
            }
        }
    }
}

/// Which part of a client certificate becomes the username or client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertField {
    /// Subject Common Name.
    Cn,
    /// Subject Distinguished Name.
    Dn,
    /// The certificate, DER in base64.
    Crt,
    /// The certificate, PEM.
    Pem,
    /// MD5 of the DER, hex.
    Md5,
}
