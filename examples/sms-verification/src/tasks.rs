//! The task — the Rust version of the seed's `ccp_send_sms_code`.

use std::sync::Arc;

use celeriac::State;

use crate::gateway::{GatewayError, SmsGateway};
use crate::store::{CodeStore, StoreError};

/// How long a code stays valid, in minutes (the text tells the user).
pub const CODE_VALID_MINUTES: u64 = 5;

/// The gateway the task sends through, shared with it as app state.
#[derive(Clone)]
pub struct Gateway(pub Arc<dyn SmsGateway>);

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gateway")
    }
}

/// Sends a verification code by SMS. Any gateway error retries after at most 3 s, 6 s, 12 s (full
/// jitter), then the task is dead-lettered with the error. An app that registers this task without a
/// `Gateway` fails to build. Its outcome is kept (`ignore_result = false`: tasks returning `()` keep
/// none by default) so the page can show whether the SMS went out.
///
/// Its parameters are named as the seed's Python task names them (`mobile`, `sms_code`), so that in
/// the `--celery` mode a Django producer's keyword arguments bind too.
///
/// One SMS per number per minute (the seed's hand-written `send_flag`): a second send for the same
/// `mobile` within 60 s is refused with `EnqueueError::Duplicate`, across every web process sharing
/// the coordination store.
#[celeriac::task(
    name = "ccp_send_sms_code",
    max_retries = 3,
    retry_backoff = 3,
    ignore_result = false,
    unique_for = "60s",
    unique_key = "mobile"
)]
pub async fn ccp_send_sms_code(
    State(Gateway(gateway)): State<Gateway>,
    mobile: String,
    sms_code: String,
) -> Result<(), GatewayError> {
    let text = format!(
        "Your verification code is {sms_code}. It expires in {CODE_VALID_MINUTES} minutes."
    );
    gateway.send(&mobile, &text).await
}

/// The code store, shared with the periodic purge as app state.
#[derive(Clone)]
pub struct Codes(pub Arc<dyn CodeStore>);

impl std::fmt::Debug for Codes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Codes")
    }
}

/// Deletes the codes that expired unused, so that a code store in memory does not keep every
/// number that ever asked for one. Sent every minute by the beat of the all-in-one mode (Celery:
/// a `beat_schedule` entry); answers how many codes it deleted.
#[celeriac::task(name = "purge_expired_codes", ignore_result = false)]
pub async fn purge_expired_codes(State(Codes(codes)): State<Codes>) -> Result<usize, StoreError> {
    let purged = codes.purge_expired().await?;
    tracing::info!(purged, "purged expired verification codes");
    Ok(purged)
}
