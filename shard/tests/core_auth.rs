//! MQTT 5 enhanced authentication (4.12) through the `EnhancedAuth` hook: the CONNECT
//! exchange with AUTH 0x18 challenges, the Authentication Method and Data in CONNACK, failures,
//! protocol errors, and re-authentication (AUTH 0x19) while connected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim;

use std::sync::Arc;

use bytes::Bytes;
use net::mqtt::{Auth, Connect, Packet, ProtocolVersion, Publish, QoS, ReasonCode};
use shard::auth::{AuthClient, AuthExchange, AuthStep, EnhancedAuth};
use sim::{ClientId, Sim, settings};

/// A challenge-response method for the tests: the server sends `nonce-N`, the client must
/// answer `N:secret`; the server's final data is `welcome <user>`.
#[derive(Debug)]
struct Challenge;

#[derive(Debug)]
struct Exchange {
    user: String,
    round: u32,
}

impl EnhancedAuth for Challenge {
    fn begin(&self, method: &str, client: AuthClient<'_>) -> Option<Box<dyn AuthExchange>> {
        (method == "CHALLENGE").then(|| {
            Box::new(Exchange {
                user: client.username.unwrap_or("?").to_owned(),
                round: 0,
            }) as Box<dyn AuthExchange>
        })
    }
}

impl AuthExchange for Exchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        self.round += 1;
        match (self.round, data) {
            // The first step gets CONNECT's data: must be "hello".
            (1, Some(b"hello")) => AuthStep::Continue(Bytes::from("nonce-7")),
            (2, Some(b"7:secret")) => {
                AuthStep::Success(Some(format!("welcome {}", self.user).into()))
            }
            _ => AuthStep::Fail(ReasonCode::NOT_AUTHORIZED),
        }
    }
}

fn with_hook() -> Sim {
    let mut s = settings();
    s.enhanced_auth = Some(Arc::new(Challenge));
    Sim::new(2, s)
}

fn connect_packet(id: &str, method: &'static str, data: &'static [u8]) -> Connect {
    let mut c = Connect::new(ProtocolVersion::V5, id.to_owned());
    c.username = Some("alice".into());
    c.properties.authentication_method = Some(method.into());
    c.properties.authentication_data = Some(Bytes::from_static(data));
    c
}

fn auth(rc: ReasonCode, method: &'static str, data: &'static [u8]) -> Packet {
    let mut a = Auth {
        reason_code: rc,
        ..Auth::default()
    };
    a.properties.authentication_method = Some(method.into());
    a.properties.authentication_data = Some(Bytes::from_static(data));
    Packet::Auth(a)
}

/// Opens a connection on `shard` and sends `connect`; returns what came back.
fn start(sim: &mut Sim, shard: u16, connect: Connect) -> (ClientId, Vec<Packet>) {
    let c = sim.connect_raw(shard);
    sim.send(c, &Packet::Connect(Box::new(connect)));
    sim.drive();
    let got = sim.packets(c);
    (c, got)
}

fn expect_challenge(got: &[Packet]) {
    match got {
        [Packet::Auth(a)] => {
            assert_eq!(a.reason_code, ReasonCode::CONTINUE_AUTHENTICATION);
            assert_eq!(
                a.properties.authentication_method.as_deref(),
                Some("CHALLENGE")
            );
            assert_eq!(
                a.properties.authentication_data.as_deref(),
                Some(&b"nonce-7"[..])
            );
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    }
}

#[test]
fn challenge_response_then_connack_with_method_and_data() {
    for shard in [0, 1] {
        let mut sim = with_hook();
        let (c, got) = start(
            &mut sim,
            shard,
            connect_packet("dev", "CHALLENGE", b"hello"),
        );
        expect_challenge(&got);
        sim.send(
            c,
            &auth(
                ReasonCode::CONTINUE_AUTHENTICATION,
                "CHALLENGE",
                b"7:secret",
            ),
        );
        sim.drive();
        let ack = sim.take_connack(c).expect("CONNACK after the exchange");
        assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
        assert_eq!(
            ack.properties.authentication_method.as_deref(),
            Some("CHALLENGE")
        );
        assert_eq!(
            ack.properties.authentication_data.as_deref(),
            Some(&b"welcome alice"[..])
        );
        assert_eq!(sim.stat(|s| s.enhanced_auth_success), 1);
        // And the connection works.
        sim.subscribe(c, "t", QoS::AtLeastOnce);
        let (p, _) = sim.connect(1 - shard, ProtocolVersion::V5, "p", true, 0);
        sim.publish(p, "t", "x", QoS::AtLeastOnce);
        assert_eq!(sim.received(c).len(), 1);
    }
}

#[test]
fn wrong_answers_and_unknown_methods_are_refused() {
    let mut sim = with_hook();
    let (c, got) = start(&mut sim, 0, connect_packet("a", "CHALLENGE", b"hello"));
    expect_challenge(&got);
    sim.send(
        c,
        &auth(ReasonCode::CONTINUE_AUTHENTICATION, "CHALLENGE", b"7:guess"),
    );
    sim.drive();
    assert_eq!(
        sim.take_connack(c).unwrap().reason_code,
        ReasonCode::NOT_AUTHORIZED
    );
    assert!(sim.is_closed(c));

    let (c, _) = start(&mut sim, 0, connect_packet("b", "SCRAM-SHA-1", b"x"));
    assert!(sim.is_closed(c));
    let mut sim = Sim::new(1, settings());
    let (c, got) = start(&mut sim, 0, connect_packet("c", "CHALLENGE", b"hello"));
    assert!(
        matches!(&got[..], [Packet::ConnAck(a)] if a.reason_code == ReasonCode::BAD_AUTHENTICATION_METHOD),
        "no hook configured: {got:?}"
    );
    assert!(sim.is_closed(c));
}

#[test]
fn only_auth_or_disconnect_before_connack() {
    let mut sim = with_hook();
    let (c, got) = start(&mut sim, 0, connect_packet("a", "CHALLENGE", b"hello"));
    expect_challenge(&got);
    sim.send(
        c,
        &Packet::Publish(Publish::new(net::mqtt::MqttStr::from("t"), Bytes::new())),
    );
    sim.drive();
    assert_eq!(
        sim.take_connack(c).unwrap().reason_code,
        ReasonCode::PROTOCOL_ERROR
    );
    assert!(sim.is_closed(c));

    // Continuing with another method is a protocol error too.
    let (c, _) = start(&mut sim, 0, connect_packet("b", "CHALLENGE", b"hello"));
    sim.send(
        c,
        &auth(ReasonCode::CONTINUE_AUTHENTICATION, "OTHER", b"7:secret"),
    );
    sim.drive();
    assert_eq!(
        sim.take_connack(c).unwrap().reason_code,
        ReasonCode::PROTOCOL_ERROR
    );
}

#[test]
fn re_authentication_while_connected() {
    let mut sim = with_hook();
    let (c, _) = start(&mut sim, 1, connect_packet("dev", "CHALLENGE", b"hello"));
    sim.send(
        c,
        &auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            "CHALLENGE",
            b"7:secret",
        ),
    );
    sim.drive();
    assert!(sim.take_connack(c).unwrap().reason_code.is_success());

    sim.send(c, &auth(ReasonCode::RE_AUTHENTICATE, "CHALLENGE", b"hello"));
    sim.drive();
    expect_challenge(&sim.packets(c));
    sim.send(
        c,
        &auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            "CHALLENGE",
            b"7:secret",
        ),
    );
    sim.drive();
    match &sim.packets(c)[..] {
        [Packet::Auth(a)] => {
            assert_eq!(a.reason_code, ReasonCode::SUCCESS);
            assert_eq!(
                a.properties.authentication_data.as_deref(),
                Some(&b"welcome alice"[..])
            );
        }
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
    assert_eq!(sim.stat(|s| s.enhanced_auth_success), 2);

    // A failed re-authentication disconnects with the method's reason code.
    sim.send(c, &auth(ReasonCode::RE_AUTHENTICATE, "CHALLENGE", b"bye"));
    sim.drive();
    let got = sim.packets(c);
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::NOT_AUTHORIZED),
        "{got:?}"
    );
}

#[test]
fn re_authentication_needs_the_connect_method() {
    let mut sim = with_hook();
    // Connected without a method: AUTH is a protocol error.
    let (c, _) = sim.connect(0, ProtocolVersion::V5, "plain", true, 0);
    sim.send(c, &auth(ReasonCode::RE_AUTHENTICATE, "CHALLENGE", b"hello"));
    sim.drive();
    let got = sim.packets(c);
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PROTOCOL_ERROR),
        "{got:?}"
    );
    // Connected with one method, re-authenticating with another.
    let (c, _) = start(&mut sim, 0, connect_packet("dev", "CHALLENGE", b"hello"));
    sim.send(
        c,
        &auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            "CHALLENGE",
            b"7:secret",
        ),
    );
    sim.drive();
    assert!(sim.take_connack(c).is_some());
    sim.send(c, &auth(ReasonCode::RE_AUTHENTICATE, "OTHER", b"hello"));
    sim.drive();
    let got = sim.packets(c);
    assert!(
        matches!(&got[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PROTOCOL_ERROR),
        "{got:?}"
    );
}
