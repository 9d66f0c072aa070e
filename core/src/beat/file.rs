//! A schedule written in TOML, for operators: entries that name registered tasks and give their
//! arguments.
//!
//! ```toml
//! [[entry]]
//! name = "purge-codes"          # stable: the ledger keeps each entry's last tick by name
//! task = "purge_expired_codes"  # a task registered with the app
//! every = "60s"                 # or: cron = "0 */5 * * * *" (with time_zone = "Asia/Shanghai")
//! args = []                     # one value per argument
//! jitter = "5s"                 # optional
//! catch_up = "latest"           # all (default) | latest | skip
//! queue = "maintenance"         # optional, instead of the task's
//! expires = "50s"               # optional: discard a tick not started within this
//! ```

use std::path::Path;

use serde::Deserialize;

use super::entry::{CatchUp, Entry};
use crate::{App, BuildError, SendOptions};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Schedule {
    #[serde(default)]
    entry: Vec<EntrySpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySpec {
    name: String,
    task: String,
    every: Option<String>,
    cron: Option<String>,
    time_zone: Option<String>,
    #[serde(default)]
    args: Vec<toml::Value>,
    jitter: Option<String>,
    catch_up: Option<String>,
    queue: Option<String>,
    expires: Option<String>,
}

/// Reads the entries of the TOML schedule `text`; `origin` names it in errors.
pub(super) fn entries(app: &App, text: &str, origin: &str) -> Result<Vec<Entry>, BuildError> {
    let schedule: Schedule = toml::from_str(text).map_err(|error| BuildError::BeatSchedule {
        origin: origin.to_owned(),
        reason: error.to_string(),
    })?;
    schedule
        .entry
        .into_iter()
        .map(|spec| entry(app, spec))
        .collect()
}

/// Reads the entries of the TOML schedule file at `path`.
pub(super) fn entries_from_file(app: &App, path: &Path) -> Result<Vec<Entry>, BuildError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| BuildError::BeatSchedule {
        origin: origin.clone(),
        reason: format!("cannot read it: {error}"),
    })?;
    entries(app, &text, &origin)
}

fn entry(app: &App, spec: EntrySpec) -> Result<Entry, BuildError> {
    let name = spec.name;
    let invalid = |reason: String| BuildError::BeatEntry {
        entry: name.clone(),
        reason,
    };
    let duration = |field: &str, text: &str| {
        humantime::parse_duration(text)
            .map_err(|error| invalid(format!("`{field} = \"{text}\"`: {error}")))
    };
    let Some(task) = app.registered(&spec.task) else {
        return Err(invalid(format!(
            "no task named `{}` is registered with the app",
            spec.task
        )));
    };
    let mut options = SendOptions::new();
    if let Some(queue) = spec.queue {
        options = options.queue(queue);
    }
    if let Some(expires) = &spec.expires {
        options = options.expires_in(duration("expires", expires)?);
    }
    let signature = (task.from_toml)(spec.args, options)
        .map_err(|reason| invalid(format!("task `{}`: {reason}", spec.task)))?;
    let mut entry = match (spec.every, spec.cron) {
        (Some(every), None) => {
            Entry::from_pending(name.clone(), duration("every", &every)?, signature)
        }
        (None, Some(cron)) => {
            let zone = spec.time_zone.unwrap_or_else(|| "UTC".to_owned());
            Entry::cron_from_pending(name.clone(), cron, zone, signature)
        }
        _ => return Err(invalid("give exactly one of `every` and `cron`".to_owned())),
    };
    if let Some(jitter) = &spec.jitter {
        entry = entry.jitter(duration("jitter", jitter)?);
    }
    if let Some(policy) = spec.catch_up {
        entry = entry.catch_up(match policy.as_str() {
            "all" => CatchUp::All,
            "latest" => CatchUp::Latest,
            "skip" => CatchUp::Skip,
            other => {
                return Err(invalid(format!(
                    "`catch_up = \"{other}\"`: use \"all\", \"latest\" or \"skip\""
                )));
            }
        });
    }
    Ok(entry)
}
