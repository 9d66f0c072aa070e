//! The beat's loop: campaign until elected, then lead — plan the due ticks, write them down, send
//! them, write that down — until the term ends or the beat is told to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::entry::EntryTiming;
use super::ledger::Ledger;
use super::schedule::Millis;
use super::tick::{SEND_HEADER, TICK_HEADER, id_of};
use super::{BeatReport, metrics};
use crate::election::{Election, Term};
use crate::envelope::Step;
use crate::error::Report;
use crate::{App, TaskId, clock};

/// A follower's wait between campaigns after an election error.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// A follower campaigns at least this often (and every third of the lease if that is shorter):
/// a leader that resigns is replaced within it.
const CAMPAIGN_EVERY: Duration = Duration::from_secs(1);

/// What the loop needs, shared by the beat's runs.
pub(super) struct Leader {
    pub(super) app: App,
    pub(super) name: String,
    pub(super) timings: Vec<EntryTiming>,
    pub(super) messages: Vec<Step>,
    pub(super) election: Arc<dyn Election>,
    pub(super) max_catch_up: usize,
    pub(super) counts: Counts,
}

/// The report's counters.
#[derive(Default)]
pub(super) struct Counts {
    terms: AtomicU64,
    sent: AtomicU64,
    resent: AtomicU64,
    skipped: AtomicU64,
    failed_sends: AtomicU64,
}

impl Counts {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn report(&self) -> BeatReport {
        BeatReport {
            terms: self.terms.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            resent: self.resent.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            failed_sends: self.failed_sends.load(Ordering::Relaxed),
        }
    }
}

/// How a term ended.
enum Ended {
    /// Renewal or a record was refused, or the election could not be reached: another process may
    /// lead now.
    Lost,
    /// The beat was told to stop.
    Stopped(Term),
}

impl Leader {
    /// Campaigns and leads until `stop` is cancelled; resigns a term it holds then.
    pub(super) async fn run(&self, stop: CancellationToken) {
        let election = &self.election;
        let campaign_every = (election.lease() / 3).min(CAMPAIGN_EVERY);
        loop {
            let campaign = tokio::select! {
                () = stop.cancelled() => return,
                campaign = election.campaign() => campaign,
            };
            let wait = match campaign {
                Ok(Some(term)) => {
                    Counts::add(&self.counts.terms, 1);
                    metrics::leading(&self.name, true);
                    tracing::info!(beat = %self.name, election = %election.redacted_url(), "leading the beat");
                    let ended = self.lead(term, &stop).await;
                    metrics::leading(&self.name, false);
                    match ended {
                        Ended::Stopped(term) => {
                            if let Err(error) = election.resign(term).await {
                                tracing::warn!(beat = %self.name, error = %Report(&error), "cannot resign; the next leader waits for the lease to lapse");
                            }
                            return;
                        }
                        Ended::Lost => {
                            tracing::warn!(beat = %self.name, "no longer leading the beat");
                            campaign_every
                        }
                    }
                }
                Ok(None) => campaign_every,
                Err(error) => {
                    tracing::warn!(beat = %self.name, error = %Report(&error), "cannot reach the beat's election; trying again");
                    RETRY_AFTER_ERROR
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn lead(&self, mut term: Term, stop: &CancellationToken) -> Ended {
        let election = &self.election;
        let renew_every = election.lease() / 3;
        let mut ledger = Ledger::parse(term.take_record().as_deref());
        // Ticks the last leader wrote down and may not have sent: sent again, under their ids
        // (and counted as resent; ticks that fall due in this term are counted as sent).
        let mut inherited: Vec<(String, Millis)> = ledger
            .entries
            .iter()
            .flat_map(|(name, line)| line.pending.iter().map(|&tick| (name.clone(), tick)))
            .collect();
        let mut renew_at = Instant::now() + renew_every;
        loop {
            let now = now_millis();
            for (entry, skipped) in ledger.plan(&self.timings, now, self.max_catch_up) {
                tracing::warn!(beat = %self.name, entry, skipped, "skipping missed ticks (the entry's catch-up policy, or more than `max_catch_up`)");
                Counts::add(&self.counts.skipped, skipped);
                metrics::skipped(&entry, skipped);
            }
            if ledger.has_pending() {
                // Written down first: a successor knows what this leader may have sent.
                match election.record(&term, &ledger.to_bytes()).await {
                    Ok(true) => {}
                    Ok(false) => return Ended::Lost,
                    Err(error) => return self.unreachable(&error),
                }
                self.send_pending(&mut ledger, &mut inherited).await;
                match election.record(&term, &ledger.to_bytes()).await {
                    Ok(true) => {}
                    Ok(false) => return Ended::Lost,
                    Err(error) => return self.unreachable(&error),
                }
                renew_at = Instant::now() + renew_every;
            } else if Instant::now() >= renew_at {
                match election.renew(&term).await {
                    Ok(true) => {}
                    Ok(false) => return Ended::Lost,
                    Err(error) => return self.unreachable(&error),
                }
                renew_at = Instant::now() + renew_every;
            }
            // Until the next tick, the next renewal, or a retry of ticks that could not be sent.
            let mut wake = renew_at;
            if ledger.has_pending() {
                wake = wake.min(Instant::now() + RETRY_AFTER_ERROR);
            }
            if let Some(next) = ledger.next_due(&self.timings) {
                wake = wake.min(instant_at(next));
            }
            tokio::select! {
                () = stop.cancelled() => return Ended::Stopped(term),
                () = sleep_until(wake) => {}
            }
        }
    }

    fn unreachable(&self, error: &crate::BrokerError) -> Ended {
        tracing::warn!(beat = %self.name, error = %Report(error), "cannot reach the beat's election; stepping down");
        Ended::Lost
    }

    /// Sends every pending tick, oldest first per entry; a tick that cannot be sent stays pending
    /// (with the entry's later ones) and is tried again.
    async fn send_pending(&self, ledger: &mut Ledger, inherited: &mut Vec<(String, Millis)>) {
        for (timing, message) in self.timings.iter().zip(&self.messages) {
            let Some(line) = ledger.entries.get_mut(&timing.name) else {
                continue;
            };
            while let Some(&tick) = line.pending.first() {
                match self.send(timing, message, tick).await {
                    Ok(id) => {
                        line.pending.remove(0);
                        let resending = inherited
                            .iter()
                            .position(|(name, inherited)| {
                                *name == timing.name && *inherited == tick
                            })
                            .map(|at| inherited.swap_remove(at))
                            .is_some();
                        let counter = if resending {
                            &self.counts.resent
                        } else {
                            &self.counts.sent
                        };
                        Counts::add(counter, 1);
                        metrics::sent(&timing.name);
                        tracing::debug!(beat = %self.name, entry = %timing.name, tick, task.id = %id, resending, "sent a tick");
                    }
                    Err(error) => {
                        Counts::add(&self.counts.failed_sends, 1);
                        tracing::error!(beat = %self.name, entry = %timing.name, tick, error = %Report(&error), "cannot send a tick; trying again shortly");
                        break;
                    }
                }
            }
        }
    }

    async fn send(
        &self,
        timing: &EntryTiming,
        message: &Step,
        tick: Millis,
    ) -> Result<TaskId, crate::EnqueueError> {
        let mut step = message.clone();
        step.id = id_of(&self.name, &timing.name, tick);
        step.headers
            .insert(TICK_HEADER.to_owned(), format!("{}@{tick}", timing.name));
        step.headers
            .insert(SEND_HEADER.to_owned(), TaskId::new().to_string());
        let args = std::mem::take(&mut step.args);
        self.app
            .publish(step.into_envelope(clock::now(), args))
            .await
    }
}

/// Now, on the wall clock as the app sees it (tokio's, so tests may pause it).
fn now_millis() -> Millis {
    clock::now().duration_since(UNIX_EPOCH).map_or(0, |since| {
        Millis::try_from(since.as_millis()).unwrap_or(Millis::MAX)
    })
}

/// The tokio instant at the wall-clock time `at`.
fn instant_at(at: Millis) -> Instant {
    let ahead = at.saturating_sub(now_millis()).max(0);
    Instant::now() + Duration::from_millis(u64::try_from(ahead).unwrap_or(0))
}
