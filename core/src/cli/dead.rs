//! The verbs that change queues: `purge` and `dlq`.

use std::io::{BufRead, Write};
use std::time::SystemTime;

use clap::Subcommand;
use comfy_table::Cell;
use indicatif::{ProgressBar, ProgressStyle};

use super::Failure;
use super::output::Output;
use crate::broker::letter::Letter;
use crate::{App, TaskId};

#[derive(Subcommand)]
pub(super) enum Dlq {
    /// The oldest dead letters of a queue
    List {
        /// The queue
        queue: String,
        /// How many at most
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One dead letter, by its task's id
    Show {
        /// The queue
        queue: String,
        /// The task's id
        id: TaskId,
    },
    /// Move dead letters back to their queue, each once (interrupt with Ctrl-C between batches)
    Requeue {
        /// The queue
        queue: String,
        /// How many at most (default: all)
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Delete a queue's dead letters
    Purge {
        /// The queue
        queue: String,
        /// Do not ask for confirmation
        #[arg(long, short = 'f')]
        force: bool,
    },
}

/// Dead letters read at most, looking for one by id.
const SHOW_SCAN: usize = 10_000;

/// Dead letters moved per broker call when requeueing: the unit an interruption waits for.
const REQUEUE_BATCH: usize = 500;

pub(super) async fn dlq(app: &App, what: Dlq, out: &Output) -> Result<(), Failure> {
    match what {
        Dlq::List { queue, limit } => list(app, &queue, limit, out).await,
        Dlq::Show { queue, id } => show(app, &queue, id, out).await,
        Dlq::Requeue { queue, limit } => requeue(app, &queue, limit, out).await,
        Dlq::Purge { queue, force } => {
            let dead = app
                .broker()
                .stats(&queue)
                .await
                .map(|stats| stats.dead_lettered);
            let what = match dead {
                Ok(count) => format!("{count} dead letter(s) of `{queue}`"),
                Err(_) => format!("the dead letters of `{queue}`"),
            };
            confirm(&format!("Delete {what}?"), force, out)?;
            let purged = app.broker().purge_dead_letters(&queue).await?;
            report_count("purged", purged, &queue, out);
            Ok(())
        }
    }
}

pub(super) async fn purge(
    app: &App,
    queue: &str,
    force: bool,
    out: &Output,
) -> Result<(), Failure> {
    let waiting = app.broker().len(queue).await?;
    confirm(
        &format!("Remove the {waiting} waiting task(s) of `{queue}`? Tasks being run stay."),
        force,
        out,
    )?;
    let purged = app.broker().purge(queue).await?;
    report_count("purged", purged, queue, out);
    Ok(())
}

fn report_count(what: &str, count: u64, queue: &str, out: &Output) {
    if out.json() {
        out.print_json(&serde_json::json!({ what: count, "queue": queue }));
    } else {
        out.line(&format!("{what} {count} message(s) of `{queue}`"));
    }
}

/// Asks before a destructive action, unless `force`; refuses when nobody can answer.
fn confirm(question: &str, force: bool, out: &Output) -> Result<(), Failure> {
    if force {
        return Ok(());
    }
    if !out.interactive() {
        return Err(Failure::Usage(format!(
            "{question} Refusing without --force when not run interactively"
        )));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Failure::Nothing("not confirmed; nothing changed".into()))
    }
}

async fn list(app: &App, queue: &str, limit: usize, out: &Output) -> Result<(), Failure> {
    let letters: Vec<Letter> = app
        .broker()
        .dead_letters(queue, limit)
        .await?
        .iter()
        .map(|dead| Letter::new(app, dead))
        .collect();
    if out.json() {
        out.print_json(&letters);
        return Ok(());
    }
    let rows = letters
        .iter()
        .map(|letter| {
            vec![
                Cell::new(
                    letter
                        .id
                        .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                ),
                Cell::new(letter.task.as_deref().unwrap_or("(undecodable)")),
                Cell::new(letter.when()),
                Cell::new(&letter.reason),
            ]
        })
        .collect();
    out.table(&["TASK ID", "TASK", "DEAD-LETTERED (UTC)", "REASON"], rows);
    Ok(())
}

async fn show(app: &App, queue: &str, id: TaskId, out: &Output) -> Result<(), Failure> {
    let letters = app.broker().dead_letters(queue, SHOW_SCAN).await?;
    let Some(letter) = letters
        .iter()
        .map(|dead| Letter::new(app, dead))
        .find(|letter| letter.id == Some(id))
    else {
        return Err(Failure::Nothing(format!(
            "no dead letter of task {id} among the oldest {SHOW_SCAN} of `{queue}`"
        )));
    };
    if out.json() {
        out.print_json(&letter);
        return Ok(());
    }
    let rows = vec![
        vec![Cell::new("task id"), Cell::new(id)],
        vec![
            Cell::new("task"),
            Cell::new(letter.task.as_deref().unwrap_or("-")),
        ],
        vec![Cell::new("queue"), Cell::new(&letter.queue)],
        vec![
            Cell::new("retries"),
            Cell::new(
                letter
                    .retries
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            ),
        ],
        vec![Cell::new("dead-lettered (UTC)"), Cell::new(letter.when())],
        vec![Cell::new("reason"), Cell::new(&letter.reason)],
        vec![
            Cell::new("size"),
            Cell::new(format!("{} bytes", letter.bytes)),
        ],
    ];
    out.table(&["FIELD", "VALUE"], rows);
    Ok(())
}

async fn requeue(
    app: &App,
    queue: &str,
    limit: Option<usize>,
    out: &Output,
) -> Result<(), Failure> {
    let total = app
        .broker()
        .stats(queue)
        .await
        .ok()
        .map(|stats| stats.dead_lettered);
    let wanted = match (limit, total) {
        (Some(limit), Some(total)) => Some((limit as u64).min(total)),
        (Some(limit), None) => Some(limit as u64),
        (None, total) => total,
    };
    let bar = if out.interactive() {
        let bar = wanted.map_or_else(ProgressBar::no_length, ProgressBar::new);
        let style = ProgressStyle::with_template(
            "{spinner} requeueing [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
        )
        .map(|style| style.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = SystemTime::now();
    let interrupted = tokio::signal::ctrl_c();
    let mut interrupted = std::pin::pin!(interrupted);
    let mut moved = 0_u64;
    let mut left = limit.unwrap_or(usize::MAX);
    let outcome = loop {
        if left == 0 {
            break Ok(());
        }
        // Checked between batches only: a batch under way finishes and is counted (were it
        // dropped mid-way, the server could still move it, and the count would be short).
        if futures::poll!(&mut interrupted).is_ready() {
            break Err(());
        }
        let batch = left.min(REQUEUE_BATCH);
        let done = match app.broker().requeue_dead_letters(queue, batch).await {
            Ok(done) => done,
            Err(error) => {
                bar.abandon();
                return Err(Failure::Broker(format!(
                    "{} (after requeueing {moved})",
                    crate::error::Report(&error)
                )));
            }
        };
        moved += done;
        bar.inc(done);
        left -= batch;
        if done < batch as u64 {
            break Ok(());
        }
    };
    bar.finish_and_clear();
    let seconds = started
        .elapsed()
        .map_or(0.0, |elapsed| elapsed.as_secs_f64());
    match outcome {
        Ok(()) => {
            if out.json() {
                out.print_json(&serde_json::json!({ "requeued": moved, "queue": queue }));
            } else {
                out.line(&format!(
                    "requeued {moved} dead letter(s) to `{queue}` in {}",
                    super::output::duration(seconds)
                ));
            }
            Ok(())
        }
        Err(()) => Err(Failure::Interrupted(format!(
            "interrupted after requeueing {moved} dead letter(s) to `{queue}`; the rest are still dead-lettered"
        ))),
    }
}
