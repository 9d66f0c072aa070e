//! Codecs turn task arguments (and, later, results) into bytes and back.
//!
//! [`Codec`] is object-safe so an [`App`](crate::App) can hold any codec behind an `Arc<dyn Codec>`;
//! the typed [`CodecExt::encode`] / [`CodecExt::decode`] helpers work on every codec, boxed or not.
//! Two codecs ship: [`BincodeCodec`] (the default: compact and fast) and [`JsonCodec`] (readable, and the
//! format Celery's own messages use). Every decode enforces [`DecodeLimits`]: an oversized message is
//! refused before any parsing, and hostile bytes produce a [`CodecError`], never a panic or an unbounded
//! allocation.
//!
//! ```
//! use celeriac::codec::{BincodeCodec, CodecExt, DecodeLimits, JsonCodec};
//!
//! let limits = DecodeLimits::default();
//! for codec in [&BincodeCodec::default() as &dyn celeriac::Codec, &JsonCodec::default()] {
//!     let bytes = codec.encode(&("13800138000".to_owned(), 424242u32))?;
//!     let (mobile, code): (String, u32) = codec.decode(&bytes, &limits)?;
//!     assert_eq!((mobile.as_str(), code), ("13800138000", 424242));
//! }
//! # Ok::<(), celeriac::codec::CodecError>(())
//! ```

pub(crate) mod bincode;
mod json;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::bincode::BincodeCodec;
pub use self::json::JsonCodec;

/// A boxed error from a codec's underlying library.
type SourceError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Limits every decode enforces, so hostile or broken messages cannot exhaust memory.
///
/// ```
/// use celeriac::codec::DecodeLimits;
///
/// let limits = DecodeLimits::default().max_message_bytes(64 * 1024);
/// assert_eq!(limits.max_bytes(), 64 * 1024);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    max_message_bytes: usize,
}

impl DecodeLimits {
    /// The default maximum message size: 1 MiB, the same order as Redis and RabbitMQ defaults for a
    /// task message with room to spare.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = crate::broker::DEFAULT_MAX_MESSAGE_BYTES;

    /// Sets the largest message (in bytes) a decode accepts.
    #[must_use]
    pub const fn max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// The largest message (in bytes) a decode accepts.
    pub const fn max_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Refuses `bytes` when it is over the limit.
    pub fn check(&self, bytes: &[u8]) -> Result<(), CodecError> {
        if bytes.len() > self.max_message_bytes {
            return Err(CodecError::TooLarge {
                len: bytes.len(),
                max: self.max_message_bytes,
            });
        }
        Ok(())
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// Why encoding or decoding failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The message is larger than [`DecodeLimits`] allow.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The message's size.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode {content_type} data")]
    Decode {
        /// The codec's content type.
        content_type: &'static str,
        /// What the underlying library reported.
        #[source]
        source: SourceError,
    },
    /// The value could not be encoded.
    #[error("cannot encode as {content_type}")]
    Encode {
        /// The codec's content type.
        content_type: &'static str,
        /// What the underlying library reported.
        #[source]
        source: SourceError,
    },
    /// No codec is known for the message's content type.
    #[error("unsupported content type `{0}`")]
    UnsupportedContentType(String),
    /// The codec cannot do what a workflow asked of it (see [`Codec::prepend_arg`]).
    #[error("the {content_type} codec cannot {operation}")]
    Unsupported {
        /// The codec's content type.
        content_type: &'static str,
        /// What was asked.
        operation: &'static str,
    },
}

/// The callback a codec hands its type-erased deserializer to; see [`Codec::decode_erased`].
pub type DecodeVisitor<'a> =
    dyn FnMut(&mut dyn erased_serde::Deserializer<'_>) -> Result<(), erased_serde::Error> + 'a;

/// A serialization format for task arguments, object-safe so that it can be swapped at run time.
///
/// Implement the two `*_erased` methods; users call the typed [`CodecExt`] methods. Implementations
/// must never panic on any input and must enforce the [`DecodeLimits`] they are given.
pub trait Codec: Send + Sync + fmt::Debug + 'static {
    /// The MIME type recorded in each envelope, e.g. `application/x-bincode`.
    fn content_type(&self) -> &'static str;

    /// Encodes a type-erased value.
    fn encode_erased(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, CodecError>;

    /// Builds a deserializer over `bytes` and passes it to `visit`, which deserializes the target type.
    fn decode_erased(
        &self,
        bytes: &[u8],
        limits: &DecodeLimits,
        visit: &mut DecodeVisitor<'_>,
    ) -> Result<(), CodecError>;

    /// From the encoding of a value `first` and the encoding of a tuple `rest`, the encoding of the
    /// tuple `(first, rest…)`: how a workflow hands one task's output to the next as its first
    /// argument without knowing either type. The default refuses; the built-in codecs splice.
    ///
    /// ```
    /// use celeriac::codec::{BincodeCodec, Codec, CodecExt, DecodeLimits};
    ///
    /// let codec = BincodeCodec::new();
    /// let first = codec.encode(&7u32)?;
    /// let rest = codec.encode(&("seven".to_owned(), true))?;
    /// let whole = codec.prepend_arg(&first, &rest)?;
    /// let decoded: (u32, String, bool) = codec.decode(&whole, &DecodeLimits::default())?;
    /// assert_eq!(decoded, (7, "seven".to_owned(), true));
    /// # Ok::<(), celeriac::codec::CodecError>(())
    /// ```
    fn prepend_arg(&self, first: &[u8], rest: &[u8]) -> Result<Vec<u8>, CodecError> {
        let _ = (first, rest);
        Err(CodecError::Unsupported {
            content_type: self.content_type(),
            operation: "prepend an argument",
        })
    }

    /// From the encodings of values, the encoding of the sequence of them (a `Vec`): how a chord
    /// hands its members' outputs to its callback. The default refuses; the built-in codecs splice.
    ///
    /// ```
    /// use celeriac::codec::{Codec, CodecExt, DecodeLimits, JsonCodec};
    ///
    /// let codec = JsonCodec::new();
    /// let items = [codec.encode(&1)?, codec.encode(&2)?];
    /// let seq = codec.join_seq(&[&items[0], &items[1]])?;
    /// let decoded: Vec<i32> = codec.decode(&seq, &DecodeLimits::default())?;
    /// assert_eq!(decoded, [1, 2]);
    /// # Ok::<(), celeriac::codec::CodecError>(())
    /// ```
    fn join_seq(&self, items: &[&[u8]]) -> Result<Vec<u8>, CodecError> {
        let _ = items;
        Err(CodecError::Unsupported {
            content_type: self.content_type(),
            operation: "join a sequence",
        })
    }
}

/// Typed encode and decode on every [`Codec`], including `dyn Codec`.
pub trait CodecExt: Codec {
    /// Encodes `value`.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        self.encode_erased(&value)
    }

    /// Decodes a `T` from `bytes`, enforcing `limits`.
    fn decode<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
        limits: &DecodeLimits,
    ) -> Result<T, CodecError> {
        let mut out = None;
        self.decode_erased(bytes, limits, &mut |deserializer| {
            out = Some(erased_serde::deserialize::<T>(deserializer)?);
            Ok(())
        })?;
        out.ok_or_else(|| CodecError::Decode {
            content_type: self.content_type(),
            source: "the codec produced no value".into(),
        })
    }
}

impl<C: Codec + ?Sized> CodecExt for C {}

/// Finds a built-in codec by content type (what a worker does for a message encoded by another app).
pub(crate) fn builtin_for(content_type: &str) -> Option<&'static dyn Codec> {
    static BINCODE: BincodeCodec = BincodeCodec::new();
    static JSON: JsonCodec = JsonCodec::new();
    if content_type == BINCODE.content_type() {
        Some(&BINCODE)
    } else if content_type == JSON.content_type() {
        Some(&JSON)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sms {
        mobile: String,
        code: u32,
        tags: Vec<String>,
    }

    fn codecs() -> [&'static dyn Codec; 2] {
        [
            builtin_for("application/x-bincode").unwrap(),
            builtin_for("application/json").unwrap(),
        ]
    }

    #[test]
    fn round_trips_structs_and_tuples() {
        let limits = DecodeLimits::default();
        for codec in codecs() {
            let sms = Sms {
                mobile: "13800138000".into(),
                code: 123456,
                tags: vec!["a".into(), "b".into()],
            };
            let bytes = codec.encode(&sms).unwrap();
            assert_eq!(codec.decode::<Sms>(&bytes, &limits).unwrap(), sms);
            let bytes = codec.encode(&()).unwrap();
            codec.decode::<()>(&bytes, &limits).unwrap();
        }
    }

    #[test]
    fn splices_tuples_and_sequences_for_workflows() {
        let limits = DecodeLimits::default();
        let sms = Sms {
            mobile: "13800138000".into(),
            code: 7,
            tags: vec!["t".into()],
        };
        for codec in codecs() {
            let first = codec.encode(&sms).unwrap();
            let only = codec
                .prepend_arg(&first, &codec.encode(&()).unwrap())
                .unwrap();
            let (decoded,): (Sms,) = codec.decode(&only, &limits).unwrap();
            assert_eq!(decoded, sms);
            let rest = codec.encode(&("key".to_owned(), 3u8)).unwrap();
            let whole = codec.prepend_arg(&first, &rest).unwrap();
            let decoded: (Sms, String, u8) = codec.decode(&whole, &limits).unwrap();
            assert_eq!(decoded, (sms.clone(), "key".to_owned(), 3));

            for n in [0usize, 1, 300] {
                let items: Vec<Vec<u8>> =
                    (0..n as u32).map(|i| codec.encode(&i).unwrap()).collect();
                let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
                let seq = codec.join_seq(&refs).unwrap();
                let decoded: Vec<u32> = codec.decode(&seq, &limits).unwrap();
                assert_eq!(decoded, (0..n as u32).collect::<Vec<_>>());
            }
        }
        let json = builtin_for("application/json").unwrap();
        assert!(json.prepend_arg(b"1", b"{\"a\":1}").is_err());
    }

    #[test]
    fn refuses_oversized_input_before_parsing() {
        let limits = DecodeLimits::default().max_message_bytes(8);
        for codec in codecs() {
            let bytes = codec.encode(&"a string longer than eight bytes").unwrap();
            let err = codec.decode::<String>(&bytes, &limits).unwrap_err();
            assert!(matches!(err, CodecError::TooLarge { max: 8, .. }), "{err}");
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        let limits = DecodeLimits::default();
        for codec in codecs() {
            let sms = Sms {
                mobile: "13800138000".into(),
                code: 1,
                tags: vec!["x".into(); 4],
            };
            let bytes = codec.encode(&sms).unwrap();
            for cut in 0..bytes.len() {
                assert!(
                    codec.decode::<Sms>(&bytes[..cut], &limits).is_err(),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn wrong_type_is_an_error() {
        let limits = DecodeLimits::default();
        for codec in codecs() {
            let bytes = codec.encode(&("only one string",)).unwrap();
            assert!(
                codec
                    .decode::<(String, String, u64)>(&bytes, &limits)
                    .is_err()
            );
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let limits = DecodeLimits::default();
        for codec in codecs() {
            let mut bytes = codec.encode(&(7u64, 8u64)).unwrap();
            bytes.extend_from_slice(b" and then some");
            let err = codec.decode::<(u64, u64)>(&bytes, &limits).unwrap_err();
            let shown = crate::error::Report(&err).to_string();
            assert!(shown.contains("trailing"), "{shown}");
        }
    }

    #[test]
    fn arguments_of_other_types_are_an_error() {
        // A string and an array do not read as two integers, though their bytes would parse as
        // such; the bytes left over give them away.
        let limits = DecodeLimits::default();
        for codec in codecs() {
            let bytes = codec.encode(&("not a number", [1u8, 1, 1])).unwrap();
            assert!(codec.decode::<(u64, u64)>(&bytes, &limits).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let limits = DecodeLimits::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..5_000 {
            let len = rng.usize(0..64);
            let bytes: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
            for codec in codecs() {
                let _ = codec.decode::<Sms>(&bytes, &limits);
                let _ = codec.decode::<(String, Vec<u64>)>(&bytes, &limits);
            }
        }
    }

    #[test]
    fn huge_length_prefix_does_not_allocate_it() {
        // A bincode varint announcing a 2^62-element vector, followed by nothing.
        let bytes = [253u8, 0, 0, 0, 0, 0, 0, 0, 64];
        let codec = builtin_for("application/x-bincode").unwrap();
        assert!(
            codec
                .decode::<Vec<u64>>(&bytes, &DecodeLimits::default())
                .is_err()
        );
    }
}
