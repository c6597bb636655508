//! Configuration errors: each names its source (`FILE:LINE`, `env VAR`, `--set ARG`) and the key.

use std::fmt;
use std::path::PathBuf;

use super::schema::{self, ENV_PREFIX};

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The configuration file, at a 1-based line.
    File {
        /// The file, as given on the command line.
        path: PathBuf,
        /// The line of the key.
        line: usize,
    },
    /// An environment variable (its name).
    Env(String),
    /// A `--set` argument (all of it, `KEY=VALUE`).
    Set(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File { path, line } => write!(f, "{}:{line}", path.display()),
            Self::Env(var) => write!(f, "env {var}"),
            Self::Set(arg) => write!(f, "--set {arg}"),
        }
    }
}

/// Why the configuration was rejected. The `Display` text is the whole message for the
/// operator, e.g. `broker.toml:7: mqtt.max_inflight: expected an integer from 1 to 65535, got
/// "lots"`.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML.
    Syntax {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the error.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A `--set` argument without `=`.
    SetSyntax {
        /// The argument.
        arg: String,
    },
    /// A key that is not in the schema.
    UnknownKey {
        /// Where it was given.
        origin: Origin,
        /// The dotted path, lower case.
        key: String,
        /// The known key (or table) it was probably meant to be.
        suggestion: Option<&'static str>,
    },
    /// A table set like a key from the environment or `--set` (`--set mqtt=1`).
    NotAKey {
        /// Where it was given.
        origin: Origin,
        /// The table's dotted path.
        key: String,
    },
    /// A key given a value it does not accept, or a table given a value in the file.
    InvalidValue {
        /// Where it was given.
        origin: Origin,
        /// The dotted path.
        key: String,
        /// What the key accepts (`expected an integer from 1 to 65535`).
        expected: String,
        /// What it got, as written (`"lots"`, `70000`, `a table`).
        got: String,
    },
    /// A key's value does not fit its field in `Config`: a bug in the schema, never bad input.
    Schema {
        /// The key.
        key: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "{}: cannot read: {source}", path.display()),
            Self::Syntax {
                path,
                line,
                message,
            } => {
                write!(f, "{}:{line}: invalid TOML: {message}", path.display())
            }
            Self::SetSyntax { arg } => write!(
                f,
                "--set {arg}: expected KEY=VALUE, such as --set mqtt.max_inflight=64"
            ),
            Self::UnknownKey {
                origin,
                key,
                suggestion,
            } => {
                write!(f, "{origin}: unknown key \"{key}\"")?;
                match (suggestion, origin) {
                    (Some(s), Origin::Env(_)) => match schema::find(s) {
                        Some(k) => write!(f, " (did you mean {}?)", k.env_var()),
                        None => write!(
                            f,
                            " (did you mean {ENV_PREFIX}{}__...?)",
                            s.replace('.', "__").to_ascii_uppercase()
                        ),
                    },
                    (Some(s), _) => write!(f, " (did you mean \"{s}\"?)"),
                    (None, _) => f.write_str(" (`broker config keys` lists the known keys)"),
                }
            }
            Self::NotAKey { origin, key } => {
                write!(f, "{origin}: \"{key}\" is a table, not a key")?;
                match schema::KEYS
                    .iter()
                    .find(|k| k.path.starts_with(&format!("{key}.")))
                {
                    Some(k) if matches!(origin, Origin::Env(_)) => {
                        write!(f, " (its keys are set one by one, such as {})", k.env_var())
                    }
                    Some(k) => write!(f, " (its keys are set one by one, such as {})", k.path),
                    None => Ok(()),
                }
            }
            Self::InvalidValue {
                origin,
                key,
                expected,
                got,
            } => {
                write!(f, "{origin}: {key}: {expected}, got {got}")
            }
            Self::Schema { key } => write!(
                f,
                "internal error: the value of {key} does not fit its field (a bug in the schema)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}
