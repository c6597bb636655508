//! Topic names and topic filters (4.7) and shared subscriptions (4.8.2).

use std::fmt;

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// Zero length ([MQTT-4.7.3-1]).
    Empty,
    /// A topic name containing `+` or `#` ([MQTT-3.3.2-2]).
    WildcardInTopicName,
    /// `#` not alone in the last level ([MQTT-4.7.1-1]).
    MultiLevelWildcardNotLast,
    /// `+` sharing a level with other characters ([MQTT-4.7.1-2]).
    SingleLevelWildcardNotAlone,
    /// `$share/` with an empty share name or one containing `/`, `+` or `#` ([MQTT-4.8.2-1]).
    InvalidShareName,
    /// `$share/{name}` not followed by `/` and a non-empty topic filter ([MQTT-4.8.2-2]).
    SharedFilterMissing,
}

impl TopicError {
    /// The normative statement broken.
    pub fn rule(&self) -> &'static str {
        match self {
            TopicError::Empty => "MQTT-4.7.3-1",
            TopicError::WildcardInTopicName => "MQTT-3.3.2-2",
            TopicError::MultiLevelWildcardNotLast => "MQTT-4.7.1-1",
            TopicError::SingleLevelWildcardNotAlone => "MQTT-4.7.1-2",
            TopicError::InvalidShareName => "MQTT-4.8.2-1",
            TopicError::SharedFilterMissing => "MQTT-4.8.2-2",
        }
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::Empty => "empty topic",
            TopicError::WildcardInTopicName => "wildcard in a topic name",
            TopicError::MultiLevelWildcardNotLast => "'#' must be the whole last level",
            TopicError::SingleLevelWildcardNotAlone => "'+' must be a whole level",
            TopicError::InvalidShareName => "invalid share name",
            TopicError::SharedFilterMissing => "shared subscription without a topic filter",
        })
    }
}

/// The prefix of a shared subscription (4.8.2).
pub const SHARE_PREFIX: &str = "$share/";

/// Validates a topic name as used in PUBLISH and in the will topic.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInTopicName);
    }
    Ok(())
}

/// Validates a topic filter as used in SUBSCRIBE and UNSUBSCRIBE, including the shared
/// subscription syntax `$share/{ShareName}/{filter}`.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let filter = match filter.strip_prefix(SHARE_PREFIX) {
        Some(rest) => {
            let (name, inner) = rest.split_once('/').ok_or(if rest.is_empty() {
                TopicError::InvalidShareName
            } else {
                TopicError::SharedFilterMissing
            })?;
            if name.is_empty() || name.bytes().any(|b| b == b'+' || b == b'#') {
                return Err(TopicError::InvalidShareName);
            }
            if inner.is_empty() {
                return Err(TopicError::SharedFilterMissing);
            }
            inner
        }
        None if filter == "$share" => return Err(TopicError::SharedFilterMissing),
        None => filter,
    };
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MultiLevelWildcardNotLast);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::SingleLevelWildcardNotAlone);
        }
    }
    Ok(())
}

/// Splits a valid shared subscription filter into `(share_name, topic_filter)`; `None` for a
/// filter that is not shared.
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix(SHARE_PREFIX)?.split_once('/')
}

/// Whether `filter` contains a wildcard.
pub fn has_wildcard(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

/// Whether a valid, non-shared topic filter matches a topic name (4.7), including the rule
/// that wildcards at the first level do not match topics starting with `$` ([MQTT-4.7.2-1]).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert_eq!(validate_topic_name("a/b"), Ok(()));
        assert_eq!(validate_topic_name("/"), Ok(()));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(
            validate_topic_name("a/+"),
            Err(TopicError::WildcardInTopicName)
        );
        assert_eq!(
            validate_topic_name("a/#"),
            Err(TopicError::WildcardInTopicName)
        );
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/",
            "$share/g/a/#",
            "$share/g//",
            "sport/tennis/#",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
        }
        for (bad, err) in [
            ("", TopicError::Empty),
            ("a/#/b", TopicError::MultiLevelWildcardNotLast),
            ("a#", TopicError::MultiLevelWildcardNotLast),
            ("sport/tennis#", TopicError::MultiLevelWildcardNotLast),
            ("a+", TopicError::SingleLevelWildcardNotAlone),
            ("a/b+/c", TopicError::SingleLevelWildcardNotAlone),
            ("$share//a", TopicError::InvalidShareName),
            ("$share/g+/a", TopicError::InvalidShareName),
            ("$share/", TopicError::InvalidShareName),
            ("$share/g", TopicError::SharedFilterMissing),
            ("$share/g/", TopicError::SharedFilterMissing),
            ("$share", TopicError::SharedFilterMissing),
            ("$share/g/a#", TopicError::MultiLevelWildcardNotLast),
        ] {
            assert_eq!(validate_topic_filter(bad), Err(err), "{bad}");
        }
        assert_eq!(split_shared("$share/g/a/b"), Some(("g", "a/b")));
        assert_eq!(split_shared("a/b"), None);
    }

    #[test]
    fn matching() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(!matches("#", "$SYS/broker"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }
}
