//! The chord join of the in-process result backend.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::ChordJoin;

/// The chords being joined, by chord id. Each is kept for the app's `result_expires` after its
/// last write; expired ones are swept when the map has doubled since the last sweep.
#[derive(Default)]
pub(super) struct Chords {
    chords: HashMap<String, Chord>,
    swept_at: usize,
}

struct Chord {
    /// Each recorded member's output, by member index.
    outputs: BTreeMap<u32, Bytes>,
    fired: bool,
    /// The member whose failure failed the chord first.
    failed_by: Option<u32>,
    /// The size its sender kept here (Celery's chords, whose members carry size 0).
    kept_size: Option<u32>,
    expires: Instant,
}

impl Chord {
    fn new(expires: Instant) -> Self {
        Self {
            outputs: BTreeMap::new(),
            fired: false,
            failed_by: None,
            kept_size: None,
            expires,
        }
    }
}

impl Chords {
    fn entry(&mut self, id: &str, ttl: Duration) -> &mut Chord {
        let now = Instant::now();
        if self.chords.len() >= 2 * self.swept_at.max(256) {
            self.chords.retain(|_, chord| chord.expires > now);
            self.swept_at = self.chords.len();
        }
        let chord = self
            .chords
            .entry(id.to_owned())
            .or_insert_with(|| Chord::new(now + ttl));
        if chord.expires <= now {
            *chord = Chord::new(now + ttl);
        }
        chord.expires = now + ttl;
        chord
    }

    pub(super) fn join(
        &mut self,
        id: &str,
        member: u32,
        size: u32,
        output: Bytes,
        ttl: Duration,
    ) -> ChordJoin {
        let chord = self.entry(id, ttl);
        let Some(size) = Some(size).filter(|size| *size != 0).or(chord.kept_size) else {
            return ChordJoin::Failed(crate::UNSIZED_CHORD.to_owned());
        };
        let added = !chord.outputs.contains_key(&member);
        if added {
            chord.outputs.insert(member, output);
        }
        let complete = chord.outputs.len() >= size as usize;
        // The write that completes the chord sends the callback; a repeated member's write does
        // too while nobody has said it was sent (its first run may have died before sending).
        if complete && (added || !chord.fired) {
            ChordJoin::Complete(chord.outputs.values().cloned().collect())
        } else {
            ChordJoin::Waiting
        }
    }

    /// Keeps chord `id`'s size, for members that carry size 0.
    pub(super) fn keep_size(&mut self, id: &str, size: u32, ttl: Duration) {
        self.entry(id, ttl).kept_size = Some(size);
    }

    pub(super) fn fired(&mut self, id: &str, ttl: Duration) {
        self.entry(id, ttl).fired = true;
    }

    pub(super) fn fail(&mut self, id: &str, member: u32, ttl: Duration) -> bool {
        let chord = self.entry(id, ttl);
        *chord.failed_by.get_or_insert(member) == member
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn completes_once_counting_a_repeated_member_once() {
        let mut chords = Chords::default();
        let out = |n: u8| Bytes::from(vec![n]);
        assert_eq!(chords.join("c", 1, 3, out(1), TTL), ChordJoin::Waiting);
        assert_eq!(
            chords.join("c", 1, 3, out(9), TTL),
            ChordJoin::Waiting,
            "a repeated member counts once"
        );
        assert_eq!(chords.join("c", 0, 3, out(0), TTL), ChordJoin::Waiting);
        assert_eq!(
            chords.join("c", 2, 3, out(2), TTL),
            ChordJoin::Complete(vec![out(0), out(1), out(2)]),
            "in member order, the first output of a repeated member"
        );
        // Before the sender says it sent: a repeat sends again (at least once).
        assert!(matches!(
            chords.join("c", 2, 3, out(2), TTL),
            ChordJoin::Complete(_)
        ));
        chords.fired("c", TTL);
        assert_eq!(chords.join("c", 2, 3, out(2), TTL), ChordJoin::Waiting);
    }

    #[test]
    fn a_kept_size_joins_members_of_size_zero() {
        let mut chords = Chords::default();
        let out = |n: u8| Bytes::from(vec![n]);
        assert!(matches!(
            chords.join("unsized", 0, 0, out(0), TTL),
            ChordJoin::Failed(reason) if reason == crate::UNSIZED_CHORD
        ));
        chords.keep_size("c", 2, TTL);
        assert_eq!(chords.join("c", 1, 0, out(1), TTL), ChordJoin::Waiting);
        assert_eq!(
            chords.join("c", 0, 0, out(0), TTL),
            ChordJoin::Complete(vec![out(0), out(1)])
        );
    }

    #[test]
    fn the_first_failure_wins() {
        let mut chords = Chords::default();
        assert!(chords.fail("c", 4, TTL));
        assert!(!chords.fail("c", 7, TTL));
        assert!(chords.fail("c", 4, TTL), "the same member again");
    }
}
