//! The transport between the socket and the MQTT codec: TLS (rustls), WebSocket (tungstenite),
//! or both (WSS), driven sans-IO inside a connection's own tasks.
//!
//! No layer does I/O of its own. The reader task reads the socket into a buffer of raw bytes
//! and hands it to [`Link::input`], which decrypts the TLS records (rustls' `read_tls`,
//! `process_new_packets`, `reader`), takes the payloads out of the WebSocket frames (tungstenite
//! over a [`Pipe`], an in-memory stream that says `WouldBlock` when it has nothing more) and
//! appends the MQTT bytes to the decoder's buffer, wherever the frame and record boundaries
//! fall. The writer task hands the MQTT bytes waiting to go out to [`Link::output`], which puts
//! them in one masked binary frame and encrypts it (`writer`, `write_tls`), then writes the
//! result. Plain TCP has no link: bytes go straight between the socket and the codec.
//!
//! The set-up of a connection, before its stream is split between the tasks, runs
//! [`tls_handshake`] and [`ws_handshake`] the same way with the stream in hand.
//!
//! `--quic` replaces all of this (TCP included) with a QUIC stream (src/quic.rs); only the
//! certificate settings ([`TlsSpec::build_for`]) are shared.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use net::mqtt::ProtocolVersion;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::client::{ClientHandshake, Request};
use tungstenite::http::Uri;
use tungstenite::protocol::{WebSocket, WebSocketConfig};
use tungstenite::{ClientRequestBuilder, Message};

use crate::cli::Common;
use crate::quic::QuicSpec;

/// Smallest free space offered to a read during the set-up.
const READ_MIN: usize = 4096;
/// The WebSocket endpoint's path without `--ws-path`.
pub(crate) const DEFAULT_WS_PATH: &str = "/mqtt";
/// Where the system's CA bundle is looked for (after `$SSL_CERT_FILE`) without `--cacertfile`:
/// Debian/Ubuntu, Fedora/RHEL, openSUSE, Alpine and others.
const SYSTEM_CA_BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The layers of a run's connections, resolved once from the command line.
#[derive(Debug, Clone, Default)]
pub(crate) struct TransportSpec {
    pub(crate) tls: Option<TlsSpec>,
    pub(crate) ws: Option<WsSpec>,
    /// `--quic`: instead of TCP (and of the two above).
    pub(crate) quic: Option<QuicSpec>,
}

/// `--tls`.
#[derive(Debug, Clone)]
pub(crate) struct TlsSpec {
    /// Shared by every connection of every thread.
    pub(crate) config: Arc<ClientConfig>,
    /// The name each target's certificate must hold: its `-h` host (same order as
    /// `Scenario::targets`).
    pub(crate) server_names: Vec<ServerName<'static>>,
    /// What verifies the broker's certificate.
    pub(crate) roots: Roots,
    /// `--certfile`, `--keyfile`.
    pub(crate) certfile: Option<PathBuf>,
    pub(crate) keyfile: Option<PathBuf>,
}

/// What verifies the broker's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Roots {
    /// `--cacertfile`.
    File(PathBuf),
    /// The system's CA bundle (no `--cacertfile`).
    System(PathBuf),
    /// Nothing (`--insecure`).
    Insecure,
}

/// `--ws`.
#[derive(Debug, Clone)]
pub(crate) struct WsSpec {
    /// `--ws-path`.
    pub(crate) path: String,
    /// `ws://host:port/path` (`wss://` with TLS) of each target (same order as
    /// `Scenario::targets`).
    pub(crate) uris: Vec<Uri>,
    /// Offered in `Sec-WebSocket-Protocol`, in order of preference.
    pub(crate) subprotocols: &'static [&'static str],
}

impl TransportSpec {
    /// Resolves `--tls`, `--ws`, `--quic` and their options; `c.host` is in the order of the
    /// targets.
    pub(crate) fn build(c: &Common, version: ProtocolVersion) -> Result<Self, String> {
        if c.quic {
            // clap keeps --tls and --ws away from --quic.
            return Ok(Self {
                tls: None,
                ws: None,
                quic: Some(QuicSpec::build(c)?),
            });
        }
        let tls = if c.tls {
            Some(TlsSpec::build(c)?)
        } else {
            None
        };
        let ws = if c.ws {
            Some(WsSpec::build(c, version)?)
        } else {
            None
        };
        Ok(Self {
            tls,
            ws,
            quic: None,
        })
    }

    /// `tcp`, `tls`, `ws`, `wss` or `quic`.
    pub(crate) fn name(&self) -> &'static str {
        if self.quic.is_some() {
            return "quic";
        }
        match (self.tls.is_some(), self.ws.is_some()) {
            (false, false) => "tcp",
            (true, false) => "tls",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }

    /// Whether a connection has handshakes before MQTT's (layers above TCP, or QUIC).
    pub(crate) fn is_layered(&self) -> bool {
        self.tls.is_some() || self.ws.is_some() || self.quic.is_some()
    }

    /// The TLS settings of the run: `--tls`'s, or those inside QUIC.
    pub(crate) fn tls_settings(&self) -> Option<&TlsSpec> {
        self.tls.as_ref().or(self.quic.as_ref().map(|q| &q.tls))
    }
}

impl TlsSpec {
    fn build(c: &Common) -> Result<Self, String> {
        Self::build_for(c, "--tls", rustls::DEFAULT_VERSIONS, &[])
    }

    /// The TLS settings of `flag` (`--tls`, `--quic`): the verification (`--cacertfile`,
    /// the system's bundle or `--insecure`), the client certificate, these protocol versions
    /// and ALPN protocols.
    pub(crate) fn build_for(
        c: &Common,
        flag: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Result<Self, String> {
        let server_names = c
            .host
            .iter()
            .map(|h| {
                ServerName::try_from(h.clone())
                    .map_err(|e| format!("{flag}: `{h}` is not a valid server name: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("{flag}: {e}"))?;
        let (builder, roots) = if c.insecure {
            let verifier = Arc::new(InsecureAcceptAnyServerCert(provider));
            let b = builder
                .dangerous()
                .with_custom_certificate_verifier(verifier);
            (b, Roots::Insecure)
        } else {
            let (store, roots) = root_store(c.cacertfile.as_deref(), flag)?;
            (builder.with_root_certificates(store), roots)
        };
        let mut config = match (&c.certfile, &c.keyfile) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, "--certfile")?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("--keyfile {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("--certfile/--keyfile: {e}"))?
            }
            // clap makes each of them require the other.
            _ => builder.with_no_client_auth(),
        };
        // Every connection makes a full handshake (what a storm of new clients costs the
        // broker), and no session cache is shared between the generator threads.
        config.resumption = Resumption::disabled();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            config: Arc::new(config),
            server_names,
            roots,
            certfile: c.certfile.clone(),
            keyfile: c.keyfile.clone(),
        })
    }

    /// The server name of target `i`.
    pub(crate) fn server_name(&self, i: usize) -> Option<ServerName<'static>> {
        self.server_names.get(i).cloned()
    }
}

/// The trust anchors: `--cacertfile`, or the system's bundle; `flag` names the transport in
/// the errors.
fn root_store(cacertfile: Option<&Path>, flag: &str) -> Result<(RootCertStore, Roots), String> {
    let mut store = RootCertStore::empty();
    if let Some(file) = cacertfile {
        for cert in certificates(file, "--cacertfile")? {
            store
                .add(cert)
                .map_err(|e| format!("--cacertfile {}: {e}", file.display()))?;
        }
        return Ok((store, Roots::File(file.to_path_buf())));
    }
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let bundle = env
        .into_iter()
        .chain(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{flag}: no system CA bundle found: give the broker's CA with --cacertfile FILE \
                 (or skip verification with --insecure)"
            )
        })?;
    let certs = CertificateDer::pem_file_iter(&bundle)
        .map_err(|e| format!("{flag}: {}: {e}", bundle.display()))?
        .filter_map(Result::ok);
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "{flag}: no CA certificate in {}: give the broker's CA with --cacertfile FILE",
            bundle.display()
        ));
    }
    Ok((store, Roots::System(bundle)))
}

/// Every certificate of a PEM file; at least one.
fn certificates(file: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{flag} {}: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate in it",
            file.display()
        ));
    }
    Ok(certs)
}

/// `--insecure`: accepts whatever certificate the broker presents, for whatever name, and
/// every handshake signature, without looking. The connection is encrypted but not
/// authenticated; for test brokers only.
#[derive(Debug)]
struct InsecureAcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for InsecureAcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl WsSpec {
    fn build(c: &Common, version: ProtocolVersion) -> Result<Self, String> {
        let path = c
            .ws_path
            .clone()
            .unwrap_or_else(|| DEFAULT_WS_PATH.to_owned());
        if !path.starts_with('/') {
            return Err(format!("--ws-path `{path}`: must start with /"));
        }
        let scheme = if c.tls { "wss" } else { "ws" };
        let uris = c
            .host
            .iter()
            .map(|h| {
                let host = match h.parse::<IpAddr>() {
                    Ok(IpAddr::V6(a)) => format!("[{a}]"),
                    _ => h.clone(),
                };
                let uri = format!("{scheme}://{host}:{}{path}", c.port);
                uri.parse::<Uri>()
                    .map_err(|e| format!("--ws: `{uri}` is not a valid URI: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // MQTT 3.1.1 and 5 register `mqtt`; MQTT 3.1 used `mqttv3.1`, which brokers of that
        // era may still expect.
        let subprotocols: &'static [&'static str] = match version {
            ProtocolVersion::V3_1 => &["mqttv3.1", "mqtt"],
            _ => &["mqtt"],
        };
        Ok(Self {
            path,
            uris,
            subprotocols,
        })
    }

    /// The upgrade request for target `i` (a fresh `Sec-WebSocket-Key` each time).
    pub(crate) fn request(&self, i: usize) -> Result<Request, String> {
        let uri = self
            .uris
            .get(i)
            .ok_or_else(|| "no WebSocket URI for this broker".to_owned())?;
        let mut b = ClientRequestBuilder::new(uri.clone());
        for p in self.subprotocols {
            b = b.with_sub_protocol(*p);
        }
        b.into_client_request()
            .map_err(|e| format!("WebSocket handshake: {e}"))
    }
}

/// tungstenite's settings: small eager buffers (many connections; everything is handed to the
/// writer task at once anyway).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_MIN)
        .write_buffer_size(0)
}

/// The in-memory stream tungstenite reads and writes: `rx` holds what came from below (the
/// socket or TLS), `tx` collects what goes down. Reading an empty `rx` is `WouldBlock`, which
/// makes tungstenite return and wait for more.
#[derive(Debug, Default)]
pub(crate) struct Pipe {
    rx: BytesMut,
    tx: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if self.rx.is_empty() || dst.is_empty() {
            // Never Ok(0): that would be the end of the stream.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = dst.len().min(self.rx.len());
        dst[..n].copy_from_slice(&self.rx[..n]);
        self.rx.advance(n);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, src: &[u8]) -> io::Result<usize> {
        self.tx.extend_from_slice(src);
        Ok(src.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What [`Link::input`] found besides the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flow {
    /// More may come.
    Open,
    /// The broker ended the session (TLS `close_notify`, WebSocket Close): nothing more will
    /// come; the description says how.
    Closed(String),
}

/// The layers of one established connection, shared by its reader and writer tasks (neither
/// holds it across an await).
#[derive(Debug)]
pub(crate) struct Link {
    tls: Option<ClientConnection>,
    ws: Option<WebSocket<Pipe>>,
}

impl Link {
    /// The link of a connection with these layers; `None` for plain TCP.
    pub(crate) fn new(tls: Option<ClientConnection>, ws: Option<WebSocket<Pipe>>) -> Option<Self> {
        if tls.is_none() && ws.is_none() {
            return None;
        }
        Some(Self { tls, ws })
    }

    /// Takes the bytes read from the socket in `raw` (what is consumed is removed; rustls keeps
    /// an incomplete record, tungstenite an incomplete frame) and appends the MQTT bytes they
    /// carry to `mqtt`. Also processes what a layer had buffered, so it may be called with
    /// `raw` empty. On an error the connection is dead.
    pub(crate) fn input(
        &mut self,
        raw: &mut BytesMut,
        mqtt: &mut BytesMut,
    ) -> Result<Flow, String> {
        let Self { tls, ws } = self;
        let Some(ws) = ws else {
            return match tls {
                Some(tls) => decrypt(tls, raw, mqtt),
                None => {
                    move_bytes(raw, mqtt);
                    Ok(Flow::Open)
                }
            };
        };
        let below = match tls {
            Some(tls) => decrypt(tls, raw, &mut ws.get_mut().rx)?,
            None => {
                move_bytes(raw, &mut ws.get_mut().rx);
                Flow::Open
            }
        };
        let above = unframe(ws, mqtt)?;
        Ok(if above == Flow::Open { below } else { above })
    }

    /// Appends to `wire` what goes to the socket: the MQTT bytes in `mqtt` (taken), framed and
    /// encrypted, after what the layers have to send of their own (WebSocket pongs and close
    /// replies, TLS records).
    pub(crate) fn output(&mut self, mqtt: &mut BytesMut, wire: &mut Vec<u8>) -> Result<(), String> {
        let Self { tls, ws } = self;
        let Some(ws) = ws else {
            match tls {
                Some(tls) => encrypt(tls, mqtt, wire)?,
                None => wire.extend_from_slice(mqtt),
            }
            mqtt.clear();
            return Ok(());
        };
        if !mqtt.is_empty() {
            // One binary message per write; the split hands the bytes over without a copy.
            ws.write(Message::Binary(mqtt.split().freeze()))
                .map_err(|e| format!("WebSocket: {e}"))?;
        }
        ws.flush().map_err(|e| format!("WebSocket: {e}"))?;
        let tx = &mut ws.get_mut().tx;
        match tls {
            Some(tls) => {
                encrypt(tls, tx, wire)?;
                tx.clear();
            }
            None => move_vec(tx, wire),
        }
        Ok(())
    }

    /// Whether a layer has something of its own to send (a pong, a close reply, a TLS record):
    /// the reader then wakes the writer.
    pub(crate) fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
            || self.ws.as_ref().is_some_and(|w| !w.get_ref().tx.is_empty())
    }

    /// Appends the goodbyes to `wire`: a WebSocket Close frame, then TLS `close_notify`.
    pub(crate) fn close(&mut self, wire: &mut Vec<u8>) -> Result<(), String> {
        if let Some(ws) = &mut self.ws {
            // Already closing: nothing to add.
            let _ = ws.close(None);
        }
        self.output(&mut BytesMut::new(), wire)?;
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            encrypt(tls, &[], wire)?;
        }
        Ok(())
    }
}

/// Moves `src` to the end of `dst` (no copy when `dst` is empty).
fn move_bytes(src: &mut BytesMut, dst: &mut BytesMut) {
    if dst.is_empty() {
        std::mem::swap(src, dst);
    } else {
        dst.extend_from_slice(src);
        src.clear();
    }
}

/// Moves `src` to the end of `dst` (no copy when `dst` is empty).
fn move_vec(src: &mut Vec<u8>, dst: &mut Vec<u8>) {
    if dst.is_empty() {
        std::mem::swap(src, dst);
    } else {
        dst.append(src);
    }
}

/// Feeds the TLS records in `raw` to rustls and appends the plaintext to `plain`.
fn decrypt(
    tls: &mut ClientConnection,
    raw: &mut BytesMut,
    plain: &mut BytesMut,
) -> Result<Flow, String> {
    feed(tls, raw, Some(plain))
}

/// Feeds the TLS records in `raw` to rustls; the plaintext is appended to `plain`, or with
/// `None` left in rustls (for the next [`decrypt`]).
fn feed(
    tls: &mut ClientConnection,
    raw: &mut BytesMut,
    mut plain: Option<&mut BytesMut>,
) -> Result<Flow, String> {
    loop {
        // rustls takes what fits in its buffer; the loop hands it the rest once it has
        // processed that. Never an empty read: rustls would take it for the end of the stream.
        let n = if raw.is_empty() {
            0
        } else {
            let mut rd: &[u8] = raw;
            let n = tls.read_tls(&mut rd).map_err(|e| format!("TLS: {e}"))?;
            raw.advance(n);
            n
        };
        let state = tls.process_new_packets().map_err(tls_error)?;
        let available = state.plaintext_bytes_to_read();
        if let Some(plain) = plain.as_deref_mut()
            && available > 0
        {
            let at = plain.len();
            plain.resize(at + available, 0);
            tls.reader()
                .read_exact(&mut plain[at..])
                .map_err(|e| format!("TLS: {e}"))?;
        }
        if state.peer_has_closed() {
            return Ok(Flow::Closed("connection closed by broker".to_owned()));
        }
        if n == 0 || raw.is_empty() {
            return Ok(Flow::Open);
        }
    }
}

/// A TLS error as counted, with a hint where the cause is usually on the command line.
fn tls_error(e: rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(_) => format!(
            "TLS: {e} (--cacertfile gives the CA of the broker's certificate, --insecure skips \
             the check)"
        ),
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            format!("TLS: {e} (the broker requires a client certificate: --certfile, --keyfile)")
        }
        _ => format!("TLS: {e}"),
    }
}

/// Encrypts `plain` and appends every record rustls has to send to `wire`.
fn encrypt(tls: &mut ClientConnection, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), String> {
    if !plain.is_empty() {
        // Unlimited buffer (set at the handshake): it takes everything at once; the
        // publishers' high-water mark bounds what waits.
        tls.writer()
            .write_all(plain)
            .map_err(|e| format!("TLS: {e}"))?;
    }
    while tls.wants_write() {
        tls.write_tls(wire).map_err(|e| format!("TLS: {e}"))?;
    }
    Ok(())
}

/// Reads the messages tungstenite can assemble from its pipe and appends the binary ones'
/// payloads to `mqtt`. Pings are answered by tungstenite (the pong waits in the pipe).
fn unframe(ws: &mut WebSocket<Pipe>, mqtt: &mut BytesMut) -> Result<Flow, String> {
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => mqtt.extend_from_slice(&b),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Ok(Message::Text(_)) => {
                return Err(
                    "WebSocket: text message from broker (MQTT is sent in binary \
                            messages)"
                        .to_owned(),
                );
            }
            Ok(Message::Close(frame)) => {
                // Queue the reply Close frame for the writer.
                let _ = ws.flush();
                return Ok(Flow::Closed(match frame {
                    Some(f) if f.reason.is_empty() => {
                        format!("connection closed by broker (WebSocket close {})", f.code)
                    }
                    Some(f) => format!(
                        "connection closed by broker (WebSocket close {} {})",
                        f.code, f.reason
                    ),
                    None => "connection closed by broker (WebSocket close)".to_owned(),
                }));
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(Flow::Open);
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(Flow::Closed("connection closed by broker".to_owned()));
            }
            Err(e) => return Err(format!("WebSocket: {e}")),
        }
    }
}

/// The buffers of a connection's set-up: bytes read and not yet consumed, bytes to write.
#[derive(Debug, Default)]
pub(crate) struct SetupIo {
    /// Read from the socket, not yet taken by the layer above it.
    pub(crate) raw: BytesMut,
    /// To write to the socket.
    pub(crate) wire: Vec<u8>,
}

impl SetupIo {
    /// Writes `wire` to the stream, and empties it.
    pub(crate) async fn send<S: AsyncWriteRent>(&mut self, stream: &mut S) -> io::Result<()> {
        if self.wire.is_empty() {
            return Ok(());
        }
        let (res, mut w) = stream.write_all(std::mem::take(&mut self.wire)).await;
        w.clear();
        self.wire = w;
        res.map(|_| ())
    }

    /// Reads what the socket has to the end of `raw`; 0 at the end of the stream.
    pub(crate) async fn recv<S: AsyncReadRent>(&mut self, stream: &mut S) -> io::Result<usize> {
        if self.raw.capacity() - self.raw.len() < READ_MIN {
            self.raw.reserve(READ_MIN);
        }
        let buf = std::mem::take(&mut self.raw);
        let at = buf.len();
        let (res, b) = stream.read(buf.slice_mut(at..)).await;
        self.raw = b.into_inner();
        res
    }
}

/// A new TLS connection to target `i`.
pub(crate) fn tls_connection(spec: &TlsSpec, i: usize) -> Result<ClientConnection, String> {
    let name = spec
        .server_name(i)
        .ok_or_else(|| "no TLS server name for this broker".to_owned())?;
    let mut tls =
        ClientConnection::new(spec.config.clone(), name).map_err(|e| format!("TLS: {e}"))?;
    tls.set_buffer_limit(None);
    Ok(tls)
}

/// The TLS handshake on a connected stream, up to our Finished written. The error says why
/// the broker's certificate was refused, which alert the broker sent, or where the stream
/// ended.
pub(crate) async fn tls_handshake(
    stream: &mut TcpStream,
    tls: &mut ClientConnection,
    io: &mut SetupIo,
) -> Result<(), String> {
    loop {
        encrypt(tls, &[], &mut io.wire).map_err(|e| format!("TLS handshake: {e}"))?;
        io.send(stream)
            .await
            .map_err(|e| format!("TLS handshake: write: {e}"))?;
        if !tls.is_handshaking() {
            // Anything the broker sent beyond the handshake stays in rustls for the next
            // layer's first `decrypt`.
            return Ok(());
        }
        match io.recv(stream).await {
            Ok(0) => return Err("TLS handshake: connection closed by broker".to_owned()),
            Ok(_) => {}
            Err(e) => return Err(format!("TLS handshake: read: {e}")),
        }
        match feed(tls, &mut io.raw, None) {
            Ok(Flow::Open) => {}
            Ok(Flow::Closed(_)) => {
                return Err("TLS handshake: connection closed by broker".to_owned());
            }
            Err(e) => {
                // Tell the broker why (the alert rustls queued), best effort.
                let _ = encrypt(tls, &[], &mut io.wire);
                let _ = io.send(stream).await;
                return Err(format!(
                    "TLS handshake: {}",
                    e.strip_prefix("TLS: ").unwrap_or(&e)
                ));
            }
        }
    }
}

/// The WebSocket upgrade (`request`) over the stream, through TLS when there is one. Frames
/// the broker sent right after its response stay in the returned socket.
pub(crate) async fn ws_handshake(
    stream: &mut TcpStream,
    mut tls: Option<&mut ClientConnection>,
    request: Request,
    io: &mut SetupIo,
) -> Result<WebSocket<Pipe>, String> {
    let fail = |e: &dyn std::fmt::Display| format!("WebSocket handshake: {e}");
    let mut mid = ClientHandshake::start(Pipe::default(), request, Some(ws_config()))
        .map_err(|e| fail(&e))?;
    loop {
        match mid.handshake() {
            Ok((ws, _response)) => return Ok(ws),
            Err(HandshakeError::Interrupted(m)) => mid = m,
            Err(HandshakeError::Failure(e)) => return Err(fail(&e)),
        }
        let pipe = mid.get_mut().get_mut();
        match tls.as_deref_mut() {
            Some(tls) => {
                encrypt(tls, &pipe.tx, &mut io.wire).map_err(|e| fail(&e))?;
                pipe.tx.clear();
            }
            None => move_vec(&mut pipe.tx, &mut io.wire),
        }
        io.send(stream)
            .await
            .map_err(|e| fail(&format!("write: {e}")))?;
        match io.recv(stream).await {
            Ok(0) => return Err(fail(&"connection closed by broker")),
            Ok(_) => {}
            Err(e) => return Err(fail(&format!("read: {e}"))),
        }
        let pipe = mid.get_mut().get_mut();
        let flow = match tls.as_deref_mut() {
            Some(tls) => decrypt(tls, &mut io.raw, &mut pipe.rx).map_err(|e| fail(&e))?,
            None => {
                move_bytes(&mut io.raw, &mut pipe.rx);
                Flow::Open
            }
        };
        if flow != Flow::Open && pipe.rx.is_empty() {
            return Err(fail(&"connection closed by broker"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::Role;

    /// A server-side tungstenite socket over another pipe, to play the broker.
    fn pair() -> (Link, WebSocket<Pipe>) {
        let client = WebSocket::from_raw_socket(Pipe::default(), Role::Client, Some(ws_config()));
        let server = WebSocket::from_raw_socket(Pipe::default(), Role::Server, None);
        (
            Link {
                tls: None,
                ws: Some(client),
            },
            server,
        )
    }

    fn server_sends(server: &mut WebSocket<Pipe>, payloads: &[&[u8]]) -> Vec<u8> {
        for p in payloads {
            server
                .write(Message::Binary(bytes::Bytes::copy_from_slice(p)))
                .unwrap();
        }
        server.flush().unwrap();
        std::mem::take(&mut server.get_mut().tx)
    }

    #[test]
    fn ws_reassembles_packets_across_frames_and_reads() {
        let (mut link, mut server) = pair();
        // Two MQTT packets packed in one frame, a third split over two frames.
        let wire = server_sends(
            &mut server,
            &[&[0x30, 0x02, b'a', b'b', 0xd0, 0x00, 0x30], &[0x01, b'c']],
        );
        let mut mqtt = BytesMut::new();
        // Byte by byte: every frame boundary falls inside a read.
        for b in &wire {
            let mut raw = BytesMut::from(&[*b][..]);
            assert_eq!(link.input(&mut raw, &mut mqtt).unwrap(), Flow::Open);
            assert!(raw.is_empty());
        }
        assert_eq!(
            &mqtt[..],
            &[0x30, 0x02, b'a', b'b', 0xd0, 0x00, 0x30, 0x01, b'c']
        );
    }

    #[test]
    fn ws_output_is_masked_binary_and_pings_are_answered() {
        let (mut link, mut server) = pair();
        let mut wire = Vec::new();
        let mut mqtt = BytesMut::from(&[0xc0u8, 0x00][..]);
        link.output(&mut mqtt, &mut wire).unwrap();
        assert!(mqtt.is_empty());
        // Binary, final, masked (the mask bit), 2 bytes.
        assert_eq!(&wire[..2], &[0x82, 0x82]);
        server.get_mut().rx.extend_from_slice(&wire);
        assert_eq!(
            server.read().unwrap(),
            Message::Binary(bytes::Bytes::from_static(&[0xc0, 0x00]))
        );
        server
            .write(Message::Ping(bytes::Bytes::from_static(b"hi")))
            .unwrap();
        server.flush().unwrap();
        let mut raw = BytesMut::from(&std::mem::take(&mut server.get_mut().tx)[..]);
        let mut got = BytesMut::new();
        assert_eq!(link.input(&mut raw, &mut got).unwrap(), Flow::Open);
        assert!(got.is_empty());
        assert!(link.wants_write());
        let mut wire = Vec::new();
        link.output(&mut BytesMut::new(), &mut wire).unwrap();
        server.get_mut().rx.extend_from_slice(&wire);
        assert_eq!(
            server.read().unwrap(),
            Message::Pong(bytes::Bytes::from_static(b"hi"))
        );
    }

    /// A rustls server with a fresh self-signed certificate for `localhost`, and a client
    /// configuration that trusts it.
    fn tls_pair() -> (ClientConnection, rustls::ServerConnection) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.resumption = Resumption::disabled();
        let spec = TlsSpec {
            config: Arc::new(client),
            server_names: vec![ServerName::try_from("localhost").unwrap()],
            roots: Roots::Insecure,
            certfile: None,
            keyfile: None,
        };
        let client = tls_connection(&spec, 0).unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        server.set_buffer_limit(None);
        (client, server)
    }

    /// Hands `bytes` to the rustls server and returns the plaintext.
    fn server_reads(server: &mut rustls::ServerConnection, mut bytes: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        while !bytes.is_empty() {
            server.read_tls(&mut bytes).unwrap();
            server.process_new_packets().unwrap();
            server.reader().read_to_end(&mut plain).ok();
        }
        plain
    }

    /// Runs the handshake in memory.
    fn handshake(client: &mut ClientConnection, server: &mut rustls::ServerConnection) {
        while client.is_handshaking() || server.is_handshaking() {
            let mut wire = Vec::new();
            encrypt(client, &[], &mut wire).unwrap();
            server_reads(server, &wire);
            let mut back = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut back).unwrap();
            }
            let mut raw = BytesMut::from(&back[..]);
            decrypt(client, &mut raw, &mut BytesMut::new()).unwrap();
        }
    }

    /// WebSocket over TLS with messages far larger than a TLS record, a read buffer, a frame
    /// header's reach, fed in odd-sized pieces both ways: every byte comes out in order.
    #[test]
    fn wss_round_trip_in_memory() {
        let (mut tls, mut server_tls) = tls_pair();
        handshake(&mut tls, &mut server_tls);
        let ws = WebSocket::from_raw_socket(Pipe::default(), Role::Client, Some(ws_config()));
        let mut link = Link {
            tls: Some(tls),
            ws: Some(ws),
        };
        let mut server_ws = WebSocket::from_raw_socket(Pipe::default(), Role::Server, None);
        let pattern = |n: usize, seed: u8| -> Vec<u8> {
            (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
        };

        // Broker → perf: three messages (300 kB, 5 B, 70 kB) in 1000-byte reads.
        let sent: Vec<Vec<u8>> = vec![pattern(300_000, 1), pattern(5, 2), pattern(70_000, 3)];
        for m in &sent {
            server_ws
                .write(Message::Binary(bytes::Bytes::copy_from_slice(m)))
                .unwrap();
        }
        server_ws.flush().unwrap();
        let frames = std::mem::take(&mut server_ws.get_mut().tx);
        server_tls.writer().write_all(&frames).unwrap();
        let mut wire = Vec::new();
        while server_tls.wants_write() {
            server_tls.write_tls(&mut wire).unwrap();
        }
        let mut mqtt = BytesMut::new();
        for piece in wire.chunks(1000) {
            let mut raw = BytesMut::from(piece);
            assert_eq!(link.input(&mut raw, &mut mqtt).unwrap(), Flow::Open);
        }
        assert_eq!(&mqtt[..], &sent.concat()[..]);

        // perf → broker: 200 kB, then 3 B.
        let mut wire = Vec::new();
        let big = pattern(200_000, 4);
        link.output(&mut BytesMut::from(&big[..]), &mut wire)
            .unwrap();
        link.output(&mut BytesMut::from(&b"end"[..]), &mut wire)
            .unwrap();
        let frames = server_reads(&mut server_tls, &wire);
        server_ws.get_mut().rx.extend_from_slice(&frames);
        assert_eq!(
            server_ws.read().unwrap(),
            Message::Binary(bytes::Bytes::from(big))
        );
        assert_eq!(
            server_ws.read().unwrap(),
            Message::Binary(bytes::Bytes::from_static(b"end"))
        );

        // Our goodbye: a Close frame, then close_notify.
        let mut wire = Vec::new();
        link.close(&mut wire).unwrap();
        let frames = server_reads(&mut server_tls, &wire);
        server_ws.get_mut().rx.extend_from_slice(&frames);
        assert!(matches!(server_ws.read().unwrap(), Message::Close(_)));
        assert!(server_tls.process_new_packets().unwrap().peer_has_closed());
    }

    /// TLS alone: the broker's close_notify ends the session after the data before it.
    #[test]
    fn tls_data_then_close_notify() {
        let (mut tls, mut server_tls) = tls_pair();
        handshake(&mut tls, &mut server_tls);
        let mut link = Link {
            tls: Some(tls),
            ws: None,
        };
        server_tls.writer().write_all(&[0x20, 0x02, 0, 0]).unwrap();
        server_tls.send_close_notify();
        let mut wire = Vec::new();
        while server_tls.wants_write() {
            server_tls.write_tls(&mut wire).unwrap();
        }
        let mut raw = BytesMut::from(&wire[..]);
        let mut mqtt = BytesMut::new();
        let flow = link.input(&mut raw, &mut mqtt).unwrap();
        assert_eq!(flow, Flow::Closed("connection closed by broker".to_owned()));
        assert_eq!(&mqtt[..], &[0x20, 0x02, 0, 0]);
    }

    #[test]
    fn ws_close_and_text_from_the_broker() {
        let (mut link, mut server) = pair();
        server.close(None).unwrap();
        let mut raw = BytesMut::from(&std::mem::take(&mut server.get_mut().tx)[..]);
        let flow = link.input(&mut raw, &mut BytesMut::new()).unwrap();
        assert_eq!(
            flow,
            Flow::Closed("connection closed by broker (WebSocket close)".to_owned())
        );
        let (mut link, mut server) = pair();
        server.write(Message::text("hello")).unwrap();
        server.flush().unwrap();
        let mut raw = BytesMut::from(&std::mem::take(&mut server.get_mut().tx)[..]);
        let e = link.input(&mut raw, &mut BytesMut::new()).unwrap_err();
        assert!(e.contains("text message"), "{e}");
    }
}
