//! The leader's ledger — what each entry last sent, and what it is sending — and which ticks are
//! due at a given time.
//!
//! The ledger is the election's record: a leader writes it (fenced by its term) *before* it sends
//! a round's ticks, with those ticks marked pending, and again once they are sent. A successor
//! reads it and sends again the ticks still pending (the leader died between the two writes), with
//! the same task ids; a worker drops the copy of a tick that ran already (see `dedup`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::CatchUp;
use super::entry::EntryTiming;
use super::schedule::Millis;

/// A tick later than this when it is found due is *late*: what [`CatchUp::Skip`] skips.
pub(crate) const LATE_AFTER: Millis = 1_000;

/// What the leader keeps, per entry name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ledger {
    #[serde(default)]
    pub(crate) entries: BTreeMap<String, EntryLedger>,
}

/// One entry's line of the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntryLedger {
    /// The latest tick dealt with (sent, or skipped by the catch-up policy).
    pub(crate) last: Millis,
    /// Ticks written down to send and not known to be sent, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) pending: Vec<Millis>,
}

impl Ledger {
    /// Parses a record; a record that cannot be parsed is reported and replaced by an empty ledger
    /// (every entry then starts from its next tick: nothing is sent twice, some ticks may be lost).
    pub(crate) fn parse(record: Option<&[u8]>) -> Self {
        let Some(record) = record else {
            return Self::default();
        };
        serde_json::from_slice(record).unwrap_or_else(|error| {
            tracing::error!(%error, "the beat's ledger cannot be read; starting every entry from its next tick");
            Self::default()
        })
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        // A map of strings to integers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether any tick is pending.
    pub(crate) fn has_pending(&self) -> bool {
        self.entries.values().any(|entry| !entry.pending.is_empty())
    }

    /// Finds the ticks due at `now` and marks them pending; answers how many were skipped (by a
    /// catch-up policy, or past `max_catch_up`). An entry seen for the first time starts after its
    /// latest tick: nothing is sent for the past.
    pub(crate) fn plan(
        &mut self,
        entries: &[EntryTiming],
        now: Millis,
        max_catch_up: usize,
    ) -> Vec<(String, u64)> {
        let mut skipped = Vec::new();
        for entry in entries {
            let line = self
                .entries
                .entry(entry.name.clone())
                .or_insert_with(|| EntryLedger {
                    last: entry.schedule.latest(now).unwrap_or(now),
                    pending: Vec::new(),
                });
            let mut ticks = entry.schedule.ticks_back(line.last, now, max_catch_up + 1);
            let mut dropped = 0;
            if ticks.len() > max_catch_up {
                // More missed ticks than a catch-up may send: the oldest are dropped.
                dropped += ticks.len() as u64 - max_catch_up as u64;
                ticks.truncate(max_catch_up);
                // Dealt with: the next rounds start from the oldest tick kept.
                if let Some(oldest) = ticks.last() {
                    line.last = oldest - 1;
                }
            }
            ticks.reverse();
            // Oldest first, up to the first one whose jittered time has not come.
            let come = ticks
                .iter()
                .take_while(|tick| **tick + entry.jitter_of(**tick) <= now)
                .count();
            ticks.truncate(come);
            let Some(&newest) = ticks.last() else {
                if dropped > 0 {
                    skipped.push((entry.name.clone(), dropped));
                }
                continue;
            };
            let send: Vec<Millis> = match entry.catch_up {
                CatchUp::All => ticks.clone(),
                CatchUp::Latest => vec![newest],
                CatchUp::Skip => ticks
                    .iter()
                    .copied()
                    .filter(|tick| now - (tick + entry.jitter_of(*tick)) <= LATE_AFTER)
                    .collect(),
            };
            dropped += (ticks.len() - send.len()) as u64;
            if dropped > 0 {
                skipped.push((entry.name.clone(), dropped));
            }
            line.last = newest;
            line.pending.extend(send);
        }
        skipped
    }

    /// When the next tick of any entry comes (jitter included), after the ledger's.
    pub(crate) fn next_due(&self, entries: &[EntryTiming]) -> Option<Millis> {
        entries
            .iter()
            .filter_map(|entry| {
                let last = self.entries.get(&entry.name)?.last;
                let tick = entry.schedule.next_after(last)?;
                Some(tick + entry.jitter_of(tick))
            })
            .min()
    }
}

/// A number in `[0, up_to)` that every process derives alike from `entry` and `tick`.
pub(crate) fn jitter(entry: &str, tick: Millis, up_to: Duration) -> Millis {
    let up_to = u64::try_from(up_to.as_millis()).unwrap_or(u64::MAX);
    if up_to == 0 {
        return 0;
    }
    let digest = Sha256::new()
        .chain_update(entry.as_bytes())
        .chain_update(tick.to_be_bytes())
        .finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    Millis::try_from(u64::from_be_bytes(first) % up_to).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beat::schedule::Schedule;

    const SECOND: Millis = 1_000;
    const T: Millis = 1_795_996_770_000;

    fn entry(name: &str, catch_up: CatchUp, jitter: Duration) -> EntryTiming {
        EntryTiming {
            name: name.to_owned(),
            schedule: Schedule::every(Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}")),
            catch_up,
            jitter,
        }
    }

    fn pending(ledger: &Ledger, name: &str) -> Vec<Millis> {
        ledger.entries[name].pending.clone()
    }

    #[test]
    fn a_new_entry_starts_at_its_next_tick_and_then_sends_each_once() {
        let entries = [entry("e", CatchUp::All, Duration::ZERO)];
        let mut ledger = Ledger::default();
        assert!(ledger.plan(&entries, T + 500, 100).is_empty());
        assert!(!ledger.has_pending());
        assert_eq!(ledger.next_due(&entries), Some(T + SECOND));
        ledger.plan(&entries, T + SECOND, 100);
        assert_eq!(pending(&ledger, "e"), vec![T + SECOND]);
        // The same time again finds nothing new.
        ledger.plan(&entries, T + SECOND + 10, 100);
        assert_eq!(pending(&ledger, "e"), vec![T + SECOND]);
    }

    #[test]
    fn catch_up_policies_decide_what_a_late_leader_sends() {
        let mut ledger = Ledger::default();
        let entries = [
            entry("all", CatchUp::All, Duration::ZERO),
            entry("latest", CatchUp::Latest, Duration::ZERO),
            entry("skip", CatchUp::Skip, Duration::ZERO),
        ];
        ledger.plan(&entries, T, 100);
        // Five seconds without a leader, found 0.2 s after the fifth tick.
        let skipped = ledger.plan(&entries, T + 5 * SECOND + 200, 100);
        let ticks: Vec<Millis> = (1..=5).map(|n| T + n * SECOND).collect();
        assert_eq!(pending(&ledger, "all"), ticks);
        assert_eq!(pending(&ledger, "latest"), vec![T + 5 * SECOND]);
        assert_eq!(pending(&ledger, "skip"), vec![T + 5 * SECOND]);
        assert_eq!(skipped, vec![("latest".into(), 4), ("skip".into(), 4)]);
        // Every policy has dealt with the missed ticks: none comes back.
        for name in ["all", "latest", "skip"] {
            assert_eq!(ledger.entries[name].last, T + 5 * SECOND);
        }
    }

    #[test]
    fn a_long_stop_or_a_clock_jump_sends_at_most_the_bound() {
        let entries = [entry("e", CatchUp::All, Duration::ZERO)];
        let mut ledger = Ledger::default();
        ledger.plan(&entries, T, 100);
        // A day later: 86 400 missed ticks, of which the latest 100 are sent.
        let skipped = ledger.plan(&entries, T + 86_400 * SECOND, 100);
        let sent = pending(&ledger, "e");
        assert_eq!(sent.len(), 100);
        assert_eq!(sent.last(), Some(&(T + 86_400 * SECOND)));
        assert_eq!(
            skipped,
            vec![("e".into(), 1)],
            "counted past the bound: at least one"
        );
        // The clock steps back an hour: nothing is due until it passes the ledger again.
        if let Some(line) = ledger.entries.get_mut("e") {
            line.pending.clear();
        }
        ledger.plan(&entries, T + 82_800 * SECOND, 100);
        assert!(!ledger.has_pending());
    }

    #[test]
    fn jitter_delays_a_tick_alike_in_every_process_and_keeps_order() {
        let jitter_up_to = Duration::from_millis(800);
        let entries = [entry("j", CatchUp::All, jitter_up_to)];
        let offset = jitter("j", T + SECOND, jitter_up_to);
        assert!((0..800).contains(&offset));
        assert_eq!(
            offset,
            jitter("j", T + SECOND, jitter_up_to),
            "deterministic"
        );
        let mut ledger = Ledger::default();
        ledger.plan(&entries, T, 100);
        if offset > 0 {
            ledger.plan(&entries, T + SECOND + offset - 1, 100);
            assert!(!ledger.has_pending(), "sent before its jittered time");
        }
        ledger.plan(&entries, T + SECOND + offset, 100);
        assert_eq!(pending(&ledger, "j"), vec![T + SECOND]);
    }

    #[test]
    fn a_ledger_round_trips_and_a_bad_one_starts_afresh() {
        let mut ledger = Ledger::default();
        ledger.entries.insert(
            "e".into(),
            EntryLedger {
                last: T,
                pending: vec![T],
            },
        );
        assert_eq!(Ledger::parse(Some(&ledger.to_bytes())), ledger);
        assert_eq!(Ledger::parse(Some(b"{not json")), Ledger::default());
        assert_eq!(Ledger::parse(None), Ledger::default());
    }
}
