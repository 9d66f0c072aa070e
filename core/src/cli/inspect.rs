//! The verbs that talk to workers (`status`, `inspect`, `control`, `revoke`), look at queues
//! (`queues`) and tail events (`events`).

use std::collections::BTreeSet;

use clap::Subcommand;
use comfy_table::{Cell, Color};
use futures::StreamExt;
use serde::Serialize;

use super::Failure;
use super::output::{Output, duration, mebibytes};
use crate::control::{Command, Control, Reply, ReplyBody};
use crate::{App, RateLimit, TaskId};

#[derive(Subcommand)]
pub(super) enum Inspect {
    /// Which workers answer
    Ping,
    /// Each worker's figures
    Stats,
    /// The tasks each worker is running
    Active,
    /// The tasks each worker fetched and holds until a lane is free
    Reserved,
    /// The tasks each worker knows
    Registered,
    /// The queues each worker consumes
    ActiveQueues,
    /// The revoked task ids each worker remembers
    Revoked,
}

#[derive(Subcommand)]
pub(super) enum ControlVerb {
    /// Shut workers down gracefully (as SIGTERM does)
    Shutdown,
    /// Set a task's per-worker rate limit (`10/s`, `30/m`, `100/h`), or `none` to remove it
    RateLimit {
        /// The task's name
        task: String,
        /// The new limit, or `none`
        rate: String,
    },
}

/// Sends `command`; no reply at all is [`Failure::Nothing`].
async fn replies(control: &Control, command: Command) -> Result<Vec<Reply>, Failure> {
    let name = command.name();
    let replies = control.send(command).await?;
    if replies.is_empty() {
        return Err(Failure::Nothing(format!(
            "no worker answered `{name}` in time (raise --timeout, or check --destination)"
        )));
    }
    Ok(replies)
}

pub(super) async fn status(control: &Control, out: &Output) -> Result<(), Failure> {
    let replies = replies(control, Command::Stats).await?;
    if out.json() {
        out.print_json(&replies);
        return Ok(());
    }
    let rows = replies
        .iter()
        .filter_map(|reply| match &reply.body {
            ReplyBody::Stats(stats) => Some(vec![
                Cell::new(&reply.hostname),
                out.coloured("online", Color::Green),
                Cell::new(format!("{}/{}", stats.active, stats.concurrency)),
                Cell::new(stats.succeeded + stats.retried + stats.dead_lettered + stats.expired),
                Cell::new(stats.dead_lettered),
                Cell::new(stats.queues.join(",")),
                Cell::new(duration(stats.uptime)),
                Cell::new(mebibytes(stats.rss_bytes)),
            ]),
            _ => None,
        })
        .collect();
    out.table(
        &[
            "WORKER",
            "STATUS",
            "ACTIVE",
            "PROCESSED",
            "DEAD",
            "QUEUES",
            "UPTIME",
            "RSS",
        ],
        rows,
    );
    out.line(&format!("{} worker(s) online", replies.len()));
    Ok(())
}

#[derive(Serialize)]
struct QueueRow {
    queue: String,
    ready: u64,
    delayed: u64,
    unacked: u64,
    dead_lettered: u64,
}

pub(super) async fn queues(
    app: &App,
    control: &Control,
    queues: Vec<String>,
    out: &Output,
) -> Result<(), Failure> {
    let queues: BTreeSet<String> = if queues.is_empty() {
        let replies = replies(control, Command::ActiveQueues).await?;
        replies
            .into_iter()
            .flat_map(|reply| match reply.body {
                ReplyBody::ActiveQueues { queues } => queues,
                _ => Vec::new(),
            })
            .collect()
    } else {
        queues.into_iter().collect()
    };
    let mut rows = Vec::new();
    for queue in queues {
        let stats = app.broker().stats(&queue).await?;
        rows.push(QueueRow {
            queue,
            ready: stats.ready,
            delayed: stats.delayed,
            unacked: stats.unacked,
            dead_lettered: stats.dead_lettered,
        });
    }
    if out.json() {
        out.print_json(&rows);
        return Ok(());
    }
    let rows = rows
        .into_iter()
        .map(|row| {
            let dead = if row.dead_lettered > 0 {
                out.coloured(row.dead_lettered, Color::Red)
            } else {
                Cell::new(0)
            };
            vec![
                Cell::new(row.queue),
                Cell::new(row.ready),
                Cell::new(row.delayed),
                Cell::new(row.unacked),
                dead,
            ]
        })
        .collect();
    out.table(&["QUEUE", "READY", "DELAYED", "UNACKED", "DEAD"], rows);
    Ok(())
}

pub(super) async fn inspect(control: &Control, what: Inspect, out: &Output) -> Result<(), Failure> {
    let command = match what {
        Inspect::Ping => Command::Ping,
        Inspect::Stats => Command::Stats,
        Inspect::Active => Command::Active,
        Inspect::Reserved => Command::Reserved,
        Inspect::Registered => Command::Registered,
        Inspect::ActiveQueues => Command::ActiveQueues,
        Inspect::Revoked => Command::RevokedIds,
    };
    let replies = replies(control, command).await?;
    if out.json() {
        out.print_json(&replies);
        return Ok(());
    }
    print_replies(&replies, out);
    Ok(())
}

/// Prints replies for people: a table for the kind they share.
fn print_replies(replies: &[Reply], out: &Output) {
    let mut rows = Vec::new();
    let mut headers: &[&str] = &["WORKER", "REPLY"];
    for reply in replies {
        let host = || Cell::new(&reply.hostname);
        match &reply.body {
            ReplyBody::Active { tasks } => {
                headers = &["WORKER", "TASK ID", "NAME", "QUEUE", "RETRIES", "RUNTIME"];
                rows.extend(tasks.iter().map(|task| {
                    let mut row = task_row(host(), task.id, &task.name, &task.queue, task.retries);
                    row.push(Cell::new(duration(task.runtime)));
                    row
                }));
            }
            ReplyBody::Reserved { tasks } => {
                headers = &["WORKER", "TASK ID", "NAME", "QUEUE", "RETRIES"];
                rows.extend(
                    tasks.iter().map(|task| {
                        task_row(host(), task.id, &task.name, &task.queue, task.retries)
                    }),
                );
            }
            ReplyBody::Stats(stats) => {
                headers = &[
                    "WORKER",
                    "ACTIVE",
                    "SUCCEEDED",
                    "RETRIED",
                    "DEAD",
                    "EXPIRED",
                    "REVOKED",
                    "UPTIME",
                    "RSS",
                    "LOAD",
                ];
                rows.push(vec![
                    host(),
                    Cell::new(format!("{}/{}", stats.active, stats.concurrency)),
                    Cell::new(stats.succeeded),
                    Cell::new(stats.retried),
                    Cell::new(stats.dead_lettered),
                    Cell::new(stats.expired),
                    Cell::new(stats.revoked),
                    Cell::new(duration(stats.uptime)),
                    Cell::new(mebibytes(stats.rss_bytes)),
                    Cell::new(stats.loadavg.map_or_else(
                        || "-".to_owned(),
                        |[one, five, fifteen]| format!("{one:.2} {five:.2} {fifteen:.2}"),
                    )),
                ]);
            }
            ReplyBody::Registered { tasks } => {
                rows.push(vec![host(), Cell::new(tasks.join(", "))]);
            }
            ReplyBody::ActiveQueues { queues } => {
                rows.push(vec![host(), Cell::new(queues.join(", "))]);
            }
            ReplyBody::RevokedIds { ids } => {
                headers = &["WORKER", "REVOKED TASK ID"];
                rows.extend(ids.iter().map(|id| vec![host(), Cell::new(id)]));
            }
            ReplyBody::Pong => rows.push(vec![host(), out.coloured("pong", Color::Green)]),
            ReplyBody::ShuttingDown => rows.push(vec![host(), Cell::new("shutting down")]),
            ReplyBody::RateLimit { task, rate } => rows.push(vec![
                host(),
                Cell::new(format!("{task}: {}", rate.as_deref().unwrap_or("no limit"))),
            ]),
            ReplyBody::Revoked(revoked) => rows.push(vec![
                host(),
                Cell::new(format!(
                    "remembers {} revoke(s); stopped {}",
                    revoked.remembered,
                    revoked.terminated.len()
                )),
            ]),
            ReplyBody::Error { message } => {
                rows.push(vec![
                    host(),
                    out.coloured(format!("error: {message}"), Color::Red),
                ]);
            }
        }
    }
    out.table(headers, rows);
}

pub(super) async fn control(
    control: &Control,
    what: ControlVerb,
    out: &Output,
) -> Result<(), Failure> {
    let command = match what {
        ControlVerb::Shutdown => Command::Shutdown,
        ControlVerb::RateLimit { task, rate } => {
            let rate = match rate.as_str() {
                "none" | "0" => None,
                text => Some(
                    text.parse::<RateLimit>()
                        .map_err(|error| Failure::Usage(error.to_string()))?
                        .to_string(),
                ),
            };
            Command::RateLimit { task, rate }
        }
    };
    let replies = replies(control, command).await?;
    if out.json() {
        out.print_json(&replies);
    } else {
        print_replies(&replies, out);
    }
    let refused: Vec<&str> = replies
        .iter()
        .filter_map(|reply| match &reply.body {
            ReplyBody::Error { .. } => Some(reply.hostname.as_str()),
            _ => None,
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Failure::Usage(format!("refused by {}", refused.join(", "))))
    }
}

/// The cells `inspect active` and `inspect reserved` share.
fn task_row(host: Cell, id: TaskId, name: &str, queue: &str, retries: u32) -> Vec<Cell> {
    vec![
        host,
        Cell::new(id),
        Cell::new(name),
        Cell::new(queue),
        Cell::new(retries),
    ]
}

pub(super) async fn revoke(
    control: &Control,
    ids: Vec<TaskId>,
    terminate: bool,
    out: &Output,
) -> Result<(), Failure> {
    let count = ids.len();
    let revoke = control.revoke(ids, terminate).await?;
    if out.json() {
        #[derive(Serialize)]
        struct Revoked<'a> {
            remembered: bool,
            replies: Vec<(&'a str, &'a crate::control::Revoked)>,
        }
        out.print_json(&Revoked {
            remembered: revoke.remembered,
            replies: revoke
                .replies
                .iter()
                .map(|reply| (reply.hostname.as_str(), &reply.value))
                .collect(),
        });
        return Ok(());
    }
    out.line(&format!(
        "revoked {count} task(s); {} worker(s) answered; {}",
        revoke.replies.len(),
        if revoke.remembered {
            "remembered for workers that start later"
        } else {
            "not remembered (no coordination store): only the workers listening now know"
        }
    ));
    for reply in &revoke.replies {
        for id in &reply.value.terminated {
            out.line(&format!("stopped {id} on {}", reply.hostname));
        }
    }
    Ok(())
}

pub(super) async fn events(app: &App, out: &Output) -> Result<(), Failure> {
    let events = crate::events::subscribe(app).await?;
    let mut events = std::pin::pin!(events);
    let interrupted = tokio::signal::ctrl_c();
    let mut interrupted = std::pin::pin!(interrupted);
    loop {
        let next = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            next = events.next() => next,
        };
        match next {
            None => return Err(Failure::Broker("the event stream ended".into())),
            Some(Err(error)) => eprintln!("warning: {}", crate::error::Report(&error)),
            Some(Ok(event)) if out.json() => out.print_json(&event),
            Some(Ok(event)) => {
                let json = serde_json::to_value(&event.kind).unwrap_or_default();
                let detail = [
                    "uuid",
                    "name",
                    "runtime",
                    "exception",
                    "reason",
                    "processed",
                ]
                .iter()
                .filter_map(|field| json.get(field).map(|value| format!("{field}={value}")))
                .collect::<Vec<_>>()
                .join(" ");
                let time = crate::clock::calendar(event.time());
                out.line(&format!(
                    "{} {} {} {detail}",
                    time.format("%H:%M:%S%.3f"),
                    event.hostname,
                    event.kind.name()
                ));
            }
        }
    }
}
