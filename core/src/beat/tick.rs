//! A tick's message: its task id, derived from the entry and the tick so that every leader sends a
//! tick under one id, and the headers a worker reads to drop a second copy of a tick.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::schedule::Millis;
use crate::coordination::Claim;
use crate::error::Report;
use crate::{App, BrokerError, Envelope, TaskId};

/// The header naming a tick: `<entry>@<tick in ms since the Unix epoch>`.
pub(crate) const TICK_HEADER: &str = "x-celeriac-beat-tick";

/// The header that tells one send of a tick from another (a fresh id per send).
pub(crate) const SEND_HEADER: &str = "x-celeriac-beat-send";

/// How long a worker remembers that a tick ran, to drop a later copy of it.
const REMEMBERED_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// The task id of tick `tick` of entry `entry` of the beat `beat`: the same in every process.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use celeriac::beat::tick_id;
///
/// let noon = UNIX_EPOCH + Duration::from_secs(1_796_040_000);
/// assert_eq!(tick_id("beat", "purge-codes", noon), tick_id("beat", "purge-codes", noon));
/// assert_ne!(tick_id("beat", "purge-codes", noon), tick_id("beat", "report", noon));
/// ```
pub fn tick_id(beat: &str, entry: &str, tick: SystemTime) -> TaskId {
    let millis = tick.duration_since(UNIX_EPOCH).map_or(0, |since| {
        Millis::try_from(since.as_millis()).unwrap_or(Millis::MAX)
    });
    id_of(beat, entry, millis)
}

pub(crate) fn id_of(beat: &str, entry: &str, tick: Millis) -> TaskId {
    let digest = Sha256::new()
        .chain_update(b"celeriac-beat\0")
        .chain_update(beat.as_bytes())
        .chain_update(b"\0")
        .chain_update(entry.as_bytes())
        .chain_update(b"\0")
        .chain_update(tick.to_be_bytes())
        .finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    TaskId::from(uuid::Uuid::new_v8(bytes))
}

/// The tick a message was sent for by a beat, if it was: the entry's name and the tick's time.
///
/// ```
/// use celeriac::TaskContext;
///
/// #[celeriac::task]
/// async fn purge_expired_codes(ctx: TaskContext) {
///     if let Some((entry, tick)) = celeriac::beat::tick_of(ctx.envelope()) {
///         println!("{entry}, tick of {tick:?}");
///     }
/// }
/// ```
pub fn tick_of(envelope: &Envelope) -> Option<(&str, SystemTime)> {
    let (entry, millis) = envelope.headers.get(TICK_HEADER)?.rsplit_once('@')?;
    let millis: u64 = millis.parse().ok()?;
    Some((entry, UNIX_EPOCH + Duration::from_millis(millis)))
}

/// Whether a worker should drop `envelope` as a second copy of a tick that ran or runs elsewhere:
/// a successor sends again the ticks its predecessor may not have sent, under the same id, and
/// the first copy to run claims the id in the app's coordination store. A copy redelivered or
/// retried carries its own send id and runs again, unless that send already ran to success (its
/// ack was lost: the broker restarted before it landed; see [`ran`]). Without a store, or when the
/// store cannot be reached, the copy runs (at least once).
pub(crate) async fn is_second_copy(app: &App, envelope: &Envelope) -> bool {
    let (Some(send), Some(store)) = (envelope.headers.get(SEND_HEADER), app.coordination()) else {
        return false;
    };
    let key = format!("beat-ran:{}", envelope.id);
    let claim = store.claim(&key, send, REMEMBERED_FOR);
    let checking = "checking whether this tick ran already";
    match ask(app, envelope, checking, "running it", claim).await {
        Some(Claim::Claimed) | None => false,
        Some(Claim::Held { holder, .. }) if holder != *send => true,
        // This very send ran before, or runs: a copy redelivered or retried. Dropped only if the
        // earlier run succeeded.
        Some(Claim::Held { .. }) => {
            let succeeded = succeeded_key(envelope);
            let members = store.members(&succeeded);
            let checking = "checking whether this tick's run succeeded already";
            ask(app, envelope, checking, "running it again", members)
                .await
                .is_some_and(|members| members.iter().any(|(member, _)| member == send))
        }
    }
}

/// Writes down, before its ack, that the tick `envelope` was sent for ran to success, so that a
/// copy of the same send delivered again (its ack lost to a broker restart) is dropped by
/// [`is_second_copy`]. Does nothing for a message no beat sent, or without a store; a store that
/// cannot be reached leaves the tick to run again if it is delivered again (at least once).
pub(crate) async fn ran(app: &App, envelope: &Envelope) {
    let (Some(send), Some(store)) = (envelope.headers.get(SEND_HEADER), app.coordination()) else {
        return;
    };
    let succeeded = succeeded_key(envelope);
    let remember = store.remember(&succeeded, send, REMEMBERED_FOR);
    let writing = "writing down that this tick ran";
    let otherwise = "a copy delivered again would run again";
    ask(app, envelope, writing, otherwise, remember).await;
}

/// The store's answer to `request`, made for the tick `envelope` within the app's enqueue
/// timeout; `None`, logged as `doing` what failed and what happens `otherwise`, if the store
/// fails or does not answer in time.
async fn ask<T>(
    app: &App,
    envelope: &Envelope,
    doing: &str,
    otherwise: &str,
    request: impl Future<Output = Result<T, BrokerError>>,
) -> Option<T> {
    match tokio::time::timeout(app.enqueue_timeout(), request).await {
        Ok(Ok(answer)) => Some(answer),
        Ok(Err(error)) => {
            tracing::warn!(task = %envelope.task, task.id = %envelope.id, error = %Report(&error), "{doing} failed; {otherwise}");
            None
        }
        Err(_) => {
            tracing::warn!(task = %envelope.task, task.id = %envelope.id, "{doing} timed out; {otherwise}");
            None
        }
    }
}

/// The set of the sends of tick `envelope` that ran to success (one, but for a resend racing it).
fn succeeded_key(envelope: &Envelope) -> String {
    format!("beat-succeeded:{}", envelope.id)
}
