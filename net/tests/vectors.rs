#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Interoperability vectors for the MQTT codec (`net::mqtt`).
//!
//! Two independent sources of bytes:
//!
//! * **mqtt-packet 9.0.2** (the codec of MQTT.js), wrapped by `tools/vectors`. At test time
//!   `node tools/vectors/gen.js tools/vectors/cases.json` turns the JSON cases into bytes, and
//!   `node tools/vectors/parse.js` parses bytes back into JSON. Every case is decoded with our
//!   [`Decoder`], re-encoded with [`Packet::encode`] and compared byte for byte; our encodings
//!   are parsed by mqtt-packet and compared with its parse of its own bytes; our decoded fields
//!   are compared with mqtt-packet's parse and with the case JSON. The few encodings that
//!   legitimately differ are listed in [`KnownDifference`], matched by a precise condition.
//! * **The specifications' own byte examples** (MQTT 3.1.1 OASIS Standard, MQTT 5.0 OASIS
//!   Standard), written out below with the section and figure they come from, checked in both
//!   directions.
//!
//! Node.js and `tools/vectors/node_modules` are required: without them the tests fail (they
//! never skip) and say to run `npm ci` in `tools/vectors`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use net::mqtt::{
    Ack, AckProperties, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    Decoder, Delivery, Disconnect, DisconnectProperties, EncodeError, Error, LastWill,
    MAX_PACKET_SIZE, MAX_REMAINING_LENGTH, Malformed, MqttStr, Packet, PacketType, ProtocolError,
    ProtocolVersion, Publish, PublishEncoder, PublishProperties, QoS, ReasonCode, RetainHandling,
    Role, SubAck, Subscribe, SubscribeProperties, Subscription, SubscriptionOptions, UnsubAck,
    Unsubscribe, UnsubscribeProperties, UserProperty, WillProperties,
};
use serde_json::{Map, Value, json};

const NPM_HINT: &str = "run `npm ci` in tools/vectors (needs Node.js >= 18; tools/test.sh does it)";

// ------------------------------------------------------------------------------------------
// Running the reference codec
// ------------------------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("net/ lives in the workspace root")
        .to_path_buf()
}

/// Fails (never skips) when Node.js or the npm packages are missing.
fn require_node() {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`node --version` failed ({}): install Node.js >= 18, then {NPM_HINT}",
            out.status
        ),
        Err(e) => panic!("cannot run `node` ({e}): install Node.js >= 18, then {NPM_HINT}"),
    }
    let package = workspace_root().join("tools/vectors/node_modules/mqtt-packet/package.json");
    assert!(
        package.is_file(),
        "{} is missing: {NPM_HINT}",
        package.display()
    );
}

/// Runs `node <args>` in the workspace root, optionally feeding `stdin`, and parses its JSON
/// output.
fn node(args: &[&str], stdin: Option<String>) -> Value {
    require_node();
    let mut child = Command::new("node")
        .current_dir(workspace_root())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node {args:?}: {e}; {NPM_HINT}"));
    // Write from another thread so that a large output cannot dead-lock against the input.
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        std::thread::spawn(move || pipe.write_all(input.as_bytes()))
    });
    let out = child.wait_with_output().expect("node runs to completion");
    if let Some(w) = writer {
        w.join()
            .expect("stdin writer thread")
            .expect("node reads its stdin");
    }
    assert!(
        out.status.success(),
        "node {args:?} failed ({}):\n{}\n{NPM_HINT}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("node {args:?} printed invalid JSON: {e}"))
}

/// Parses each `(name, version, bytes)` with mqtt-packet (one `parse.js` run for all of them).
/// Returns the parsed packet objects, in order; a parse error fails the test.
fn parse_with_mqtt_packet(items: &[(String, ProtocolVersion, Vec<u8>)]) -> Vec<Value> {
    let input: Vec<Value> = items
        .iter()
        .map(|(name, v, b)| json!({"name": name, "version": v.level(), "hex": hex(b)}))
        .collect();
    let out = node(
        &["tools/vectors/parse.js"],
        Some(serde_json::to_string(&input).unwrap()),
    );
    let out = out.as_array().expect("parse.js prints an array");
    assert_eq!(out.len(), items.len(), "parse.js output length");
    out.iter()
        .zip(items)
        .map(|(o, (name, _, b))| {
            assert_eq!(o["name"].as_str(), Some(name.as_str()), "parse.js order");
            assert!(
                o.get("error").is_none(),
                "{name}: mqtt-packet cannot parse {}: {}",
                hex(b),
                o["error"]
            );
            o["packet"].clone()
        })
        .collect()
}

/// One case of `tools/vectors/cases.json`, encoded and parsed by mqtt-packet.
struct Vector {
    name: String,
    version: ProtocolVersion,
    /// The `packet` object of the case, as written in cases.json.
    case: Value,
    /// mqtt-packet's encoding.
    theirs: Vec<u8>,
    /// mqtt-packet's parse of its own encoding (with `length`).
    parsed: Value,
}

impl Vector {
    fn cmd(&self) -> &str {
        self.case["cmd"].as_str().expect("every case has a cmd")
    }
}

/// All cases, generated once per test binary.
fn vectors() -> &'static [Vector] {
    static VECTORS: OnceLock<Vec<Vector>> = OnceLock::new();
    VECTORS.get_or_init(load_vectors)
}

/// The case files: mqtt-packet's suite (tools/vectors) and our extra edge cases.
const CASE_FILES: [&str; 2] = [
    "tools/vectors/cases.json",
    "net/tests/data/extra_cases.json",
];

fn load_vectors() -> Vec<Vector> {
    let mut cases = Vec::new();
    let mut items = Vec::new();
    for file in CASE_FILES {
        let path = workspace_root().join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json: Value = serde_json::from_str(&text).expect("case file is JSON");
        let file_cases = json.as_array().expect("case file is an array").clone();
        let generated = node(&["tools/vectors/gen.js", file], None);
        let generated = generated.as_array().expect("gen.js prints an array");
        assert_eq!(generated.len(), file_cases.len(), "gen.js output length");
        for (c, g) in file_cases.iter().zip(generated) {
            let name = c["name"].as_str().expect("every case has a name");
            assert_eq!(g["name"].as_str(), Some(name), "gen.js order");
            assert!(
                g.get("error").is_none(),
                "{name}: gen.js error: {}",
                g["error"]
            );
            let level = g["version"].as_u64().expect("gen.js prints the version");
            let version = u8::try_from(level)
                .ok()
                .and_then(ProtocolVersion::from_level)
                .unwrap_or_else(|| panic!("{name}: unknown version {level}"));
            let hex_str = g["hex"].as_str().expect("gen.js prints hex");
            items.push((name.to_owned(), version, unhex(hex_str)));
        }
        cases.extend(file_cases);
    }
    let parsed = parse_with_mqtt_packet(&items);
    cases
        .iter()
        .zip(items)
        .zip(parsed)
        .map(|((c, (name, version, theirs)), parsed)| Vector {
            name,
            version,
            case: c["packet"].clone(),
            theirs,
            parsed,
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Binary data as parse.js prints it.
fn bin_json(b: &[u8]) -> Value {
    json!({ "hex": hex(b) })
}

/// A binary field of a case: a plain string (UTF-8) or `{"hex": ...}`; absent is empty.
fn case_bin(v: &Value) -> Vec<u8> {
    match v {
        Value::Null => Vec::new(),
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Object(o) => unhex(o["hex"].as_str().expect("{hex} object")),
        other => panic!("not binary data: {other}"),
    }
}

fn encode(p: &Packet, v: ProtocolVersion) -> Result<Vec<u8>, EncodeError> {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf)?;
    Ok(buf.to_vec())
}

fn v5(v: ProtocolVersion) -> bool {
    v == ProtocolVersion::V5
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

macro_rules! ensure_eq {
    ($ours:expr, $expected:expr, $($what:tt)+) => {{
        let (ours, expected) = (&$ours, &$expected);
        if ours != expected {
            return Err(format!(
                "{}: ours {:?}, expected {:?}",
                format!($($what)+),
                ours,
                expected
            ));
        }
    }};
}

// ------------------------------------------------------------------------------------------
// Decoding
// ------------------------------------------------------------------------------------------

/// Who may send a packet, where its content restricts the direction beyond its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// Either end (or the packet type alone decides).
    Any,
    /// Only a server: a PUBLISH carrying Subscription Identifiers ([MQTT-3.3.4-6]).
    Server,
    /// Only a client: a DISCONNECT carrying Session Expiry Interval ([MQTT-3.14.2-2]).
    Client,
}

impl Sender {
    fn of_case(case: &Value) -> Self {
        let props = &case["properties"];
        match case["cmd"].as_str() {
            Some("publish") if !props["subscriptionIdentifier"].is_null() => Sender::Server,
            Some("disconnect") if !props["sessionExpiryInterval"].is_null() => Sender::Client,
            _ => Sender::Any,
        }
    }

    fn of_packet(p: &Packet) -> Self {
        match p {
            Packet::Publish(p) if !p.properties.subscription_identifiers.is_empty() => {
                Sender::Server
            }
            Packet::Disconnect(d) if d.properties.session_expiry_interval.is_some() => {
                Sender::Client
            }
            _ => Sender::Any,
        }
    }
}

/// The decoders that may receive a packet of this type: the receiving end by direction
/// (CONNECT: a server's first packet, CONNACK: a client's first packet, the rest resumed), and
/// both ends for the packets that flow both ways unless `sender` restricts it.
fn decoders_for(
    ptype: PacketType,
    v: ProtocolVersion,
    sender: Sender,
) -> Vec<(&'static str, Decoder)> {
    let server = || ("server", Decoder::resume(Role::Server, v, MAX_PACKET_SIZE));
    let client = || ("client", Decoder::resume(Role::Client, v, MAX_PACKET_SIZE));
    use PacketType as T;
    match ptype {
        T::Connect => vec![("server before CONNECT", Decoder::server(MAX_PACKET_SIZE))],
        T::ConnAck => vec![("client before CONNACK", Decoder::client(v, MAX_PACKET_SIZE))],
        T::Publish | T::PubAck | T::PubRec | T::PubRel | T::PubComp | T::Auth => match sender {
            Sender::Any => vec![server(), client()],
            Sender::Server => vec![client()],
            Sender::Client => vec![server()],
        },
        T::Disconnect if v5(v) => match sender {
            Sender::Any => vec![server(), client()],
            Sender::Server => vec![client()],
            Sender::Client => vec![server()],
        },
        T::Disconnect | T::Subscribe | T::Unsubscribe | T::PingReq => vec![server()],
        T::SubAck | T::UnsubAck | T::PingResp => vec![client()],
    }
}

fn packet_type_of_cmd(cmd: &str) -> PacketType {
    use PacketType as T;
    match cmd {
        "connect" => T::Connect,
        "connack" => T::ConnAck,
        "publish" => T::Publish,
        "puback" => T::PubAck,
        "pubrec" => T::PubRec,
        "pubrel" => T::PubRel,
        "pubcomp" => T::PubComp,
        "subscribe" => T::Subscribe,
        "suback" => T::SubAck,
        "unsubscribe" => T::Unsubscribe,
        "unsuback" => T::UnsubAck,
        "pingreq" => T::PingReq,
        "pingresp" => T::PingResp,
        "disconnect" => T::Disconnect,
        "auth" => T::Auth,
        other => panic!("unknown cmd {other}"),
    }
}

fn cmd_of(t: PacketType) -> &'static str {
    use PacketType as T;
    match t {
        T::Connect => "connect",
        T::ConnAck => "connack",
        T::Publish => "publish",
        T::PubAck => "puback",
        T::PubRec => "pubrec",
        T::PubRel => "pubrel",
        T::PubComp => "pubcomp",
        T::Subscribe => "subscribe",
        T::SubAck => "suback",
        T::Unsubscribe => "unsubscribe",
        T::UnsubAck => "unsuback",
        T::PingReq => "pingreq",
        T::PingResp => "pingresp",
        T::Disconnect => "disconnect",
        T::Auth => "auth",
    }
}

/// Decodes `bytes`, which must be exactly one whole packet.
fn decode_one(dec: &mut Decoder, bytes: &[u8]) -> Result<Packet, String> {
    let mut buf = BytesMut::from(bytes);
    let packet = dec
        .decode(&mut buf)
        .map_err(|e| format!("decode error: {e}"))?
        .ok_or_else(|| format!("incomplete: the decoder needs {} more bytes", dec.needed()))?;
    ensure!(buf.is_empty(), "{} bytes left after the packet", buf.len());
    match dec.decode(&mut buf) {
        Ok(None) => Ok(packet),
        other => Err(format!("a second decode on an empty buffer gave {other:?}")),
    }
}

/// Length of the fixed header of a whole packet.
fn fixed_header_len(bytes: &[u8]) -> usize {
    1 + bytes[1..].iter().take_while(|b| *b & 0x80 != 0).count() + 1
}

/// Feeds `bytes` one at a time: no packet before the last byte, and, once the fixed header is
/// complete, `needed()` is exactly what is missing.
fn decode_bytewise(mut dec: Decoder, bytes: &[u8]) -> Result<Packet, String> {
    let header = fixed_header_len(bytes);
    let mut buf = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let fed = i + 1;
        match dec.decode(&mut buf) {
            Ok(None) if fed < bytes.len() => {
                if fed >= header {
                    ensure_eq!(
                        dec.needed(),
                        bytes.len() - fed,
                        "needed() after {fed} bytes"
                    );
                }
            }
            Ok(Some(p)) if fed == bytes.len() => {
                ensure!(buf.is_empty(), "bytes left after a byte-wise decode");
                return Ok(p);
            }
            other => {
                return Err(format!(
                    "byte-wise decode after {fed} of {} bytes: {other:?}",
                    bytes.len()
                ));
            }
        }
    }
    Err("empty input".into())
}

/// Decodes a whole packet with every decoder that may receive it (all must agree, in one
/// piece and byte by byte) and returns the packet.
fn decode_everywhere(
    bytes: &[u8],
    ptype: PacketType,
    v: ProtocolVersion,
    sender: Sender,
) -> Result<Packet, String> {
    let mut result: Option<Packet> = None;
    for (role, dec) in decoders_for(ptype, v, sender) {
        let mut whole = dec.clone();
        let p = decode_one(&mut whole, bytes).map_err(|e| format!("{role} decoder: {e}"))?;
        ensure_eq!(p.packet_type(), ptype, "{role} decoder: packet type");
        if ptype == PacketType::Connect {
            ensure_eq!(whole.version(), Some(v), "decoder version after CONNECT");
        }
        let bytewise = decode_bytewise(dec, bytes).map_err(|e| format!("{role} decoder: {e}"))?;
        ensure_eq!(bytewise, p, "{role} decoder: byte-wise vs whole");
        if let Some(first) = &result {
            ensure_eq!(p, *first, "{role} decoder vs the other role");
        }
        result = Some(p);
    }
    result.ok_or_else(|| "no decoder".into())
}

/// Our decoding and our re-encoding of a vector.
fn ours(v: &Vector) -> Result<(Packet, Vec<u8>), String> {
    let ptype = packet_type_of_cmd(v.cmd());
    let packet = decode_everywhere(&v.theirs, ptype, v.version, Sender::of_case(&v.case))?;
    let bytes = encode(&packet, v.version).map_err(|e| format!("encode error: {e}"))?;
    let len = packet.encoded_len(v.version).map_err(|e| e.to_string())?;
    ensure_eq!(len, bytes.len(), "encoded_len()");
    Ok((packet, bytes))
}

// ------------------------------------------------------------------------------------------
// The legitimate differences
// ------------------------------------------------------------------------------------------

/// Where our encoder and mqtt-packet 9.0.2 legitimately write different bytes for the same
/// packet: both forms are valid and both codecs read both (see tools/vectors/README.md (a) and
/// (b)). We write the shortest form the specification allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KnownDifference {
    /// MQTT 5 DISCONNECT with reason 0 and no properties. §3.14.2.1: "The Reason Code and
    /// Property Length can be omitted if the Reason Code is 0x00 (Normal disconnection) and
    /// there are no Properties". We write `e0 00`; mqtt-packet always writes `e0 02 00 00`.
    DisconnectWithoutProperties,
    /// MQTT 3.1 CONNACK whose first variable header byte has bit 0 set. MQTT 3.1 has no
    /// Session Present flag: the byte is "Reserved values. Not used." (3.1 CONNACK variable
    /// header). mqtt-packet writes its `sessionPresent` there anyway (and reads it back); we
    /// write 0, and a 3.1 decoder must leave Session Present empty ("fields [...] that a
    /// version does not have are left empty when decoding it", net::mqtt docs).
    Mqtt31ConnAckReservedByte,
}

impl KnownDifference {
    /// The precise condition: on the decoded packet, or for MQTT 3.1 CONNACK on mqtt-packet's
    /// reserved byte.
    fn of(v: ProtocolVersion, p: &Packet, theirs: &[u8]) -> Option<Self> {
        if v == ProtocolVersion::V3_1 {
            return match (p, theirs) {
                (Packet::ConnAck(_), [0x20, 0x02, flags, _]) if flags & 0x01 != 0 => {
                    Some(Self::Mqtt31ConnAckReservedByte)
                }
                _ => None,
            };
        }
        if !v5(v) {
            return None;
        }
        match p {
            Packet::Disconnect(d)
                if d.properties.is_empty() && d.reason_code == ReasonCode::NORMAL_DISCONNECTION =>
            {
                Some(Self::DisconnectWithoutProperties)
            }
            _ => None,
        }
    }

    /// Our bytes, derived from mqtt-packet's: exactly the missing property length.
    fn our_form(self, theirs: &[u8]) -> Result<Vec<u8>, String> {
        match (self, theirs) {
            (Self::DisconnectWithoutProperties, &[0xE0, 2, 0, 0]) => Ok(vec![0xE0, 0]),
            (Self::Mqtt31ConnAckReservedByte, &[0x20, 2, 0x01, rc]) => Ok(vec![0x20, 2, 0, rc]),
            _ => Err(format!(
                "{self:?} does not explain mqtt-packet's {}",
                hex(theirs)
            )),
        }
    }

    /// The fields of parse.js's output that may differ between its parse of our bytes and of
    /// its own: the remaining length, or the 3.1 reserved byte it reads as `sessionPresent`.
    fn json_keys(self) -> &'static [&'static str] {
        match self {
            Self::DisconnectWithoutProperties => &["length"],
            Self::Mqtt31ConnAckReservedByte => &["sessionPresent"],
        }
    }
}

fn without_keys(mut v: Value, keys: &[&str]) -> Value {
    if let Value::Object(o) = &mut v {
        for k in keys {
            o.remove(*k);
        }
    }
    v
}

// ------------------------------------------------------------------------------------------
// Packets as parse.js prints them
// ------------------------------------------------------------------------------------------

fn put(o: &mut Map<String, Value>, k: &str, v: impl Into<Value>) {
    o.insert(k.to_owned(), v.into());
}

/// A property object as mqtt-packet's parser builds it.
#[derive(Default)]
struct Props(Map<String, Value>);

impl Props {
    fn int(&mut self, k: &str, v: Option<impl Into<Value>>) {
        if let Some(v) = v {
            put(&mut self.0, k, v);
        }
    }
    fn str(&mut self, k: &str, v: &Option<MqttStr>) {
        self.int(k, v.as_ref().map(|s| s.as_str().to_owned()));
    }
    fn bin(&mut self, k: &str, v: &Option<Bytes>) {
        self.int(k, v.as_ref().map(|b| bin_json(b)));
    }
    /// A name seen once is a string, a repeated name an array of its values in order.
    fn users(&mut self, v: &[UserProperty]) {
        if v.is_empty() {
            return;
        }
        let mut m = Map::new();
        for (k, val) in v {
            let val = Value::from(val.as_str());
            match m.get_mut(k.as_str()) {
                None => {
                    m.insert(k.as_str().to_owned(), val);
                }
                Some(Value::Array(a)) => a.push(val),
                Some(first) => *first = Value::Array(vec![first.take(), val]),
            }
        }
        put(&mut self.0, "userProperties", m);
    }
    /// A property repeated on the wire is an array (Subscription Identifiers of PUBLISH).
    fn repeated(&mut self, k: &str, v: &[u32]) {
        match v {
            [] => {}
            [one] => put(&mut self.0, k, *one),
            many => put(&mut self.0, k, many.to_vec()),
        }
    }
    fn put_into(self, o: &mut Map<String, Value>) {
        if !self.0.is_empty() {
            put(o, "properties", self.0);
        }
    }
}

fn connect_props(s: &mut Props, p: &ConnectProperties) {
    s.int("sessionExpiryInterval", p.session_expiry_interval);
    s.str("authenticationMethod", &p.authentication_method);
    s.bin("authenticationData", &p.authentication_data);
    s.int("requestProblemInformation", p.request_problem_information);
    s.int("requestResponseInformation", p.request_response_information);
    s.int("receiveMaximum", p.receive_maximum);
    s.int("topicAliasMaximum", p.topic_alias_maximum);
    s.users(&p.user_properties);
    s.int("maximumPacketSize", p.maximum_packet_size);
}

fn will_props(s: &mut Props, p: &WillProperties) {
    s.int("payloadFormatIndicator", p.payload_format_indicator);
    s.int("messageExpiryInterval", p.message_expiry_interval);
    s.str("contentType", &p.content_type);
    s.str("responseTopic", &p.response_topic);
    s.bin("correlationData", &p.correlation_data);
    s.int("willDelayInterval", p.will_delay_interval);
    s.users(&p.user_properties);
}

fn connack_props(s: &mut Props, p: &ConnAckProperties) {
    s.int("sessionExpiryInterval", p.session_expiry_interval);
    s.str("assignedClientIdentifier", &p.assigned_client_identifier);
    s.int("serverKeepAlive", p.server_keep_alive);
    s.str("authenticationMethod", &p.authentication_method);
    s.bin("authenticationData", &p.authentication_data);
    s.str("responseInformation", &p.response_information);
    s.str("serverReference", &p.server_reference);
    s.str("reasonString", &p.reason_string);
    s.int("receiveMaximum", p.receive_maximum);
    s.int("topicAliasMaximum", p.topic_alias_maximum);
    s.int("maximumQoS", p.maximum_qos.map(|q| q as u8));
    s.int("retainAvailable", p.retain_available);
    s.users(&p.user_properties);
    s.int("maximumPacketSize", p.maximum_packet_size);
    s.int(
        "wildcardSubscriptionAvailable",
        p.wildcard_subscription_available,
    );
    s.int(
        "subscriptionIdentifiersAvailable",
        p.subscription_identifiers_available,
    );
    s.int(
        "sharedSubscriptionAvailable",
        p.shared_subscription_available,
    );
}

fn publish_props(s: &mut Props, p: &PublishProperties) {
    s.int("payloadFormatIndicator", p.payload_format_indicator);
    s.int("messageExpiryInterval", p.message_expiry_interval);
    s.str("contentType", &p.content_type);
    s.str("responseTopic", &p.response_topic);
    s.bin("correlationData", &p.correlation_data);
    s.repeated("subscriptionIdentifier", &p.subscription_identifiers);
    s.int("topicAlias", p.topic_alias);
    s.users(&p.user_properties);
}

fn ack_props(s: &mut Props, p: &AckProperties) {
    s.str("reasonString", &p.reason_string);
    s.users(&p.user_properties);
}

fn subscribe_props(s: &mut Props, p: &SubscribeProperties) {
    s.int("subscriptionIdentifier", p.subscription_identifier);
    s.users(&p.user_properties);
}

fn unsubscribe_props(s: &mut Props, p: &UnsubscribeProperties) {
    s.users(&p.user_properties);
}

fn disconnect_props(s: &mut Props, p: &DisconnectProperties) {
    s.int("sessionExpiryInterval", p.session_expiry_interval);
    s.str("serverReference", &p.server_reference);
    s.str("reasonString", &p.reason_string);
    s.users(&p.user_properties);
}

fn auth_props(s: &mut Props, p: &AuthProperties) {
    s.str("authenticationMethod", &p.authentication_method);
    s.bin("authenticationData", &p.authentication_data);
    s.str("reasonString", &p.reason_string);
    s.users(&p.user_properties);
}

/// Our decoded packet in the shape parse.js prints (without `length`). Every field of the
/// non-property structs is destructured, so a new field cannot be forgotten here.
fn to_json(p: &Packet, v: ProtocolVersion) -> Value {
    let mut o = Map::new();
    let t = p.packet_type();
    put(&mut o, "cmd", cmd_of(t));
    put(&mut o, "retain", false);
    // PUBREL, SUBSCRIBE and UNSUBSCRIBE have fixed header flags 0010.
    let qos = u8::from(matches!(
        t,
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe
    ));
    put(&mut o, "qos", qos);
    put(&mut o, "dup", false);
    put(&mut o, "topic", Value::Null);
    put(&mut o, "payload", Value::Null);
    let mut props = Props::default();
    match p {
        Packet::Connect(c) => {
            let Connect {
                protocol,
                clean_start,
                keep_alive,
                properties,
                client_id,
                will,
                username,
                password,
            } = &**c;
            let name = if *protocol == ProtocolVersion::V3_1 {
                "MQIsdp"
            } else {
                "MQTT"
            };
            put(&mut o, "protocolId", name);
            put(&mut o, "protocolVersion", protocol.level());
            put(&mut o, "clean", *clean_start);
            put(&mut o, "keepalive", *keep_alive);
            put(&mut o, "clientId", client_id.as_str());
            if let Some(LastWill {
                topic,
                payload,
                qos,
                retain,
                properties,
            }) = will
            {
                let mut w = Map::new();
                put(&mut w, "retain", *retain);
                put(&mut w, "qos", *qos as u8);
                put(&mut w, "topic", topic.as_str());
                put(&mut w, "payload", bin_json(payload));
                if v5(v) {
                    let mut wp = Props::default();
                    will_props(&mut wp, properties);
                    wp.put_into(&mut w);
                }
                put(&mut o, "will", w);
            }
            if let Some(u) = username {
                put(&mut o, "username", u.as_str());
            }
            if let Some(pw) = password {
                put(&mut o, "password", bin_json(pw));
            }
            connect_props(&mut props, properties);
        }
        Packet::ConnAck(ConnAck {
            session_present,
            reason_code,
            properties,
        }) => {
            put(&mut o, "sessionPresent", *session_present);
            if v5(v) {
                put(&mut o, "reasonCode", reason_code.0);
            } else {
                put(&mut o, "returnCode", reason_code.to_v3_connack());
            }
            connack_props(&mut props, properties);
        }
        Packet::Publish(Publish {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            properties,
            payload,
        }) => {
            put(&mut o, "retain", *retain);
            put(&mut o, "qos", *qos as u8);
            put(&mut o, "dup", *dup);
            put(&mut o, "topic", topic.as_str());
            put(&mut o, "payload", bin_json(payload));
            if *qos != QoS::AtMostOnce {
                put(&mut o, "messageId", *packet_id);
            }
            publish_props(&mut props, properties);
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            let Ack {
                packet_id,
                reason_code,
                properties,
            } = a;
            put(&mut o, "messageId", *packet_id);
            if v5(v) {
                put(&mut o, "reasonCode", reason_code.0);
            }
            ack_props(&mut props, properties);
        }
        Packet::Subscribe(Subscribe {
            packet_id,
            properties,
            filters,
        }) => {
            put(&mut o, "messageId", *packet_id);
            let subs: Vec<Value> = filters
                .iter()
                .map(|Subscription { filter, options }| {
                    let SubscriptionOptions {
                        qos,
                        no_local,
                        retain_as_published,
                        retain_handling,
                    } = options;
                    if v5(v) {
                        json!({"topic": filter.as_str(), "qos": *qos as u8, "nl": no_local,
                               "rap": retain_as_published, "rh": *retain_handling as u8})
                    } else {
                        json!({"topic": filter.as_str(), "qos": *qos as u8})
                    }
                })
                .collect();
            put(&mut o, "subscriptions", subs);
            subscribe_props(&mut props, properties);
        }
        Packet::SubAck(SubAck {
            packet_id,
            properties,
            reason_codes,
        }) => {
            put(&mut o, "messageId", *packet_id);
            let granted: Vec<u8> = reason_codes
                .iter()
                .map(|rc| if v5(v) { rc.0 } else { rc.to_v3_suback() })
                .collect();
            put(&mut o, "granted", granted);
            ack_props(&mut props, properties);
        }
        Packet::Unsubscribe(Unsubscribe {
            packet_id,
            properties,
            filters,
        }) => {
            put(&mut o, "messageId", *packet_id);
            let f: Vec<&str> = filters.iter().map(|f| f.as_str()).collect();
            put(&mut o, "unsubscriptions", f);
            unsubscribe_props(&mut props, properties);
        }
        Packet::UnsubAck(UnsubAck {
            packet_id,
            properties,
            reason_codes,
        }) => {
            put(&mut o, "messageId", *packet_id);
            if v5(v) {
                let granted: Vec<u8> = reason_codes.iter().map(|rc| rc.0).collect();
                put(&mut o, "granted", granted);
            }
            ack_props(&mut props, properties);
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(Disconnect {
            reason_code,
            properties,
        }) => {
            if v5(v) {
                put(&mut o, "reasonCode", reason_code.0);
            }
            disconnect_props(&mut props, properties);
        }
        Packet::Auth(a) => {
            put(&mut o, "reasonCode", a.reason_code.0);
            auth_props(&mut props, &a.properties);
        }
    }
    // Properties do not exist before MQTT 5.
    if v5(v) {
        props.put_into(&mut o);
    }
    Value::Object(o)
}

fn without_length(mut v: Value) -> Value {
    if let Value::Object(o) = &mut v {
        o.remove("length");
    }
    v
}

// ------------------------------------------------------------------------------------------
// 2. mqtt-packet's bytes -> our Decoder -> our encoder -> the same bytes
// ------------------------------------------------------------------------------------------

enum Outcome {
    Identical,
    Known(KnownDifference),
}

fn check_round_trip(v: &Vector) -> Result<Outcome, String> {
    let (packet, ours) = ours(v)?;
    match Sender::of_case(&v.case) {
        Sender::Any => {}
        Sender::Server => {
            // A server must refuse Subscription Identifiers from a client ([MQTT-3.3.4-6]).
            let mut server = Decoder::resume(Role::Server, v.version, MAX_PACKET_SIZE);
            let r = server.decode(&mut BytesMut::from(&v.theirs[..]));
            ensure!(
                matches!(
                    r,
                    Err(Error::Protocol(ProtocolError::SubscriptionIdFromClient))
                ),
                "a server decoder accepted Subscription Identifiers: {r:?}"
            );
        }
        Sender::Client => {
            // A client must refuse Session Expiry Interval in a server's DISCONNECT
            // ([MQTT-3.14.2-2]).
            let mut client = Decoder::resume(Role::Client, v.version, MAX_PACKET_SIZE);
            let r = client.decode(&mut BytesMut::from(&v.theirs[..]));
            ensure!(
                matches!(&r, Err(e @ Error::Protocol(_)) if e.rule().contains("3.14.2-2")),
                "a client decoder accepted a DISCONNECT with Session Expiry Interval: {r:?}"
            );
        }
    }
    let known = KnownDifference::of(v.version, &packet, &v.theirs);
    if ours == v.theirs {
        ensure!(
            known.is_none(),
            "{known:?} matches but the encodings are identical: the rule is too broad"
        );
        return Ok(Outcome::Identical);
    }
    let Some(known) = known else {
        return Err(format!(
            "encodings differ:\n    ours   {}\n    theirs {}",
            hex(&ours),
            hex(&v.theirs)
        ));
    };
    ensure_eq!(
        hex(&ours),
        hex(&known.our_form(&v.theirs)?),
        "{known:?} form"
    );
    // Our bytes must mean exactly what theirs mean.
    let again = decode_everywhere(
        &ours,
        packet.packet_type(),
        v.version,
        Sender::of_packet(&packet),
    )?;
    ensure_eq!(again, packet, "decoding our bytes vs decoding theirs");
    Ok(Outcome::Known(known))
}

#[test]
fn mqtt_packet_vectors_decode_and_reencode_byte_exact() {
    let mut failures = Vec::new();
    let mut identical = 0;
    let mut known = Vec::new();
    for v in vectors() {
        match check_round_trip(v) {
            Ok(Outcome::Identical) => identical += 1,
            Ok(Outcome::Known(k)) => known.push(format!("{} ({k:?})", v.name)),
            Err(e) => failures.push(format!("{} [v{}]: {e}", v.name, v.version.level())),
        }
    }
    eprintln!(
        "{} vectors: {identical} byte-identical, {} known differences: {known:#?}",
        vectors().len(),
        known.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n  {}",
        failures.len(),
        vectors().len(),
        failures.join("\n  ")
    );
    assert_eq!(identical + known.len(), vectors().len());
}

/// MQTT 3.1 has no Session Present flag: the first byte of the CONNACK variable header is
/// "Reserved values. Not used.". Our encoder writes 0 there, so a 3.1 decoder must not report
/// Session Present (net::mqtt: fields a version does not have "are left empty when decoding
/// it"), or decode -> encode -> decode changes the packet. mqtt-packet sets the bit for
/// `sessionPresent: true` with protocolVersion 3.
#[test]
fn mqtt31_connack_reserved_byte_is_not_session_present() {
    let v3 = ProtocolVersion::V3_1;
    let mut dec = Decoder::client(v3, MAX_PACKET_SIZE);
    let first = decode_one(&mut dec, &[0x20, 0x02, 0x01, 0x00]).unwrap();
    let bytes = encode(&first, v3).unwrap();
    assert_eq!(
        bytes,
        [0x20, 0x02, 0x00, 0x00],
        "we never write the reserved bit"
    );
    let mut dec = Decoder::client(v3, MAX_PACKET_SIZE);
    let again = decode_one(&mut dec, &bytes).unwrap();
    assert_eq!(
        first, again,
        "decode -> encode -> decode must not change a 3.1 CONNACK"
    );
    assert_eq!(
        first,
        Packet::ConnAck(ConnAck::default()),
        "3.1 has no Session Present"
    );
}

// ------------------------------------------------------------------------------------------
// 3. Our bytes -> mqtt-packet's parser == mqtt-packet's parse of its own bytes
// ------------------------------------------------------------------------------------------

#[test]
fn mqtt_packet_parses_our_encodings_like_its_own() {
    let mut failures = Vec::new();
    let mut checked = Vec::new();
    let mut items = Vec::new();
    let mut known = Vec::new();
    for v in vectors() {
        match ours(v) {
            Ok((packet, bytes)) => {
                let k = KnownDifference::of(v.version, &packet, &v.theirs);
                known.push(k.filter(|_| bytes != v.theirs));
                items.push((v.name.clone(), v.version, bytes));
                checked.push(v);
            }
            Err(e) => failures.push(format!("{}: {e}", v.name)),
        }
    }
    let parsed = parse_with_mqtt_packet(&items);
    for (((v, (_, _, bytes)), ours), known) in
        checked.into_iter().zip(&items).zip(parsed).zip(known)
    {
        // parse.js reports our remaining length.
        let body = bytes.len() - fixed_header_len(bytes);
        if ours["length"].as_u64() != Some(body as u64) {
            failures.push(format!(
                "{}: parse.js length {} vs {body}",
                v.name, ours["length"]
            ));
        }
        let keys = known.map_or(&[][..], KnownDifference::json_keys);
        let (ours, theirs) = (
            without_keys(ours, keys),
            without_keys(v.parsed.clone(), keys),
        );
        if ours != theirs {
            failures.push(format!(
                "{}:\n    parse(ours)   {ours}\n    parse(theirs) {theirs}",
                v.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ------------------------------------------------------------------------------------------
// 6. Decoded fields against the independent parse and against the case JSON
// ------------------------------------------------------------------------------------------

/// Every field and property our decoder produced, against what mqtt-packet's parser read from
/// the same bytes: a field our decoder dropped (and our encoder then also dropped) shows here.
#[test]
fn decoded_fields_match_mqtt_packet_parse() {
    let mut failures = Vec::new();
    for v in vectors() {
        let packet = match ours(v) {
            Ok((packet, _)) => packet,
            Err(e) => {
                failures.push(format!("{}: {e}", v.name));
                continue;
            }
        };
        let mine = to_json(&packet, v.version);
        // mqtt-packet reads the MQTT 3.1 reserved CONNACK byte as Session Present.
        let keys = KnownDifference::of(v.version, &packet, &v.theirs)
            .filter(|k| *k == KnownDifference::Mqtt31ConnAckReservedByte)
            .map_or(&[][..], KnownDifference::json_keys);
        let mine = without_keys(mine, keys);
        let theirs = without_keys(without_length(v.parsed.clone()), keys);
        if mine != theirs {
            failures.push(format!(
                "{}:\n    ours          {mine}\n    mqtt-packet   {theirs}",
                v.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// User properties grouped by name, values in order (JSON objects do not keep the order of
/// different names; the byte comparison checks the wire order).
fn group_users(v: &[UserProperty]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, val) in v {
        m.entry(k.to_string()).or_default().push(val.to_string());
    }
    m
}

fn case_users(v: &Value) -> BTreeMap<String, Vec<String>> {
    let Some(o) = v.as_object() else {
        return BTreeMap::new();
    };
    o.iter()
        .map(|(k, val)| {
            let vals = match val {
                Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_owned()).collect(),
                other => vec![other.as_str().unwrap().to_owned()],
            };
            (k.clone(), vals)
        })
        .collect()
}

fn case_u64(v: &Value) -> Option<u64> {
    v.as_u64()
}

fn case_str(v: &Value) -> Option<&str> {
    v.as_str()
}

/// `properties` of a case in the shape parse.js prints: binary as `{hex}`, one-element arrays
/// as the element, no empty object.
fn normalize_case_props(v: &Value) -> Option<Value> {
    let o = v.as_object()?;
    if o.is_empty() {
        return None;
    }
    let mut out = Map::new();
    for (k, val) in o {
        let val = match (k.as_str(), val) {
            ("correlationData" | "authenticationData", b) => bin_json(&case_bin(b)),
            ("subscriptionIdentifier", Value::Array(a)) if a.len() == 1 => a[0].clone(),
            ("userProperties", Value::Object(u)) => Value::Object(
                u.iter()
                    .map(|(n, x)| match x {
                        Value::Array(a) if a.len() == 1 => (n.clone(), a[0].clone()),
                        x => (n.clone(), x.clone()),
                    })
                    .collect(),
            ),
            (_, x) => x.clone(),
        };
        out.insert(k.clone(), val);
    }
    Some(Value::Object(out))
}

/// The fields the case JSON states, read straight from our structs.
fn check_against_case(case: &Value, p: &Packet, v: ProtocolVersion) -> Result<(), String> {
    let props = &case["properties"];
    match p {
        Packet::Connect(c) => {
            ensure_eq!(
                c.protocol.level() as u64,
                case_u64(&case["protocolVersion"]).unwrap(),
                "protocol level"
            );
            ensure_eq!(
                Some(c.client_id.as_str()),
                case_str(&case["clientId"]),
                "client id"
            );
            ensure_eq!(
                c.keep_alive as u64,
                case_u64(&case["keepalive"]).unwrap_or(0),
                "keep alive"
            );
            ensure_eq!(
                c.clean_start,
                case["clean"].as_bool().unwrap_or(true),
                "clean start"
            );
            ensure_eq!(
                c.username.as_deref(),
                case_str(&case["username"]),
                "user name"
            );
            ensure_eq!(
                c.password.as_ref().map(|b| b.to_vec()),
                (!case["password"].is_null()).then(|| case_bin(&case["password"])),
                "password"
            );
            let w = &case["will"];
            ensure_eq!(c.will.is_some(), !w.is_null(), "will present");
            if let Some(will) = &c.will {
                ensure_eq!(
                    Some(will.topic.as_str()),
                    case_str(&w["topic"]),
                    "will topic"
                );
                ensure_eq!(
                    will.payload.to_vec(),
                    case_bin(&w["payload"]),
                    "will payload"
                );
                ensure_eq!(
                    will.qos as u64,
                    case_u64(&w["qos"]).unwrap_or(0),
                    "will qos"
                );
                ensure_eq!(
                    will.retain,
                    w["retain"].as_bool().unwrap_or(false),
                    "will retain"
                );
                let wp = &w["properties"];
                ensure_eq!(
                    will.properties.will_delay_interval.map(u64::from),
                    case_u64(&wp["willDelayInterval"]),
                    "will delay interval"
                );
                ensure_eq!(
                    group_users(&will.properties.user_properties),
                    case_users(&wp["userProperties"]),
                    "will user properties"
                );
            }
            ensure_eq!(
                c.properties.session_expiry_interval.map(u64::from),
                case_u64(&props["sessionExpiryInterval"]),
                "session expiry interval"
            );
            ensure_eq!(
                group_users(&c.properties.user_properties),
                case_users(&props["userProperties"]),
                "user properties"
            );
        }
        Packet::ConnAck(c) => {
            // MQTT 3.1 has no Session Present (see KnownDifference::Mqtt31ConnAckReservedByte).
            if v != ProtocolVersion::V3_1 {
                ensure_eq!(
                    c.session_present,
                    case["sessionPresent"].as_bool().unwrap_or(false),
                    "session present"
                );
            }
            if v5(v) {
                ensure_eq!(
                    c.reason_code.0 as u64,
                    case_u64(&case["reasonCode"]).unwrap(),
                    "reason code"
                );
            } else {
                let rc = case_u64(&case["returnCode"]).unwrap();
                ensure_eq!(
                    Some(c.reason_code),
                    ReasonCode::from_v3_connack(rc as u8),
                    "return code"
                );
            }
            ensure_eq!(
                c.properties.session_expiry_interval.map(u64::from),
                case_u64(&props["sessionExpiryInterval"]),
                "session expiry interval"
            );
            ensure_eq!(
                c.properties.assigned_client_identifier.as_deref(),
                case_str(&props["assignedClientIdentifier"]),
                "assigned client id"
            );
            ensure_eq!(
                group_users(&c.properties.user_properties),
                case_users(&props["userProperties"]),
                "user properties"
            );
        }
        Packet::Publish(pb) => {
            ensure_eq!(Some(pb.topic.as_str()), case_str(&case["topic"]), "topic");
            ensure_eq!(pb.payload.to_vec(), case_bin(&case["payload"]), "payload");
            ensure_eq!(pb.qos as u64, case_u64(&case["qos"]).unwrap_or(0), "qos");
            ensure_eq!(
                pb.packet_id as u64,
                case_u64(&case["messageId"]).unwrap_or(0),
                "packet id"
            );
            ensure_eq!(
                pb.retain,
                case["retain"].as_bool().unwrap_or(false),
                "retain"
            );
            ensure_eq!(pb.dup, case["dup"].as_bool().unwrap_or(false), "dup");
            let ids: Vec<u64> = match &props["subscriptionIdentifier"] {
                Value::Null => Vec::new(),
                Value::Array(a) => a.iter().map(|x| x.as_u64().unwrap()).collect(),
                one => vec![one.as_u64().unwrap()],
            };
            let mine: Vec<u64> = pb
                .properties
                .subscription_identifiers
                .iter()
                .map(|x| u64::from(*x))
                .collect();
            ensure_eq!(mine, ids, "subscription identifiers");
            ensure_eq!(
                pb.properties.topic_alias.map(u64::from),
                case_u64(&props["topicAlias"]),
                "topic alias"
            );
            ensure_eq!(
                pb.properties.content_type.as_deref(),
                case_str(&props["contentType"]),
                "content type"
            );
            ensure_eq!(
                group_users(&pb.properties.user_properties),
                case_users(&props["userProperties"]),
                "user properties"
            );
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            ensure_eq!(
                a.packet_id as u64,
                case_u64(&case["messageId"]).unwrap(),
                "packet id"
            );
            if v5(v) {
                ensure_eq!(
                    a.reason_code.0 as u64,
                    case_u64(&case["reasonCode"]).unwrap_or(0),
                    "reason code"
                );
            }
            ensure_eq!(
                a.properties.reason_string.as_deref(),
                case_str(&props["reasonString"]),
                "reason string"
            );
            ensure_eq!(
                group_users(&a.properties.user_properties),
                case_users(&props["userProperties"]),
                "user properties"
            );
        }
        Packet::Subscribe(s) => {
            ensure_eq!(
                s.packet_id as u64,
                case_u64(&case["messageId"]).unwrap(),
                "packet id"
            );
            let subs = case["subscriptions"].as_array().unwrap();
            ensure_eq!(s.filters.len(), subs.len(), "number of filters");
            for (f, c) in s.filters.iter().zip(subs) {
                ensure_eq!(
                    Some(f.filter.as_str()),
                    case_str(&c["topic"]),
                    "topic filter"
                );
                ensure_eq!(
                    f.options.qos as u64,
                    case_u64(&c["qos"]).unwrap(),
                    "{} qos",
                    f.filter
                );
                if v5(v) {
                    ensure_eq!(
                        f.options.no_local,
                        c["nl"].as_bool().unwrap_or(false),
                        "{} no local",
                        f.filter
                    );
                    ensure_eq!(
                        f.options.retain_as_published,
                        c["rap"].as_bool().unwrap_or(false),
                        "{} rap",
                        f.filter
                    );
                    ensure_eq!(
                        f.options.retain_handling as u64,
                        case_u64(&c["rh"]).unwrap_or(0),
                        "{} rh",
                        f.filter
                    );
                }
            }
            ensure_eq!(
                s.properties.subscription_identifier.map(u64::from),
                case_u64(&props["subscriptionIdentifier"]),
                "subscription identifier"
            );
            ensure_eq!(
                group_users(&s.properties.user_properties),
                case_users(&props["userProperties"]),
                "user properties"
            );
        }
        Packet::SubAck(s) => {
            ensure_eq!(
                s.packet_id as u64,
                case_u64(&case["messageId"]).unwrap(),
                "packet id"
            );
            let granted: Vec<u64> = case["granted"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            let mine: Vec<u64> = s.reason_codes.iter().map(|rc| u64::from(rc.0)).collect();
            ensure_eq!(mine, granted, "reason codes");
            ensure_eq!(
                s.properties.reason_string.as_deref(),
                case_str(&props["reasonString"]),
                "reason string"
            );
        }
        Packet::Unsubscribe(u) => {
            ensure_eq!(
                u.packet_id as u64,
                case_u64(&case["messageId"]).unwrap(),
                "packet id"
            );
            let filters: Vec<&str> = case["unsubscriptions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            let mine: Vec<&str> = u.filters.iter().map(|f| f.as_str()).collect();
            ensure_eq!(mine, filters, "topic filters");
            ensure_eq!(
                group_users(&u.properties.user_properties),
                case_users(&props["userProperties"]),
                "user properties"
            );
        }
        Packet::UnsubAck(u) => {
            ensure_eq!(
                u.packet_id as u64,
                case_u64(&case["messageId"]).unwrap(),
                "packet id"
            );
            let granted: Vec<u64> = case["granted"]
                .as_array()
                .map(|a| a.iter().map(|x| x.as_u64().unwrap()).collect())
                .unwrap_or_default();
            let mine: Vec<u64> = u.reason_codes.iter().map(|rc| u64::from(rc.0)).collect();
            ensure_eq!(mine, granted, "reason codes");
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5(v) {
                ensure_eq!(
                    d.reason_code.0 as u64,
                    case_u64(&case["reasonCode"]).unwrap_or(0),
                    "reason code"
                );
            }
            ensure_eq!(
                d.properties.session_expiry_interval.map(u64::from),
                case_u64(&props["sessionExpiryInterval"]),
                "session expiry interval"
            );
            ensure_eq!(
                d.properties.server_reference.as_deref(),
                case_str(&props["serverReference"]),
                "server reference"
            );
            ensure_eq!(
                group_users(&d.properties.user_properties),
                case_users(&props["userProperties"]),
                "user properties"
            );
        }
        Packet::Auth(a) => {
            ensure_eq!(
                a.reason_code.0 as u64,
                case_u64(&case["reasonCode"]).unwrap_or(0),
                "reason code"
            );
            ensure_eq!(
                a.properties.authentication_method.as_deref(),
                case_str(&props["authenticationMethod"]),
                "authentication method"
            );
            ensure_eq!(
                a.properties
                    .authentication_data
                    .as_ref()
                    .map(|b| b.to_vec()),
                (!props["authenticationData"].is_null())
                    .then(|| case_bin(&props["authenticationData"])),
                "authentication data"
            );
        }
    }
    // And every property the case sets, none more (before v5 none at all).
    let mine = to_json(p, v);
    let expected = if v5(v) {
        normalize_case_props(props)
    } else {
        None
    };
    ensure_eq!(mine.get("properties").cloned(), expected, "properties");
    if let Packet::Connect(c) = p {
        if c.will.is_some() {
            let expected = if v5(v) {
                normalize_case_props(&case["will"]["properties"])
            } else {
                None
            };
            ensure_eq!(
                mine["will"].get("properties").cloned(),
                expected,
                "will properties"
            );
        }
    }
    Ok(())
}

#[test]
fn decoded_fields_match_case_json() {
    let mut failures = Vec::new();
    for v in vectors() {
        let checked =
            ours(v).and_then(|(packet, _)| check_against_case(&v.case, &packet, v.version));
        if let Err(e) = checked {
            failures.push(format!("{}: {e}", v.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A few cases spelled out, so that the expectations do not all go through the helpers above.
#[test]
fn decoded_fields_sample() {
    let find = |name: &str| {
        let v = vectors()
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no case {name}"));
        ours(v).unwrap_or_else(|e| panic!("{name}: {e}")).0
    };

    let Packet::Connect(c) = find("connect_v5_all_properties") else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, ProtocolVersion::V5);
    assert_eq!(c.client_id, "c5-props");
    assert_eq!(c.keep_alive, 30);
    assert_eq!(c.properties.session_expiry_interval, Some(3600));
    assert_eq!(
        c.properties.authentication_method.as_deref(),
        Some("SCRAM-SHA-1")
    );
    assert_eq!(
        c.properties.authentication_data.as_deref(),
        Some(&[0x0a, 0x0b, 0x0c, 0x0d][..])
    );
    assert_eq!(c.properties.request_problem_information, Some(false));
    assert_eq!(c.properties.request_response_information, Some(true));
    assert_eq!(c.properties.receive_maximum, Some(20));
    assert_eq!(c.properties.topic_alias_maximum, Some(10));
    assert_eq!(c.properties.maximum_packet_size, Some(1_048_576));
    let users: Vec<(&str, &str)> = c
        .properties
        .user_properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        users,
        [
            ("region", "eu-west"),
            ("tier", "gold"),
            ("tag", "a"),
            ("tag", "b"),
            ("tag", "c")
        ]
    );

    let Packet::Connect(c) = find("connect_v5_will_all_properties_username_password") else {
        panic!()
    };
    let will = c.will.as_ref().expect("will");
    assert_eq!(will.topic, "clients/c5-will/status");
    assert_eq!(&will.payload[..], b"{\"online\":false}");
    assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, true));
    assert_eq!(will.properties.payload_format_indicator, Some(true));
    assert_eq!(will.properties.message_expiry_interval, Some(86_400));
    assert_eq!(
        will.properties.content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        will.properties.response_topic.as_deref(),
        Some("clients/c5-will/reply")
    );
    assert_eq!(
        will.properties.correlation_data.as_deref(),
        Some(&[0xca, 0xfe, 0x00, 0x01][..])
    );
    assert_eq!(will.properties.will_delay_interval, Some(5));
    assert_eq!(c.username.as_deref(), Some("dave"));
    assert_eq!(c.password.as_deref(), Some(&b"pass"[..]));
    assert!(!c.clean_start);

    let Packet::Connect(c) = find("connect_v3_will_username_password") else {
        panic!()
    };
    assert_eq!(c.protocol, ProtocolVersion::V3_1);
    assert_eq!(
        c.will.as_ref().map(|w| w.topic.as_str()),
        Some("status/c3w")
    );
    assert_eq!(c.username.as_deref(), Some("alice"));

    let Packet::Publish(p) = find("publish_v5_subscription_identifiers_array") else {
        panic!()
    };
    assert_eq!(
        p.properties.subscription_identifiers,
        [
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455
        ]
    );
    assert_eq!(p.topic, "multi");
    assert_eq!(&p.payload[..], b"m");

    let Packet::Publish(p) = find("publish_v5_all_properties") else {
        panic!()
    };
    assert_eq!((p.qos, p.packet_id), (QoS::AtLeastOnce, 10));
    assert_eq!(p.properties.subscription_identifiers, [5]);
    assert_eq!(p.properties.topic_alias, Some(3));
    assert_eq!(p.properties.message_expiry_interval, Some(300));
    assert_eq!(
        p.properties.correlation_data.as_deref(),
        Some(&[1, 2, 3, 4, 5][..])
    );
    assert_eq!(&p.payload[..], b"{\"a\":1}");

    let Packet::Publish(p) = find("publish_v5_topic_alias_empty_topic") else {
        panic!()
    };
    assert_eq!(p.topic, "");
    assert_eq!(p.properties.topic_alias, Some(3));

    let Packet::Publish(p) = find("publish_v4_payload_20000_rl3") else {
        panic!()
    };
    assert_eq!(p.payload.len(), 20_000);
    assert!(p.payload.iter().all(|b| *b == b'q'));

    let Packet::Subscribe(s) = find("subscribe_v5_subscription_identifier_max") else {
        panic!()
    };
    assert_eq!(s.properties.subscription_identifier, Some(268_435_455));
    assert_eq!(s.filters[0].options.qos, QoS::ExactlyOnce);

    let Packet::Subscribe(s) = find("subscribe_v5_options") else {
        panic!()
    };
    assert_eq!(
        s.filters[2].options,
        SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend
        }
    );

    let Packet::ConnAck(c) = find("connack_v5_all_properties") else {
        panic!()
    };
    assert!(c.session_present);
    assert_eq!(
        c.properties.assigned_client_identifier.as_deref(),
        Some("auto-0001")
    );
    assert_eq!(c.properties.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(c.properties.subscription_identifiers_available, Some(true));
    assert_eq!(c.properties.shared_subscription_available, Some(false));

    let Packet::Disconnect(d) = find("disconnect_v5_all_properties") else {
        panic!()
    };
    assert_eq!(d.reason_code, ReasonCode::USE_ANOTHER_SERVER);
    assert_eq!(d.properties.session_expiry_interval, Some(7200));
    assert_eq!(
        d.properties.server_reference.as_deref(),
        Some("mqtt2.example:8883")
    );

    let Packet::PubRel(a) = find("pubrel_v5_rc_0x92_reason_user_props") else {
        panic!()
    };
    assert_eq!(a.reason_code, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
    assert_eq!(group_users(&a.properties.user_properties)["x"], ["1", "2"]);
}

// ------------------------------------------------------------------------------------------
// 4. PublishEncoder == Packet::encode
// ------------------------------------------------------------------------------------------

/// The PUBLISH that `Packet::encode` must turn into what `PublishEncoder` writes for `d`.
fn publish_for_delivery(p: &Publish, d: &Delivery<'_>) -> Publish {
    let mut e = p.clone();
    e.qos = d.qos;
    e.dup = d.dup;
    e.retain = d.retain;
    e.packet_id = if d.qos == QoS::AtMostOnce {
        0
    } else {
        d.packet_id
    };
    if d.omit_topic {
        e.topic = MqttStr::default();
    }
    e.properties.topic_alias = d.topic_alias;
    e.properties.subscription_identifiers = d.subscription_ids.to_vec();
    e.properties.message_expiry_interval = d.message_expiry_interval;
    e
}

fn check_delivery(
    enc: &PublishEncoder,
    p: &Publish,
    d: &Delivery<'_>,
    v: ProtocolVersion,
) -> Result<Vec<u8>, String> {
    let expected = Packet::Publish(publish_for_delivery(p, d));
    let expected_bytes = encode(&expected, v).map_err(|e| e.to_string())?;
    // Appends to what is already in the buffer.
    let mut whole = BytesMut::from(&b"xyz"[..]);
    enc.encode(d, &mut whole).map_err(|e| e.to_string())?;
    ensure_eq!(&whole[..3], b"xyz", "prefix");
    let whole = whole.split_off(3);
    ensure_eq!(
        hex(&whole),
        hex(&expected_bytes),
        "PublishEncoder::encode vs Packet::encode for {d:?}"
    );
    let mut head = BytesMut::new();
    enc.encode_head(d, &mut head).map_err(|e| e.to_string())?;
    ensure_eq!(
        head.len() + enc.payload().len(),
        whole.len(),
        "head + payload length"
    );
    head.extend_from_slice(enc.payload());
    ensure_eq!(head, whole, "encode_head + payload vs encode");
    ensure_eq!(
        enc.encoded_len(d).map_err(|e| e.to_string())?,
        whole.len(),
        "encoded_len"
    );
    // And the receiver reads back exactly that PUBLISH.
    let mut client = Decoder::resume(Role::Client, v, MAX_PACKET_SIZE);
    let back = decode_one(&mut client, &whole)?;
    ensure_eq!(back, expected, "decoding the delivery");
    Ok(whole.to_vec())
}

#[test]
fn publish_encoder_matches_packet_encode() {
    static IDS: [u32; 4] = [1, 128, 16_384, 268_435_455];
    let mut n = 0;
    for v in vectors().iter().filter(|v| v.cmd() == "publish") {
        let (packet, ours) = ours(v).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        let Packet::Publish(p) = &packet else {
            panic!("{}: not a PUBLISH", v.name)
        };
        let enc = PublishEncoder::new(p, v.version).unwrap();
        assert_eq!(enc.payload(), &p.payload, "{}", v.name);
        // The message's own delivery: identical to Packet::encode, hence to mqtt-packet.
        let own = check_delivery(&enc, p, &Delivery::of(p), v.version)
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(hex(&own), hex(&ours), "{}", v.name);
        assert_eq!(
            hex(&own),
            hex(&v.theirs),
            "{}: PublishEncoder vs mqtt-packet",
            v.name
        );
        // The same encoder reused for other receivers.
        let base = Delivery::of(p);
        let mut deliveries = vec![
            Delivery {
                qos: QoS::AtMostOnce,
                dup: false,
                packet_id: 0,
                ..base
            },
            Delivery {
                qos: QoS::AtLeastOnce,
                packet_id: 7,
                retain: !p.retain,
                ..base
            },
            Delivery {
                qos: QoS::ExactlyOnce,
                dup: true,
                packet_id: 65_535,
                ..base
            },
        ];
        if v5(v.version) {
            deliveries.push(Delivery {
                topic_alias: Some(9),
                omit_topic: true,
                subscription_ids: &IDS,
                message_expiry_interval: Some(60),
                ..base
            });
            deliveries.push(Delivery {
                topic_alias: Some(2),
                omit_topic: false,
                subscription_ids: &IDS[..1],
                message_expiry_interval: Some(0),
                ..base
            });
            deliveries.push(Delivery {
                topic_alias: None,
                omit_topic: p.topic.is_empty(),
                subscription_ids: &[],
                message_expiry_interval: None,
                ..base
            });
        }
        for d in &deliveries {
            if d.omit_topic && d.topic_alias.is_none() {
                continue;
            }
            check_delivery(&enc, p, d, v.version).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        }
        n += 1;
    }
    assert!(n > 0, "no PUBLISH case");
}

// ------------------------------------------------------------------------------------------
// 5. The specifications' own byte examples
// ------------------------------------------------------------------------------------------

/// A byte example from a specification, as a whole packet.
struct SpecVector {
    source: &'static str,
    version: ProtocolVersion,
    bytes: Vec<u8>,
    packet: Packet,
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn s(x: &'static str) -> MqttStr {
    MqttStr::from_static(x)
}

/// MQTT 3.1.1 §3.1.2.11 "Variable header non normative example", Figure 3.6: protocol name
/// "MQTT", level 4, connect flags 11001110 (user name 1, password 1, will retain 0, will QoS
/// 01, will flag 1, clean session 1, reserved 0), keep alive MSB 0 LSB 10.
const V311_FIG_3_6_CONNECT_VARIABLE_HEADER: [u8; 10] =
    [0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xCE, 0x00, 0x0A];

/// MQTT 5.0 §3.1.2.12 "Variable Header non-normative example", Figure 3-6: as 3.1.1 with
/// version 5, then properties: length 5, Session Expiry Interval identifier 17, value 10.
const V5_FIG_3_6_CONNECT_VARIABLE_HEADER: [u8; 16] = [
    0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0xCE, 0x00, 0x0A, 0x05, 0x11, 0x00, 0x00, 0x00, 0x0A,
];

/// MQTT 3.1.1 §3.3.2.3, Figure 3.11 (Table 3.3): topic name "a/b", packet identifier 10.
const V311_FIG_3_11_PUBLISH_VARIABLE_HEADER: [u8; 7] = [0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A];

/// MQTT 5.0 §3.3.2.3.9 non-normative comment, Figure 3-9: topic name "a/b", packet identifier
/// 10, no properties (property length 0).
const V5_FIG_3_9_PUBLISH_VARIABLE_HEADER: [u8; 8] =
    [0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, 0x00];

/// MQTT 3.1.1 §3.8.2.1, Figure 3.21: packet identifier 10.
const V311_FIG_3_21_PACKET_ID_10: [u8; 2] = [0x00, 0x0A];

/// MQTT 5.0 §3.8.2, Figure 3-19: SUBSCRIBE variable header, packet identifier 10, no
/// properties.
const V5_FIG_3_19_SUBSCRIBE_VARIABLE_HEADER: [u8; 3] = [0x00, 0x0A, 0x00];

/// MQTT 3.1.1 §3.8.3.1, Figure 3.23 (Table 3.5) and MQTT 5.0 §3.8.3.1, Figure 3-21: topic
/// filter "a/b" with QoS / subscription options 1, "c/d" with 2.
const FIG_SUBSCRIBE_PAYLOAD: [u8; 12] = [
    0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x03, b'c', b'/', b'd', 0x02,
];

/// MQTT 3.1.1 §3.9.3.1, Figure 3.27 (Table 3.6): Success - Maximum QoS 0, Success - Maximum QoS
/// 2, Failure.
const V311_FIG_3_27_SUBACK_PAYLOAD: [u8; 3] = [0x00, 0x02, 0x80];

/// MQTT 3.1.1 §3.10.3.1, Figure 3.30 (Table 3.7) and MQTT 5.0 §3.10.3, Figure 3-30: topic
/// filters "a/b" and "c/d".
const FIG_UNSUBSCRIBE_PAYLOAD: [u8; 10] =
    [0x00, 0x03, b'a', b'/', b'b', 0x00, 0x03, b'c', b'/', b'd'];

/// MQTT 5.0 §3.14.2.2, Figure 3-24: DISCONNECT variable header, reason code 0, property length
/// 5, Session Expiry Interval identifier 17, value 0.
const V5_FIG_3_24_DISCONNECT_VARIABLE_HEADER: [u8; 7] = [0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00];

/// MQTT 3.1.1 §1.5.3.1, Figure 1.2, and MQTT 5.0 §1.5.4, Figure 1-1: the string "A𪛔"
/// (U+0041, U+2A6D4) is 00 05 41 F0 AA 9B 94.
const FIG_UTF8_STRING: [u8; 7] = [0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94];

/// The payload our CONNECT examples add after the figures' variable headers, as the flags
/// 0xCE require (3.1.3): client id "c", will topic "w", will message "x", user name "u",
/// password "p".
const CONNECT_PAYLOAD_CLIENT_ID: [u8; 3] = [0x00, 0x01, b'c'];
const CONNECT_PAYLOAD_WILL_USER_PASSWORD: [u8; 12] = [
    0x00, 0x01, b'w', 0x00, 0x01, b'x', 0x00, 0x01, b'u', 0x00, 0x01, b'p',
];

fn spec_connect(protocol: ProtocolVersion) -> Connect {
    let mut c = Connect::new(protocol, s("c"));
    c.clean_start = true;
    c.keep_alive = 10;
    c.will = Some(LastWill {
        topic: s("w"),
        payload: Bytes::from_static(b"x"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    c.username = Some(s("u"));
    c.password = Some(Bytes::from_static(b"p"));
    c
}

fn spec_vectors() -> Vec<SpecVector> {
    let v4 = ProtocolVersion::V3_1_1;
    let v5 = ProtocolVersion::V5;
    let mut list = Vec::new();

    // CONNECT, 3.1.1 Figure 3.6: remaining length 10 + 15.
    list.push(SpecVector {
        source: "MQTT 3.1.1 §3.1.2.11 Figure 3.6 (CONNECT variable header)",
        version: v4,
        bytes: concat(&[
            &[0x10, 25],
            &V311_FIG_3_6_CONNECT_VARIABLE_HEADER,
            &CONNECT_PAYLOAD_CLIENT_ID,
            &CONNECT_PAYLOAD_WILL_USER_PASSWORD,
        ]),
        packet: Packet::Connect(Box::new(spec_connect(v4))),
    });

    // CONNECT, 5.0 Figure 3-6: remaining length 16 + 3 + 1 (empty will properties) + 12.
    let mut c5 = spec_connect(v5);
    c5.properties.session_expiry_interval = Some(10);
    list.push(SpecVector {
        source: "MQTT 5.0 §3.1.2.12 Figure 3-6 (CONNECT variable header, Session Expiry 10)",
        version: v5,
        bytes: concat(&[
            &[0x10, 32],
            &V5_FIG_3_6_CONNECT_VARIABLE_HEADER,
            &CONNECT_PAYLOAD_CLIENT_ID,
            &[0x00],
            &CONNECT_PAYLOAD_WILL_USER_PASSWORD,
        ]),
        packet: Packet::Connect(Box::new(c5)),
    });

    // PUBLISH QoS 1 (a packet identifier is present), payload "hi".
    let publish = Publish {
        qos: QoS::AtLeastOnce,
        topic: s("a/b"),
        packet_id: 10,
        payload: Bytes::from_static(b"hi"),
        ..Publish::default()
    };
    list.push(SpecVector {
        source: "MQTT 3.1.1 §3.3.2.3 Figure 3.11 (PUBLISH variable header)",
        version: v4,
        bytes: concat(&[&[0x32, 9], &V311_FIG_3_11_PUBLISH_VARIABLE_HEADER, b"hi"]),
        packet: Packet::Publish(publish.clone()),
    });
    list.push(SpecVector {
        source: "MQTT 5.0 §3.3.2.3 Figure 3-9 (PUBLISH variable header)",
        version: v5,
        bytes: concat(&[&[0x32, 10], &V5_FIG_3_9_PUBLISH_VARIABLE_HEADER, b"hi"]),
        packet: Packet::Publish(publish),
    });

    // SUBSCRIBE.
    let subscribe = Subscribe {
        packet_id: 10,
        properties: SubscribeProperties::default(),
        filters: vec![
            Subscription {
                filter: s("a/b"),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            },
            Subscription {
                filter: s("c/d"),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    ..SubscriptionOptions::default()
                },
            },
        ],
    };
    list.push(SpecVector {
        source: "MQTT 3.1.1 §3.8.2.1 Figure 3.21 + §3.8.3.1 Figure 3.23 (SUBSCRIBE)",
        version: v4,
        bytes: concat(&[
            &[0x82, 14],
            &V311_FIG_3_21_PACKET_ID_10,
            &FIG_SUBSCRIBE_PAYLOAD,
        ]),
        packet: Packet::Subscribe(subscribe.clone()),
    });
    list.push(SpecVector {
        source: "MQTT 5.0 §3.8.2 Figure 3-19 + §3.8.3.1 Figure 3-21 (SUBSCRIBE)",
        version: v5,
        bytes: concat(&[
            &[0x82, 15],
            &V5_FIG_3_19_SUBSCRIBE_VARIABLE_HEADER,
            &FIG_SUBSCRIBE_PAYLOAD,
        ]),
        packet: Packet::Subscribe(subscribe),
    });

    // SUBACK (the figure gives the payload; packet identifier 10 as in Figure 3.21).
    list.push(SpecVector {
        source: "MQTT 3.1.1 §3.9.3.1 Figure 3.27 (SUBACK payload)",
        version: v4,
        bytes: concat(&[
            &[0x90, 5],
            &V311_FIG_3_21_PACKET_ID_10,
            &V311_FIG_3_27_SUBACK_PAYLOAD,
        ]),
        packet: Packet::SubAck(SubAck {
            packet_id: 10,
            properties: AckProperties::default(),
            reason_codes: vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GRANTED_QOS_2,
                ReasonCode::UNSPECIFIED_ERROR,
            ],
        }),
    });

    // UNSUBSCRIBE.
    let unsubscribe = Unsubscribe {
        packet_id: 10,
        properties: UnsubscribeProperties::default(),
        filters: vec![s("a/b"), s("c/d")],
    };
    list.push(SpecVector {
        source: "MQTT 3.1.1 §3.10.3.1 Figure 3.30 (UNSUBSCRIBE payload)",
        version: v4,
        bytes: concat(&[
            &[0xA2, 12],
            &V311_FIG_3_21_PACKET_ID_10,
            &FIG_UNSUBSCRIBE_PAYLOAD,
        ]),
        packet: Packet::Unsubscribe(unsubscribe.clone()),
    });
    list.push(SpecVector {
        source: "MQTT 5.0 §3.10.3 Figure 3-30 (UNSUBSCRIBE payload)",
        version: v5,
        bytes: concat(&[
            &[0xA2, 13],
            &V311_FIG_3_21_PACKET_ID_10,
            &[0x00],
            &FIG_UNSUBSCRIBE_PAYLOAD,
        ]),
        packet: Packet::Unsubscribe(unsubscribe),
    });

    // DISCONNECT with a Session Expiry Interval of 0.
    let mut disconnect = Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    disconnect.properties.session_expiry_interval = Some(0);
    list.push(SpecVector {
        source: "MQTT 5.0 §3.14.2.2 Figure 3-24 (DISCONNECT variable header)",
        version: v5,
        bytes: concat(&[&[0xE0, 7], &V5_FIG_3_24_DISCONNECT_VARIABLE_HEADER]),
        packet: Packet::Disconnect(disconnect),
    });

    // The UTF-8 string example, as a PUBLISH topic name (QoS 0, empty payload).
    for (version, props) in [(v4, &[][..]), (v5, &[0x00][..])] {
        list.push(SpecVector {
            source: "MQTT 3.1.1 §1.5.3.1 Figure 1.2 / MQTT 5.0 §1.5.4 Figure 1-1 (UTF-8 string)",
            version,
            bytes: concat(&[&[0x30, 7 + props.len() as u8], &FIG_UTF8_STRING, props]),
            packet: Packet::Publish(Publish::new(s("A\u{2A6D4}"), Bytes::new())),
        });
    }

    // Fixed headers given bit by bit in MQTT 3.1.1 (with packet identifier 10 where the packet
    // has one).
    let fixed: [(&'static str, &[u8], Packet); 9] = [
        (
            "MQTT 3.1.1 §3.2 Figures 3.8, 3.9 (CONNACK)",
            &[0x20, 0x02, 0x01, 0x00],
            Packet::ConnAck(ConnAck {
                session_present: true,
                ..ConnAck::default()
            }),
        ),
        (
            "MQTT 3.1.1 §3.4.1 Figure 3.12 (PUBACK)",
            &[0x40, 0x02, 0x00, 0x0A],
            Packet::PubAck(Ack::new(10)),
        ),
        (
            "MQTT 3.1.1 §3.5.1 Figure 3.14 (PUBREC)",
            &[0x50, 0x02, 0x00, 0x0A],
            Packet::PubRec(Ack::new(10)),
        ),
        (
            "MQTT 3.1.1 §3.6.1 Figure 3.16 (PUBREL)",
            &[0x62, 0x02, 0x00, 0x0A],
            Packet::PubRel(Ack::new(10)),
        ),
        (
            "MQTT 3.1.1 §3.7.1 Figure 3.18 (PUBCOMP)",
            &[0x70, 0x02, 0x00, 0x0A],
            Packet::PubComp(Ack::new(10)),
        ),
        (
            "MQTT 3.1.1 §3.11.1 Figure 3.31 (UNSUBACK)",
            &[0xB0, 0x02, 0x00, 0x0A],
            Packet::UnsubAck(UnsubAck {
                packet_id: 10,
                ..UnsubAck::default()
            }),
        ),
        (
            "MQTT 3.1.1 §3.12.1 Figure 3.33 (PINGREQ)",
            &[0xC0, 0x00],
            Packet::PingReq,
        ),
        (
            "MQTT 3.1.1 §3.13.1 Figure 3.34 (PINGRESP)",
            &[0xD0, 0x00],
            Packet::PingResp,
        ),
        (
            "MQTT 3.1.1 §3.14.1 Figure 3.35 (DISCONNECT)",
            &[0xE0, 0x00],
            Packet::Disconnect(Disconnect::default()),
        ),
    ];
    for (source, bytes, packet) in fixed {
        list.push(SpecVector {
            source,
            version: v4,
            bytes: bytes.to_vec(),
            packet,
        });
    }
    list
}

/// Decodes the example (every receiving role) and checks it is the expected packet; encodes
/// the expected packet and checks it gives the example's bytes.
fn spec_round_trip(sv: &SpecVector) -> Result<Packet, String> {
    let decoded = decode_everywhere(
        &sv.bytes,
        sv.packet.packet_type(),
        sv.version,
        Sender::of_packet(&sv.packet),
    )?;
    ensure_eq!(decoded, sv.packet, "decoded");
    let bytes = encode(&sv.packet, sv.version).map_err(|e| e.to_string())?;
    ensure_eq!(hex(&bytes), hex(&sv.bytes), "encoded");
    Ok(decoded)
}

fn spec_vector(prefix: &str) -> (SpecVector, Packet) {
    let sv = spec_vectors()
        .into_iter()
        .find(|v| v.source.starts_with(prefix))
        .unwrap_or_else(|| panic!("no spec vector {prefix}"));
    let p = spec_round_trip(&sv).unwrap_or_else(|e| panic!("{}: {e}", sv.source));
    (sv, p)
}

#[test]
fn spec_examples_round_trip() {
    let mut failures = Vec::new();
    for sv in spec_vectors() {
        if let Err(e) = spec_round_trip(&sv) {
            failures.push(format!("{} (v{}): {e}", sv.source, sv.version.level()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The independent decoder agrees with ours on every specification example.
#[test]
fn spec_examples_parsed_by_mqtt_packet() {
    let list = spec_vectors();
    let items: Vec<_> = list
        .iter()
        .map(|sv| (sv.source.to_owned(), sv.version, sv.bytes.clone()))
        .collect();
    let parsed = parse_with_mqtt_packet(&items);
    for (sv, theirs) in list.iter().zip(parsed) {
        assert_eq!(
            to_json(&sv.packet, sv.version),
            without_length(theirs),
            "{}",
            sv.source
        );
    }
}

#[test]
fn spec_connect_variable_header_v311() {
    let (sv, p) = spec_vector("MQTT 3.1.1 §3.1.2.11");
    assert_eq!(sv.bytes[2..12], V311_FIG_3_6_CONNECT_VARIABLE_HEADER);
    let Packet::Connect(c) = p else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, ProtocolVersion::V3_1_1);
    assert_eq!(c.keep_alive, 10);
    assert!(c.clean_start);
    let will = c.will.as_ref().expect("will flag 1");
    assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, false));
    assert!(c.username.is_some() && c.password.is_some());
}

#[test]
fn spec_connect_variable_header_v5() {
    let (sv, p) = spec_vector("MQTT 5.0 §3.1.2.12");
    assert_eq!(sv.bytes[2..18], V5_FIG_3_6_CONNECT_VARIABLE_HEADER);
    let Packet::Connect(c) = p else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, ProtocolVersion::V5);
    assert_eq!(c.keep_alive, 10);
    assert_eq!(c.properties.session_expiry_interval, Some(10));
    assert_eq!(c.will.as_ref().map(|w| w.qos), Some(QoS::AtLeastOnce));
}

#[test]
fn spec_publish_variable_header() {
    for prefix in ["MQTT 3.1.1 §3.3.2.3", "MQTT 5.0 §3.3.2.3"] {
        let (_, p) = spec_vector(prefix);
        let Packet::Publish(p) = p else {
            panic!("not a PUBLISH")
        };
        assert_eq!(p.topic, "a/b", "{prefix}");
        assert_eq!(p.packet_id, 10, "{prefix}");
        assert!(p.properties.is_empty(), "{prefix}");
    }
}

#[test]
fn spec_subscribe_and_suback() {
    for prefix in ["MQTT 3.1.1 §3.8.2.1", "MQTT 5.0 §3.8.2"] {
        let (_, p) = spec_vector(prefix);
        let Packet::Subscribe(s) = p else {
            panic!("not a SUBSCRIBE")
        };
        assert_eq!(s.packet_id, 10);
        let f: Vec<(&str, QoS)> = s
            .filters
            .iter()
            .map(|f| (f.filter.as_str(), f.options.qos))
            .collect();
        assert_eq!(
            f,
            [("a/b", QoS::AtLeastOnce), ("c/d", QoS::ExactlyOnce)],
            "{prefix}"
        );
    }
    let (sv, p) = spec_vector("MQTT 3.1.1 §3.9.3.1");
    assert_eq!(sv.bytes[4..], V311_FIG_3_27_SUBACK_PAYLOAD);
    let Packet::SubAck(s) = p else {
        panic!("not a SUBACK")
    };
    assert_eq!(
        s.reason_codes,
        [ReasonCode(0), ReasonCode(2), ReasonCode(0x80)]
    );
}

#[test]
fn spec_unsubscribe_payload() {
    for prefix in ["MQTT 3.1.1 §3.10.3.1", "MQTT 5.0 §3.10.3"] {
        let (_, p) = spec_vector(prefix);
        let Packet::Unsubscribe(u) = p else {
            panic!("not an UNSUBSCRIBE")
        };
        assert_eq!(u.filters, [s("a/b"), s("c/d")], "{prefix}");
    }
}

#[test]
fn spec_disconnect_session_expiry_v5() {
    let (_, p) = spec_vector("MQTT 5.0 §3.14.2.2");
    let Packet::Disconnect(d) = p else {
        panic!("not a DISCONNECT")
    };
    assert_eq!(d.reason_code, ReasonCode::NORMAL_DISCONNECTION);
    assert_eq!(d.properties.session_expiry_interval, Some(0));
}

#[test]
fn spec_utf8_string_example() {
    let (sv, p) = spec_vector("MQTT 3.1.1 §1.5.3.1");
    assert_eq!(sv.bytes[2..9], FIG_UTF8_STRING);
    let Packet::Publish(p) = p else {
        panic!("not a PUBLISH")
    };
    assert_eq!(p.topic.chars().collect::<Vec<_>>(), ['A', '\u{2A6D4}']);
}

/// MQTT 3.1.1 §2.2.3 Table 2.4 and its non-normative examples (64 is 0x40, 321 is 0xC1 0x02),
/// and MQTT 5.0 §1.5.5 (the same table for Variable Byte Integers).
const REMAINING_LENGTH_TABLE: [(usize, &[u8]); 10] = [
    (0, &[0x00]),
    (64, &[0x40]),
    (127, &[0x7F]),
    (128, &[0x80, 0x01]),
    (321, &[0xC1, 0x02]),
    (16_383, &[0xFF, 0x7F]),
    (16_384, &[0x80, 0x80, 0x01]),
    (2_097_151, &[0xFF, 0xFF, 0x7F]),
    (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
    (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
];

#[test]
fn spec_remaining_length_table() {
    assert_eq!(MAX_REMAINING_LENGTH, 268_435_455);
    for (value, encoded) in REMAINING_LENGTH_TABLE {
        // Decoding: once the fixed header is there, the decoder knows exactly how many bytes
        // the packet still needs.
        if value == 0 {
            let mut dec = Decoder::resume(Role::Server, ProtocolVersion::V3_1_1, MAX_PACKET_SIZE);
            assert_eq!(decode_one(&mut dec, &[0xC0, 0x00]), Ok(Packet::PingReq));
        } else {
            let mut dec = Decoder::resume(Role::Server, ProtocolVersion::V3_1_1, MAX_PACKET_SIZE);
            let mut buf = BytesMut::from(&concat(&[&[0x30], encoded])[..]);
            assert_eq!(dec.decode(&mut buf), Ok(None), "{value}");
            assert_eq!(dec.needed(), value, "remaining length {}", hex(encoded));
        }
        // Encoding: a PUBLISH (topic "t", QoS 0) whose body is `value` bytes.
        if (3..=2_097_152).contains(&value) {
            for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
                let props = usize::from(v5(version));
                let payload = Bytes::from(vec![b'z'; value - 3 - props]);
                let packet = Packet::Publish(Publish::new(s("t"), payload));
                let bytes = encode(&packet, version).unwrap();
                assert_eq!(bytes[0], 0x30);
                assert_eq!(hex(&bytes[1..1 + encoded.len()]), hex(encoded), "{value}");
                assert_eq!(bytes.len(), 1 + encoded.len() + value);
                assert_eq!(packet.encoded_len(version), Ok(bytes.len()));
            }
        }
    }
    // The largest packet: 268,435,455 bytes after a 5-byte fixed header. Sized without
    // encoding (the zeroed allocation is never touched), and one byte more is refused.
    let largest = Packet::Publish(Publish::new(
        s("t"),
        Bytes::from(vec![0u8; MAX_REMAINING_LENGTH - 3]),
    ));
    assert_eq!(
        largest.encoded_len(ProtocolVersion::V3_1_1),
        Ok(MAX_PACKET_SIZE as usize)
    );
    drop(largest);
    let too_large = Packet::Publish(Publish::new(
        s("t"),
        Bytes::from(vec![0u8; MAX_REMAINING_LENGTH - 2]),
    ));
    let mut buf = BytesMut::new();
    assert_eq!(
        too_large.encode(ProtocolVersion::V3_1_1, &mut buf),
        Err(EncodeError::PacketTooLarge(MAX_REMAINING_LENGTH + 1))
    );
    assert!(buf.is_empty(), "nothing written on error");
    // A fifth length byte, and a non-minimal encoding ([MQTT-1.5.5-1]), are malformed.
    let mut dec = Decoder::resume(Role::Server, ProtocolVersion::V5, MAX_PACKET_SIZE);
    assert!(matches!(
        dec.decode(&mut BytesMut::from(
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]
        )),
        Err(Error::Malformed(Malformed::VarIntTooLong { .. }))
    ));
    let mut dec = Decoder::resume(Role::Server, ProtocolVersion::V5, MAX_PACKET_SIZE);
    assert!(matches!(
        dec.decode(&mut BytesMut::from(&[0xC0, 0x80, 0x00][..])),
        Err(Error::Malformed(Malformed::NonMinimalVarInt { .. }))
    ));
}

/// Whatever our encoder writes, our decoder must read back. `Auth::write` always writes the
/// full form (`f0 02 00 00` for Success without properties, as mqtt-packet does), which means
/// exactly what the short form `f0 00` means (MQTT 5 §3.15.2.1; §3.15.2.2.1: a missing Property
/// Length is 0), so both must decode to the same AUTH.
#[test]
fn auth_success_without_properties_round_trips() {
    let v = ProtocolVersion::V5;
    let auth = Packet::Auth(net::mqtt::Auth::default());
    let bytes = encode(&auth, v).unwrap();
    assert_eq!(bytes, [0xF0, 0x02, 0x00, 0x00]);
    for role in [Role::Server, Role::Client] {
        let mut dec = Decoder::resume(role, v, MAX_PACKET_SIZE);
        assert_eq!(
            decode_one(&mut dec, &bytes),
            Ok(auth.clone()),
            "{role:?} decoding our AUTH"
        );
        let mut dec = Decoder::resume(role, v, MAX_PACKET_SIZE);
        assert_eq!(
            decode_one(&mut dec, &[0xF0, 0x00]),
            Ok(auth.clone()),
            "{role:?}, short form"
        );
    }
}

/// The short forms MQTT 5 allows and both codecs read, which is why [`KnownDifference`] holds.
#[test]
fn spec_v5_short_forms_decode() {
    let v = ProtocolVersion::V5;
    let decode = |bytes: &[u8], ptype| {
        decode_everywhere(bytes, ptype, v, Sender::Any)
            .unwrap_or_else(|e| panic!("{}: {e}", hex(bytes)))
    };
    // §3.4.2.1: reason code and property length omitted, Remaining Length 2 (and we write it).
    assert_eq!(
        decode(&[0x40, 0x02, 0x00, 0x0A], PacketType::PubAck),
        Packet::PubAck(Ack::new(10))
    );
    assert_eq!(
        encode(&Packet::PubAck(Ack::new(10)), v).unwrap(),
        [0x40, 0x02, 0x00, 0x0A]
    );
    // §3.4.2.2.1: "If the Remaining Length is less than 4 there is no Property Length".
    let no_match = Ack {
        reason_code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        ..Ack::new(3)
    };
    assert_eq!(
        decode(&[0x40, 0x03, 0x00, 0x03, 0x10], PacketType::PubAck),
        Packet::PubAck(no_match.clone())
    );
    assert_eq!(
        decode(&[0x40, 0x04, 0x00, 0x03, 0x10, 0x00], PacketType::PubAck),
        Packet::PubAck(no_match)
    );
    // §3.14.2.1: DISCONNECT with Remaining Length 0 is a normal disconnection.
    assert_eq!(
        decode(&[0xE0, 0x00], PacketType::Disconnect),
        Packet::Disconnect(Disconnect::default())
    );
    assert_eq!(
        decode(&[0xE0, 0x01, 0x04], PacketType::Disconnect),
        Packet::Disconnect(Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL))
    );
    // §3.15.2.1: AUTH with Remaining Length 0 is Success (we always write the full form).
    assert_eq!(
        decode(&[0xF0, 0x00], PacketType::Auth),
        decode(&[0xF0, 0x02, 0x00, 0x00], PacketType::Auth)
    );
}
