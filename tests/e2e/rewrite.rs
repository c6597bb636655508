//! Topic rewrite and auto-subscribe through the real broker, with the rules given as list
//! values on the command line: mosquitto_pub's topics and mosquitto_sub's filters are
//! rewritten (MQTT 3.1.1 and 5), and a mosquitto_sub that never subscribed to `cmd/{clientid}`
//! or `user/{username}` receives what is published there.

use std::time::Duration;

use crate::harness::{Broker, Proc, mosquitto, unique};

const TIMEOUT: Duration = Duration::from_secs(15);

const RULES: &str = r#"rewrite=[
  { action = "publish", source_topic = "dev/#", re = '^dev/(\w+)/(\w+)$', dest_topic = "site/$2/$1" },
  { action = "subscribe", source_topic = "legacy/#", re = '^legacy/(.+)$', dest_topic = "site/$1" },
]"#;

fn sub(broker: &Broker, version: &str, id: &str, extra: &[&str]) -> Proc {
    let mut cmd = mosquitto("mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-V", version])
        .args(["-v", "-d", "-q", "1", "-i", id, "-W", "10"])
        .args(extra);
    Proc::spawn("mosquitto_sub", cmd).unwrap()
}

fn publish(broker: &Broker, topic: &str, message: &str, extra: &[&str]) {
    let mut cmd = mosquitto("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &broker.port(), "-q", "1"])
        .args(["-i", &unique("rpub"), "-t", topic, "-m", message])
        .args(extra);
    let done = Proc::spawn("mosquitto_pub", cmd).unwrap().finish(TIMEOUT);
    assert!(done.status.success(), "mosquitto_pub: {}", done.stderr);
}

fn messages(done: &crate::harness::Finished) -> Vec<&str> {
    done.stdout
        .iter()
        .map(String::as_str)
        .filter(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed "))
        .collect()
}

#[test]
fn published_topics_and_subscribed_filters_are_rewritten() {
    let broker = Broker::start_with(&[RULES]);
    for version in ["mqttv311", "mqttv5"] {
        let mut s = sub(
            &broker,
            version,
            &unique("rsub"),
            &["-t", "legacy/#", "-C", "2"],
        );
        s.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
        // dev/a/temp → site/temp/a, which the rewritten subscription (site/#) matches.
        publish(&broker, "dev/a/temp", "21.5", &[]);
        // Not rewritten (the expression wants exactly two levels): matches nothing.
        publish(&broker, "dev/a/b/c", "no", &[]);
        publish(&broker, "site/x", "direct", &["-V", "mqttv5"]);
        let done = s.finish(TIMEOUT);
        assert!(done.status.success(), "{version}: {}", done.stderr);
        assert_eq!(
            messages(&done),
            ["site/temp/a 21.5", "site/x direct"],
            "{version}"
        );
    }
}

#[test]
fn auto_subscribe_serves_clients_that_never_subscribed() {
    let broker = Broker::start_with(&[
        r#"auto_subscribe.topics=[{ topic = "cmd/${clientid}", qos = 1 }, { topic = "user/${username}", qos = 1 }]"#,
    ]);
    for version in ["mqttv311", "mqttv5"] {
        let id = unique("dev");
        let mut s = sub(
            &broker,
            version,
            &id,
            &["-u", "alice", "-t", "unrelated", "-C", "2"],
        );
        s.wait_line(TIMEOUT, "SUBACK", |l| l.contains("received SUBACK"));
        publish(&broker, &format!("cmd/{id}"), "reboot", &[]);
        publish(&broker, "cmd/someone-else", "not yours", &[]);
        publish(&broker, "user/alice", "hello", &[]);
        let done = s.finish(TIMEOUT);
        assert!(done.status.success(), "{version}: {}", done.stderr);
        assert_eq!(
            messages(&done),
            [format!("cmd/{id} reboot").as_str(), "user/alice hello"],
            "{version}"
        );
        assert_eq!(
            done.stdout
                .iter()
                .filter(|l| l.contains("received SUBACK"))
                .count(),
            1,
            "{version}: only the client's own SUBSCRIBE is acknowledged"
        );
    }
}
