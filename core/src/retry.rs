//! Retry policies: when a failed task runs again, and when it is given up (dead-lettered).
//!
//! A [`RetryPolicy`] is a pure decision: [`RetryPolicy::decide`] looks at how many retries a task has
//! had and how it failed, and answers [`RetryDecision::RetryIn`] or [`RetryDecision::GiveUp`]. The
//! worker carries the decision out the one way celeriac retries: it publishes a copy of the message
//! with `retries + 1` and a not-before time, then acknowledges the original. The schedule therefore
//! lives in the broker and survives a worker crash, and no worker slot is held while waiting.
//!
//! The semantics are Celery's: `retry_backoff = 3` gives delays of 3 s, 6 s, 12 s, … capped by
//! `retry_backoff_max` (600 s by default), with full jitter (a uniform delay between zero and that
//! value) on by default; `max_retries` defaults to 3, and `None` retries forever.
//!
//! ```
//! use std::time::Duration;
//! use celeriac::{RetryDecision, RetryPolicy, TaskError};
//!
//! let policy = RetryPolicy::exponential(Duration::from_secs(3)).max_retries(3).jitter(false);
//! let error = TaskError::msg("gateway timeout");
//! let delays: Vec<RetryDecision> = (0..4).map(|n| policy.decide(n, &error)).collect();
//! assert_eq!(delays, [
//!     RetryDecision::RetryIn(Duration::from_secs(3)),
//!     RetryDecision::RetryIn(Duration::from_secs(6)),
//!     RetryDecision::RetryIn(Duration::from_secs(12)),
//!     RetryDecision::GiveUp,
//! ]);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::TaskError;

/// The delay an explicit retry request without a delay waits when the policy has no back-off
/// (Celery's `default_retry_delay`, 3 minutes).
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(180);

/// The default cap on back-off delays (Celery's `retry_backoff_max`).
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(600);

/// The default number of retries (Celery's `max_retries`).
pub const DEFAULT_MAX_RETRIES: u32 = 3;

type RetryPredicate = Arc<dyn Fn(&TaskError) -> bool + Send + Sync>;

/// What to do after a failed run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Run the task again after this delay.
    RetryIn(Duration),
    /// Stop: dead-letter the task with its error.
    GiveUp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backoff {
    None,
    Fixed(Duration),
    Exponential(Duration),
}

/// When a failed task is retried. See the [module documentation](self).
#[derive(Clone)]
pub struct RetryPolicy {
    backoff: Backoff,
    max_retries: Option<u32>,
    max_delay: Duration,
    jitter: bool,
    retry_on: Option<RetryPredicate>,
}

impl RetryPolicy {
    fn with_backoff(backoff: Backoff) -> Self {
        Self {
            backoff,
            max_retries: Some(DEFAULT_MAX_RETRIES),
            max_delay: DEFAULT_MAX_DELAY,
            jitter: true,
            retry_on: None,
        }
    }

    /// Failures are not retried automatically (the default). A task can still ask for a retry
    /// explicitly with [`TaskContext::retry_in`](crate::TaskContext::retry_in), up to `max_retries`.
    pub fn none() -> Self {
        Self::with_backoff(Backoff::None)
    }

    /// Failures are retried after the same `delay` each time (no jitter).
    pub fn fixed(delay: Duration) -> Self {
        Self::with_backoff(Backoff::Fixed(delay))
    }

    /// Failures are retried after `base × 2^retries` (Celery's `retry_backoff`), capped by
    /// [`max_delay`](Self::max_delay), with full jitter unless turned off.
    pub fn exponential(base: Duration) -> Self {
        Self::with_backoff(Backoff::Exponential(base))
    }

    /// At most `max_retries` retries (so at most `max_retries + 1` runs).
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// Retries without limit.
    #[must_use]
    pub fn retry_forever(mut self) -> Self {
        self.max_retries = None;
        self
    }

    /// Caps exponential delays (Celery's `retry_backoff_max`, default 600 s).
    #[must_use]
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Full jitter on exponential delays (Celery's `retry_jitter`, default on).
    #[must_use]
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Only errors for which `predicate` returns true are retried automatically (Celery's
    /// `autoretry_for`). By default every failure is.
    ///
    /// ```
    /// use std::time::Duration;
    /// use celeriac::{RetryDecision, RetryPolicy, TaskError};
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("gateway busy")]
    /// struct Busy;
    ///
    /// let policy = RetryPolicy::fixed(Duration::from_secs(1))
    ///     .retry_on(|error| error.is::<Busy>());
    /// assert_eq!(policy.decide(0, &TaskError::failed(Busy)), RetryDecision::RetryIn(Duration::from_secs(1)));
    /// assert_eq!(policy.decide(0, &TaskError::msg("bad number")), RetryDecision::GiveUp);
    /// ```
    #[must_use]
    pub fn retry_on(
        mut self,
        predicate: impl Fn(&TaskError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retry_on = Some(Arc::new(predicate));
        self
    }

    /// The configured retry limit; `None` means forever.
    pub fn retry_limit(&self) -> Option<u32> {
        self.max_retries
    }

    /// Decides what happens after a run that failed with `error`, when the task had already been
    /// retried `retries_so_far` times.
    ///
    /// With jitter on, the delay is drawn at random (from a per-thread generator) between zero and the
    /// back-off bound; with `jitter(false)` the decision is a pure function of its inputs.
    pub fn decide(&self, retries_so_far: u32, error: &TaskError) -> RetryDecision {
        let exhausted = self.max_retries.is_some_and(|max| retries_so_far >= max);
        if exhausted {
            return RetryDecision::GiveUp;
        }
        match error {
            TaskError::Reject { .. } | TaskError::InvalidArgs(_) => RetryDecision::GiveUp,
            TaskError::Retry {
                after: Some(after), ..
            } => RetryDecision::RetryIn(*after),
            TaskError::Retry { after: None, .. } => RetryDecision::RetryIn(
                self.backoff_delay(retries_so_far)
                    .unwrap_or(DEFAULT_RETRY_DELAY),
            ),
            _ => {
                let wanted = self
                    .retry_on
                    .as_ref()
                    .is_none_or(|predicate| predicate(error));
                match self.backoff_delay(retries_so_far) {
                    Some(delay) if wanted => RetryDecision::RetryIn(delay),
                    _ => RetryDecision::GiveUp,
                }
            }
        }
    }

    /// The back-off delay before retry number `retries_so_far + 1`; `None` without back-off.
    fn backoff_delay(&self, retries_so_far: u32) -> Option<Duration> {
        match self.backoff {
            Backoff::None => None,
            Backoff::Fixed(delay) => Some(delay),
            Backoff::Exponential(base) => {
                let capped = 2u32
                    .checked_pow(retries_so_far)
                    .and_then(|factor| base.checked_mul(factor))
                    .map_or(self.max_delay, |delay| delay.min(self.max_delay));
                if self.jitter {
                    let millis = u64::try_from(capped.as_millis()).unwrap_or(u64::MAX);
                    Some(Duration::from_millis(fastrand::u64(0..=millis)))
                } else {
                    Some(capped)
                }
            }
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::none()
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("backoff", &self.backoff)
            .field("max_retries", &self.max_retries)
            .field("max_delay", &self.max_delay)
            .field("jitter", &self.jitter)
            .field("retry_on", &self.retry_on.as_ref().map(|_| "<predicate>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn schedule(policy: &RetryPolicy, error: &TaskError) -> Vec<RetryDecision> {
        (0..6).map(|n| policy.decide(n, error)).collect()
    }

    #[test]
    fn exponential_without_jitter_follows_celery() {
        let policy = RetryPolicy::exponential(secs(3))
            .jitter(false)
            .max_retries(5);
        let got = schedule(&policy, &TaskError::msg("boom"));
        let want: Vec<_> = [3, 6, 12, 24, 48]
            .into_iter()
            .map(|s| RetryDecision::RetryIn(secs(s)))
            .chain([RetryDecision::GiveUp])
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn exponential_is_capped_by_max_delay() {
        let policy = RetryPolicy::exponential(secs(100))
            .jitter(false)
            .retry_forever();
        assert_eq!(
            policy.decide(3, &TaskError::msg("x")),
            RetryDecision::RetryIn(secs(600))
        );
        // Far beyond u32 overflow of 2^n: still the cap, no panic.
        assert_eq!(
            policy.decide(200, &TaskError::msg("x")),
            RetryDecision::RetryIn(secs(600))
        );
        let policy = policy.max_delay(secs(30));
        assert_eq!(
            policy.decide(1, &TaskError::msg("x")),
            RetryDecision::RetryIn(secs(30))
        );
    }

    #[test]
    fn full_jitter_stays_within_bounds_and_varies() {
        let policy = RetryPolicy::exponential(secs(3)).retry_forever();
        for retries in 0..8u32 {
            let ceiling = secs(3 * 2u64.pow(retries)).min(DEFAULT_MAX_DELAY);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..200 {
                match policy.decide(retries, &TaskError::msg("x")) {
                    RetryDecision::RetryIn(delay) => {
                        assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
                        seen.insert(delay);
                    }
                    RetryDecision::GiveUp => panic!("retry_forever gave up"),
                }
            }
            assert!(
                seen.len() > 50,
                "jitter should spread delays, saw {}",
                seen.len()
            );
        }
    }

    #[test]
    fn fixed_delay_and_limits() {
        let policy = RetryPolicy::fixed(secs(2)).max_retries(2);
        let got = schedule(&policy, &TaskError::msg("x"));
        assert_eq!(
            got[..3],
            [
                RetryDecision::RetryIn(secs(2)),
                RetryDecision::RetryIn(secs(2)),
                RetryDecision::GiveUp
            ]
        );
    }

    #[test]
    fn none_gives_up_on_failures_but_honours_explicit_retries() {
        let policy = RetryPolicy::none();
        assert_eq!(
            policy.decide(0, &TaskError::msg("x")),
            RetryDecision::GiveUp
        );
        let explicit = TaskError::retry_after(secs(5));
        assert_eq!(policy.decide(0, &explicit), RetryDecision::RetryIn(secs(5)));
        assert_eq!(policy.decide(3, &explicit), RetryDecision::GiveUp);
        let no_delay = TaskError::Retry {
            after: None,
            reason: None,
        };
        assert_eq!(
            policy.decide(0, &no_delay),
            RetryDecision::RetryIn(DEFAULT_RETRY_DELAY)
        );
    }

    #[test]
    fn rejections_and_bad_arguments_never_retry() {
        let policy = RetryPolicy::fixed(secs(1)).retry_forever();
        assert_eq!(
            policy.decide(0, &TaskError::reject("no")),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn time_limits_and_panics_count_as_failures() {
        let policy = RetryPolicy::fixed(secs(1));
        for error in [
            TaskError::TimeLimit(secs(1)),
            TaskError::Panicked("p".into()),
        ] {
            assert_eq!(policy.decide(0, &error), RetryDecision::RetryIn(secs(1)));
        }
    }
}
