//! Wall-clock time as seen through tokio's clock.
//!
//! ETAs and expiry times travel between processes, so they are wall-clock times (`SystemTime`). Inside a
//! process we derive "now" from tokio's monotonic clock plus one wall-clock anchor taken at first use.
//! Two things follow: a test that pauses tokio's clock (`tokio::time::pause`) controls ETAs, countdowns and
//! expiry exactly, and a step of the system clock (NTP) while a worker runs does not make it fire delayed
//! tasks early or late.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

static ANCHOR: OnceLock<(SystemTime, Instant)> = OnceLock::new();

/// The current wall-clock time, advancing with tokio's clock.
pub(crate) fn now() -> SystemTime {
    wall_at(Instant::now())
}

/// The wall-clock time at the tokio instant `at` (for a time already read from the monotonic
/// clock, without reading it again).
pub(crate) fn wall_at(at: Instant) -> SystemTime {
    let (wall, mono) = *ANCHOR.get_or_init(|| (SystemTime::now(), Instant::now()));
    wall + at.saturating_duration_since(mono)
}

/// How long from now until `at`; zero when `at` has passed.
pub(crate) fn until(at: SystemTime) -> Duration {
    at.duration_since(now()).unwrap_or(Duration::ZERO)
}

/// The tokio instant at which the wall-clock time `at` is reached.
pub(crate) fn instant_at(at: SystemTime) -> Instant {
    Instant::now() + until(at)
}

/// The time `seconds` after the Unix epoch; the epoch itself for a number that is no time
/// (negative, not finite, or past what `SystemTime` holds: a broken or hostile sender).
pub(crate) fn from_epoch_seconds(seconds: f64) -> SystemTime {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|since| std::time::UNIX_EPOCH.checked_add(since))
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// `time` on chrono's calendar, UTC; its last instant for a later time (chrono's calendar ends
/// long before `SystemTime` does, and converting past its end panics: a hostile timestamp must
/// not). Times before 1970 read as 1970.
#[cfg(any(feature = "celery", feature = "cli", feature = "dashboard"))]
pub(crate) fn calendar(time: SystemTime) -> chrono::DateTime<chrono::Utc> {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs())
        .ok()
        .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, since.subsec_nanos()))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::from_epoch_seconds;

    #[test]
    fn epoch_seconds_that_are_no_time_read_as_the_epoch() {
        assert_eq!(
            from_epoch_seconds(1_764_500_000.5),
            UNIX_EPOCH + Duration::from_millis(1_764_500_000_500)
        );
        for no_time in [-1.0, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(from_epoch_seconds(no_time), UNIX_EPOCH, "{no_time}");
        }
    }
}
