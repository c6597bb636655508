//! `relay`: a user-space stand-in for `netem` between `perf` and a broker (this kernel has no
//! `netem`). It forwards UDP datagrams (one upstream socket per client address, like a NAT) or
//! TCP connections, delaying every packet or chunk by half the round-trip time each way and
//! dropping with a seeded pseudo-random generator:
//!
//! - UDP: a dropped datagram is gone (QUIC recovers it).
//! - TCP: bytes cannot be dropped above the kernel's TCP, so a "lost" chunk is held for one
//!   retransmission timeout more (max(200 ms, RTT)), and everything behind it on that
//!   connection waits for it — what a lost segment costs a TCP stream.
//!
//! Prints `relay listening on ADDR` once ready. Runs until killed.

use std::collections::{BinaryHeap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Forward UDP (else TCP).
    #[arg(long)]
    udp: bool,
    /// Address to listen on (port 0: any).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to forward to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Round-trip time added, in ms (half each way).
    #[arg(long, default_value_t = 0)]
    rtt_ms: u64,
    /// Probability that a packet (UDP) or chunk (TCP) is lost, 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Seed of the loss pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// xorshift64*: a seeded, reproducible loss pattern.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn chance(&mut self, p: f64) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

/// splitmix64's finalizer: spreads nearby seeds far apart.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Something to send later.
enum Out {
    Udp(Arc<UdpSocket>, SocketAddr, Vec<u8>),
    Tcp(Arc<Mutex<TcpStream>>, Vec<u8>),
}

struct Item {
    due: Instant,
    seq: u64,
    out: Out,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Earliest first in a max-heap.
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

/// The pending items and the last sequence number given out.
type Queue = Mutex<(BinaryHeap<Item>, u64)>;

/// The delay line: one thread sends each item when it is due, in due order.
#[derive(Clone)]
struct Delay {
    inner: Arc<(Queue, Condvar)>,
}

impl Delay {
    fn start() -> Self {
        let d = Self {
            inner: Arc::new((Mutex::new((BinaryHeap::new(), 0)), Condvar::new())),
        };
        let inner = d.inner.clone();
        std::thread::spawn(move || {
            let (lock, cv) = &*inner;
            let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let now = Instant::now();
                match g.0.peek().map(|i| i.due) {
                    Some(due) if due <= now => {
                        if let Some(item) = g.0.pop() {
                            drop(g);
                            match item.out {
                                Out::Udp(s, to, data) => {
                                    let _ = s.send_to(&data, to);
                                }
                                Out::Tcp(s, data) => {
                                    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                                    let _ = s.write_all(&data);
                                }
                            }
                            g = lock.lock().unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    Some(due) => {
                        g = cv
                            .wait_timeout(g, due - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    None => g = cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                }
            }
        });
        d
    }

    fn push(&self, due: Instant, out: Out) {
        let (lock, cv) = &*self.inner;
        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
        g.1 += 1;
        let seq = g.1;
        g.0.push(Item { due, seq, out });
        cv.notify_one();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let one_way = Duration::from_millis(cli.rtt_ms) / 2;
    let delay = Delay::start();
    let result = if cli.udp {
        udp(&cli, one_way, delay)
    } else {
        tcp(&cli, one_way, delay)
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn udp(cli: &Cli, one_way: Duration, delay: Delay) -> Result<(), String> {
    let down = Arc::new(UdpSocket::bind(cli.listen).map_err(|e| format!("{}: {e}", cli.listen))?);
    let local = down.local_addr().map_err(|e| e.to_string())?;
    println!("relay listening on {local}");
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut rng = Rng(cli.seed | 1);
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = down.recv_from(&mut buf) else {
            continue;
        };
        let up = match upstreams.entry(from) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                // One upstream socket per client, and its reader sending answers back.
                let Ok(up) = UdpSocket::bind("127.0.0.1:0") else {
                    continue;
                };
                let up = Arc::new(up);
                let (reader, down, delay) = (up.clone(), down.clone(), delay.clone());
                let (loss, seed) = (cli.loss, mix(cli.seed ^ u64::from(from.port()) << 16));
                std::thread::spawn(move || {
                    let mut rng = Rng(seed | 1);
                    let mut buf = vec![0u8; 65536];
                    while let Ok((n, _)) = reader.recv_from(&mut buf) {
                        if !rng.chance(loss) {
                            let out = Out::Udp(down.clone(), from, buf[..n].to_vec());
                            delay.push(Instant::now() + one_way, out);
                        }
                    }
                });
                e.insert(up)
            }
        };
        if !rng.chance(cli.loss) {
            let out = Out::Udp(up.clone(), cli.upstream, buf[..n].to_vec());
            delay.push(Instant::now() + one_way, out);
        }
    }
}

fn tcp(cli: &Cli, one_way: Duration, delay: Delay) -> Result<(), String> {
    let listener = TcpListener::bind(cli.listen).map_err(|e| format!("{}: {e}", cli.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("relay listening on {local}");
    let rto = Duration::from_millis(cli.rtt_ms.max(200));
    let mut n: u64 = 0;
    for client in listener.incoming().flatten() {
        let Ok(server) = TcpStream::connect(cli.upstream) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        n += 1;
        for (i, (from, to)) in [(&client, &server), (&server, &client)]
            .into_iter()
            .enumerate()
        {
            let (Ok(mut from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                continue;
            };
            let to = Arc::new(Mutex::new(to));
            let delay = delay.clone();
            // Each direction of each connection its own pattern: losing a chunk one way must
            // not mean losing the matching one the other way.
            let mut rng = Rng(mix(cli.seed ^ (n << 8) ^ i as u64) | 1);
            let loss = cli.loss;
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16384];
                let mut last = Instant::now();
                while let Ok(k) = from.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    let mut due = Instant::now() + one_way;
                    if rng.chance(loss) {
                        due += rto;
                    }
                    // Nothing overtakes a chunk held for its retransmission.
                    due = due.max(last);
                    last = due;
                    delay.push(due, Out::Tcp(to.clone(), buf[..k].to_vec()));
                }
            });
        }
    }
    Ok(())
}
