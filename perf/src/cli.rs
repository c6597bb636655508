//! The command line: emqtt-bench's subcommands and flags, plus `perf bench`.
//!
//! `-h` is `--host` (as in emqtt-bench), so clap's `-h` for help is disabled on every subcommand
//! and `--help` is declared by hand; `-V` is the protocol version, so the subcommands have no
//! `--version` of their own (`perf --version` prints the program's).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// MQTT load generator: connections, subscribers, publishers, and end-to-end benchmarks.
#[derive(Debug, Parser)]
#[command(name = "perf", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Open `-c` connections, measure connects/s and CONNECT→CONNACK latency, then hold them
    /// idle (keep alive only) until `--duration` or Ctrl-C.
    #[command(disable_help_flag = true)]
    Conn(ConnArgs),
    /// Run `-c` subscribers on `-t`; count, check and time what they receive.
    #[command(disable_help_flag = true)]
    Sub(SubArgs),
    /// Run `-c` publishers on `-t`.
    #[command(disable_help_flag = true)]
    Pub(PubArgs),
    /// Publishers and subscribers in one process: throughput, end-to-end latency, loss,
    /// duplicates and reordering.
    #[command(disable_help_flag = true)]
    Bench(BenchArgs),
}

/// Options every subcommand takes: where to connect and how.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("secure").args(["tls", "quic"]).multiple(true)))]
pub(crate) struct Common {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub(crate) help: Option<bool>,
    /// Broker host name or address; a comma-separated list is used round-robin.
    #[arg(short = 'h', long, default_value = "localhost", value_delimiter = ',')]
    pub(crate) host: Vec<String>,
    /// Broker port.
    #[arg(short = 'p', long, default_value_t = 1883)]
    pub(crate) port: u16,
    /// MQTT protocol version: 3 (3.1), 4 (3.1.1) or 5.
    #[arg(short = 'V', long = "version", default_value_t = 5,
          value_parser = clap::value_parser!(u8).range(3..=5))]
    pub(crate) protocol: u8,
    /// User name.
    #[arg(short = 'u', long)]
    pub(crate) username: Option<String>,
    /// Password.
    #[arg(short = 'P', long)]
    pub(crate) password: Option<String>,
    /// Client id prefix [default: perf-<pid>]; client ids are <prefix>-<pub|sub|conn>-<n>.
    #[arg(long)]
    pub(crate) prefix: Option<String>,
    /// Keep alive in seconds (0 disables PINGREQ).
    #[arg(short = 'k', long, default_value_t = 300)]
    pub(crate) keepalive: u16,
    /// Clean start / clean session.
    #[arg(short = 'C', long, default_value_t = true, action = ArgAction::Set)]
    pub(crate) clean: bool,
    /// Session Expiry Interval in seconds (MQTT 5).
    #[arg(short = 'x', long = "session-expiry", default_value_t = 0)]
    pub(crate) session_expiry: u32,
    /// Milliseconds between two connects (over all threads).
    #[arg(short = 'i', long, default_value_t = 10)]
    pub(crate) interval: u64,
    /// First client sequence number (the value of %i for the first client).
    #[arg(short = 'n', long = "startnumber", default_value_t = 0)]
    pub(crate) start_number: u64,
    /// Local source addresses to bind before connecting, comma-separated, used round-robin.
    #[arg(long, value_delimiter = ',')]
    pub(crate) ifaddr: Vec<IpAddr>,
    /// Length of the measured phase (e.g. 10, 10s, 500ms, 2m), counted from the moment every
    /// client has connected (after the --warmup, where there is one); without it the run lasts
    /// until its limit or Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Generator threads, each with its own runtime and its share of the clients
    /// [default: number of CPUs].
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Write every figure of the run to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Seconds to wait for TCP connect and for CONNACK.
    #[arg(long, default_value_t = 10)]
    pub(crate) connect_timeout: u64,
    /// I/O driver of the generator's runtimes.
    #[arg(long, value_enum, default_value_t = Driver::Auto)]
    pub(crate) driver: Driver,
    /// Connect over TLS (1.2 or 1.3); the server name verified is the -h host (a name or an
    /// IP address). With --ws: WebSocket over TLS (WSS).
    #[arg(short = 'S', long, alias = "ssl")]
    pub(crate) tls: bool,
    /// PEM file of the CA certificates that verify the broker's certificate (--tls, --quic)
    /// [default: the system's CA bundle].
    #[arg(long, value_name = "FILE", requires = "secure")]
    pub(crate) cacertfile: Option<PathBuf>,
    /// PEM file of the client certificate (chain) for mutual TLS (--tls, --quic; with
    /// --keyfile).
    #[arg(long, value_name = "FILE", requires = "secure", requires = "keyfile")]
    pub(crate) certfile: Option<PathBuf>,
    /// PEM file of the client certificate's private key (--tls, --quic; with --certfile).
    #[arg(long, value_name = "FILE", requires = "secure", requires = "certfile")]
    pub(crate) keyfile: Option<PathBuf>,
    /// Do not verify the broker's certificate (--tls, --quic): any certificate, for any name,
    /// is accepted.
    #[arg(long, requires = "secure", conflicts_with = "cacertfile")]
    pub(crate) insecure: bool,
    /// Connect over WebSocket (subprotocol mqtt; -V 3 also offers mqttv3.1). With --tls: WSS.
    #[arg(long)]
    pub(crate) ws: bool,
    /// Path of the broker's WebSocket endpoint (--ws) [default: /mqtt].
    #[arg(long, value_name = "PATH", requires = "ws")]
    pub(crate) ws_path: Option<String>,
    /// Connect over QUIC (UDP, TLS 1.3, ALPN mqtt; the server name verified is the -h host)
    /// in single-stream mode: every MQTT packet on one bidirectional stream. --cacertfile,
    /// --insecure, --certfile and --keyfile as for --tls.
    #[arg(long, conflicts_with_all = ["tls", "ws"])]
    pub(crate) quic: bool,
    /// QUIC multi-stream mode (EMQX's): CONNECT, PINGREQ and DISCONNECT on the first stream
    /// (the control stream); each client's SUBSCRIBE and PUBLISHes, and the acks of what it
    /// receives there, on a second bidirectional stream (its data stream), opened right after
    /// CONNECT.
    // `requires` alone would let `--tls`/`--ws` through: clap waives a requirement that
    // conflicts with an argument present (`--quic` conflicts with both).
    #[arg(long, requires = "quic", conflicts_with_all = ["tls", "ws"])]
    pub(crate) quic_multi_stream: bool,
}

/// `perf conn`.
#[derive(Debug, Args)]
pub(crate) struct ConnArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Number of clients.
    #[arg(short = 'c', long, default_value_t = 200)]
    pub(crate) count: usize,
}

/// `perf sub`.
#[derive(Debug, Args)]
pub(crate) struct SubArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Number of clients.
    #[arg(short = 'c', long, default_value_t = 200)]
    pub(crate) count: usize,
    /// Topic filter; %i (client sequence), %c (client id), %u (user name) and %rand_N (a
    /// random number in 1..=N, drawn once per client) are substituted.
    #[arg(short = 't', long)]
    pub(crate) topic: String,
    /// Subscription QoS.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub(crate) qos: u8,
    #[command(flatten)]
    pub(crate) warmup: WarmupOpts,
}

/// The warm-up of `perf sub`, `perf pub` and `perf bench`.
#[derive(Debug, Args)]
pub(crate) struct WarmupOpts {
    /// Warm-up before the measured phase (same syntax as --duration; 0: none). Messages whose
    /// intended send time falls in it are published, received and checked for loss, duplicates
    /// and order, but not timed and not counted in the measured counts and rates;
    /// --duration starts after it.
    #[arg(long, value_parser = parse_duration, default_value = "0")]
    pub(crate) warmup: Duration,
}

/// What `perf pub` and `perf bench` publish.
#[derive(Debug, Args)]
pub(crate) struct PublishOpts {
    /// QoS of the messages (and of the subscriptions in `perf bench`).
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub(crate) qos: u8,
    /// Payload size in bytes (at least 32: the measurement header).
    #[arg(short = 's', long, default_value_t = 256)]
    pub(crate) size: usize,
    /// Most messages each publisher sends, warm-up included (0: no limit).
    #[arg(short = 'L', long, default_value_t = 0)]
    pub(crate) limit: u64,
    /// Total messages per second over all publishers, each at an equal fixed rate; overrides
    /// -I.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Most unacknowledged QoS 1/2 messages per publisher (0: the broker's Receive Maximum).
    #[arg(short = 'F', long, default_value_t = 32)]
    pub(crate) inflight: u16,
    /// Set the RETAIN flag.
    #[arg(short = 'r', long)]
    pub(crate) retain: bool,
    /// Clock of the payload timestamps: monotonic (this host only) or realtime (needs
    /// synchronised clocks across hosts).
    #[arg(long, value_enum, default_value_t = ClockArg::Monotonic)]
    pub(crate) clock: ClockArg,
}

/// `perf pub`.
#[derive(Debug, Args)]
pub(crate) struct PubArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Number of clients.
    #[arg(short = 'c', long, default_value_t = 200)]
    pub(crate) count: usize,
    /// Topic; %i, %c, %u and %rand_N are substituted as for `perf sub`.
    #[arg(short = 't', long)]
    pub(crate) topic: String,
    /// Milliseconds between two messages of one publisher, at a fixed rate (0: as fast as the
    /// connection takes them).
    #[arg(short = 'I', long = "interval_of_msg", default_value_t = 1000)]
    pub(crate) interval_of_msg: u64,
    #[command(flatten)]
    pub(crate) publish: PublishOpts,
    #[command(flatten)]
    pub(crate) warmup: WarmupOpts,
}

/// `perf bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Number of publishers.
    #[arg(long, default_value_t = 1)]
    pub(crate) pubs: usize,
    /// Number of subscribers.
    #[arg(long, default_value_t = 1)]
    pub(crate) subs: usize,
    /// Topic of the publishers; %i is the publisher's sequence.
    #[arg(short = 't', long, default_value = "perf/bench/%i")]
    pub(crate) topic: String,
    /// Topic filter of the subscribers; %i is the subscriber's sequence.
    #[arg(long, default_value = "perf/bench/#")]
    pub(crate) sub_topic: String,
    /// Milliseconds between two messages of one publisher, at a fixed rate (0: as fast as the
    /// connection takes them; the default of `perf bench`).
    #[arg(short = 'I', long = "interval_of_msg", default_value_t = 0)]
    pub(crate) interval_of_msg: u64,
    /// Milliseconds to wait, once publishing stops, for messages still on their way.
    #[arg(long, default_value_t = 2000)]
    pub(crate) drain: u64,
    #[command(flatten)]
    pub(crate) publish: PublishOpts,
    #[command(flatten)]
    pub(crate) warmup: WarmupOpts,
}

/// `--driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Driver {
    /// io_uring where the kernel allows it, epoll otherwise.
    Auto,
    /// io_uring only.
    IoUring,
    /// epoll only.
    Epoll,
}

/// `--clock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ClockArg {
    /// CLOCK_MONOTONIC: comparable between processes of one host.
    Monotonic,
    /// CLOCK_REALTIME: comparable between hosts whose clocks are synchronised.
    Realtime,
}

/// Parses `10`, `10s`, `1.5s`, `500ms`, `2m`, `1h`; a bare number is seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}` (ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("`{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10y").is_err());
    }

    #[test]
    fn short_h_is_host_and_short_v_is_protocol() {
        let cli = Cli::try_parse_from(["perf", "conn", "-h", "a,b", "-V", "4", "-c", "3"]).unwrap();
        let Command::Conn(c) = cli.command else {
            panic!("not conn")
        };
        assert_eq!(c.common.host, ["a", "b"]);
        assert_eq!(c.common.protocol, 4);
        assert_eq!(c.count, 3);
        let help = Cli::try_parse_from(["perf", "pub", "--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
    }

    #[test]
    fn clean_takes_a_value() {
        let cli = Cli::try_parse_from(["perf", "sub", "-t", "x", "-C", "false"]).unwrap();
        let Command::Sub(s) = cli.command else {
            panic!("not sub")
        };
        assert!(!s.common.clean);
    }

    #[test]
    fn transport_flags() {
        let cli = Cli::try_parse_from([
            "perf",
            "conn",
            "--ssl",
            "--cacertfile",
            "ca.pem",
            "--certfile",
            "c.pem",
            "--keyfile",
            "k.pem",
            "--ws",
            "--ws-path",
            "/x",
        ])
        .unwrap();
        let Command::Conn(c) = cli.command else {
            panic!("not conn")
        };
        assert!(c.common.tls && c.common.ws);
        assert_eq!(c.common.cacertfile, Some(PathBuf::from("ca.pem")));
        assert_eq!(c.common.ws_path.as_deref(), Some("/x"));
        for bad in [
            &["--cacertfile", "ca.pem"][..],
            &["--insecure"],
            &["--tls", "--certfile", "c.pem"],
            &["--tls", "--keyfile", "k.pem"],
            &["--tls", "--insecure", "--cacertfile", "ca.pem"],
            &["--ws-path", "/x"],
            &["--quic", "--tls"],
            &["--quic", "--ws"],
            &["--quic-multi-stream"],
            &["--tls", "--quic-multi-stream"],
            &["--ws", "--quic-multi-stream"],
        ] {
            let mut argv = vec!["perf", "conn"];
            argv.extend_from_slice(bad);
            let e = Cli::try_parse_from(argv).unwrap_err();
            assert_ne!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{bad:?}");
        }
    }

    #[test]
    fn quic_takes_the_certificate_options() {
        for extra in [&["--insecure"][..], &["--cacertfile", "ca.pem"]] {
            let mut argv = vec!["perf", "conn", "--quic"];
            argv.extend_from_slice(extra);
            let cli = Cli::try_parse_from(argv).unwrap();
            let Command::Conn(c) = cli.command else {
                panic!("not conn")
            };
            assert!(c.common.quic && !c.common.tls && !c.common.quic_multi_stream);
        }
    }

    #[test]
    fn warmup_defaults_to_none_and_conn_has_none() {
        let cli = Cli::try_parse_from(["perf", "bench", "--warmup", "2s"]).unwrap();
        let Command::Bench(b) = cli.command else {
            panic!("not bench")
        };
        assert_eq!(b.warmup.warmup, Duration::from_secs(2));
        let cli = Cli::try_parse_from(["perf", "pub", "-t", "x"]).unwrap();
        let Command::Pub(p) = cli.command else {
            panic!("not pub")
        };
        assert_eq!(p.warmup.warmup, Duration::ZERO);
        let cli = Cli::try_parse_from(["perf", "sub", "-t", "x", "--warmup", "500ms"]).unwrap();
        let Command::Sub(s) = cli.command else {
            panic!("not sub")
        };
        assert_eq!(s.warmup.warmup, Duration::from_millis(500));
        assert!(Cli::try_parse_from(["perf", "conn", "--warmup", "1s"]).is_err());
    }
}
