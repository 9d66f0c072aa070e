//! Vetting the frames RabbitMQ sends before lapin parses them.
//!
//! A message's headers are whatever its publisher wrote, and RabbitMQ passes them on as they came.
//! lapin's parser (amq-protocol) reads nested tables and arrays by recursion with no depth limit:
//! headers nested a thousand levels deep (7 KB) overflow the stack of lapin's I/O thread and abort the
//! process before celeriac sees the message; RabbitMQ then redelivers it to the next worker, which
//! dies too. So every content-header frame is checked here first, without recursion: a headers table
//! nested deeper than [`MAX_HEADER_DEPTH`] or malformed is replaced by a table holding only
//! [`REFUSED_HEADERS_HEADER`] with the reason, and the consumer dead-letters that message (its
//! body is untouched). Every other frame passes through as it came.

/// How deep a message's headers may nest tables and arrays (the headers table itself is level 1).
/// Celery's deepest header is 3 levels; lapin's parser survived 300 in our tests.
pub(crate) const MAX_HEADER_DEPTH: usize = 64;

/// The header that replaces refused headers, carrying why they were refused.
pub(crate) const REFUSED_HEADERS_HEADER: &str = "x-celeriac-refused-headers";

/// AMQP frame type of a content header.
const CONTENT_HEADER: u8 = 2;
/// Bytes before a frame's payload: type (1), channel (2), payload size (4).
const FRAME_HEADER_LEN: usize = 7;
/// The octet that ends every frame.
const FRAME_END: u8 = 0xCE;
/// Property flag of the `headers` property in a basic content header; the two before it are the
/// content type and encoding (short strings).
const HEADERS_FLAG: u16 = 1 << 13;
const CONTENT_TYPE_FLAG: u16 = 1 << 15;
const CONTENT_ENCODING_FLAG: u16 = 1 << 14;

/// What to do with the frame at the start of some bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not enough bytes yet to decide.
    NeedMore,
    /// Pass this many bytes on unchanged (they may not all have arrived yet).
    Pass(usize),
    /// Replace the first `len` bytes (one whole frame) by `frame`.
    Replace { len: usize, frame: Vec<u8> },
}

/// Decides about the frame at the start of `bytes`. Only content-header frames are held until they
/// are whole (at most `max_frame` bytes of payload); a larger one is passed on for lapin to refuse.
pub(crate) fn vet(bytes: &[u8], max_frame: usize) -> Verdict {
    // The server answers a protocol header it does not support with its own 8-byte header.
    if bytes.starts_with(b"AMQP") {
        return Verdict::Pass(8);
    }
    let Some(header) = bytes.get(..FRAME_HEADER_LEN) else {
        return Verdict::NeedMore;
    };
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
    let len = FRAME_HEADER_LEN + size + 1;
    if header[0] != CONTENT_HEADER || size > max_frame {
        return Verdict::Pass(len);
    }
    let Some(frame) = bytes.get(..len) else {
        return Verdict::NeedMore;
    };
    match refused_headers(&frame[FRAME_HEADER_LEN..len - 1]) {
        None => Verdict::Pass(len),
        Some((table, reason)) => Verdict::Replace {
            len,
            frame: replace_table(frame, table, &reason),
        },
    }
}

/// Where the headers table of a content-header payload is and why it is refused, if it is.
fn refused_headers(payload: &[u8]) -> Option<(std::ops::Range<usize>, String)> {
    // class id (2), weight (2), body size (8), then the property flags. The specification lets
    // bit 0 announce another flags word; lapin's parser reads one word and ignores that bit, and
    // this check must find the headers where lapin will: a check that skipped the "next word"
    // looked two bytes past the table lapin parses (found by fuzzing).
    let mut at = 12;
    let flags = u16::from_be_bytes([*payload.get(at)?, *payload.get(at + 1)?]);
    at += 2;
    if flags & HEADERS_FLAG == 0 {
        return None;
    }
    for flag in [CONTENT_TYPE_FLAG, CONTENT_ENCODING_FLAG] {
        if flags & flag != 0 {
            at += 1 + usize::from(*payload.get(at)?);
        }
    }
    let table = payload.get(at..)?;
    match scan_table(table) {
        Ok(_) => None,
        Err(problem) => {
            let end = table_len(table).map_or(payload.len(), |len| (at + len).min(payload.len()));
            Some((at..end, problem.reason()))
        }
    }
}

/// The length of a table (its 4-byte size prefix included), if the prefix is there.
fn table_len(table: &[u8]) -> Option<usize> {
    let size = u32::from_be_bytes(table.get(..4)?.try_into().ok()?);
    Some(4 + size as usize)
}

#[derive(Debug, PartialEq, Eq)]
enum Problem {
    TooDeep,
    Malformed(&'static str),
}

impl Problem {
    fn reason(&self) -> String {
        match self {
            Self::TooDeep => format!(
                "message headers nest tables or arrays deeper than {MAX_HEADER_DEPTH} levels"
            ),
            Self::Malformed(what) => format!("malformed message headers: {what}"),
        }
    }
}

/// Walks a field table without recursion; returns its length (size prefix included).
fn scan_table(bytes: &[u8]) -> Result<usize, Problem> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Container {
        Table,
        Array,
    }
    let read_u32 = |at: usize| -> Result<usize, Problem> {
        let raw = bytes
            .get(at..at + 4)
            .ok_or(Problem::Malformed("truncated length"))?;
        Ok(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
    };
    let len = 4 + read_u32(0)?;
    if len > bytes.len() {
        return Err(Problem::Malformed("the table is longer than its frame"));
    }
    let mut open = vec![(len, Container::Table)];
    let mut at = 4;
    while let Some(&(end, container)) = open.last() {
        if at == end {
            open.pop();
            continue;
        }
        if container == Container::Table {
            let key = usize::from(*bytes.get(at).ok_or(Problem::Malformed("truncated key"))?);
            at += 1 + key;
        }
        let kind = *bytes.get(at).ok_or(Problem::Malformed("truncated value"))?;
        at += 1;
        let size = match kind {
            b'V' => 0,
            b't' | b'b' | b'B' => 1,
            b's' | b'U' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'L' | b'l' | b'd' | b'T' => 8,
            b'S' | b'x' => 4 + read_u32(at)?,
            b'F' | b'A' => {
                if open.len() >= MAX_HEADER_DEPTH {
                    return Err(Problem::TooDeep);
                }
                let inner_end = at + 4 + read_u32(at)?;
                if inner_end > end {
                    return Err(Problem::Malformed("a nested value overruns its container"));
                }
                let inner = if kind == b'F' {
                    Container::Table
                } else {
                    Container::Array
                };
                open.push((inner_end, inner));
                at += 4;
                continue;
            }
            _ => return Err(Problem::Malformed("unknown field type")),
        };
        at += size;
        if at > end {
            return Err(Problem::Malformed("a value overruns its table"));
        }
    }
    Ok(len)
}

/// `frame` with the bytes of its payload at `table` replaced by a table of one header, the reason.
fn replace_table(frame: &[u8], table: std::ops::Range<usize>, reason: &str) -> Vec<u8> {
    let key = REFUSED_HEADERS_HEADER.as_bytes();
    let entry_len = 1 + key.len() + 1 + 4 + reason.len();
    let mut replacement = Vec::with_capacity(4 + entry_len);
    replacement.extend_from_slice(&(entry_len as u32).to_be_bytes());
    replacement.push(key.len() as u8);
    replacement.extend_from_slice(key);
    replacement.push(b'S');
    replacement.extend_from_slice(&(reason.len() as u32).to_be_bytes());
    replacement.extend_from_slice(reason.as_bytes());

    let payload = &frame[FRAME_HEADER_LEN..frame.len() - 1];
    let mut new_payload = Vec::with_capacity(payload.len() + replacement.len());
    new_payload.extend_from_slice(&payload[..table.start]);
    new_payload.extend_from_slice(&replacement);
    new_payload.extend_from_slice(&payload[table.end..]);

    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + new_payload.len() + 1);
    out.extend_from_slice(&frame[..3]);
    out.extend_from_slice(&(new_payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&new_payload);
    out.push(FRAME_END);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;
    use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};

    /// A content-header frame on channel 1 for `properties`, as RabbitMQ would send it.
    fn header_frame(properties: BasicProperties) -> Vec<u8> {
        use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, gen_frame};
        let frame = AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: 11,
                properties,
            },
        );
        let (bytes, _) =
            cookie_factory::r#gen(gen_frame(&frame), Vec::new()).expect("serialise the frame");
        bytes
    }

    /// Headers nested `depth` levels deep (the headers table is level 1), tables and arrays in turn.
    fn nested(depth: usize) -> FieldTable {
        let mut value = AMQPValue::LongString(LongString::from("bottom"));
        for level in 1..depth {
            value = if level % 2 == 0 {
                AMQPValue::FieldArray(FieldArray::from(vec![value]))
            } else {
                let mut table = FieldTable::default();
                table.insert("n".into(), value);
                AMQPValue::FieldTable(table)
            };
        }
        let mut table = FieldTable::default();
        table.insert("deep".into(), value);
        table
    }

    fn parse(frame: &[u8]) -> BasicProperties {
        let (_, parsed) = amq_protocol::frame::parse_frame(frame).expect("lapin parses the frame");
        match parsed {
            amq_protocol::frame::AMQPFrame::Header(_, header) => header.properties,
            other => panic!("not a header frame: {other:?}"),
        }
    }

    /// Bit 0 of the flags announces another flags word in the specification; lapin ignores it.
    /// The check must look where lapin reads: with the bit set, headers nested too deep are still
    /// refused, and what replaces them is what lapin reads.
    #[test]
    fn headers_are_found_where_lapin_reads_them_whatever_flag_bit_0_says() {
        let properties = BasicProperties::default()
            .with_headers(nested(MAX_HEADER_DEPTH + 1))
            .with_priority(3);
        let mut frame = header_frame(properties);
        let flags_low_byte = FRAME_HEADER_LEN + 13;
        frame[flags_low_byte] |= 1;
        let Verdict::Replace { frame: fixed, .. } = vet(&frame, 1 << 17) else {
            panic!("deep headers must be replaced");
        };
        let properties = parse(&fixed);
        let headers = properties.headers().as_ref().expect("headers");
        let reason = crate::link::text_header(Some(headers), REFUSED_HEADERS_HEADER);
        assert!(reason.expect("the reason").contains("deeper than 64"));
        assert_eq!(*properties.priority(), Some(3));
    }

    #[test]
    fn ordinary_headers_pass_unchanged() {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(nested(MAX_HEADER_DEPTH))
            .with_priority(3);
        let frame = header_frame(properties);
        assert_eq!(vet(&frame, 1 << 17), Verdict::Pass(frame.len()));
    }

    #[test]
    fn headers_nested_too_deep_are_replaced_by_the_reason() {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_headers(nested(MAX_HEADER_DEPTH + 1))
            .with_priority(3)
            .with_message_id("m-1".into());
        let frame = header_frame(properties);
        let Verdict::Replace { len, frame: fixed } = vet(&frame, 1 << 17) else {
            panic!("deep headers must be replaced");
        };
        assert_eq!(len, frame.len());
        let properties = parse(&fixed);
        let headers = properties.headers().as_ref().expect("headers");
        let reason = crate::link::text_header(Some(headers), REFUSED_HEADERS_HEADER);
        assert!(reason.expect("the reason").contains("deeper than 64"));
        assert_eq!(headers.inner().len(), 1);
        // The other properties survive the rewrite.
        assert_eq!(*properties.priority(), Some(3));
        assert_eq!(
            properties.message_id().as_ref().map(|m| m.as_str()),
            Some("m-1")
        );
        assert_eq!(
            properties.content_encoding().as_ref().map(|m| m.as_str()),
            Some("utf-8")
        );
    }

    #[test]
    fn a_thousand_levels_are_refused_without_recursion() {
        // Hand-built: serialising 1 000 levels through lapin would itself recurse that deep.
        let frame = deep_frame(1_000);
        assert!(matches!(vet(&frame, 1 << 17), Verdict::Replace { .. }));
    }

    /// A content-header frame whose headers nest `depth` tables, built without recursion.
    fn deep_frame(depth: usize) -> Vec<u8> {
        // Innermost first: an empty table, then each level wraps the previous in {"n": F<...>}.
        let mut table = 0u32.to_be_bytes().to_vec();
        for _ in 1..depth {
            let mut outer = Vec::with_capacity(table.len() + 7);
            outer.extend_from_slice(&((table.len() + 3) as u32).to_be_bytes());
            outer.extend_from_slice(&[1, b'n', b'F']);
            outer.extend_from_slice(&table);
            table = outer;
        }
        let mut payload = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11];
        payload.extend_from_slice(&HEADERS_FLAG.to_be_bytes());
        payload.extend_from_slice(&table);
        let mut frame = vec![CONTENT_HEADER, 0, 1];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        frame.push(FRAME_END);
        frame
    }

    #[test]
    fn malformed_headers_are_replaced() {
        let mut frame = deep_frame(3);
        // An unknown field type where the innermost `F` is.
        let at = frame
            .iter()
            .rposition(|&b| b == b'F')
            .expect("a nested table");
        frame[at] = b'?';
        let Verdict::Replace { frame: fixed, .. } = vet(&frame, 1 << 17) else {
            panic!("malformed headers must be replaced");
        };
        let properties = parse(&fixed);
        let reason =
            crate::link::text_header(properties.headers().as_ref(), REFUSED_HEADERS_HEADER);
        assert!(reason.expect("the reason").contains("unknown field type"));
    }

    #[test]
    fn other_frames_pass_without_waiting_for_them_whole() {
        // A body frame announcing 100 000 bytes, of which only the first few arrived.
        let mut body = vec![3, 0, 1];
        body.extend_from_slice(&100_000u32.to_be_bytes());
        body.extend_from_slice(b"abc");
        assert_eq!(vet(&body, 1 << 17), Verdict::Pass(100_008));
        assert_eq!(vet(&body[..5], 1 << 17), Verdict::NeedMore);
        let header = deep_frame(2);
        assert_eq!(vet(&header[..header.len() - 1], 1 << 17), Verdict::NeedMore);
        assert_eq!(vet(b"AMQP\x00\x00\x09\x01", 1 << 17), Verdict::Pass(8));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(12);
        let good = deep_frame(5);
        for _ in 0..20_000 {
            let mut bytes = good.clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..bytes.len());
                bytes[i] = rng.u8(..);
            }
            bytes.truncate(rng.usize(..=bytes.len()));
            let _ = vet(&bytes, 1 << 17);
        }
    }
}
