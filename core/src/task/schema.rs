//! Argument-schema fingerprints: which shape of arguments a message was encoded for.
//!
//! During a rolling deploy a producer and a worker may be built from different versions of a task's
//! argument types. bincode is not self-describing, so bytes written for one version can decode as
//! another — wrong values, not an error. Each message therefore carries a fingerprint of the
//! argument type's serde shape, traced with `serde-reflection` (field and variant names, types,
//! nesting; not the Rust type's name), and a worker whose own fingerprint differs dead-letters the
//! message, naming both, before decoding anything.
//!
//! A type `serde-reflection` cannot trace (one whose `Deserialize` needs particular input, such as
//! `serde_json::Value` or untagged enums) has no fingerprint, and its messages are not checked.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{LazyLock, PoisonError, RwLock};

use serde::de::DeserializeOwned;
use serde_reflection::{Tracer, TracerConfig};

/// The fingerprint of `A`'s serde shape, computed once per type and process.
pub(crate) fn fingerprint<A: DeserializeOwned + 'static>() -> Option<u64> {
    static KNOWN: LazyLock<RwLock<HashMap<TypeId, Option<u64>>>> = LazyLock::new(Default::default);
    let id = TypeId::of::<A>();
    if let Some(known) = KNOWN
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
    {
        return *known;
    }
    let computed = trace::<A>();
    KNOWN
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, computed);
    computed
}

/// Traces `A` and hashes its format and the formats of the named types it uses.
fn trace<A: DeserializeOwned>() -> Option<u64> {
    let mut tracer = Tracer::new(TracerConfig::default());
    let (format, _) = tracer.trace_simple_type::<A>().ok()?;
    let registry = tracer.registry().ok()?;
    let shape = serde_json::to_vec(&(format, registry)).ok()?;
    Some(fnv1a(&shape))
}

/// FNV-1a, 64 bits: stable across builds, platforms and Rust releases, unlike `std`'s hasher,
/// since a producer and a worker built apart must agree. Not a defence against forgery: it tells
/// versions apart, it does not authenticate.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct SmsV1 {
        mobile: String,
        code: u32,
    }

    mod v2 {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        pub(super) struct SmsV1 {
            pub(super) mobile: String,
            pub(super) code: u32,
            pub(super) locale: Option<String>,
        }
    }

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    enum Channel {
        Sms(String),
        Email { address: String },
    }

    #[test]
    fn the_same_shape_has_the_same_fingerprint_and_another_shape_another() {
        let pair = fingerprint::<(String, u32)>();
        assert!(pair.is_some());
        assert_eq!(pair, fingerprint::<(String, u32)>());
        assert_ne!(pair, fingerprint::<(u32, String)>());
        assert_ne!(pair, fingerprint::<(String, u64)>());
        assert!(fingerprint::<Channel>().is_some());
    }

    #[test]
    fn a_field_added_to_a_struct_of_the_same_name_changes_it() {
        let old = fingerprint::<(SmsV1,)>();
        let new = fingerprint::<(v2::SmsV1,)>();
        assert!(old.is_some() && new.is_some());
        assert_ne!(old, new);
    }

    #[test]
    fn a_type_that_cannot_be_traced_has_none() {
        assert_eq!(fingerprint::<serde_json::Value>(), None);
    }

    #[test]
    fn fnv1a_matches_its_reference_values() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
