//! Signed messages: producers sign each task message with a secret key (HMAC-SHA256), and workers
//! that hold the key run only what it signed — Celery's `auth` serializer, for celeriac's format.
//!
//! A worker built from an app with [`AppBuilder::sign_with`](crate::AppBuilder::sign_with) verifies
//! every message before it decodes anything in it. An unsigned message, one signed by a key it
//! does not accept, and one changed after signing are dead-lettered with the reason
//! `signature mismatch: …` and never run. Keys have ids, so that a new key can take over
//! without stopping the queue:
//!
//! 1. give workers the new key too, with [`AppBuilder::accept_signatures_of`](crate::AppBuilder::accept_signatures_of);
//! 2. make producers sign with the new key;
//! 3. once the old key's messages are drained, drop it.
//!
//! ```
//! use celeriac::App;
//! use celeriac::signing::SigningKey;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = SigningKey::new("2026-11", std::env::var("SIGNING_SECRET").unwrap_or_else(|_| "a secret of thirty-two bytes or more!".into()))?;
//! let app = App::builder().broker_url("memory://").sign_with(key).build()?;
//! # let _ = app; Ok(()) }
//! ```
//!
//! On the wire a signed message is `CLS\x01`, the key id's length (one byte) and the id, the
//! 32-byte tag, then the message as it is unsigned; the tag covers the id and the message. A worker
//! with no keys runs signed messages without checking them (signing is opt-in on each side).
//! Apps that send Celery's format cannot sign (Python workers would not read the messages).
//! Secrets never appear in `Debug` output or errors.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::codec::CodecError;

/// The first bytes of a signed message.
const MAGIC: [u8; 4] = *b"CLS\x01";

/// The length of a tag (HMAC-SHA256).
const TAG: usize = 32;

/// A secret key that signs messages, and its id.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    /// HMAC keyed with the secret and fed the id: each message clones it, which spares hashing
    /// the key's pads again (half the work for a small message). The secret is not kept otherwise.
    keyed: Hmac<Sha256>,
}

impl SigningKey {
    /// The shortest secret accepted, in bytes (as long as the tag).
    pub const MIN_SECRET_BYTES: usize = 32;

    /// A key named `id` (1 to 255 bytes, no control characters) with `secret` (at least
    /// [`MIN_SECRET_BYTES`](Self::MIN_SECRET_BYTES)).
    ///
    /// ```
    /// use celeriac::signing::SigningKey;
    ///
    /// assert!(SigningKey::new("k1", "too short").is_err());
    /// let key = SigningKey::new("k1", [7u8; 32])?;
    /// assert_eq!(key.id(), "k1");
    /// assert!(!format!("{key:?}").contains("7, 7"));
    /// # Ok::<(), celeriac::signing::SigningError>(())
    /// ```
    pub fn new(id: impl Into<String>, secret: impl AsRef<[u8]>) -> Result<Self, SigningError> {
        let id = id.into();
        if id.is_empty() || id.len() > usize::from(u8::MAX) || id.chars().any(char::is_control) {
            return Err(SigningError::BadId(id));
        }
        let secret = secret.as_ref();
        if secret.len() < Self::MIN_SECRET_BYTES {
            return Err(SigningError::ShortSecret {
                id,
                len: secret.len(),
            });
        }
        let mut keyed = <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|_| {
            SigningError::ShortSecret {
                id: id.clone(),
                len: secret.len(),
            }
        })?;
        // The id is signed too: a tag cannot be moved to another key's name.
        keyed.update(&[id.len() as u8]);
        keyed.update(id.as_bytes());
        Ok(Self { id, keyed })
    }

    /// The key's id, written in each message it signs.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.keyed.clone()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a key cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// The secret is too short to be safe.
    #[error(
        "the secret of signing key `{id}` is {len} bytes; at least {} are needed",
        SigningKey::MIN_SECRET_BYTES
    )]
    ShortSecret {
        /// The key's id.
        id: String,
        /// The secret's length.
        len: usize,
    },
    /// The id is empty, longer than 255 bytes or has control characters.
    #[error("`{0}` cannot be a signing key's id (1 to 255 bytes, no control characters)")]
    BadId(String),
}

/// The keys of an app: the one it signs with, and the ones it accepts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Keys {
    signing: Option<SigningKey>,
    accepted: Vec<SigningKey>,
}

impl Keys {
    /// Signs with `key` (and accepts it).
    pub(crate) fn sign_with(&mut self, key: SigningKey) {
        self.accept(key.clone());
        self.signing = Some(key);
    }

    /// Accepts messages signed by `key`.
    pub(crate) fn accept(&mut self, key: SigningKey) {
        self.accepted.retain(|known| known.id != key.id);
        self.accepted.push(key);
    }

    /// Whether there is any key: messages are checked.
    pub(crate) fn any(&self) -> bool {
        !self.accepted.is_empty()
    }

    /// `message` signed, if the app signs.
    pub(crate) fn sign(&self, message: Vec<u8>) -> Vec<u8> {
        let Some(key) = &self.signing else {
            return message;
        };
        let mut mac = key.mac();
        mac.update(&message);
        let tag = mac.finalize().into_bytes();
        let mut signed = Vec::with_capacity(MAGIC.len() + 1 + key.id.len() + TAG + message.len());
        signed.extend_from_slice(&MAGIC);
        signed.push(key.id.len() as u8);
        signed.extend_from_slice(key.id.as_bytes());
        signed.extend_from_slice(&tag);
        signed.extend_from_slice(&message);
        signed
    }

    /// The message inside `signed`, if one of the accepted keys signed it as it is.
    pub(crate) fn verify<'a>(&self, signed: &'a [u8]) -> Result<&'a [u8], CodecError> {
        let parts = split(signed).ok_or_else(|| mismatch("the message is not signed"))?;
        let key = self
            .accepted
            .iter()
            .find(|key| key.id.as_bytes() == parts.id)
            .ok_or_else(|| {
                mismatch(&format!(
                    "signed by key `{}`, which this worker does not accept",
                    String::from_utf8_lossy(parts.id)
                ))
            })?;
        let mut mac = key.mac();
        mac.update(parts.message);
        // Compared in constant time.
        mac.verify_slice(parts.tag)
            .map_err(|_| mismatch("the message was changed after it was signed"))?;
        Ok(parts.message)
    }
}

/// The message inside a signed one, unchecked (for showing a dead letter), or `bytes` as they are.
pub(crate) fn unverified(bytes: &[u8]) -> &[u8] {
    split(bytes).map_or(bytes, |parts| parts.message)
}

struct Parts<'a> {
    id: &'a [u8],
    tag: &'a [u8],
    message: &'a [u8],
}

fn split(bytes: &[u8]) -> Option<Parts<'_>> {
    let rest = bytes.strip_prefix(&MAGIC)?;
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    if len == 0 || rest.len() < len + TAG {
        return None;
    }
    let (id, rest) = rest.split_at(len);
    let (tag, message) = rest.split_at(TAG);
    Some(Parts { id, tag, message })
}

fn mismatch(reason: &str) -> CodecError {
    CodecError::Decode {
        content_type: "signed message",
        source: format!("signature mismatch: {reason}").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> SigningKey {
        SigningKey::new(id, [byte; 32]).unwrap_or_else(|error| panic!("{error}"))
    }

    fn shown(result: Result<&[u8], CodecError>) -> String {
        match result {
            Ok(message) => format!("verified: {message:?}"),
            Err(error) => crate::error::Report(&error).to_string(),
        }
    }

    #[test]
    fn only_an_accepted_key_s_untouched_message_passes() {
        let mut producer = Keys::default();
        producer.sign_with(key("new", 1));
        let signed = producer.sign(b"a task".to_vec());
        assert_eq!(unverified(&signed), b"a task");

        let mut worker = Keys::default();
        worker.accept(key("old", 2));
        assert!(
            shown(worker.verify(&signed))
                .contains("signed by key `new`, which this worker does not accept")
        );
        worker.accept(key("new", 1));
        assert_eq!(worker.verify(&signed).ok(), Some(&b"a task"[..]));

        // Any byte changed, anywhere, is caught.
        for at in 0..signed.len() {
            let mut changed = signed.clone();
            changed[at] ^= 0x01;
            assert!(
                shown(worker.verify(&changed)).contains("signature mismatch"),
                "byte {at}"
            );
        }
        // The same id with another secret is not the same key.
        let mut impostor = Keys::default();
        impostor.sign_with(key("new", 3));
        let forged = impostor.sign(b"a task".to_vec());
        assert!(shown(worker.verify(&forged)).contains("changed after it was signed"));
        // Unsigned, truncated, empty.
        for bytes in [&b"a task"[..], &signed[..10], b""] {
            assert!(shown(worker.verify(bytes)).contains("the message is not signed"));
        }
    }

    #[test]
    fn keys_refuse_short_secrets_and_bad_ids_and_hide_secrets() {
        assert!(matches!(
            SigningKey::new("k", [0u8; 31]),
            Err(SigningError::ShortSecret { len: 31, .. })
        ));
        assert!(matches!(
            SigningKey::new("", [0u8; 32]),
            Err(SigningError::BadId(_))
        ));
        assert!(matches!(
            SigningKey::new("a\nb", [0u8; 32]),
            Err(SigningError::BadId(_))
        ));
        assert!(matches!(
            SigningKey::new("x".repeat(256), [0u8; 32]),
            Err(SigningError::BadId(_))
        ));
        let key = SigningKey::new("k", "correct horse battery staple, 32b")
            .unwrap_or_else(|error| panic!("{error}"));
        let mut keys = Keys::default();
        keys.sign_with(key);
        assert!(!format!("{keys:?}").contains("horse"));
    }
}
