use std::time::Duration;

/// What a [`Broker`](crate::Broker) supports beyond the delivery contract.
///
/// A broker reports them from [`Broker::capabilities`](crate::Broker::capabilities); a request for
/// something it lacks fails with [`BrokerError::Unsupported`](crate::BrokerError::Unsupported). The
/// contract kit reads them to pick the cases that apply.
///
/// ```
/// use std::time::Duration;
/// use celeriac_core::Capabilities;
///
/// let caps = Capabilities::default().priorities(9).delays(Some(Duration::from_secs(3600)));
/// assert_eq!(caps.max_priority, Some(9));
/// assert!(caps.supports_delay(Duration::from_secs(60)));
/// assert!(!caps.supports_delay(Duration::from_secs(7200)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The highest priority the broker orders by (`Outgoing::priority` up to it is honoured, higher
    /// values are clamped to it); `None`: priorities are refused.
    pub max_priority: Option<u8>,
    /// Whether `not_before` is honoured.
    pub delays: bool,
    /// The longest delay the broker honours; `None` with `delays` set: no limit.
    pub max_delay: Option<Duration>,
    /// Whether the broker keeps dead letters (`Delivery::dead_letter`, `Broker::dead_letters` and
    /// `Broker::requeue_dead_letters` work) rather than only discarding them.
    pub dead_letters: bool,
    /// Whether `Broker::stats`, `Broker::len` and `Broker::purge` work.
    pub stats: bool,
    /// Whether one consumer gets one queue's ready messages in publish order.
    pub fifo: bool,
}

impl Default for Capabilities {
    /// [`Capabilities::none`].
    fn default() -> Self {
        Self::none()
    }
}

impl Capabilities {
    /// Nothing beyond the delivery contract (the same as `Default`, usable in `const`s).
    pub const fn none() -> Self {
        Self {
            max_priority: None,
            delays: false,
            max_delay: None,
            dead_letters: false,
            stats: false,
            fifo: false,
        }
    }

    /// Priorities from 0 up to `max`.
    #[must_use]
    pub const fn priorities(mut self, max: u8) -> Self {
        self.max_priority = Some(max);
        self
    }

    /// Delays up to `max` (`None`: any).
    #[must_use]
    pub const fn delays(mut self, max: Option<Duration>) -> Self {
        self.delays = true;
        self.max_delay = max;
        self
    }

    /// Dead-letter queues that can be read and replayed.
    #[must_use]
    pub const fn dead_letters(mut self) -> Self {
        self.dead_letters = true;
        self
    }

    /// Queue statistics and purge.
    #[must_use]
    pub const fn stats(mut self) -> Self {
        self.stats = true;
        self
    }

    /// First in, first out within a queue, for one consumer.
    #[must_use]
    pub const fn fifo(mut self) -> Self {
        self.fifo = true;
        self
    }

    /// Whether a message delayed by `delay` is honoured.
    pub fn supports_delay(&self, delay: Duration) -> bool {
        self.delays && self.max_delay.is_none_or(|max| delay <= max)
    }
}
