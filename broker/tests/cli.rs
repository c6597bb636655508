//! The real `broker` binary: command line, exit statuses and messages.

// Test helpers outside `#[test]` functions panic on setup failures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The binary, with no `BROKER_*` variables inherited from the test's environment.
fn broker(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_broker"));
    command.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BROKER_") {
            command.env_remove(name);
        }
    }
    command
}

fn run(command: &mut Command) -> (Output, String, String) {
    let output = command.output().expect("the broker binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// A file in this test binary's scratch directory.
fn scratch_file(name: &str, contents: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("broker-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn version() {
    let (out, stdout, _) = run(&mut broker(&["--version"]));
    assert!(out.status.success());
    assert_eq!(stdout, format!("broker {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn run_help_documents_every_option_with_its_default() {
    let (out, stdout, _) = run(&mut broker(&["run", "--help"]));
    assert!(out.status.success());
    for needle in [
        "--cores <N>",
        "[default: ",
        "--config <FILE>",
        "[default: none, built-in defaults only]",
        "--set <KEY=VALUE>",
        "[default: none]",
        "BROKER_MQTT__MAX_INFLIGHT",
        "broker config keys",
    ] {
        assert!(
            stdout.contains(needle),
            "`run --help` lacks {needle:?}:\n{stdout}"
        );
    }
}

#[test]
fn zero_cores_is_an_error() {
    let (out, _, stderr) = run(&mut broker(&["run", "--cores", "0"]));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value '0' for '--cores <N>': must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn more_cores_than_cpus_is_an_error() {
    let (out, _, stderr) = run(&mut broker(&["run", "--cores", "10000"]));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value '10000' for '--cores <N>'"),
        "{stderr}"
    );
    assert!(stderr.contains("CPU"), "{stderr}");
    assert!(stderr.contains("so at most"), "{stderr}");
}

#[test]
fn config_check_names_the_file_and_line_of_an_unknown_key() {
    let path = scratch_file(
        "unknown.toml",
        "[mqtt]\nmax_inflight = 64\n\nmax_infligt = 3\n",
    );
    let (out, stdout, stderr) = run(&mut broker(&[
        "config",
        "check",
        "--config",
        path.to_str().unwrap(),
    ]));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr,
        format!(
            "error: {}:4: unknown key \"mqtt.max_infligt\" (did you mean \"mqtt.max_inflight\"?)\n",
            path.display()
        )
    );
}

#[test]
fn config_check_prints_the_effective_configuration() {
    let path = scratch_file(
        "good.toml",
        "mqtt.max_inflight = 10\nmqtt.max_mqueue_len = 10\n",
    );
    let (out, stdout, stderr) = run(broker(&[
        "config",
        "check",
        "-c",
        path.to_str().unwrap(),
        "--set",
        "mqtt.max_mqueue_len=30",
    ])
    .env("BROKER_LISTENERS__TCP__DEFAULT__BIND", "127.0.0.1:0")
    .env("BROKER_MQTT__MAX_MQUEUE_LEN", "20"));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("[listeners.tcp.default]\nbind = \"127.0.0.1:0\"  # env "),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("max_inflight = 10  # {}:1\n", path.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("max_mqueue_len = 30  # --set mqtt.max_mqueue_len=30\n"),
        "{stdout}"
    );
    assert!(stdout.contains("retry_interval = \"30s\"\n"), "{stdout}");

    // The output is itself a valid configuration file.
    let again = scratch_file("again.toml", &stdout);
    let (out, stdout_again, stderr) = run(&mut broker(&[
        "config",
        "check",
        "-c",
        again.to_str().unwrap(),
    ]));
    assert!(out.status.success(), "{stderr}");
    let strip = |s: &str| {
        s.lines()
            .map(|l| l.split("  #").next().unwrap_or(l).to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&stdout_again), strip(&stdout));
}

#[test]
fn config_errors_from_env_and_set_name_their_source() {
    let (out, _, stderr) = run(&mut broker(&["run", "--set", "mqtt.max_inflight=0"]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr,
        "error: --set mqtt.max_inflight=0: mqtt.max_inflight: \
         expected an integer from 1 to 65535, got \"0\"\n"
    );
    let (out, _, stderr) =
        run(broker(&["config", "check"]).env("BROKER_MQTT__MAX_INFLIGHT", "lots"));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr,
        "error: env BROKER_MQTT__MAX_INFLIGHT: mqtt.max_inflight: \
         expected an integer from 1 to 65535, got \"lots\"\n"
    );
    let (out, _, stderr) = run(&mut broker(&[
        "config",
        "check",
        "--set",
        "mqtt.max_inflight",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr,
        "error: --set mqtt.max_inflight: expected KEY=VALUE, such as --set mqtt.max_inflight=64\n"
    );
}

#[test]
fn config_keys_lists_every_key() {
    let (out, stdout, _) = run(&mut broker(&["config", "keys"]));
    assert!(out.status.success());
    let line = stdout
        .lines()
        .find(|l| l.starts_with("mqtt.max_inflight "))
        .unwrap_or_default();
    assert!(
        line.contains("integer 1..=65535") && line.contains(" 32 "),
        "{stdout}"
    );
    for key in [
        "listeners.tcp.default.bind",
        "node.driver",
        "log.level",
        "shard.ring_capacity",
    ] {
        assert!(stdout.contains(key), "{key}: {stdout}");
    }
}
