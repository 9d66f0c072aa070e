//! Parsing of `XREADGROUP` replies.

use redis::Value;

/// One entry of a celeriac stream: its id and the fields celeriac writes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) id: String,
    /// Field `p`; `None` for an entry not written by celeriac.
    pub(crate) payload: Option<Vec<u8>>,
    /// Field `r` = `1`: put back after a delivery that was not acknowledged.
    pub(crate) redelivered: bool,
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

/// Reads one `[id, [field, value, …]]` entry, taking the reply's buffers over without copying.
fn entry(value: Value) -> Option<Entry> {
    let Value::Array(parts) = value else {
        return None;
    };
    let [id, fields] = <[Value; 2]>::try_from(parts).ok()?;
    let mut entry = Entry {
        id: String::from_utf8(bytes(id)?).ok()?,
        payload: None,
        redelivered: false,
    };
    let mut field = |name: Value, value: Value| {
        let (Some(name), Some(value)) = (bytes(name), bytes(value)) else {
            return;
        };
        match name.as_slice() {
            b"p" => entry.payload = Some(value),
            b"r" => entry.redelivered = value == b"1",
            _ => {}
        }
    };
    match fields {
        Value::Array(items) => {
            let mut items = items.into_iter();
            while let (Some(name), Some(value)) = (items.next(), items.next()) {
                field(name, value);
            }
        }
        Value::Map(pairs) => pairs
            .into_iter()
            .for_each(|(name, value)| field(name, value)),
        _ => {}
    }
    Some(entry)
}

/// Flattens an `XREADGROUP` reply (RESP2 arrays or RESP3 maps) into (stream, entries), skipping
/// malformed parts.
pub(crate) fn stream_entries(reply: Value) -> Vec<(Vec<u8>, Vec<Entry>)> {
    let streams = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Value::Array(parts) => <[Value; 2]>::try_from(parts)
                    .ok()
                    .map(|[name, entries]| (name, entries)),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams,
        _ => Vec::new(),
    };
    streams
        .into_iter()
        .filter_map(|(name, entries)| {
            let name = bytes(name)?;
            let entries = match entries {
                Value::Array(entries) => entries.into_iter().filter_map(entry).collect(),
                _ => Vec::new(),
            };
            Some((name, entries))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::stream_entries;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn parses_resp2_replies_and_skips_malformed_parts() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("s1"),
                Value::Array(vec![
                    Value::Array(vec![
                        bulk("1-0"),
                        Value::Array(vec![bulk("p"), bulk("x"), bulk("r"), bulk("1")]),
                    ]),
                    Value::Int(7),
                ]),
            ]),
            Value::Nil,
        ]);
        let parsed = stream_entries(reply);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, b"s1");
        assert_eq!(
            parsed[0].1,
            vec![super::Entry {
                id: "1-0".to_owned(),
                payload: Some(b"x".to_vec()),
                redelivered: true,
            }]
        );
        assert!(stream_entries(Value::Nil).is_empty());
    }
}
