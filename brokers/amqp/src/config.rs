use std::fmt;
use std::time::Duration;

/// An AMQP URL whose `Debug` and `Display` never show the password.
#[derive(Clone)]
pub(crate) struct RedactedUrl {
    full: String,
    redacted: String,
}

impl RedactedUrl {
    pub(crate) fn new(url: &str) -> Self {
        let redacted = match url::Url::parse(url) {
            Ok(mut parsed) => {
                if parsed.password().is_some() && parsed.set_password(Some("***")).is_err() {
                    "<amqp url with credentials>".to_owned()
                } else {
                    parsed.to_string()
                }
            }
            Err(_) => "<unparseable amqp url>".to_owned(),
        };
        Self {
            full: url.to_owned(),
            redacted,
        }
    }

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

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) operation_timeout: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) max_priority: Option<u8>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            operation_timeout: Duration::from_secs(5),
            max_deliveries: 5,
            max_priority: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RedactedUrl;

    #[test]
    fn passwords_are_redacted() {
        let url = RedactedUrl::new("amqp://guest:hunter2@127.0.0.1:5672/%2f");
        assert_eq!(url.redacted(), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(RedactedUrl::new("amqps://h/").redacted(), "amqps://h/");
        assert_eq!(
            RedactedUrl::new("%%hunter2").redacted(),
            "<unparseable amqp url>"
        );
    }
}
