//! When an entry's ticks fall: every fixed interval, or by a cron expression in a time zone.
//!
//! Ticks are instants every process computes alike, so that any leader agrees with its
//! predecessor on which ticks exist: an interval's ticks are its multiples since the Unix epoch
//! (every minute: on the minute), a cron expression's are its matches in its time zone. Times
//! are whole milliseconds since the Unix epoch.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Milliseconds since the Unix epoch.
pub(crate) type Millis = i64;

/// When an entry's ticks fall.
#[derive(Clone)]
pub(crate) enum Schedule {
    /// Every `interval` milliseconds, on its multiples since the Unix epoch.
    Every { interval: Millis },
    /// At each match of a cron expression (with seconds) in a time zone.
    Cron {
        expression: Box<cron::Schedule>,
        zone: Tz,
    },
}

impl Schedule {
    /// Every `interval` (at least a millisecond).
    pub(crate) fn every(interval: Duration) -> Result<Self, String> {
        let interval = Millis::try_from(interval.as_millis()).unwrap_or(Millis::MAX);
        if interval < 1 {
            return Err("the interval must be at least one millisecond".to_owned());
        }
        Ok(Self::Every { interval })
    }

    /// At each match of `expression` — six fields (`sec min hour day-of-month month
    /// day-of-week`) or seven (a year last) — in the IANA time zone `zone`.
    pub(crate) fn cron(expression: &str, zone: &str) -> Result<Self, String> {
        let zone = Tz::from_str(zone).map_err(|_| {
            format!(
                "unknown time zone `{zone}` (use an IANA name such as `Asia/Shanghai` or `UTC`)"
            )
        })?;
        let fields = expression.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "cron expression `{expression}` has {fields} fields; celeriac's have 6 \
                 (`sec min hour day-of-month month day-of-week`) or 7 (a year last): \
                 for Celery's `crontab(minute=\"*/5\")` write `0 */5 * * * *`"
            ));
        }
        let parsed = cron::Schedule::from_str(expression)
            .map_err(|error| format!("invalid cron expression `{expression}`: {error}"))?;
        if parsed.upcoming(zone).next().is_none() {
            return Err(format!(
                "cron expression `{expression}` never matches again"
            ));
        }
        Ok(Self::Cron {
            expression: Box::new(parsed),
            zone,
        })
    }

    /// The ticks after `after` and at or before `until`, latest first, at most `limit` of them.
    pub(crate) fn ticks_back(&self, after: Millis, until: Millis, limit: usize) -> Vec<Millis> {
        let mut ticks = Vec::new();
        match self {
            Self::Every { interval } => {
                let mut tick = until.div_euclid(*interval) * interval;
                while tick > after && ticks.len() < limit {
                    ticks.push(tick);
                    tick -= interval;
                }
            }
            Self::Cron { expression, zone } => {
                // `next_back` answers the matches strictly before its start.
                let Some(start) = at(*zone, until.saturating_add(1)) else {
                    return ticks;
                };
                for tick in expression.after(&start).rev() {
                    let tick = tick.timestamp_millis();
                    if tick <= after || ticks.len() >= limit {
                        break;
                    }
                    ticks.push(tick);
                }
            }
        }
        ticks
    }

    /// The first tick after `after`, if there is one.
    pub(crate) fn next_after(&self, after: Millis) -> Option<Millis> {
        match self {
            Self::Every { interval } => (after.div_euclid(*interval) + 1).checked_mul(*interval),
            Self::Cron { expression, zone } => expression
                .after(&at(*zone, after)?)
                .next()
                .map(|tick| tick.timestamp_millis()),
        }
    }

    /// The latest tick at or before `until`, if there is one.
    pub(crate) fn latest(&self, until: Millis) -> Option<Millis> {
        self.ticks_back(Millis::MIN, until, 1).first().copied()
    }
}

/// The instant `millis` in `zone`.
fn at(zone: Tz, millis: Millis) -> Option<DateTime<Tz>> {
    let utc = DateTime::<Utc>::from_timestamp_millis(millis)?;
    Some(zone.from_utc_datetime(&utc.naive_utc()))
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Every { interval } => write!(f, "every {interval} ms"),
            Self::Cron { expression, zone } => {
                write!(f, "cron `{}` in {zone}", expression.source())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Millis = 60_000;

    /// 2026-11-29 23:59:30 UTC.
    const T: Millis = 1_795_996_770_000;

    #[test]
    fn an_interval_ticks_on_its_multiples_since_the_epoch() {
        let schedule = Schedule::every(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
        let start = T - T % MINUTE;
        assert_eq!(schedule.latest(T), Some(start));
        assert_eq!(schedule.next_after(T), Some(start + MINUTE));
        assert_eq!(schedule.next_after(start), Some(start + MINUTE));
        // After, and at or before: the boundary tick counts once.
        assert_eq!(
            schedule.ticks_back(start - 3 * MINUTE, start, 10),
            vec![start, start - MINUTE, start - 2 * MINUTE]
        );
        assert_eq!(schedule.ticks_back(start - 10 * MINUTE, start, 2).len(), 2);
        assert!(schedule.ticks_back(start, start, 10).is_empty());
        assert!(Schedule::every(Duration::from_micros(10)).is_err());
    }

    #[test]
    fn a_cron_expression_ticks_in_its_time_zone() {
        // Every day at 09:00 in Shanghai (UTC+8) is 01:00 UTC.
        let schedule =
            Schedule::cron("0 0 9 * * *", "Asia/Shanghai").unwrap_or_else(|e| panic!("{e}"));
        let next = schedule.next_after(T).unwrap_or_default();
        let next = DateTime::<Utc>::from_timestamp_millis(next).unwrap_or_default();
        assert_eq!(next.to_rfc3339(), "2026-11-30T01:00:00+00:00");
        let every_five = Schedule::cron("0 */5 * * * *", "UTC").unwrap_or_else(|e| panic!("{e}"));
        let latest = every_five.latest(T).unwrap_or_default();
        assert_eq!(latest % (5 * MINUTE), 0);
        assert!(T - latest < 5 * MINUTE);
        // A tick exactly at `until` is included; one at `after` is not.
        assert_eq!(
            every_five.ticks_back(latest - 10 * MINUTE, latest, 10),
            vec![latest, latest - 5 * MINUTE]
        );
        assert_eq!(every_five.next_after(latest), Some(latest + 5 * MINUTE));
    }

    #[test]
    fn bad_expressions_and_zones_say_what_is_wrong() {
        let error = |expression: &str, zone: &str| match Schedule::cron(expression, zone) {
            Ok(_) => panic!("`{expression}` in `{zone}` was accepted"),
            Err(error) => error,
        };
        assert!(error("*/5 * * * *", "UTC").contains("has 5 fields"));
        assert!(error("0 61 * * * *", "UTC").contains("invalid cron expression `0 61 * * * *`"));
        assert!(error("0 0 * * * *", "Mars/Olympus").contains("unknown time zone `Mars/Olympus`"));
        assert!(error("0 0 0 1 1 * 2001", "UTC").contains("never matches again"));
    }
}
