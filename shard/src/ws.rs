//! MQTT over WebSocket (RFC 6455, server side), sans-IO: tungstenite's handshake and framing
//! run over an in-memory pipe, so the driver feeds it the socket's bytes and takes its output
//! like any other buffer. MQTT packets may be split across binary frames or packed several to
//! a frame; the MQTT decoder sees one byte stream either way.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tungstenite::handshake::HandshakeError;
use tungstenite::handshake::MidHandshake;
use tungstenite::handshake::server::{ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::http::{HeaderValue, StatusCode};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// How a WebSocket listener accepts connections (`listeners.ws.*.websocket.*`, EMQX's names).
#[derive(Debug, Clone)]
pub struct WsOptions {
    /// Request path MQTT is served on (`mqtt_path`, `/mqtt`).
    pub path: String,
    /// Subprotocols offered, in preference order (`supported_subprotocols`).
    pub subprotocols: Vec<String>,
    /// Refuse a handshake that names none of them (`fail_if_no_subprotocol`).
    pub fail_if_no_subprotocol: bool,
    /// Check the Origin header (`check_origin_enable`) against `allowed_origins`.
    pub check_origin: bool,
    /// Origins accepted when checking.
    pub allowed_origins: Vec<String>,
    /// Header carrying the client's address behind a proxy (`proxy_address_header`), lower
    /// case; empty: none.
    pub proxy_address_header: String,
    /// Largest WebSocket message accepted, in bytes.
    pub max_message: usize,
}

/// The socket's bytes go in, tungstenite reads them; what it writes is collected for the
/// socket in a buffer shared with [`WsConn`], so an HTTP error response written just before a
/// failed handshake drops the pipe is not lost.
#[derive(Debug, Default)]
struct Pipe {
    input: BytesMut,
    output: Rc<RefCell<Vec<u8>>>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input.advance(n);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the handshake's callback learnt from the request.
#[derive(Debug, Default)]
struct Seen {
    forwarded_for: Option<IpAddr>,
}

/// Checks the upgrade request: path, subprotocol, origin; notes the proxy address header.
struct Accept {
    opts: Arc<WsOptions>,
    seen: Rc<RefCell<Seen>>,
}

fn refuse(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_owned()));
    *r.status_mut() = status;
    r
}

impl tungstenite::handshake::server::Callback for Accept {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        let o = &self.opts;
        if request.uri().path() != o.path {
            return Err(refuse(StatusCode::NOT_FOUND, "no MQTT at this path"));
        }
        if o.check_origin {
            let origin = request
                .headers()
                .get("origin")
                .and_then(|v| v.to_str().ok());
            if !origin.is_some_and(|x| o.allowed_origins.iter().any(|a| a == x)) {
                return Err(refuse(StatusCode::FORBIDDEN, "origin not allowed"));
            }
        }
        let offered: Vec<&str> = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let chosen = o
            .subprotocols
            .iter()
            .find(|p| offered.iter().any(|x| x.eq_ignore_ascii_case(p)));
        match chosen {
            Some(p) => {
                if let Ok(v) = HeaderValue::from_str(p) {
                    response.headers_mut().insert("sec-websocket-protocol", v);
                }
            }
            None if o.fail_if_no_subprotocol => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "no supported subprotocol (mqtt, mqttv3.1, mqttv5)",
                ));
            }
            None => {}
        }
        if !o.proxy_address_header.is_empty() {
            let ip = request
                .headers()
                .get(o.proxy_address_header.as_str())
                .and_then(|v| v.to_str().ok())
                // X-Forwarded-For: client, proxy1, proxy2 — the first is the client.
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok());
            self.seen.borrow_mut().forwarded_for = ip;
        }
        Ok(response)
    }
}

enum State {
    Handshake(MidHandshake<ServerHandshake<Pipe, Accept>>),
    Open(WebSocket<Pipe>),
    /// Transient, while a handshake step runs; also after a failed handshake.
    Done,
}

/// One WebSocket connection, server side.
pub struct WsConn {
    state: State,
    seen: Rc<RefCell<Seen>>,
    output: Rc<RefCell<Vec<u8>>>,
    opened: bool,
}

impl std::fmt::Debug for WsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConn")
            .field("opened", &self.opened)
            .finish_non_exhaustive()
    }
}

/// What [`WsConn::receive`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsStatus {
    /// Still handshaking, or open.
    Open,
    /// The client closed the WebSocket (a close frame), or it is closed.
    Closed,
}

impl WsConn {
    /// A connection waiting for the client's upgrade request.
    pub fn new(opts: Arc<WsOptions>) -> Self {
        let seen = Rc::new(RefCell::new(Seen::default()));
        // tungstenite's default 128 KiB read buffer per connection would dominate an idle
        // connection's memory; our pipe hands it what the socket read anyway. Writes go
        // straight to the pipe (no write buffering: the driver batches socket writes).
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(opts.max_message))
            .max_frame_size(Some(opts.max_message));
        let accept = Accept {
            opts,
            seen: seen.clone(),
        };
        let output = Rc::new(RefCell::new(Vec::new()));
        let pipe = Pipe {
            input: BytesMut::new(),
            output: output.clone(),
        };
        let state = match tungstenite::accept_hdr_with_config(pipe, accept, Some(config)) {
            Err(HandshakeError::Interrupted(mid)) => State::Handshake(mid),
            // Nothing was read yet, so the handshake can only wait; anything else is a closed
            // connection.
            Ok(ws) => State::Open(ws),
            Err(HandshakeError::Failure(_)) => State::Done,
        };
        Self {
            state,
            seen,
            output,
            opened: false,
        }
    }

    /// Whether the upgrade handshake is done.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// The client address the proxy header gave, once the handshake has read it.
    pub fn forwarded_for(&self) -> Option<IpAddr> {
        self.seen.borrow().forwarded_for
    }

    /// Takes the socket's bytes from `raw` and appends the MQTT bytes of the binary messages
    /// they complete to `plain`. An error means the connection is over (an HTTP error response
    /// or a close frame may be waiting in the output).
    pub fn receive(&mut self, raw: &mut BytesMut, plain: &mut BytesMut) -> io::Result<WsStatus> {
        let state = std::mem::replace(&mut self.state, State::Done);
        let mut ws = match state {
            State::Handshake(mut mid) => {
                mid.get_mut().get_mut().input.extend_from_slice(raw);
                raw.clear();
                match mid.handshake() {
                    Ok(ws) => ws,
                    Err(HandshakeError::Interrupted(mid)) => {
                        self.state = State::Handshake(mid);
                        return Ok(WsStatus::Open);
                    }
                    Err(HandshakeError::Failure(e)) => {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
            }
            State::Open(mut ws) => {
                ws.get_mut().input.extend_from_slice(raw);
                raw.clear();
                ws
            }
            State::Done => return Ok(WsStatus::Closed),
        };
        self.opened = true;
        let status = loop {
            match ws.read() {
                Ok(Message::Binary(data)) => plain.extend_from_slice(&data),
                Ok(Message::Text(_)) => {
                    // MQTT is binary only (EMQX closes too).
                    let _ = ws.close(Some(CloseFrame {
                        code: CloseCode::Unsupported,
                        reason: "MQTT needs binary frames".into(),
                    }));
                    let _ = ws.flush();
                    self.state = State::Open(ws);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "text frame"));
                }
                Ok(Message::Close(_)) => break WsStatus::Closed,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    break WsStatus::Open;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    break WsStatus::Closed;
                }
                Err(e) => {
                    // A protocol violation (a reserved opcode, an unmasked or oversized
                    // frame): close with 1002, or 1009 for a message too big.
                    let code = match e {
                        tungstenite::Error::Capacity(_) => CloseCode::Size,
                        _ => CloseCode::Protocol,
                    };
                    let _ = ws.close(Some(CloseFrame {
                        code,
                        reason: "protocol error".into(),
                    }));
                    let _ = ws.flush();
                    self.state = State::Open(ws);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
        };
        // Queued pongs and close replies go out with the next write.
        let _ = ws.flush();
        self.state = State::Open(ws);
        Ok(status)
    }

    /// Frames `chunks` as binary messages for the client.
    pub fn send(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        let State::Open(ws) = &mut self.state else {
            return Ok(());
        };
        for c in chunks {
            ws.write(Message::Binary(c.clone()))
                .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))?;
        }
        match ws.flush() {
            Ok(()) => Ok(()),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(io::Error::new(io::ErrorKind::BrokenPipe, e)),
        }
    }

    /// Starts the closing handshake (close frame 1000), if the connection is open.
    pub fn close(&mut self) {
        if let State::Open(ws) = &mut self.state {
            let _ = ws.close(None);
            let _ = ws.flush();
        }
    }

    /// Moves the bytes waiting for the socket (HTTP response, frames) to `out`.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        let mut pending = self.output.borrow_mut();
        if out.is_empty() {
            std::mem::swap(out, &mut pending);
        } else {
            out.append(&mut pending);
        }
    }

    /// Whether bytes are waiting for the socket.
    pub fn wants_write(&self) -> bool {
        !self.output.borrow().is_empty()
    }
}
