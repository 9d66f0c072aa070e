//! Parsing of `XREADGROUP` replies.

use redis::Value;

/// The fields of one stream entry.
pub(crate) type Fields = Vec<(Vec<u8>, Vec<u8>)>;
/// The entries of one stream: (id, fields).
pub(crate) type Entries = Vec<(String, Fields)>;

/// Flattens an `XREADGROUP` reply (RESP2 arrays or RESP3 maps) into (stream, [(id, fields)]).
pub(crate) fn stream_entries(reply: Value) -> Vec<(Vec<u8>, Entries)> {
    fn bytes(value: Value) -> Option<Vec<u8>> {
        match value {
            Value::BulkString(bytes) => Some(bytes),
            Value::SimpleString(text) => Some(text.into_bytes()),
            _ => None,
        }
    }
    fn pairs(value: Value) -> Vec<(Value, Value)> {
        match value {
            Value::Map(pairs) => pairs,
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(a), Some(b)) = (items.next(), items.next()) {
                    out.push((a, b));
                }
                out
            }
            _ => Vec::new(),
        }
    }
    let streams = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Value::Array(mut parts) if parts.len() == 2 => {
                    let entries = parts.pop()?;
                    let name = parts.pop()?;
                    Some((name, entries))
                }
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
            let Value::Array(entries) = entries else {
                return Some((name, Vec::new()));
            };
            let entries = entries
                .into_iter()
                .filter_map(|entry| {
                    let Value::Array(mut parts) = entry else {
                        return None;
                    };
                    if parts.len() != 2 {
                        return None;
                    }
                    let fields = parts.pop()?;
                    let id = String::from_utf8(bytes(parts.pop()?)?).ok()?;
                    let fields = pairs(fields)
                        .into_iter()
                        .filter_map(|(k, v)| Some((bytes(k)?, bytes(v)?)))
                        .collect();
                    Some((id, fields))
                })
                .collect();
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
        assert_eq!(parsed[0].1.len(), 1);
        assert_eq!(parsed[0].1[0].0, "1-0");
        assert_eq!(
            parsed[0].1[0].1,
            vec![
                (b"p".to_vec(), b"x".to_vec()),
                (b"r".to_vec(), b"1".to_vec())
            ]
        );
        assert!(stream_entries(Value::Nil).is_empty());
    }
}
