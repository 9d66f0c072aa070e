use super::{Codec, CodecError, DecodeLimits, DecodeVisitor};

/// A JSON codec through `serde_json`: readable on the wire, and the body format of Celery's protocol.
///
/// Content type `application/json`. Nesting is limited by `serde_json`'s recursion limit, so deeply
/// nested hostile input is an error rather than a stack overflow.
///
/// ```
/// use celeriac::codec::{CodecExt, JsonCodec};
///
/// let codec = JsonCodec::new();
/// let bytes = codec.encode(&("13800138000", 424242))?;
/// assert_eq!(bytes, br#"["13800138000",424242]"#);
/// # Ok::<(), celeriac::codec::CodecError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonCodec {
    _private: (),
}

impl JsonCodec {
    /// The content type this codec records.
    pub const CONTENT_TYPE: &'static str = "application/json";

    /// Creates the codec.
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

impl Codec for JsonCodec {
    fn content_type(&self) -> &'static str {
        Self::CONTENT_TYPE
    }

    fn encode_erased(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError::Encode {
            content_type: Self::CONTENT_TYPE,
            source: Box::new(e),
        })
    }

    fn decode_erased(
        &self,
        bytes: &[u8],
        limits: &DecodeLimits,
        visit: &mut DecodeVisitor<'_>,
    ) -> Result<(), CodecError> {
        limits.check(bytes)?;
        let decode_error = |source: Box<dyn std::error::Error + Send + Sync>| CodecError::Decode {
            content_type: Self::CONTENT_TYPE,
            source,
        };
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let mut erased = <dyn erased_serde::Deserializer<'_>>::erase(&mut deserializer);
        visit(&mut erased).map_err(|e| decode_error(Box::new(e)))?;
        // Trailing garbage after a valid value is an error, as in `serde_json::from_slice`.
        deserializer.end().map_err(|e| decode_error(Box::new(e)))
    }

    /// A tuple is a JSON array (the empty one is `null`): `first` goes in after its `[`.
    fn prepend_arg(&self, first: &[u8], rest: &[u8]) -> Result<Vec<u8>, CodecError> {
        let not_a_tuple = || CodecError::Decode {
            content_type: Self::CONTENT_TYPE,
            source: "the remaining arguments are not a JSON array".into(),
        };
        let rest = rest.trim_ascii();
        // serde_json writes the empty tuple `()` as `null`.
        let inner = match rest {
            b"null" => &[][..],
            _ => rest
                .strip_prefix(b"[")
                .and_then(|rest| rest.strip_suffix(b"]"))
                .ok_or_else(not_a_tuple)?,
        };
        let mut bytes = Vec::with_capacity(first.len() + rest.len() + 1);
        bytes.push(b'[');
        bytes.extend_from_slice(first);
        if !inner.trim_ascii().is_empty() {
            bytes.push(b',');
            bytes.extend_from_slice(inner);
        }
        bytes.push(b']');
        Ok(bytes)
    }

    fn join_seq(&self, items: &[&[u8]]) -> Result<Vec<u8>, CodecError> {
        let mut bytes =
            Vec::with_capacity(items.iter().map(|item| item.len() + 1).sum::<usize>() + 2);
        bytes.push(b'[');
        for (index, item) in items.iter().enumerate() {
            if index > 0 {
                bytes.push(b',');
            }
            bytes.extend_from_slice(item);
        }
        bytes.push(b']');
        Ok(bytes)
    }
}
