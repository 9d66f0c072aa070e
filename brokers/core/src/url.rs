use std::fmt;

/// A broker URL that keeps its password out of every log, error and `Debug` output.
///
/// Broker adapters hold the URL in this type: [`secret`](Self::secret) gives the full URL to the client
/// library, and everything else — `Display`, `Debug`, [`redacted`](Self::redacted) — shows the password
/// as `***`. A string that does not parse as a URL, or holds an `@` outside a user name, is hidden
/// entirely, since nobody can tell where a password would be in it.
///
/// ```
/// use celeriac::broker::RedactedUrl;
///
/// let url = RedactedUrl::new("amqp://guest:hunter2@127.0.0.1:5672/%2f");
/// assert_eq!(url.to_string(), "amqp://guest:***@127.0.0.1:5672/%2f");
/// assert!(!format!("{url:?}").contains("hunter2"));
/// assert_eq!(url.secret(), "amqp://guest:hunter2@127.0.0.1:5672/%2f");
/// assert_eq!(RedactedUrl::new("not a url hunter2").redacted(), "<unparseable broker url>");
/// // Without `//`, the credentials would be read as a path: hidden all the same.
/// assert_eq!(RedactedUrl::new("amqp:guest:hunter2@host").redacted(), "<broker url with credentials>");
/// // A list of nodes, `;`-separated (see `celeriac_amqp`'s failover): each one redacted.
/// let nodes = RedactedUrl::new("amqp://guest:one@a:5672/%2f;amqp://guest:two@b:5672/%2f");
/// assert_eq!(nodes.redacted(), "amqp://guest:***@a:5672/%2f;amqp://guest:***@b:5672/%2f");
/// assert_eq!(nodes.nodes()[1].redacted(), "amqp://guest:***@b:5672/%2f");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl {
    full: String,
    redacted: String,
    /// The password as written in the URL and percent-decoded (when they differ).
    passwords: Vec<String>,
}

impl RedactedUrl {
    /// Wraps `url`: one URL, or several separated by `;` (the nodes of a cluster, as Celery writes
    /// them), each redacted.
    pub fn new(url: &str) -> Self {
        if is_list(url) {
            let nodes = url.split(';').map(Self::one).collect::<Vec<_>>();
            return Self {
                full: url.to_owned(),
                redacted: nodes
                    .iter()
                    .map(Self::redacted)
                    .collect::<Vec<_>>()
                    .join(";"),
                passwords: nodes.into_iter().flat_map(|node| node.passwords).collect(),
            };
        }
        Self::one(url)
    }

    /// The URLs of a `;`-separated list, in order; a single URL is a list of one.
    pub fn nodes(&self) -> Vec<RedactedUrl> {
        if is_list(&self.full) {
            self.full.split(';').map(Self::one).collect()
        } else {
            vec![self.clone()]
        }
    }

    fn one(url: &str) -> Self {
        let parsed = ::url::Url::parse(url);
        let mut passwords = Vec::new();
        let password = parsed.as_ref().ok().and_then(|parsed| parsed.password());
        if let Some(written) = password.filter(|written| !written.is_empty()) {
            let decoded = percent_encoding::percent_decode_str(written).decode_utf8_lossy();
            if decoded != written {
                passwords.push(decoded.into_owned());
            }
            passwords.push(written.to_owned());
        }
        let redacted = match parsed {
            Ok(mut parsed) => {
                let hidden = if parsed.password().is_some() {
                    parsed.set_password(Some("***")).is_err()
                } else {
                    // `amqp:user:pass@host` (no `//`) parses with the credentials in its path.
                    parsed.username().is_empty() && url.contains('@')
                };
                if hidden {
                    "<broker url with credentials>".to_owned()
                } else {
                    parsed.to_string()
                }
            }
            Err(_) => "<unparseable broker url>".to_owned(),
        };
        Self {
            full: url.to_owned(),
            redacted,
            passwords,
        }
    }

    /// `text` — a client library's error message, say — with this URL replaced by its redacted form
    /// and the password, as written or percent-decoded, by `***`: for passing on errors whose
    /// wording we do not control.
    ///
    /// ```
    /// use celeriac::broker::RedactedUrl;
    ///
    /// let url = RedactedUrl::new("redis://:p%40ss@cache:6379/0");
    /// assert_eq!(
    ///     url.scrub("AUTH p@ss refused by redis://:p%40ss@cache:6379/0"),
    ///     "AUTH *** refused by redis://:***@cache:6379/0"
    /// );
    /// ```
    pub fn scrub(&self, text: &str) -> String {
        let mut clean = text.replace(&self.full, &self.redacted);
        for password in &self.passwords {
            clean = clean.replace(password.as_str(), "***");
        }
        clean
    }

    /// The full URL, password included: for the client library only.
    pub fn secret(&self) -> &str {
        &self.full
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

/// Whether `url` is several URLs separated by `;` (a `;` in one URL, in its password say, is not).
fn is_list(url: &str) -> bool {
    url.split(';').filter(|node| node.contains("://")).count() > 1
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedactedUrl({})", self.redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::RedactedUrl;

    #[test]
    fn every_password_of_a_node_list_is_scrubbed() {
        let url = RedactedUrl::new("amqp://u:first@a/%2f;amqp://u:second%21@b/%2f");
        let said = url.scrub("refused: first, then second! (second%21)");
        assert_eq!(said, "refused: ***, then *** (***)");
        assert!(!format!("{url:?}").contains("first"));
        assert_eq!(url.nodes()[0].secret(), "amqp://u:first@a/%2f");
    }

    #[test]
    fn an_empty_password_scrubs_nothing_but_the_url() {
        let url = RedactedUrl::new("redis://:@cache:6379/0");
        assert_eq!(url.scrub("plain words"), "plain words");
    }

    #[test]
    fn an_unparseable_url_quoted_whole_is_hidden_whole() {
        let url = RedactedUrl::new("amqp:guest:hunter2@host");
        assert_eq!(
            url.scrub("Invalid URL: 'amqp:guest:hunter2@host'"),
            "Invalid URL: '<broker url with credentials>'"
        );
    }
}
