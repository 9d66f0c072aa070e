//! Parsing of `XREADGROUP` replies, as the bounded reader returns them.

use crate::bounded::Reply;

/// One entry of a celeriac stream: its id and the fields celeriac writes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) id: String,
    /// Field `p`; `None` for an entry not written by celeriac.
    pub(crate) payload: Option<Vec<u8>>,
    /// Field `r` = `1`: put back after a delivery that was not acknowledged.
    pub(crate) redelivered: bool,
    /// The size of the entry's field values when they were over the limit and not read.
    pub(crate) oversized: Option<usize>,
}

fn bytes(value: Reply) -> Option<Vec<u8>> {
    match value {
        Reply::Bulk(bytes) | Reply::Status(bytes) => Some(bytes),
        _ => None,
    }
}

/// Reads one `[id, [field, value, …]]` entry, taking the reply's buffers over without copying.
fn entry(value: Reply) -> Option<Entry> {
    let Reply::Array(parts) = value else {
        return None;
    };
    let [id, fields] = <[Reply; 2]>::try_from(parts).ok()?;
    let mut entry = Entry {
        id: String::from_utf8(bytes(id)?).ok()?,
        payload: None,
        redelivered: false,
        oversized: None,
    };
    let Reply::Array(items) = fields else {
        return Some(entry);
    };
    let mut read: usize = 0;
    let mut skipped = false;
    let mut items = items.into_iter();
    while let (Some(name), Some(value)) = (items.next(), items.next()) {
        let name = match name {
            Reply::Skipped(len) => {
                (read, skipped) = (read.saturating_add(len), true);
                continue;
            }
            name => bytes(name),
        };
        let value = match value {
            Reply::Skipped(len) => {
                (read, skipped) = (read.saturating_add(len), true);
                continue;
            }
            Reply::Bulk(value) => value,
            _ => continue,
        };
        read = read.saturating_add(value.len());
        match name.as_deref() {
            Some(b"p") => entry.payload = Some(value),
            Some(b"r") => entry.redelivered = value == b"1",
            _ => {}
        }
    }
    if skipped {
        entry.payload = None;
        entry.oversized = Some(read);
    }
    Some(entry)
}

/// Flattens an `XREADGROUP` reply into (stream, entries), skipping malformed parts.
pub(crate) fn stream_entries(reply: Reply) -> Vec<(Vec<u8>, Vec<Entry>)> {
    let Reply::Array(streams) = reply else {
        return Vec::new();
    };
    streams
        .into_iter()
        .filter_map(|stream| {
            let Reply::Array(parts) = stream else {
                return None;
            };
            let [name, entries] = <[Reply; 2]>::try_from(parts).ok()?;
            let entries = match entries {
                Reply::Array(entries) => entries.into_iter().filter_map(entry).collect(),
                _ => Vec::new(),
            };
            Some((bytes(name)?, entries))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Entry, Reply, stream_entries};

    fn bulk(text: &str) -> Reply {
        Reply::Bulk(text.as_bytes().to_vec())
    }

    fn one(id: &str, fields: Vec<Reply>) -> Reply {
        Reply::Array(vec![bulk(id), Reply::Array(fields)])
    }

    #[test]
    fn parses_replies_and_skips_malformed_parts() {
        let reply = Reply::Array(vec![
            Reply::Array(vec![
                bulk("s1"),
                Reply::Array(vec![
                    one("1-0", vec![bulk("p"), bulk("x"), bulk("r"), bulk("1")]),
                    Reply::Int(7),
                    one("2-0", vec![bulk("p"), Reply::Skipped(50_000_000)]),
                ]),
            ]),
            Reply::Nil,
        ]);
        let parsed = stream_entries(reply);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, b"s1");
        assert_eq!(
            parsed[0].1,
            vec![
                Entry {
                    id: "1-0".to_owned(),
                    payload: Some(b"x".to_vec()),
                    redelivered: true,
                    oversized: None,
                },
                Entry {
                    id: "2-0".to_owned(),
                    payload: None,
                    redelivered: false,
                    oversized: Some(50_000_000),
                },
            ]
        );
        assert!(stream_entries(Reply::Nil).is_empty());
    }
}
