//! The relay binary against local echo servers: it adds the round-trip time, drops UDP
//! datagrams at the configured rate, and keeps TCP bytes whole and in order however many
//! chunks it holds back for a retransmission timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Relay(Child, SocketAddr);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn relay(args: &[&str]) -> Relay {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    Relay(child, addr)
}

#[test]
fn udp_adds_the_rtt_and_drops_at_the_rate() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let r = relay(&[
        "--udp",
        "--upstream",
        &echo_addr.to_string(),
        "--rtt-ms",
        "40",
    ]);
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let t = Instant::now();
    c.send_to(b"ping", r.1).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    let rtt = t.elapsed();
    // Half the RTT each way: the echo's round trip through the relay is the RTT.
    assert!(
        rtt >= Duration::from_millis(39) && rtt < Duration::from_millis(200),
        "{rtt:?}"
    );

    let lossy = relay(&[
        "--udp",
        "--upstream",
        &echo_addr.to_string(),
        "--loss",
        "0.5",
    ]);
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for i in 0..400u32 {
        c.send_to(&i.to_be_bytes(), lossy.1).unwrap();
    }
    let mut back = 0;
    while c.recv_from(&mut buf).is_ok() {
        back += 1;
    }
    // Each way drops half: about a quarter comes back.
    assert!((60..=140).contains(&back), "{back} of 400");
}

#[test]
fn tcp_keeps_bytes_in_order_through_held_chunks() {
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let r = relay(&[
        "--upstream",
        &echo_addr.to_string(),
        "--rtt-ms",
        "20",
        "--loss",
        "0.3",
    ]);
    let mut s = TcpStream::connect(r.1).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let sent: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    for chunk in sent.chunks(500) {
        s.write_all(chunk).unwrap();
    }
    let mut got = vec![0u8; sent.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, sent, "whole and in order");
    assert!(
        t.elapsed() >= Duration::from_millis(20),
        "{:?}",
        t.elapsed()
    );
}
