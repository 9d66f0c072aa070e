use std::fmt;
use std::time::Duration;

/// A Redis URL whose `Debug` and `Display` never show the password.
#[derive(Clone)]
pub(crate) struct RedactedUrl {
    full: String,
    redacted: String,
}

impl RedactedUrl {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            full: url.to_owned(),
            redacted: redact(url),
        }
    }

    /// The URL with its password, for the client only.
    pub(crate) fn secret(&self) -> &str {
        &self.full
    }

    pub(crate) fn redacted(&self) -> &str {
        &self.redacted
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// Replaces the password of a URL (`redis://user:secret@host`) with `***`. A string that does not
/// parse as a URL is hidden entirely, since we cannot tell where a password would be.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() && parsed.set_password(Some("***")).is_err() {
                return "<redis url with credentials>".to_owned();
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable redis url>".to_owned(),
    }
}

/// Settings of a [`RedisBroker`](crate::RedisBroker); see [`RedisBrokerBuilder`](crate::RedisBrokerBuilder).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) visibility_timeout: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) operation_timeout: Duration,
    pub(crate) key_prefix: String,
    pub(crate) group: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            operation_timeout: Duration::from_secs(5),
            key_prefix: "celeriac".to_owned(),
            group: "celeriac".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://:hunter2@localhost:6379/0"),
            "redis://:***@localhost:6379/0"
        );
        assert_eq!(
            redact("rediss://user:hunter2@cache.internal/3"),
            "rediss://user:***@cache.internal/3"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("not a url with hunter2"), "<unparseable redis url>");
        let url = RedactedUrl::new("redis://:hunter2@h/");
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
