//! What a worker sends once a task of a workflow is over: the chain's next task, the callbacks,
//! and for a chord's member its join (see [`canvas`](crate::canvas)).
//!
//! After a success this runs before the ack: a failure to send (broker or backend down) has the
//! task's message requeued, so the run repeats and the workflow goes on from it (at least once).

use bytes::Bytes;

use crate::canvas::TaskFailure;
use crate::canvas::chain::{next_in_chain, next_message, workflow};
use crate::envelope::{ChordMember, Step, Workflow};
use crate::error::Report;
use crate::result::record::Cause;
use crate::result::{ChordJoin, ChordPart, store};
use crate::{App, CodecExt, Envelope};

/// After a success with `output` (encoded with the app's codec). Returns `false` when something
/// could not be sent for now, and the task's message is to be requeued.
pub(super) async fn succeeded(app: &App, envelope: &Envelope, output: &[u8]) -> bool {
    let Some(workflow) = envelope.workflow.as_deref() else {
        return true;
    };
    let mut messages = Vec::new();
    for callback in &workflow.link {
        match next_message(app, callback.clone(), Some(envelope), output) {
            Ok(message) => messages.push(message),
            Err(error) => {
                tracing::error!(task = %envelope.task, task.id = %envelope.id, callback = %callback.task, error = %Report(&error), "cannot build the task's callback; not sending it");
            }
        }
    }
    match next_in_chain(app, &workflow.chain, envelope, output) {
        Some(Ok(message)) => messages.push(message),
        Some(Err(error)) => {
            let message = format!(
                "cannot pass its output to the next task of its chain: {}",
                Report(&error)
            );
            stop(app, envelope, workflow, Cause::Failed, message).await;
        }
        None => {}
    }
    for message in messages {
        if let Err(error) = app.publish(message).await {
            tracing::warn!(task = %envelope.task, task.id = %envelope.id, error = %Report(&error), "cannot send what follows the task in its workflow; requeueing the task");
            return false;
        }
    }
    match &workflow.chord {
        Some(member) => join(app, envelope, member, output).await,
        None => true,
    }
}

/// Records a chord member's output; the member that completes the chord sends its callback.
async fn join(app: &App, envelope: &Envelope, member: &ChordMember, output: &[u8]) -> bool {
    let Some(backend) = app.result_backend() else {
        tracing::error!(task = %envelope.task, task.id = %envelope.id, chord = %member.chord, "a chord's member ran on a worker without a result backend: the chord cannot complete");
        return true;
    };
    if !backend.joins_chords() {
        let reason = format!(
            "a chord's member ran on a worker whose result backend ({}) does not join chords",
            backend.system()
        );
        chord_failed(app, envelope, member, reason).await;
        return true;
    }
    // Size 0: the backend keeps it (Celery's chords).
    if member.size != 0 && member.index >= member.size {
        let reason = format!(
            "member {} of a chord of {} (a message no celeriac sent)",
            member.index, member.size
        );
        chord_failed(app, envelope, member, reason).await;
        return true;
    }
    let (chord, ttl) = (member.chord.to_string(), app.result_expires());
    let task_id = envelope.id.to_string();
    let part = ChordPart::new(&chord, member.index, member.size, &task_id);
    let output = Bytes::copy_from_slice(output);
    let outputs = match backend.join_chord(part, output, ttl).await {
        Ok(ChordJoin::Complete(outputs)) => outputs,
        Ok(ChordJoin::Failed(reason)) => {
            chord_failed(app, envelope, member, reason).await;
            return true;
        }
        Ok(_) => return true,
        Err(error) => {
            tracing::warn!(task = %envelope.task, task.id = %envelope.id, %chord, error = %Report(&error), "cannot join the chord; requeueing the task");
            return false;
        }
    };
    let outputs: Vec<&[u8]> = outputs.iter().map(Bytes::as_ref).collect();
    let callback = &member.callback;
    let message = app
        .codec()
        .join_seq(&outputs)
        .and_then(|all| next_message(app, callback.step.clone(), Some(envelope), &all));
    let mut message = match message {
        Ok(message) => message,
        Err(error) => {
            let reason = format!(
                "cannot pass the chord's outputs to its callback `{}`: {}",
                callback.step.task,
                Report(&error)
            );
            chord_failed(app, envelope, member, reason).await;
            return true;
        }
    };
    message.workflow = workflow(Workflow {
        link: callback.link.clone(),
        link_error: callback.link_error.clone(),
        chord_callback: true,
        ..Workflow::default()
    });
    if let Err(error) = app.publish(message).await {
        tracing::warn!(task = %envelope.task, task.id = %envelope.id, %chord, error = %Report(&error), "cannot send the chord's callback; requeueing the task");
        return false;
    }
    if let Err(error) = backend.chord_fired(&chord, ttl).await {
        // A repeated member may then send the callback again: its copy is dropped by id.
        tracing::warn!(%chord, error = %Report(&error), "cannot record that the chord's callback was sent");
    }
    true
}

/// After the task failed for good (`Cause::Failed`), was dead-lettered or expired: records why,
/// then sends its error callbacks and fails the chain or chord it stops.
pub(super) async fn ended(app: &App, envelope: &Envelope, cause: Cause, message: String) {
    crate::app::release_after_run(app, envelope).await;
    match envelope.workflow.as_deref() {
        None => store::ended(app, envelope, cause, message).await,
        Some(workflow) => {
            store::ended(app, envelope, cause, message.clone()).await;
            stop(app, envelope, workflow, cause, message).await;
        }
    }
}

async fn stop(app: &App, envelope: &Envelope, workflow: &Workflow, cause: Cause, message: String) {
    send_errbacks(app, envelope, &workflow.link_error, &message).await;
    if let Some(last) = workflow.chain.last().filter(|last| last.step.store_result) {
        store::stopped(app, last.step.id, envelope, cause, message.clone()).await;
    }
    let Some(member) = &workflow.chord else {
        return;
    };
    let Some(backend) = app.result_backend() else {
        return;
    };
    let chord = member.chord.to_string();
    let task_id = envelope.id.to_string();
    let part = ChordPart::new(&chord, member.index, member.size, &task_id);
    match backend
        .fail_chord(part, &message, app.result_expires())
        .await
    {
        Ok(ChordJoin::Failed(reason)) => fail_chord(app, envelope, member, cause, reason).await,
        Ok(_) => {}
        Err(error) => {
            tracing::error!(task = %envelope.task, task.id = %envelope.id, %chord, error = %Report(&error), "cannot record the chord's failure");
        }
    }
}

/// The chord `member` belongs to cannot complete, for `reason`: logged, then failed.
async fn chord_failed(app: &App, envelope: &Envelope, member: &ChordMember, reason: String) {
    tracing::error!(task = %envelope.task, task.id = %envelope.id, chord = %member.chord, %reason, "chord failed");
    fail_chord(app, envelope, member, Cause::Failed, reason).await;
}

/// Fails the chord `member` belongs to: its error callbacks, then its result (the callback's).
async fn fail_chord(
    app: &App,
    envelope: &Envelope,
    member: &ChordMember,
    cause: Cause,
    message: String,
) {
    send_errbacks(app, envelope, &member.link_error, &message).await;
    store::stopped(app, member.callback.step.id, envelope, cause, message).await;
}

/// Sends each of `errbacks` with the [`TaskFailure`] of `envelope`'s task. What cannot be sent is
/// logged: the failure itself is already settled.
async fn send_errbacks(app: &App, envelope: &Envelope, errbacks: &[Step], message: &str) {
    if errbacks.is_empty() {
        return;
    }
    let failure = TaskFailure::new(
        envelope.id,
        &envelope.task,
        envelope.retries,
        message.to_owned(),
    );
    let failure = match app.codec().encode(&failure) {
        Ok(failure) => failure,
        Err(error) => {
            tracing::error!(task = %envelope.task, error = %Report(&error), "cannot encode the task's failure for its error callbacks");
            return;
        }
    };
    for errback in errbacks {
        // An error callback of a Celery workflow is given the failed task's id, as Celery does.
        #[cfg(feature = "celery")]
        let failure = if errback.content_type == crate::celery::ARGS_CONTENT_TYPE {
            crate::celery::failed_task_id(envelope.id)
        } else {
            failure.clone()
        };
        let sent = match next_message(app, errback.clone(), Some(envelope), &failure) {
            Ok(message) => app
                .publish(message)
                .await
                .map_err(|e| Report(&e).to_string()),
            Err(error) => Err(Report(&error).to_string()),
        };
        if let Err(error) = sent {
            tracing::error!(task = %envelope.task, task.id = %envelope.id, errback = %errback.task, %error, "cannot send the task's error callback");
        }
    }
}
