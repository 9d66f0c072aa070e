//! Putting unacknowledged messages back as kombu does: one at a time when a delivery is dropped or
//! requeued, and by a sweep, under kombu's lock, for what was held past the visibility timeout.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use celeriac_core::{BrokerError, Report};
use redis::aio::ConnectionManager;

use super::layout::{Layout, Restorable, dead_record, epoch_seconds};
use super::{End, KombuInner, SCRIPTS};
use crate::error::bounded;

/// The most unacknowledged entries one sweep restores.
const SWEEP_BATCH: isize = 1_000;

impl KombuInner {
    /// Puts the unacknowledged message `tag` back where kombu would: the queues its exchange
    /// routes its routing key to, marked redelivered. Returns whether it was still unacknowledged.
    pub(super) async fn restore(&self, tag: &str, end: End) -> Result<bool, BrokerError> {
        let mut conn = self.conn.clone();
        let entry: Option<Vec<u8>> = bounded(
            "restore",
            self.timeout(),
            redis::cmd("HGET")
                .arg(&self.layout.unacked)
                .arg(tag)
                .query_async(&mut conn),
        )
        .await?;
        let Some(entry) = entry else {
            return Ok(false);
        };
        let restorable = match Restorable::from_entry(&entry) {
            Ok(restorable) => restorable,
            Err(reason) => {
                let reason = format!("unacknowledged entry cannot be restored: {reason}");
                let record = dead_record(&reason, &entry, SystemTime::now());
                self.dead_letter(tag, &self.layout.dead("_unrestorable"), &record)
                    .await?;
                return Ok(false);
            }
        };
        let queues = if restorable.exchange.is_empty() {
            vec![restorable.routing_key.clone()]
        } else {
            let members: Vec<String> = bounded(
                "restore",
                self.timeout(),
                redis::cmd("SMEMBERS")
                    .arg(self.layout.bindings(&restorable.exchange))
                    .query_async(&mut conn),
            )
            .await?;
            Layout::routed(&members, &restorable.routing_key)
        };
        if queues.is_empty() {
            let reason = format!(
                "no queue is bound to exchange `{}` with routing key `{}`",
                restorable.exchange, restorable.routing_key
            );
            let record = dead_record(&reason, &restorable.message, SystemTime::now());
            let dead = self.layout.dead(&restorable.routing_key);
            self.dead_letter(tag, &dead, &record).await?;
            return Ok(false);
        }
        let mut invocation = SCRIPTS.restore.key(&self.layout.unacked);
        invocation.key(&self.layout.unacked_index);
        for queue in &queues {
            invocation.key(self.layout.list_for(queue, restorable.priority));
        }
        invocation.arg(tag).arg(&restorable.message).arg(match end {
            End::Head => "head",
            End::Tail => "tail",
        });
        let restored: u64 = bounded(
            "restore",
            self.timeout(),
            invocation.invoke_async(&mut conn),
        )
        .await?;
        Ok(restored == 1)
    }

    /// Starts this process's restore sweep, once.
    pub(super) fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(sweep(Arc::downgrade(self)));
    }

    /// Restores what was held past the visibility timeout, under kombu's `unacked_mutex`.
    async fn sweep_once(&self) -> Result<usize, BrokerError> {
        let mut conn = self.conn.clone();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let locked: Option<String> = bounded(
            "lock unacked_mutex",
            self.timeout(),
            redis::cmd("SET")
                .arg(&self.layout.unacked_mutex)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(300_000)
                .query_async(&mut conn),
        )
        .await?;
        if locked.is_none() {
            return Ok(0);
        }
        let outcome = self.restore_expired(&mut conn).await;
        let mut unlock = SCRIPTS.unlock.key(&self.layout.unacked_mutex);
        unlock.arg(&token);
        bounded::<u64>(
            "unlock unacked_mutex",
            self.timeout(),
            unlock.invoke_async(&mut conn),
        )
        .await?;
        outcome
    }

    async fn restore_expired(&self, conn: &mut ConnectionManager) -> Result<usize, BrokerError> {
        let ceiling = epoch_seconds(SystemTime::now() - self.settings.visibility_timeout);
        let tags: Vec<String> = bounded(
            "find expired deliveries",
            self.timeout(),
            redis::cmd("ZRANGEBYSCORE")
                .arg(&self.layout.unacked_index)
                .arg("-inf")
                .arg(ceiling)
                .arg("LIMIT")
                .arg(0)
                .arg(SWEEP_BATCH)
                .query_async(conn),
        )
        .await?;
        let mut restored = 0;
        for tag in tags {
            if self.restore(&tag, End::Head).await? {
                restored += 1;
            }
        }
        Ok(restored)
    }
}

async fn sweep(broker: Weak<KombuInner>) {
    let period = match broker.upgrade() {
        Some(broker) => broker.settings.restore_interval,
        None => return,
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        ticks.tick().await;
        let Some(broker) = broker.upgrade() else {
            return;
        };
        match broker.sweep_once().await {
            Ok(0) => {}
            Ok(restored) => tracing::info!(
                restored,
                "restored messages held past the visibility timeout"
            ),
            Err(error) => tracing::warn!(error = %Report(&error), "restore sweep failed"),
        }
    }
}
