//! [`ArgsKey`]: a stable digest of a task's arguments, for unique tasks and keyed rate limits.

use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::codec::CodecError;

/// A digest of some or all of a task's arguments (SHA-256 of their bincode encoding, first 128
/// bits), stable across processes and releases: what makes two sends of a unique task the same
/// ([`Task::unique_key`](crate::Task::unique_key), `#[task(unique_key = "mobile")]`), and which budget
/// a keyed rate limit draws on ([`Task::rate_limit_key`](crate::Task::rate_limit_key),
/// `#[task(rate_limit_key = "mobile")]`).
///
/// ```
/// use celeriac::task::ArgsKey;
///
/// let key = ArgsKey::of(&("13800138000",))?;
/// assert_eq!(key, ArgsKey::of(&("13800138000".to_owned(),))?);
/// assert_ne!(key, ArgsKey::of(&("13800138001",))?);
/// assert_eq!(key.to_string().len(), 32);
/// # Ok::<(), celeriac::codec::CodecError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArgsKey([u8; 16]);

impl ArgsKey {
    /// The key of `value` (a tuple of the arguments that make a send unique).
    pub fn of<S: Serialize + ?Sized>(value: &S) -> Result<Self, CodecError> {
        let encoded = crate::codec::bincode::encode_typed(&value)?;
        let digest = Sha256::digest(&encoded);
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        Ok(Self(key))
    }
}

impl fmt::Display for ArgsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 32];
        for (index, byte) in self.0.iter().enumerate() {
            text[2 * index] = HEX[usize::from(byte >> 4)];
            text[2 * index + 1] = HEX[usize::from(byte & 0x0f)];
        }
        // Only ASCII hex digits were written.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ArgsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArgsKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_across_releases() {
        // A key computed by another version of celeriac must match: sends from old and new
        // producers during a rolling upgrade are still one.
        let key = ArgsKey::of(&("13800138000",)).ok();
        assert_eq!(
            key.map(|key| key.to_string()),
            Some(KNOWN_KEY.to_owned()),
            "the unique key of a value changed"
        );
    }

    // SHA-256 of bincode's encoding, 0x0b then the 11 digits: `printf '\x0b13800138000' | sha256sum`.
    const KNOWN_KEY: &str = "bc634af8dd4e0ee11d444fe7c26a4d1e";
}
