//! The enhanced authentication hook (MQTT 5, 4.12): how a CONNECT with an Authentication Method,
//! and later AUTH packets, are handed to an authentication method and answered.
//!
//! The shard drives the exchange; a method only computes answers, synchronously, from what the
//! client sent:
//!
//! 1. CONNECT carries Authentication Method `m` (and perhaps Authentication Data). If no hook is
//!    configured, or [`EnhancedAuth::begin`] returns `None` for `m`, the client gets CONNACK
//!    0x8C (Bad authentication method).
//! 2. Otherwise the exchange's [`AuthExchange::step`] gets the CONNECT's data. `Continue(d)`
//!    sends AUTH 0x18 with `m` and `d`, and the client's next AUTH (0x18, same method) is the
//!    next step; `Success(d)` goes on with the connection and CONNACK carries `m` and `d`;
//!    `Fail(rc)` answers CONNACK `rc`. Until CONNACK, any packet other than AUTH or DISCONNECT
//!    is a protocol error (4.12).
//! 3. Re-authentication: a connected client sends AUTH 0x19 with the method it connected with
//!    (another method, or none at connect, is a protocol error, 4.12.1). A new exchange
//!    starts; `Success(d)` answers AUTH 0x00, `Fail(rc)` DISCONNECT `rc`. Other packets flow
//!    as usual meanwhile.
//!
//! Methods that need I/O (an external service) are for the control plane to front; this hook
//! is the shard's side of it.

use std::fmt;

use bytes::Bytes;
use net::mqtt::ReasonCode;

/// The client an exchange is for.
#[derive(Debug, Clone, Copy)]
pub struct AuthClient<'a> {
    /// Its client identifier as sent (empty if the server assigns one).
    pub client_id: &'a str,
    /// Its User Name, if any.
    pub username: Option<&'a str>,
    /// Its address.
    pub peer: std::net::SocketAddr,
}

/// What one step of an exchange answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send this challenge (Authentication Data) and wait for the client's answer.
    Continue(Bytes),
    /// Authenticated; this Authentication Data, if any, goes with CONNACK or AUTH 0x00.
    Success(Option<Bytes>),
    /// Refused with this reason code (0x87 Not authorized, 0x86, 0x8C, ...).
    Fail(ReasonCode),
}

/// One authentication exchange in progress.
pub trait AuthExchange: fmt::Debug + Send {
    /// The next step, given the Authentication Data the client sent (CONNECT's for the first
    /// step, then each AUTH's).
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
}

/// The authentication methods a broker offers (`Settings::enhanced_auth`).
pub trait EnhancedAuth: fmt::Debug + Send + Sync {
    /// Starts an exchange of `method` for `client`, or `None` if the method is not offered.
    fn begin(&self, method: &str, client: AuthClient<'_>) -> Option<Box<dyn AuthExchange>>;
}
