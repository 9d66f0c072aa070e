//! The beat's metrics (see [`crate::metrics`] for the tasks').

use ::metrics::{counter, gauge};

use crate::metrics::{BEAT_LEADING, BEAT_TICKS_SENT, BEAT_TICKS_SKIPPED};

/// Whether the beat `beat` leads now.
pub(super) fn leading(beat: &str, leads: bool) {
    gauge!(BEAT_LEADING, "beat" => beat.to_owned()).set(if leads { 1.0 } else { 0.0 });
}

/// A tick of `entry` sent.
pub(super) fn sent(entry: &str) {
    counter!(BEAT_TICKS_SENT, "entry" => entry.to_owned()).increment(1);
}

/// `n` missed ticks of `entry` skipped.
pub(super) fn skipped(entry: &str, n: u64) {
    counter!(BEAT_TICKS_SKIPPED, "entry" => entry.to_owned()).increment(n);
}
