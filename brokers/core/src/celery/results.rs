//! Celery's result metas (`{"status": …, "result": …, "traceback": …, …}`), as its Redis and RPC
//! backends keep and send them, read as celeriac's stored results.

use bytes::Bytes;

use crate::{BrokerError, ResultState, StoredResult};

/// The state a Celery status stands for (`None` for a status Celery does not have).
///
/// ```
/// use celeriac_core::ResultState;
/// use celeriac_core::celery::results::state_of;
///
/// assert_eq!(state_of("SUCCESS"), Some(ResultState::Success));
/// assert_eq!(state_of("NAPPING"), None);
/// ```
pub fn state_of(status: &str) -> Option<ResultState> {
    Some(match status {
        "PENDING" | "RECEIVED" => ResultState::Pending,
        "STARTED" => ResultState::Started,
        "RETRY" => ResultState::Retry,
        "SUCCESS" => ResultState::Success,
        "FAILURE" | "REJECTED" | "IGNORED" => ResultState::Failure,
        "REVOKED" => ResultState::Revoked,
        _ => return None,
    })
}

/// Task `id`'s result from Celery's `meta`: its state read from `status`, the meta itself as the
/// body (celeriac's Celery mode reads the value or the error from it).
pub fn stored_meta(id: &str, meta: Vec<u8>) -> Result<StoredResult, BrokerError> {
    #[derive(serde::Deserialize)]
    struct Status<'a> {
        #[serde(borrow)]
        status: std::borrow::Cow<'a, str>,
    }
    let status = serde_json::from_slice::<Status<'_>>(&meta).map_err(|error| {
        BrokerError::Invalid(format!(
            "the Celery result of task {id} is not a result meta: {error}"
        ))
    })?;
    let state = state_of(&status.status).ok_or_else(|| {
        BrokerError::Invalid(format!(
            "the Celery result of task {id} has the unknown status `{}`",
            status.status
        ))
    })?;
    Ok(StoredResult::new(state, Bytes::from(meta)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn celery_statuses_are_states_and_garbage_is_an_error() {
        let meta = br#"{"status": "SUCCESS", "result": 5, "traceback": null}"#.to_vec();
        assert_eq!(stored_meta("t", meta).unwrap().state, ResultState::Success);
        let meta = br#"{"status": "REVOKED"}"#.to_vec();
        assert_eq!(stored_meta("t", meta).unwrap().state, ResultState::Revoked);
        for bad in [
            &b"not json"[..],
            br#"{"status": "NAPPING"}"#,
            br#"{"result": 1}"#,
        ] {
            assert!(stored_meta("t", bad.to_vec()).is_err());
        }
    }
}
