use bincode::config::{Configuration, Limit};

use super::{Codec, CodecError, DecodeLimits, DecodeVisitor};

/// The absolute ceiling bincode itself enforces on what one decode may claim, whatever
/// [`DecodeLimits`] say: a second line of defence against length prefixes that lie.
const HARD_LIMIT: usize = 256 * 1024 * 1024;

type Config =
    Configuration<bincode::config::LittleEndian, bincode::config::Varint, Limit<HARD_LIMIT>>;

pub(crate) const CONFIG: Config = bincode::config::standard().with_limit::<HARD_LIMIT>();

/// Runs `$body` with `$config`, bincode's configuration with a limit of at least `$claims` bytes.
///
/// bincode allocates what a length prefix claims *before* it reads the bytes, up to its limit: a
/// 5-byte message claiming a 252 MB string made a worker allocate 252 MB (found by fuzzing). The
/// limit counts what a decode claims, which a real message keeps under 16 times its size (an
/// integer claims its width, up to 16 bytes, whatever its varint takes on the wire; a string or
/// byte string claims its length, which the message holds). So the limit follows the message: the
/// smallest of 1 KiB, 4 KiB, … 64 MiB (each four times the last) at least 16 times its size, then
/// [`HARD_LIMIT`]. What a lying length prefix can make bincode allocate stays under 64 times the
/// message's size, however large the prefix.
macro_rules! with_limit_for {
    ($claims:expr, |$config:ident| $body:expr) => {
        with_limit_for!(@arms $claims, |$config| $body, [10 12 14 16 18 20 22 24 26])
    };
    (@arms $claims:expr, |$config:ident| $body:expr, [$($exp:literal)*]) => {{
        let claims: usize = $claims;
        $(
            if claims <= 1usize << $exp {
                let $config = bincode::config::standard().with_limit::<{ 1usize << $exp }>();
                $body
            } else
        )*
        {
            let $config = CONFIG;
            $body
        }
    }};
}

/// The default codec: [bincode] 2 through serde, compact and fast.
///
/// Content type `application/x-bincode`. Not self-describing: both sides must agree on the argument
/// types, which the task name guarantees.
///
/// ```
/// use celeriac::codec::{BincodeCodec, CodecExt, DecodeLimits};
///
/// let codec = BincodeCodec::new();
/// let bytes = codec.encode(&(1u8, "two"))?;
/// let value: (u8, String) = codec.decode(&bytes, &DecodeLimits::default())?;
/// assert_eq!(value, (1, "two".to_owned()));
/// # Ok::<(), celeriac::codec::CodecError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct BincodeCodec {
    _private: (),
}

impl BincodeCodec {
    /// The content type this codec records.
    pub const CONTENT_TYPE: &'static str = "application/x-bincode";

    /// Creates the codec.
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

/// Encodes `value` with the codec's configuration, without type erasure (for the envelope itself).
pub(crate) fn encode_typed<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, CONFIG).map_err(|e| CodecError::Encode {
        content_type: BincodeCodec::CONTENT_TYPE,
        source: Box::new(e),
    })
}

/// Decodes a `T` with the codec's configuration, without type erasure (for the envelope itself).
pub(crate) fn decode_typed<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<T, CodecError> {
    limits.check(bytes)?;
    let (value, read) = with_limit_for!(bytes.len().saturating_mul(16), |config| {
        bincode::serde::decode_from_slice(bytes, config)
    })
    .map_err(|e| CodecError::Decode {
        content_type: BincodeCodec::CONTENT_TYPE,
        source: Box::new(e),
    })?;
    reject_trailing(bytes.len(), read)?;
    Ok(value)
}

/// Bytes left after a complete value mean the bytes are not what the reader expected (another
/// type, another version of it, or tampering): refused rather than ignored.
fn reject_trailing(len: usize, read: usize) -> Result<(), CodecError> {
    match len - read.min(len) {
        0 => Ok(()),
        left => Err(CodecError::Decode {
            content_type: BincodeCodec::CONTENT_TYPE,
            source: format!("{left} trailing bytes after the value").into(),
        }),
    }
}

/// Hands bincode's deserializer to a [`DecodeVisitor`], so that bincode reports how much it read.
struct VisitorSeed<'v, 'a> {
    visit: &'v mut DecodeVisitor<'a>,
}

impl<'de> serde::de::DeserializeSeed<'de> for VisitorSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let mut erased = <dyn erased_serde::Deserializer<'_>>::erase(deserializer);
        (self.visit)(&mut erased).map_err(serde::de::Error::custom)
    }
}

impl Codec for BincodeCodec {
    fn content_type(&self) -> &'static str {
        Self::CONTENT_TYPE
    }

    fn encode_erased(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, CodecError> {
        bincode::serde::encode_to_vec(value, CONFIG).map_err(|e| CodecError::Encode {
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
        let seed = VisitorSeed { visit };
        let ((), read) = with_limit_for!(bytes.len().saturating_mul(16), |config| {
            bincode::serde::seed_decode_from_slice(seed, bytes, config)
        })
        .map_err(|e| decode_error(Box::new(e)))?;
        reject_trailing(bytes.len(), read)
    }

    /// A tuple is its elements' encodings one after another, so `(first, rest…)` is `first`'s
    /// bytes, then `rest`'s.
    fn prepend_arg(&self, first: &[u8], rest: &[u8]) -> Result<Vec<u8>, CodecError> {
        Ok([first, rest].concat())
    }

    /// A sequence is its length (as a `u64`, in the configured integer encoding), then its items.
    fn join_seq(&self, items: &[&[u8]]) -> Result<Vec<u8>, CodecError> {
        let mut bytes = encode_typed(&(items.len() as u64))?;
        bytes.reserve(items.iter().map(|item| item.len()).sum());
        for item in items {
            bytes.extend_from_slice(item);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecExt;

    /// A length prefix claiming more than the message holds is refused by the limit, before
    /// bincode allocates what it claims (a 5-byte message claiming a 252 MB string, found by
    /// fuzzing the envelope decoder).
    #[test]
    fn a_lying_length_prefix_is_refused_before_it_is_allocated() {
        let claims_252_mb = [0xFC, 0x0F, 0x0F, 0x0F, 0x0F];
        let limits = DecodeLimits::default();
        let error = BincodeCodec::new()
            .decode::<(String,)>(&claims_252_mb, &limits)
            .expect_err("5 bytes hold no 252 MB string");
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert!(
            matches!(&source, Some(text) if text.contains("LimitExceeded")),
            "refused by the limit, not after allocating: {source:?}"
        );
        let error = decode_typed::<(String,)>(&claims_252_mb, &limits).expect_err("refused");
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert!(matches!(&source, Some(text) if text.contains("LimitExceeded")));
        // What claims the most for its size still decodes: integers of 16 bytes, one byte each on
        // the wire, and sequences of them.
        let zeros = vec![0u128; 5_000];
        let bytes = BincodeCodec::new().encode(&zeros).expect("encodes");
        assert!(bytes.len() < 5_010);
        let back: Vec<u128> = BincodeCodec::new()
            .decode(&bytes, &limits)
            .expect("decodes");
        assert_eq!(back, zeros);
        // Real values of every size still decode.
        for len in [0, 1_000, 5_000, 100_000, 3_000_000] {
            let text = "x".repeat(len);
            let bytes = BincodeCodec::new()
                .encode(&(text.clone(),))
                .expect("encodes");
            let big = DecodeLimits::default().max_message_bytes(4 << 20);
            let (back,): (String,) = BincodeCodec::new().decode(&bytes, &big).expect("decodes");
            assert_eq!(back, text);
        }
    }
}
