//! `TlsConn` and `PeerCert` without sockets: a rustls client and the server session exchange
//! bytes in memory (handshake, MQTT bytes both ways in records of any split, close_notify), and
//! the certificate fields EMQX's `peer_cert_as_*` options use.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use shard::tls::{CertField, Decrypted, PeerCert, TlsConn};

fn cert(cn: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "Example");
    let key = KeyPair::generate().unwrap();
    let c = p.self_signed(&key).unwrap();
    (
        c.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

fn pair() -> (rustls::ClientConnection, TlsConn) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (c, k) = cert("server");
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![c.clone()], k)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(c).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client =
        rustls::ClientConnection::new(Arc::new(client), ServerName::try_from("localhost").unwrap())
            .unwrap();
    (client, TlsConn::new(Arc::new(server)).unwrap())
}

/// Moves the client's records to the server, `step` bytes at a time; returns the plaintext.
fn to_server(client: &mut rustls::ClientConnection, server: &mut TlsConn, step: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    let mut raw = BytesMut::new();
    let mut plain = BytesMut::new();
    for part in wire.chunks(step.max(1)) {
        raw.extend_from_slice(part);
        assert_eq!(
            server.decrypt(&mut raw, &mut plain).unwrap(),
            Decrypted::Open
        );
    }
    plain.to_vec()
}

fn to_client(server: &mut TlsConn, client: &mut rustls::ClientConnection) -> Vec<u8> {
    let mut wire = Vec::new();
    server.write_records(&mut wire).unwrap();
    let mut rd: &[u8] = &wire;
    while !rd.is_empty() {
        client.read_tls(&mut rd).unwrap();
        client.process_new_packets().unwrap();
    }
    let mut out = Vec::new();
    use std::io::Read;
    let _ = client.reader().read_to_end(&mut out);
    out
}

#[test]
fn handshake_and_data_both_ways_in_any_split() {
    for step in [1, 7, 100, 100_000] {
        let (mut client, mut server) = pair();
        while client.is_handshaking() || server.is_handshaking() {
            to_server(&mut client, &mut server, step);
            to_client(&mut server, &mut client);
        }
        use std::io::Write;
        client
            .writer()
            .write_all(b"\x10\x0d CONNECT bytes")
            .unwrap();
        assert_eq!(
            to_server(&mut client, &mut server, step),
            b"\x10\x0d CONNECT bytes"
        );
        server
            .encrypt(&Bytes::from_static(b"\x20\x02\x00\x00"))
            .unwrap();
        assert_eq!(to_client(&mut server, &mut client), b"\x20\x02\x00\x00");
        // close_notify from the client: the server sees the end of the stream.
        client.send_close_notify();
        let mut wire = Vec::new();
        client.write_tls(&mut wire).unwrap();
        let mut raw = BytesMut::from(&wire[..]);
        let mut plain = BytesMut::new();
        assert_eq!(
            server.decrypt(&mut raw, &mut plain).unwrap(),
            Decrypted::Closed
        );
    }
}

#[test]
fn garbage_is_an_error_with_an_alert_to_send() {
    let (_, mut server) = pair();
    let mut raw = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
    let mut plain = BytesMut::new();
    assert!(server.decrypt(&mut raw, &mut plain).is_err());
    assert!(plain.is_empty());
}

#[test]
fn certificate_fields() {
    let (der, _) = cert("dev-7");
    let pc = PeerCert::from_der(&der).unwrap();
    assert_eq!(pc.field(CertField::Cn).as_deref(), Some("dev-7"));
    let dn = pc.field(CertField::Dn).unwrap();
    assert!(dn.contains("CN=dev-7") && dn.contains("O=Example"), "{dn}");
    let md5 = pc.field(CertField::Md5).unwrap();
    assert_eq!(md5.len(), 32);
    assert!(md5.bytes().all(|b| b.is_ascii_hexdigit()));
    let pem = pc.field(CertField::Pem).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
    let crt = pc.field(CertField::Crt).unwrap();
    assert!(pem.contains(&crt[..64]));
    assert!(PeerCert::from_der(b"not a certificate").is_none());
}
