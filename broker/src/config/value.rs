//! Value syntax: how the text of a setting becomes a typed [`Value`], and back.
//!
//! The syntax follows EMQX's (HOCON) so its users can copy settings over:
//!
//! | kind | accepted | examples |
//! | --- | --- | --- |
//! | boolean | `true`, `false` | `true` |
//! | integer | decimal digits | `32`, `"32"` |
//! | number | decimal, with or without a fraction | `1.5`, `2` |
//! | duration | one or more `<integer><unit>`, unit `ms`, `s`, `m`, `h`, `d`, `w` (any case) | `"15s"`, `"100ms"`, `"1h30m"`, `"0"` |
//! | size | an integer (bytes), or `<integer><unit>`, unit `B`, `KB`, `MB`, `GB` (any case, 1024-based) | `"1MB"`, `"64KB"`, `1024` |
//! | address | `IP:PORT`, `[IPv6]:PORT`, `:PORT` or `PORT` (a bare port means `0.0.0.0`) | `"0.0.0.0:1883"`, `":1883"`, `1883` |
//!
//! A duration needs a unit: a bare number other than `0` is rejected, because EMQX reads a
//! bare number as milliseconds for some keys and as seconds for others, and a silent factor
//! of 1000 is worse than an error. A TOML string is accepted wherever a number or boolean
//! is (`max_inflight = "32"`), like HOCON does, so the text of an environment variable or a
//! `--set` value goes through exactly the same parser as a value in the file.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

/// A validated setting, as the schema's [`Kind`] parsed it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// A non-negative integer (also a QoS, a count, a number of seconds).
    Int(u64),
    /// A floating-point number.
    Float(f64),
    /// A duration.
    Duration(Duration),
    /// A size in bytes.
    Size(u64),
    /// A socket address.
    Addr(SocketAddr),
    /// A filesystem path.
    Path(PathBuf),
    /// A name (`node.name`).
    Name(String),
    /// One of the names an enumerated key allows.
    Enum(&'static str),
    /// `"infinity"`: no limit.
    Infinity,
    /// `"disabled"`.
    Disabled,
    /// A list of records (`rewrite`, `auto_subscribe.topics`), each with every field of its
    /// kind, defaults filled in.
    List(Vec<Record>),
    /// A list of names from an enumeration (`ssl_options.versions`), in the order given.
    Names(Vec<&'static str>),
}

/// One entry of a list-valued key: its fields in the order the kind declares them.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `(field name, value)`, every field of the kind.
    pub fields: Vec<(&'static str, Value)>,
}

impl Record {
    /// The value of field `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// One field of the records of a list-valued key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field {
    /// Its name in the record.
    pub name: &'static str,
    /// What it accepts (a scalar kind).
    pub kind: Kind,
    /// Its default, as a `--set` value; `None` makes the field required.
    pub default: Option<&'static str>,
}

impl Value {
    /// The value as TOML, in the canonical spelling: the form `broker config check` prints and
    /// `broker config keys` shows defaults in. Reading it back gives the same value.
    pub fn to_toml(&self) -> String {
        match self {
            Self::Bool(b) => b.to_string(),
            Self::Int(n) => n.to_string(),
            // `{:?}` always keeps a fraction or an exponent (`2.0`, `1e300`), so the text stays
            // a TOML float.
            Self::Float(f) => format!("{f:?}"),
            Self::Duration(d) => quote(&format_duration(*d)),
            Self::Size(n) => quote(&format_size(*n)),
            Self::Addr(a) => quote(&a.to_string()),
            Self::Path(p) => quote(&p.display().to_string()),
            Self::Name(n) => quote(n),
            Self::Enum(name) => quote(name),
            Self::Infinity => quote("infinity"),
            Self::Disabled => quote("disabled"),
            Self::Names(names) => {
                let quoted: Vec<String> = names.iter().map(|n| quote(n)).collect();
                format!("[{}]", quoted.join(", "))
            }
            Self::List(records) => {
                let items: Vec<String> = records
                    .iter()
                    .map(|r| {
                        let fields: Vec<String> = r
                            .fields
                            .iter()
                            .map(|(name, v)| format!("{name} = {}", v.to_toml()))
                            .collect();
                        format!("{{ {} }}", fields.join(", "))
                    })
                    .collect();
                format!("[{}]", items.join(", "))
            }
        }
    }
}

/// A TOML basic string holding `s`.
fn quote(s: &str) -> String {
    toml_edit::Value::from(s).to_string()
}

/// What a key accepts. Each variant documents its syntax; ranges are inclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Kind {
    /// `true` or `false`.
    Bool,
    /// An integer from `min` to `max`.
    Int {
        /// Smallest value accepted.
        min: u64,
        /// Largest value accepted.
        max: u64,
    },
    /// A power of two from `min` to `max` (ring sizes, which index with a mask).
    PowerOfTwo {
        /// Smallest value accepted.
        min: u64,
        /// Largest value accepted.
        max: u64,
    },
    /// A finite number greater than `above`.
    Float {
        /// The value must be strictly greater than this.
        above: f64,
    },
    /// A duration from `min` to `max`.
    Duration {
        /// Shortest duration accepted.
        min: Duration,
        /// Longest duration accepted.
        max: Duration,
    },
    /// A size in bytes, from `min` to `max`.
    Size {
        /// Smallest size accepted.
        min: u64,
        /// Largest size accepted.
        max: u64,
    },
    /// A socket address to bind.
    Addr,
    /// A non-empty filesystem path.
    Path,
    /// A non-empty name that can be a topic level: no `/`, `+`, `#` or U+0000.
    Name,
    /// Any string without U+0000, empty included.
    Text,
    /// One of the listed names.
    Enum(&'static [&'static str]),
    /// `"infinity"` or an integer from `min` to `max`.
    IntOrInfinity {
        /// Smallest value accepted.
        min: u64,
        /// Largest value accepted.
        max: u64,
    },
    /// `"disabled"` or an integer from `min` to `max`.
    IntOrDisabled {
        /// Smallest value accepted.
        min: u64,
        /// Largest value accepted.
        max: u64,
    },
    /// A filesystem path, or `""` for none.
    OptPath,
    /// A list of distinct names, each one of these (possibly empty).
    Names(&'static [&'static str]),
    /// A valid MQTT topic filter (wildcards allowed; `${...}` placeholders are ordinary text).
    Filter,
    /// A regular expression (Rust `regex` syntax: no look-around or back-references).
    Regex,
    /// A list of at most `max` records with these fields: an array of tables in the file
    /// (`[[rewrite]]`), or an inline array (`[{ ... }, ...]`) there and in a variable or
    /// `--set` value.
    List {
        /// The fields of each record.
        fields: &'static [Field],
        /// Most records accepted.
        max: usize,
    },
}

/// Why a setting was rejected: what the key (or a field of one of its records) expected and
/// what it got.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rejected {
    /// For a list: the 0-based index of the offending record.
    pub(crate) entry: Option<usize>,
    /// Appended to the key in the message: `[1].re` for a field of a record.
    pub(crate) suffix: String,
    /// `expected ...`.
    pub(crate) expected: String,
    /// The value as written, when it is not the whole input's.
    pub(crate) got: Option<String>,
}

/// Durations with no upper bound of their own stop here (about 584 million years), so that
/// every accepted duration is a whole number of milliseconds that fits a `u64`.
pub(crate) const DURATION_MAX: Duration = Duration::from_millis(u64::MAX);

impl Kind {
    /// Parses `input` as this kind, or says what was expected.
    pub(crate) fn parse(&self, input: &Input<'_>) -> Result<Value, String> {
        self.parse_setting(input).map_err(|r| match r.got {
            Some(got) => format!("{}: {}, got {got}", r.suffix, r.expected),
            None => r.expected,
        })
    }

    /// Parses `input` as this kind; a rejection of a list names the record and field.
    pub(crate) fn parse_setting(&self, input: &Input<'_>) -> Result<Value, Rejected> {
        if let Self::List { fields, max } = *self {
            return parse_list(fields, max, input);
        }
        self.try_parse(input).ok_or_else(|| Rejected {
            entry: None,
            suffix: String::new(),
            expected: self.expected(),
            got: None,
        })
    }

    fn try_parse(&self, input: &Input<'_>) -> Option<Value> {
        match *self {
            Self::OptPath => match *input {
                Input::Str(s) if !s.contains('\0') => Some(Value::Path(PathBuf::from(s))),
                _ => None,
            },
            Self::Names(allowed) => {
                let parsed;
                let array = match *input {
                    Input::Array(a) => a,
                    Input::Str(text) => {
                        parsed = text.parse::<toml_edit::Value>().ok()?;
                        parsed.as_array()?
                    }
                    _ => return None,
                };
                let mut names: Vec<&'static str> = Vec::new();
                for item in array.iter() {
                    let name = allowed.iter().find(|n| Some(**n) == item.as_str())?;
                    if names.contains(name) {
                        return None;
                    }
                    names.push(name);
                }
                Some(Value::Names(names))
            }
            Self::Filter => match *input {
                Input::Str(s) if net::mqtt::topic::validate_topic_filter(s).is_ok() => {
                    Some(Value::Name(s.to_owned()))
                }
                _ => None,
            },
            Self::Regex => match *input {
                Input::Str(s) if regex::Regex::new(s).is_ok() => Some(Value::Name(s.to_owned())),
                _ => None,
            },
            Self::List { .. } => None,
            Self::Bool => match *input {
                Input::Bool(b) => Some(Value::Bool(b)),
                Input::Str("true") => Some(Value::Bool(true)),
                Input::Str("false") => Some(Value::Bool(false)),
                _ => None,
            },
            Self::Int { min, max } => int(input, min, max).map(Value::Int),
            Self::PowerOfTwo { min, max } => int(input, min, max)
                .filter(|n| n.is_power_of_two())
                .map(Value::Int),
            Self::Float { above } => {
                let f = match *input {
                    Input::Float(f) => f,
                    // Integers are exact as f64 far beyond any sensible multiplier.
                    Input::Int(i) => i as f64,
                    Input::Str(s) => s.parse().ok()?,
                    _ => return None,
                };
                (f.is_finite() && f > above).then_some(Value::Float(f))
            }
            Self::Duration { min, max } => {
                let d = match *input {
                    Input::Int(0) => Duration::ZERO,
                    Input::Str(s) => parse_duration(s)?,
                    _ => return None,
                };
                (min <= d && d <= max).then_some(Value::Duration(d))
            }
            Self::Size { min, max } => {
                let n = match *input {
                    Input::Int(i) => u64::try_from(i).ok()?,
                    Input::Str(s) => parse_size(s)?,
                    _ => return None,
                };
                (min <= n && n <= max).then_some(Value::Size(n))
            }
            Self::Addr => match *input {
                Input::Int(port) => u16::try_from(port).ok().map(any_ipv4),
                Input::Str(s) => parse_addr(s),
                _ => None,
            }
            .map(Value::Addr),
            Self::Text => match *input {
                Input::Str(s) if !s.contains('\0') => Some(Value::Name(s.to_owned())),
                _ => None,
            },
            Self::Name => match *input {
                Input::Str(s) if !s.is_empty() && !s.contains(['/', '+', '#', '\0']) => {
                    Some(Value::Name(s.to_owned()))
                }
                _ => None,
            },
            Self::Path => match *input {
                Input::Str(s) if !s.is_empty() => Some(Value::Path(PathBuf::from(s))),
                _ => None,
            },
            Self::Enum(names) => match *input {
                Input::Str(s) => names.iter().find(|n| **n == s).map(|n| Value::Enum(n)),
                _ => None,
            },
            Self::IntOrInfinity { min, max } => match *input {
                Input::Str("infinity") => Some(Value::Infinity),
                _ => int(input, min, max).map(Value::Int),
            },
            Self::IntOrDisabled { min, max } => match *input {
                Input::Str("disabled") => Some(Value::Disabled),
                _ => int(input, min, max).map(Value::Int),
            },
        }
    }

    /// What this kind accepts, as the start of an error message (`expected ...`).
    pub(crate) fn expected(&self) -> String {
        match *self {
            Self::Bool => "expected true or false".to_owned(),
            Self::Int { min, max } => format!("expected an integer from {min} to {max}"),
            Self::PowerOfTwo { min, max } => format!("expected a power of two from {min} to {max}"),
            Self::Float { above } => format!("expected a number greater than {above}"),
            Self::Duration { min, max } => {
                let example = "with a unit, such as \"15s\", \"100ms\" or \"2h\"";
                match (min.is_zero(), max == DURATION_MAX) {
                    (true, true) => format!("expected a duration {example}"),
                    (false, true) => {
                        format!("expected a duration of at least {} {example}", fmt_d(min))
                    }
                    (_, false) => format!(
                        "expected a duration from {} to {} {example}",
                        fmt_d(min),
                        fmt_d(max)
                    ),
                }
            }
            Self::Size { min, max } => format!(
                "expected a size from {} to {}, such as \"64KB\", \"1MB\" or 1024 (bytes)",
                format_size(min),
                format_size(max)
            ),
            Self::Addr => {
                "expected an address such as \"0.0.0.0:1883\", \"[::]:1883\", \":1883\" or 1883"
                    .to_owned()
            }
            Self::Path => "expected a non-empty path".to_owned(),
            Self::Name => "expected a non-empty name without '/', '+' or '#'".to_owned(),
            Self::Text => "expected a string".to_owned(),
            Self::Enum(names) => format!("expected one of {}", quoted_list(names)),
            Self::IntOrInfinity { min, max } => {
                format!("expected \"infinity\" or an integer from {min} to {max}")
            }
            Self::IntOrDisabled { min, max } => {
                format!("expected \"disabled\" or an integer from {min} to {max}")
            }
            Self::OptPath => "expected a path, or \"\" for none".to_owned(),
            Self::Names(names) => format!(
                "expected a list of distinct names from {}",
                quoted_list(names)
            ),
            Self::Filter => "expected a valid MQTT topic filter".to_owned(),
            Self::Regex => "expected a regular expression".to_owned(),
            Self::List { fields, max } => format!(
                "expected a list of at most {max} tables with the fields {}",
                field_list(fields)
            ),
        }
    }

    /// A short name of the type for `broker config keys` and the documentation.
    pub fn type_name(&self) -> String {
        match *self {
            Self::Bool => "boolean".to_owned(),
            Self::Int { min, max } => format!("integer {min}..={max}"),
            Self::PowerOfTwo { min, max } => format!("power of two {min}..={max}"),
            Self::Float { above } => format!("number > {above}"),
            Self::Duration { min, max } => match (min.is_zero(), max == DURATION_MAX) {
                (true, true) => "duration".to_owned(),
                (false, true) => format!("duration >= {}", fmt_d(min)),
                (_, false) => format!("duration {}..={}", fmt_d(min), fmt_d(max)),
            },
            Self::Size { min, max } => {
                format!("size {}..={}", format_size(min), format_size(max))
            }
            Self::Addr => "address".to_owned(),
            Self::Path => "path".to_owned(),
            Self::Name => "name".to_owned(),
            Self::Text => "string".to_owned(),
            Self::Enum(names) => names.join(" / "),
            Self::IntOrInfinity { min, max } => format!("infinity / integer {min}..={max}"),
            Self::IntOrDisabled { min, max } => format!("disabled / integer {min}..={max}"),
            Self::OptPath => "path or \"\"".to_owned(),
            Self::Names(names) => format!("list of {}", names.join(" / ")),
            Self::Filter => "topic filter".to_owned(),
            Self::Regex => "regex".to_owned(),
            Self::List { fields, max } => {
                format!("list (at most {max}) of {{{}}}", field_list(fields))
            }
        }
    }
}

/// `a, b (default 0)`: the fields of a record, for messages and the key listing.
fn field_list(fields: &[Field]) -> String {
    let names: Vec<String> = fields
        .iter()
        .map(|f| match f.default {
            None => f.name.to_owned(),
            Some(d) => format!("{} = {d}", f.name),
        })
        .collect();
    names.join(", ")
}

/// Parses a list-valued setting: the text of a variable, `--set` value or default as a TOML
/// array, or the array (of inline tables) or array of tables from the file.
fn parse_list(fields: &'static [Field], max: usize, input: &Input<'_>) -> Result<Value, Rejected> {
    let whole = |expected: String| Rejected {
        entry: None,
        suffix: String::new(),
        expected,
        got: None,
    };
    let expected = || Kind::List { fields, max }.expected();
    let parsed;
    let tables: Vec<&dyn toml_edit::TableLike> = match *input {
        Input::Str(text) => {
            parsed = text
                .parse::<toml_edit::Value>()
                .map_err(|_| whole(format!("{} (a TOML array such as [{{ ... }}])", expected())))?;
            let Some(array) = parsed.as_array() else {
                return Err(whole(expected()));
            };
            array_tables(array).ok_or_else(|| whole(expected()))?
        }
        Input::Array(array) => array_tables(array).ok_or_else(|| whole(expected()))?,
        Input::Tables(tables) => tables
            .iter()
            .map(|t| t as &dyn toml_edit::TableLike)
            .collect(),
        _ => return Err(whole(expected())),
    };
    if tables.len() > max {
        return Err(Rejected {
            entry: Some(max),
            suffix: String::new(),
            expected: format!("expected at most {max} entries"),
            got: Some(tables.len().to_string()),
        });
    }
    let mut records = Vec::with_capacity(tables.len());
    for (index, table) in tables.into_iter().enumerate() {
        let reject = |suffix: String, expected: String, got: Option<String>| Rejected {
            entry: Some(index),
            suffix: format!("[{index}]{suffix}"),
            expected,
            got,
        };
        if let Some((name, _)) = table
            .iter()
            .find(|(name, _)| !fields.iter().any(|f| f.name == *name))
        {
            return Err(reject(
                format!(".{name}"),
                format!("expected one of the fields {}", field_list(fields)),
                Some("an unknown field".to_owned()),
            ));
        }
        let mut values = Vec::with_capacity(fields.len());
        for field in fields {
            let item = table.get(field.name);
            let input = match (item.and_then(input_of_item), field.default) {
                (Some(input), _) => input,
                (None, Some(default)) => Input::Str(default),
                (None, None) => {
                    return Err(reject(
                        String::new(),
                        format!("expected the field \"{}\"", field.name),
                        Some("none".to_owned()),
                    ));
                }
            };
            let value = field.kind.parse(&input).map_err(|expected| {
                reject(
                    format!(".{}", field.name),
                    expected,
                    Some(input.to_string()),
                )
            })?;
            values.push((field.name, value));
        }
        records.push(Record { fields: values });
    }
    Ok(Value::List(records))
}

/// The inline tables of `array`, or `None` if an element is not one.
fn array_tables(array: &toml_edit::Array) -> Option<Vec<&dyn toml_edit::TableLike>> {
    array
        .iter()
        .map(|v| v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike))
        .collect()
}

/// A TOML item as the kinds' parsers see it; `None` for an empty item.
pub(crate) fn input_of_item(item: &toml_edit::Item) -> Option<Input<'_>> {
    use toml_edit::Item;
    Some(match item {
        Item::None => return None,
        Item::Value(v) => input_of_value(v),
        Item::Table(_) => Input::Other("a table"),
        Item::ArrayOfTables(tables) => Input::Tables(tables),
    })
}

/// A TOML value as the kinds' parsers see it.
pub(crate) fn input_of_value(value: &toml_edit::Value) -> Input<'_> {
    use toml_edit::Value as V;
    match value {
        V::String(s) => Input::Str(s.value()),
        V::Integer(i) => Input::Int(*i.value()),
        V::Float(f) => Input::Float(*f.value()),
        V::Boolean(b) => Input::Bool(*b.value()),
        V::Datetime(_) => Input::Other("a date-time"),
        V::Array(a) => Input::Array(a),
        V::InlineTable(_) => Input::Other("a table"),
    }
}

fn fmt_d(d: Duration) -> String {
    format_duration(d)
}

fn quoted_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    quoted.join(", ")
}

/// An integer from `min` to `max`, from a TOML integer or decimal text.
fn int(input: &Input<'_>, min: u64, max: u64) -> Option<u64> {
    let n = match *input {
        Input::Int(i) => u64::try_from(i).ok()?,
        Input::Str(s) if is_digits(s) => s.parse().ok()?,
        _ => return None,
    };
    (min <= n && n <= max).then_some(n)
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn any_ipv4(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
}

/// A setting as a source gave it, before the schema has looked at it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input<'a> {
    /// A TOML string, or the whole text of an environment variable or `--set` value.
    Str(&'a str),
    /// A TOML integer.
    Int(i64),
    /// A TOML float.
    Float(f64),
    /// A TOML boolean.
    Bool(bool),
    /// A TOML array.
    Array(&'a toml_edit::Array),
    /// A TOML array of tables (`[[name]]`).
    Tables(&'a toml_edit::ArrayOfTables),
    /// Anything else, named for the error message ("a table", "a date-time", ...).
    Other(&'static str),
}

impl fmt::Display for Input<'_> {
    /// How the value is shown after "got" in an error message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x:?}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Array(_) => f.write_str("an array"),
            Self::Tables(_) => f.write_str("an array of tables"),
            Self::Other(what) => f.write_str(what),
        }
    }
}

/// Parses a duration: one or more `<integer><unit>` segments (`"1h30m"`), unit `ms`, `s`, `m`,
/// `h`, `d` or `w` in any case, or exactly `"0"`. `None` for anything else, including a bare
/// number other than 0 and a total that does not fit a `u64` of milliseconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let s = s.to_ascii_lowercase();
    let mut rest = s.as_str();
    let mut total_ms: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..letters] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return None,
        };
        rest = &rest[letters..];
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms)?)?;
    }
    Some(Duration::from_millis(total_ms))
}

/// Formats a duration in the largest of `d`, `h`, `s` or `ms` that is exact: `"2h"`, `"300s"`,
/// `"100ms"`. Minutes are written as seconds, as EMQX's own defaults are (`"300s"`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms % 1_000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1_000;
    if s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s % 3_600 == 0 {
        format!("{}h", s / 3_600)
    } else {
        format!("{s}s")
    }
}

/// Parses a size: decimal bytes (`"1024"`), or `<integer><unit>` with unit `B`, `KB`, `MB` or
/// `GB` in any case, 1024-based as in EMQX (`"1MB"` is 1 048 576 bytes). `None` for anything
/// else or on overflow.
pub fn parse_size(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let factor: u64 = match s[digits..].to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Formats a size in the largest of `GB`, `MB`, `KB` or `B` that is exact: `"1MB"`, `"1000B"`.
pub fn format_size(n: u64) -> String {
    for (unit, factor) in [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] {
        if n != 0 && n % factor == 0 {
            return format!("{}{unit}", n / factor);
        }
    }
    format!("{n}B")
}

/// Parses an address to bind: `IP:PORT`, `[IPv6]:PORT`, or a port alone, bare (`"1883"`) or
/// after a colon (`":1883"`), which means `0.0.0.0`. Host names are not accepted: a listener
/// binds an address.
pub fn parse_addr(s: &str) -> Option<SocketAddr> {
    let port = s.strip_prefix(':').unwrap_or(s);
    if is_digits(port) {
        return port.parse().ok().map(any_ipv4);
    }
    s.parse().ok()
}

/// Converts a validated [`Value`] into the type of a `Config` field. `None` means the schema
/// table and the field disagree (a bug that the schema tests catch), never bad input.
pub(crate) trait FromValue: Sized {
    fn from_value(value: &Value) -> Option<Self>;
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: &Value) -> Option<Self> {
                match value {
                    Value::Int(n) | Value::Size(n) => Self::try_from(*n).ok(),
                    _ => None,
                }
            }
        }
    )*};
}
from_int!(u8, u16, u32, u64, usize);

impl FromValue for f64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl FromValue for Duration {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Duration(d) => Some(*d),
            _ => None,
        }
    }
}

impl FromValue for SocketAddr {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Addr(a) => Some(*a),
            _ => None,
        }
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Name(n) => Some(n.clone()),
            _ => None,
        }
    }
}

impl FromValue for PathBuf {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Path(p) => Some(p.clone()),
            _ => None,
        }
    }
}

impl FromValue for net::mqtt::QoS {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(n) => Self::from_u8(u8::try_from(*n).ok()?),
            _ => None,
        }
    }
}

/// Converts one record of a list-valued key into its `Config` type; `None` as for
/// [`FromValue`].
pub(crate) trait FromRecord: Sized {
    fn from_record(record: &Record) -> Option<Self>;
}

impl<T: FromRecord> FromValue for Vec<T> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::List(records) => records.iter().map(T::from_record).collect(),
            _ => None,
        }
    }
}

impl FromValue for Vec<&'static str> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Names(names) => Some(names.clone()),
            _ => None,
        }
    }
}

/// `"disabled"` is `None`.
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Disabled => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Some(secs(15)));
        assert_eq!(parse_duration("300s"), Some(secs(300)));
        assert_eq!(parse_duration("2h"), Some(secs(7200)));
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m"), Some(secs(60)));
        assert_eq!(parse_duration("1d"), Some(secs(86_400)));
        assert_eq!(parse_duration("1w"), Some(secs(604_800)));
        assert_eq!(parse_duration("1h30m"), Some(secs(5400)));
        assert_eq!(
            parse_duration("1m500ms"),
            Some(Duration::from_millis(60_500))
        );
        assert_eq!(parse_duration("15S"), Some(secs(15)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in [
            "", "15", "s", "15x", "1.5s", "-1s", " 15s", "15s ", "15 s", "h1", "1h30",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        // Overflow is rejected, not wrapped.
        assert_eq!(parse_duration("18446744073709551615s"), None);
        assert_eq!(parse_duration("99999999999999999999ms"), None);
    }

    #[test]
    fn duration_formatting_round_trips() {
        for (d, text) in [
            (secs(0), "0s"),
            (secs(15), "15s"),
            (secs(300), "300s"),
            (secs(7200), "2h"),
            (secs(86_400), "1d"),
            (secs(90_000), "25h"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_millis(1500), "1500ms"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Some(d));
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MB"), Some(1 << 20));
        assert_eq!(parse_size("64KB"), Some(64 << 10));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("1024B"), Some(1024));
        assert_eq!(parse_size("2gb"), Some(2 << 30));
        assert_eq!(parse_size("256mb"), Some(256 << 20));
        assert_eq!(parse_size("0"), Some(0));
        for bad in ["", "MB", "1 MB", "1.5MB", "-1", "1TB", "1K", "1MiB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!(parse_size("99999999999GB"), None);
        assert_eq!(format_size(1 << 20), "1MB");
        assert_eq!(format_size(268_435_456), "256MB");
        assert_eq!(format_size(64 << 10), "64KB");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(0), "0B");
    }

    #[test]
    fn addresses() {
        let a = |s: &str| parse_addr(s).map(|a| a.to_string());
        assert_eq!(a("0.0.0.0:1883").as_deref(), Some("0.0.0.0:1883"));
        assert_eq!(a("127.0.0.1:0").as_deref(), Some("127.0.0.1:0"));
        assert_eq!(a(":1883").as_deref(), Some("0.0.0.0:1883"));
        assert_eq!(a("1883").as_deref(), Some("0.0.0.0:1883"));
        assert_eq!(a("[::]:1883").as_deref(), Some("[::]:1883"));
        assert_eq!(a("[::1]:8883").as_deref(), Some("[::1]:8883"));
        for bad in [
            "",
            ":",
            "65536",
            ":65536",
            "localhost:1883",
            "0.0.0.0",
            "::1",
            "1.2.3.4:x",
        ] {
            assert_eq!(parse_addr(bad), None, "{bad:?}");
        }
        assert_eq!(
            Kind::Addr.parse(&Input::Int(1883)),
            Ok(Value::Addr(any_ipv4(1883)))
        );
        assert!(Kind::Addr.parse(&Input::Int(70_000)).is_err());
    }

    #[test]
    fn infinity_and_disabled() {
        let limit = Kind::IntOrInfinity { min: 1, max: 10 };
        assert_eq!(limit.parse(&Input::Str("infinity")), Ok(Value::Infinity));
        assert_eq!(limit.parse(&Input::Int(10)), Ok(Value::Int(10)));
        assert_eq!(limit.parse(&Input::Str("7")), Ok(Value::Int(7)));
        assert_eq!(
            limit.parse(&Input::Int(0)),
            Err("expected \"infinity\" or an integer from 1 to 10".to_owned())
        );
        assert!(limit.parse(&Input::Str("Infinity")).is_err());
        assert!(limit.parse(&Input::Str("disabled")).is_err());

        let keepalive = Kind::IntOrDisabled { min: 1, max: 65535 };
        assert_eq!(
            keepalive.parse(&Input::Str("disabled")),
            Ok(Value::Disabled)
        );
        assert_eq!(keepalive.parse(&Input::Str("60")), Ok(Value::Int(60)));
        assert!(keepalive.parse(&Input::Int(65536)).is_err());
        assert!(keepalive.parse(&Input::Str("infinity")).is_err());
        assert_eq!(Option::<u16>::from_value(&Value::Disabled), Some(None));
        assert_eq!(Option::<u16>::from_value(&Value::Int(60)), Some(Some(60)));
    }

    #[test]
    fn booleans() {
        for (input, want) in [
            (Input::Bool(true), true),
            (Input::Bool(false), false),
            (Input::Str("true"), true),
            (Input::Str("false"), false),
        ] {
            assert_eq!(Kind::Bool.parse(&input), Ok(Value::Bool(want)));
        }
        for bad in [
            Input::Str("yes"),
            Input::Str("TRUE"),
            Input::Int(1),
            Input::Str(""),
        ] {
            assert_eq!(
                Kind::Bool.parse(&bad),
                Err("expected true or false".to_owned())
            );
        }
    }

    #[test]
    fn integers() {
        let k = Kind::Int { min: 1, max: 65535 };
        assert_eq!(k.parse(&Input::Int(1)), Ok(Value::Int(1)));
        assert_eq!(k.parse(&Input::Int(65535)), Ok(Value::Int(65535)));
        assert_eq!(k.parse(&Input::Str("64")), Ok(Value::Int(64)));
        for bad in [
            Input::Int(0),
            Input::Int(65536),
            Input::Int(-1),
            Input::Str("lots"),
            Input::Str("+5"),
            Input::Str("5 "),
            Input::Str(""),
            Input::Float(5.0),
            Input::Bool(true),
            Input::Other("a table"),
        ] {
            assert_eq!(
                k.parse(&bad),
                Err("expected an integer from 1 to 65535".to_owned()),
                "{bad}"
            );
        }
        let ring = Kind::PowerOfTwo { min: 2, max: 1024 };
        assert_eq!(ring.parse(&Input::Int(256)), Ok(Value::Int(256)));
        assert!(ring.parse(&Input::Int(1000)).is_err());
        assert!(ring.parse(&Input::Int(1)).is_err());
        assert!(ring.parse(&Input::Int(2048)).is_err());
    }

    #[test]
    fn floats() {
        let k = Kind::Float { above: 0.0 };
        assert_eq!(k.parse(&Input::Float(1.5)), Ok(Value::Float(1.5)));
        assert_eq!(k.parse(&Input::Int(2)), Ok(Value::Float(2.0)));
        assert_eq!(k.parse(&Input::Str("1.25")), Ok(Value::Float(1.25)));
        for bad in [
            Input::Float(0.0),
            Input::Float(-1.0),
            Input::Float(f64::NAN),
            Input::Float(f64::INFINITY),
            Input::Str("inf"),
            Input::Str("x"),
        ] {
            assert_eq!(
                k.parse(&bad),
                Err("expected a number greater than 0".to_owned())
            );
        }
        assert_eq!(Value::Float(2.0).to_toml(), "2.0");
        assert_eq!(Value::Float(1.5).to_toml(), "1.5");
    }

    #[test]
    fn duration_and_size_kinds() {
        let d = Kind::Duration {
            min: Duration::ZERO,
            max: DURATION_MAX,
        };
        assert_eq!(d.parse(&Input::Str("15s")), Ok(Value::Duration(secs(15))));
        assert_eq!(d.parse(&Input::Int(0)), Ok(Value::Duration(Duration::ZERO)));
        let expected = "expected a duration with a unit, such as \"15s\", \"100ms\" or \"2h\"";
        assert_eq!(d.parse(&Input::Int(15)), Err(expected.to_owned()));
        assert_eq!(d.parse(&Input::Str("15")), Err(expected.to_owned()));
        let capped = Kind::Duration {
            min: Duration::from_millis(1),
            max: secs(10),
        };
        assert!(capped.parse(&Input::Str("0s")).is_err());
        assert!(capped.parse(&Input::Str("11s")).is_err());
        assert_eq!(
            capped.expected(),
            "expected a duration from 1ms to 10s with a unit, such as \"15s\", \"100ms\" or \"2h\""
        );

        let s = Kind::Size {
            min: 1,
            max: 268_435_456,
        };
        assert_eq!(s.parse(&Input::Str("1MB")), Ok(Value::Size(1 << 20)));
        assert_eq!(s.parse(&Input::Int(1024)), Ok(Value::Size(1024)));
        assert_eq!(s.parse(&Input::Str("256MB")), Ok(Value::Size(268_435_456)));
        assert_eq!(
            s.parse(&Input::Str("257MB")),
            Err(
                "expected a size from 1B to 256MB, such as \"64KB\", \"1MB\" or 1024 (bytes)"
                    .to_owned()
            )
        );
        assert!(s.parse(&Input::Int(0)).is_err());
        assert!(s.parse(&Input::Int(-5)).is_err());
    }

    #[test]
    fn canonical_toml_reparses() {
        let cases = [
            (
                Kind::Duration {
                    min: Duration::ZERO,
                    max: DURATION_MAX,
                },
                Value::Duration(secs(300)),
            ),
            (
                Kind::Size {
                    min: 0,
                    max: u64::MAX,
                },
                Value::Size(1000),
            ),
            (Kind::Addr, Value::Addr(any_ipv4(1883))),
            (Kind::IntOrInfinity { min: 1, max: 5 }, Value::Infinity),
            (Kind::IntOrDisabled { min: 1, max: 5 }, Value::Disabled),
            (Kind::Enum(&["a", "b"]), Value::Enum("b")),
            (Kind::Path, Value::Path(PathBuf::from("./data \"x\""))),
        ];
        for (kind, value) in cases {
            let doc = toml_edit::Document::parse(format!("k = {}", value.to_toml()))
                .unwrap_or_else(|e| panic!("{}: {e}", value.to_toml()));
            let s = doc.get("k").and_then(|i| i.as_str()).unwrap();
            assert_eq!(kind.parse(&Input::Str(s)), Ok(value));
        }
    }
}
