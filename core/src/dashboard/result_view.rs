//! A task's stored result, as the task page shows it: its state, and — when celeriac wrote the
//! record — the task's name, its retries, when it finished, why it failed, and what it returned.

use std::time::UNIX_EPOCH;

use serde::Serialize;

use crate::codec::DecodeLimits;
use crate::result::StoredResult;
use crate::result::record::ResultRecord;

/// How much of a returned value the page shows, at most (bytes of JSON).
const VALUE_SHOWN: usize = 4_096;

/// A stored result, for the page. Shown as text: nothing in it is rendered as markup.
#[derive(Debug, Serialize)]
pub(super) struct ResultView {
    state: String,
    task: Option<String>,
    retries: Option<u32>,
    /// Seconds since the Unix epoch.
    finished_at: Option<f64>,
    error: Option<String>,
    /// The value as JSON when it was encoded as JSON, else its size and encoding.
    value: Option<String>,
}

impl ResultView {
    pub(super) fn new(stored: &StoredResult, limits: &DecodeLimits) -> Self {
        let state = stored.state.to_string();
        let Ok(record) = ResultRecord::from_body(&stored.body, limits) else {
            return Self {
                state,
                task: None,
                retries: None,
                finished_at: None,
                error: None,
                value: Some("(a record celeriac cannot read)".to_owned()),
            };
        };
        let value = (record.failure.is_none()).then(|| shown(&record.content_type, &record.output));
        Self {
            state,
            task: Some(record.task),
            retries: Some(record.retries),
            finished_at: record
                .at
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|since| since.as_secs_f64()),
            error: record
                .failure
                .map(|(cause, message)| format!("{cause:?}: {message}")),
            value,
        }
    }
}

/// A returned value as the page shows it.
fn shown(content_type: &str, output: &[u8]) -> String {
    if content_type == crate::codec::JsonCodec::CONTENT_TYPE
        && let Ok(text) = std::str::from_utf8(output)
    {
        if text.len() <= VALUE_SHOWN {
            return text.to_owned();
        }
        let mut end = VALUE_SHOWN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        return format!("{}… ({} bytes in all)", &text[..end], text.len());
    }
    format!("{} bytes of {content_type}", output.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::ResultState;
    use crate::result::record::Cause;

    #[test]
    fn shows_json_values_sizes_failures_and_unreadable_records() {
        let limits = DecodeLimits::default();
        let json = ResultRecord::new("add", 1)
            .with_output("application/json", b"{\"sum\":3}".to_vec())
            .to_stored(ResultState::Success)
            .unwrap_or_else(|e| panic!("{e}"));
        let view = ResultView::new(&json, &limits);
        assert_eq!(view.state, ResultState::Success.to_string());
        assert_eq!(view.value.as_deref(), Some("{\"sum\":3}"));
        assert_eq!((view.task.as_deref(), view.retries), (Some("add"), Some(1)));
        assert!(view.finished_at.is_some_and(|at| at > 0.0));

        let bincode = ResultRecord::new("add", 0)
            .with_output("application/x-bincode", vec![3, 0, 0, 0])
            .to_stored(ResultState::Success)
            .unwrap_or_else(|e| panic!("{e}"));
        let value = ResultView::new(&bincode, &limits).value;
        assert_eq!(value.as_deref(), Some("4 bytes of application/x-bincode"));

        let failed = ResultRecord::new("add", 3)
            .with_failure(Cause::Failed, "gateway down".into())
            .to_stored(ResultState::Failure)
            .unwrap_or_else(|e| panic!("{e}"));
        let view = ResultView::new(&failed, &limits);
        assert_eq!(view.error.as_deref(), Some("Failed: gateway down"));
        assert_eq!(view.value, None);

        let long = "é".repeat(VALUE_SHOWN);
        let shown = shown("application/json", format!("\"{long}\"").as_bytes());
        assert!(
            shown.ends_with(&format!("… ({} bytes in all)", long.len() + 2)),
            "{shown}"
        );

        let foreign = StoredResult::new(ResultState::Success, b"\x09junk".to_vec());
        let view = ResultView::new(&foreign, &limits);
        assert_eq!(
            view.value.as_deref(),
            Some("(a record celeriac cannot read)")
        );
    }
}
