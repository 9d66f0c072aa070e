//! The bookkeeping behind batched acks, with no I/O: which delivery tags of one channel are still
//! running, acked but not sent, or settled, and what should go out next.
//!
//! Delivery tags of a channel are consecutive from 1, so the window is a deque indexed from `base`.
//! A tag is recorded when it is settled; any lower tag not seen yet is recorded as running — a
//! delivery the consumer has not handed out yet (several consumers on one channel hand out their
//! deliveries in any order). So a multiple-ack never covers a delivery nobody settled.

use std::collections::VecDeque;

/// One delivery's state; `D` is what is told when its ack went out.
pub(crate) enum State<D> {
    Running,
    /// Acked by its task, not yet sent to RabbitMQ.
    Acked(D),
    /// Sent (acked one by one) or nacked.
    Settled,
}

/// What the settling task should send next.
pub(crate) struct Work<D> {
    /// Nacks (requeue) to send first, in order, each with whom to tell.
    pub(crate) nacks: Vec<(u64, Option<D>)>,
    /// One multiple-ack up to this tag, and whom it answers.
    pub(crate) multiple: Option<(u64, Vec<D>)>,
    /// Acks to send one by one (stuck behind a running delivery).
    pub(crate) singles: Vec<(u64, D)>,
}

/// The settlement state of one channel.
pub(crate) struct Window<D> {
    /// Tag of `states[0]`.
    base: u64,
    states: VecDeque<State<D>>,
    /// How many leading states are not running: the prefix a multiple-ack may cover.
    prefix: usize,
    /// Acked-unsent states within the prefix.
    prefix_unsent: usize,
    /// Acked-unsent states in all.
    unsent: usize,
    nacks: Vec<(u64, Option<D>)>,
    /// An ack asked to go out at once.
    urgent: bool,
    /// Send the prefix once it holds this many unsent acks.
    flush_at: usize,
    /// Send stuck acks one by one once this many wait behind a running delivery.
    relieve_after: usize,
    /// The settling task has timers running for the unsent acks (so a new one need not wake it).
    armed: bool,
}

impl<D> Window<D> {
    pub(crate) fn new(flush_at: usize, relieve_after: usize) -> Self {
        Self {
            base: 1,
            states: VecDeque::new(),
            prefix: 0,
            prefix_unsent: 0,
            unsent: 0,
            nacks: Vec::new(),
            urgent: false,
            flush_at: flush_at.max(1),
            relieve_after: relieve_after.max(1),
            armed: false,
        }
    }

    /// Records the ack of `tag`; `now` asks for it to go out without waiting for company.
    pub(crate) fn ack(&mut self, tag: u64, done: D, now: bool) {
        if self.settle(tag, State::Acked(done)) {
            self.urgent |= now;
        }
    }

    /// Records the nack (requeue) of `tag`.
    pub(crate) fn nack(&mut self, tag: u64, done: Option<D>) {
        if self.settle(tag, State::Settled) {
            self.nacks.push((tag, done));
        }
    }

    /// After an ack: whether to wake the settling task, because something is due or because it
    /// has no timer running for the acks waiting now (it will start one).
    pub(crate) fn wake_after_ack(&mut self) -> bool {
        if self.due() {
            return true;
        }
        let start_timer = !self.armed && self.unsent > 0;
        self.armed |= start_timer;
        start_timer
    }

    /// For the settling task after a [`take`](Self::take): whether acks wait in the prefix, and
    /// whether any are stuck; it runs a timer for each, as this records.
    pub(crate) fn rearm(&mut self) -> (bool, bool) {
        self.armed = self.unsent > 0;
        (self.waiting(), self.stuck() > 0)
    }

    /// Whether the settling task has something to send right now.
    pub(crate) fn due(&self) -> bool {
        !self.nacks.is_empty()
            || (self.urgent && self.unsent > 0)
            || self.prefix_unsent >= self.flush_at
            || self.stuck() >= self.relieve_after
    }

    /// Acks in the settled prefix waiting for company: they go out when the ack delay runs out.
    pub(crate) fn waiting(&self) -> bool {
        self.prefix_unsent > 0
    }

    /// Acks waiting behind a running delivery: they go out one by one once enough pile up, or
    /// when the (longer) stuck delay runs out.
    pub(crate) fn stuck(&self) -> usize {
        self.unsent - self.prefix_unsent
    }

    /// Sets `tag` from running to `state`; false if it was settled before (nothing changes).
    fn settle(&mut self, tag: u64, state: State<D>) -> bool {
        let Some(index) = tag
            .checked_sub(self.base)
            .and_then(|offset| usize::try_from(offset).ok())
        else {
            return false;
        };
        while self.states.len() <= index {
            self.states.push_back(State::Running);
        }
        if !matches!(self.states[index], State::Running) {
            return false;
        }
        if matches!(state, State::Acked(_)) {
            self.unsent += 1;
        }
        self.states[index] = state;
        while let Some(next) = self.states.get(self.prefix) {
            match next {
                State::Running => break,
                State::Acked(_) => self.prefix_unsent += 1,
                State::Settled => {}
            }
            self.prefix += 1;
        }
        true
    }

    /// Takes what should be sent now: `flush` says the prefix's ack delay ran out, `relieve` that
    /// the stuck acks' delay did.
    pub(crate) fn take(&mut self, flush: bool, relieve: bool) -> Work<D> {
        let mut work = Work {
            nacks: std::mem::take(&mut self.nacks),
            multiple: None,
            singles: Vec::new(),
        };
        let flush =
            self.prefix_unsent > 0 && (self.urgent || flush || self.prefix_unsent >= self.flush_at);
        if flush || (self.prefix > 0 && self.prefix_unsent == 0) {
            // The multiple-ack names the highest acked tag: RabbitMQ refuses one whose own tag
            // was settled before (sent alone, or nacked), even though the lower ones are pending.
            let mut highest = None;
            let mut answered = Vec::with_capacity(self.prefix_unsent);
            for (offset, state) in self.states.drain(..self.prefix).enumerate() {
                if let State::Acked(done) = state {
                    highest = Some(self.base + offset as u64);
                    answered.push(done);
                }
            }
            self.base += self.prefix as u64;
            self.unsent -= self.prefix_unsent;
            self.prefix = 0;
            self.prefix_unsent = 0;
            if let Some(highest) = highest {
                work.multiple = Some((highest, answered));
            }
        }
        let relieve = self.stuck() >= self.relieve_after || self.urgent || relieve;
        if relieve && self.stuck() > 0 {
            for (offset, state) in self.states.iter_mut().enumerate().skip(self.prefix) {
                if matches!(state, State::Acked(_))
                    && let State::Acked(done) = std::mem::replace(state, State::Settled)
                {
                    work.singles.push((self.base + offset as u64, done));
                }
            }
            self.unsent = self.prefix_unsent;
        }
        self.urgent = false;
        work
    }

    /// Everything acked and not sent yet: what goes out before the channel closes.
    pub(crate) fn take_all(&mut self) -> Work<D> {
        // Both delays count as run out: the prefix goes as one ack, every stuck ack alone.
        self.take(true, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window<u64> {
        Window::new(4, 3)
    }

    fn multiple(work: &Work<u64>) -> Option<(u64, Vec<u64>)> {
        work.multiple.clone()
    }

    fn singles(work: &Work<u64>) -> Vec<u64> {
        work.singles.iter().map(|(tag, _)| *tag).collect()
    }

    #[test]
    fn contiguous_acks_go_out_as_one_multiple_ack_once_enough() {
        let mut window = window();
        for tag in 1..=3 {
            window.ack(tag, tag, false);
            assert!(!window.due(), "3 acks wait for a fourth");
        }
        assert!(window.waiting());
        window.ack(4, 4, false);
        assert!(window.due());
        let work = window.take(false, false);
        assert_eq!(multiple(&work), Some((4, vec![1, 2, 3, 4])));
        assert!(!window.waiting());
        assert!(!window.due());
    }

    #[test]
    fn only_the_first_waiting_ack_wakes_the_task_until_it_rearms() {
        let mut window = window();
        window.ack(2, 2, false);
        assert!(window.wake_after_ack(), "a stuck ack needs a timer");
        window.ack(3, 3, false);
        assert!(!window.wake_after_ack(), "the timer is already coming");
        assert_eq!(window.rearm(), (false, true));
        window.ack(1, 1, false);
        assert!(!window.wake_after_ack());
        window.take(true, false);
        assert_eq!(window.rearm(), (false, false));
        window.ack(4, 4, false);
        assert!(window.wake_after_ack(), "no timer runs any more");
    }

    #[test]
    fn the_timer_sends_a_short_prefix() {
        let mut window = window();
        window.ack(1, 1, false);
        assert!(window.take(false, false).multiple.is_none());
        assert_eq!(multiple(&window.take(true, false)), Some((1, vec![1])));
    }

    #[test]
    fn a_running_delivery_holds_back_the_multiple_ack() {
        let mut window = window();
        // Tag 1 is running (never settled): acks of 2 and 3 must not be covered by a multiple-ack.
        window.ack(2, 2, false);
        window.ack(3, 3, false);
        assert!(!window.waiting() && window.stuck() == 2 && !window.due());
        let work = window.take(true, false);
        assert!(work.multiple.is_none() && work.singles.is_empty());
        window.ack(1, 1, false);
        assert_eq!(
            multiple(&window.take(true, false)),
            Some((3, vec![1, 2, 3]))
        );
    }

    #[test]
    fn when_the_delay_runs_out_acks_behind_a_running_delivery_go_out_alone() {
        let mut window = window();
        window.ack(2, 2, false);
        assert!(window.take(true, false).singles.is_empty());
        let work = window.take(false, true);
        assert!(work.multiple.is_none());
        assert_eq!(singles(&work), vec![2]);
        assert_eq!(window.stuck(), 0);
    }

    #[test]
    fn stuck_acks_go_out_one_by_one() {
        let mut window = window();
        for tag in 2..=4 {
            window.ack(tag, tag, false);
        }
        assert!(window.due(), "three acks behind running tag 1");
        let work = window.take(false, false);
        assert!(work.multiple.is_none());
        assert_eq!(singles(&work), vec![2, 3, 4]);
        // When tag 1 settles, the prefix holds only it: 2–4 were sent already, and a multiple-ack
        // naming 4 would be refused by RabbitMQ (4 is no longer pending).
        window.ack(1, 1, false);
        assert_eq!(multiple(&window.take(true, false)), Some((1, vec![1])));
        assert!(!window.waiting() && !window.due());
    }

    #[test]
    fn nacks_go_first_and_are_skipped_by_the_multiple_ack() {
        let mut window = window();
        window.ack(1, 1, false);
        window.nack(2, Some(2));
        window.ack(3, 3, true);
        assert!(window.due());
        let work = window.take(false, false);
        assert_eq!(
            work.nacks.iter().map(|(tag, _)| *tag).collect::<Vec<_>>(),
            vec![2]
        );
        assert_eq!(multiple(&work), Some((3, vec![1, 3])));
    }

    #[test]
    fn a_second_settlement_of_a_tag_changes_nothing() {
        let mut window = window();
        window.ack(1, 1, false);
        window.nack(1, Some(1));
        let work = window.take(true, false);
        assert!(work.nacks.is_empty());
        assert_eq!(multiple(&work), Some((1, vec![1])));
        window.ack(1, 1, false);
        assert!(!window.waiting());
    }

    #[test]
    fn the_multiple_ack_names_the_highest_acked_tag_not_a_nacked_one() {
        let mut window = window();
        window.ack(1, 1, false);
        window.nack(2, None);
        let work = window.take(true, false);
        assert_eq!(multiple(&work), Some((1, vec![1])));
        window.ack(3, 3, false);
        assert_eq!(multiple(&window.take(true, false)), Some((3, vec![3])));
    }

    #[test]
    fn a_prefix_of_nacks_only_is_dropped_without_an_ack() {
        let mut window = window();
        window.nack(1, None);
        let work = window.take(false, false);
        assert_eq!(work.nacks.len(), 1);
        assert!(work.multiple.is_none());
        window.ack(2, 2, false);
        assert_eq!(multiple(&window.take(true, false)), Some((2, vec![2])));
    }

    #[test]
    fn closing_sends_every_unsent_ack() {
        let mut window = window();
        window.ack(1, 1, false);
        window.ack(3, 3, false);
        let work = window.take_all();
        assert_eq!(multiple(&work), Some((1, vec![1])));
        assert_eq!(singles(&work), vec![3]);
    }
}
