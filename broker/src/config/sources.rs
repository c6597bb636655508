//! The three sources of settings — the TOML file, `BROKER_*` environment variables and `--set`
//! arguments — each turned into a list of validated assignments, in the order given.

use std::path::Path;

use toml_edit::{Item, TableLike};

use super::error::{ConfigError, Origin};
use super::schema::{self, ENV_PREFIX, Key};
use super::value::{Input, Value, input_of_item};

/// One validated setting from a source.
#[derive(Debug, Clone)]
pub(crate) struct Assignment {
    pub(crate) key: &'static Key,
    pub(crate) value: Value,
    pub(crate) origin: Origin,
}

/// Reads and validates the configuration file.
pub(crate) fn file(path: &Path) -> Result<Vec<Assignment>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml(path, &text)
}

/// Validates `text`, the contents of the file `path`.
pub(crate) fn toml(path: &Path, text: &str) -> Result<Vec<Assignment>, ConfigError> {
    let doc = toml_edit::Document::parse(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        line: e.span().map_or(1, |s| line_at(text, s.start)),
        message: e.message().trim_end().to_owned(),
    })?;
    let mut walk = Walk {
        path,
        text,
        assignments: Vec::new(),
        errors: Vec::new(),
    };
    walk.table(doc.as_table(), "");
    // Report the first problem in the file, whatever order the tables were walked in.
    match walk.errors.into_iter().min_by_key(|(line, _)| *line) {
        Some((_, error)) => Err(error),
        None => Ok(walk.assignments),
    }
}

/// A walk over a parsed file that collects assignments and errors.
struct Walk<'a> {
    path: &'a Path,
    text: &'a str,
    assignments: Vec<Assignment>,
    errors: Vec<(usize, ConfigError)>,
}

impl Walk<'_> {
    fn table(&mut self, table: &dyn TableLike, prefix: &str) {
        for (name, item) in table.iter() {
            let path = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}.{name}")
            };
            let span = table
                .get_key_value(name)
                .and_then(|(k, _)| k.span())
                .or_else(|| item.span());
            let line = span.map_or(1, |s| line_at(self.text, s.start));
            if let Some(key) = schema::find(&path) {
                let Some(input) = input_of_item(item) else {
                    continue;
                };
                match key.kind.parse_setting(&input) {
                    Ok(value) => self.assignments.push(Assignment {
                        key,
                        value,
                        origin: self.origin(line),
                    }),
                    Err(rejected) => {
                        // A bad record of a list is reported at its own line.
                        let line = rejected
                            .entry
                            .and_then(|i| entry_span(item, i))
                            .map_or(line, |s| line_at(self.text, s.start));
                        self.error(line, |origin| ConfigError::InvalidValue {
                            origin,
                            key: format!("{path}{}", rejected.suffix),
                            expected: rejected.expected,
                            got: rejected.got.unwrap_or_else(|| input.to_string()),
                        });
                    }
                }
            } else if schema::is_table(&path) {
                match item.as_table_like() {
                    Some(inner) => self.table(inner, &path),
                    None => {
                        let got = input_of_item(item).map_or_else(String::new, |i| i.to_string());
                        self.error(line, |origin| ConfigError::InvalidValue {
                            origin,
                            key: path.clone(),
                            expected: "expected a table".to_owned(),
                            got,
                        });
                    }
                }
            } else {
                self.unknown(item, path, line);
            }
        }
    }

    /// Reports an unknown key. A misspelled table (`[mqttt]`) is named as such; otherwise the
    /// first key under it is, so the suggestion can point to a key in another table
    /// (`[session] max_inflight` → `mqtt.max_inflight`).
    fn unknown(&mut self, item: &Item, path: String, line: usize) {
        let table = item.as_table_like();
        let (key, line) = match (table, schema::suggest(&path)) {
            (Some(table), None) => self.first_leaf(table, &path).unwrap_or((path, line)),
            _ => (path, line),
        };
        let suggestion = schema::suggest(&key);
        self.error(line, |origin| ConfigError::UnknownKey {
            origin,
            key,
            suggestion,
        });
    }

    fn first_leaf(&self, table: &dyn TableLike, prefix: &str) -> Option<(String, usize)> {
        let (name, item) = table.iter().next()?;
        let path = format!("{prefix}.{name}");
        match item.as_table_like() {
            Some(inner) if !inner.is_empty() => self.first_leaf(inner, &path),
            _ => {
                let span = table
                    .get_key_value(name)
                    .and_then(|(k, _)| k.span())
                    .or_else(|| item.span());
                Some((path, span.map_or(1, |s| line_at(self.text, s.start))))
            }
        }
    }

    fn origin(&self, line: usize) -> Origin {
        Origin::File {
            path: self.path.to_owned(),
            line,
        }
    }

    fn error(&mut self, line: usize, make: impl FnOnce(Origin) -> ConfigError) {
        let error = make(self.origin(line));
        self.errors.push((line, error));
    }
}

/// Where entry `index` of a list-valued item is in the file.
fn entry_span(item: &Item, index: usize) -> Option<std::ops::Range<usize>> {
    match item {
        Item::ArrayOfTables(tables) => tables.get(index)?.span(),
        Item::Value(toml_edit::Value::Array(array)) => array.get(index)?.span(),
        _ => None,
    }
}

/// The 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

/// Validates the `BROKER_*` variables among `vars`; other variables are ignored. The name
/// after the prefix is the key, lower-cased, with `__` between levels.
pub(crate) fn env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Assignment>, ConfigError> {
    let mut ours: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    // The process environment has no order; make the result not depend on it.
    ours.sort();
    ours.into_iter()
        .map(|(name, text)| {
            let key = name[ENV_PREFIX.len()..]
                .to_ascii_lowercase()
                .replace("__", ".");
            text_setting(Origin::Env(name), key, &text)
        })
        .collect()
}

/// Validates `--set KEY=VALUE` arguments.
pub(crate) fn sets(args: &[String]) -> Result<Vec<Assignment>, ConfigError> {
    args.iter()
        .map(|arg| {
            let (key, text) = arg
                .split_once('=')
                .ok_or_else(|| ConfigError::SetSyntax { arg: arg.clone() })?;
            text_setting(Origin::Set(arg.clone()), key.trim().to_owned(), text)
        })
        .collect()
}

/// A setting given as text (an environment variable or a `--set` value). Surrounding double
/// quotes are removed, so `--set 'mqtt.idle_timeout="15s"'` works as in the file.
fn text_setting(origin: Origin, key: String, text: &str) -> Result<Assignment, ConfigError> {
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let Some(known) = schema::find(&key) else {
        if schema::is_table(&key) {
            return Err(ConfigError::NotAKey { origin, key });
        }
        let suggestion = schema::suggest(&key);
        return Err(ConfigError::UnknownKey {
            origin,
            key,
            suggestion,
        });
    };
    let input = Input::Str(text);
    match known.kind.parse_setting(&input) {
        Ok(value) => Ok(Assignment {
            key: known,
            value,
            origin,
        }),
        Err(rejected) => Err(ConfigError::InvalidValue {
            origin,
            key: format!("{key}{}", rejected.suffix),
            expected: rejected.expected,
            got: rejected.got.unwrap_or_else(|| input.to_string()),
        }),
    }
}
