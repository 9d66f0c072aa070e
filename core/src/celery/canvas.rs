//! Celery's canvas on the wire (`embed.callbacks` and `embed.chain`) to celeriac's workflow and
//! back, so that a chain built in Python runs on Rust workers and a Rust worker's next step runs
//! on Python ones.
//!
//! A signature is `{"task", "args", "kwargs", "options", "subtask_type", "immutable"}`; Celery keeps
//! a chain's rest **reversed** (the next step last). A step's arguments stay Celery's
//! `[args, kwargs]` ([`ARGS_CONTENT_TYPE`]); the previous output is put first in `args` unless the
//! signature is immutable.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{ARGS_CONTENT_TYPE, CeleryError};
use crate::TaskId;
use crate::envelope::{ChainLink, ChordMember, Step, Workflow};

/// The group a message belongs to: its `group` and `group_index` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct GroupPlace {
    pub(super) group: TaskId,
    pub(super) index: Option<u32>,
}

impl GroupPlace {
    /// Where a member of a plain group (not a chord's) keeps its place between decoding and
    /// encoding: the envelope's headers, under Celery's names (which are never sent as
    /// application headers).
    pub(super) fn keep_in(self, headers: &mut BTreeMap<String, String>) {
        headers.insert("group".into(), self.group.to_string());
        if let Some(index) = self.index {
            headers.insert("group_index".into(), index.to_string());
        }
    }

    /// The place [`keep_in`](Self::keep_in) kept; `None` when there is none, or it does not
    /// read as one.
    pub(super) fn kept_in(headers: &BTreeMap<String, String>) -> Option<Self> {
        Some(Self {
            group: headers.get("group")?.parse().ok()?,
            index: headers
                .get("group_index")
                .and_then(|index| index.parse().ok()),
        })
    }
}

/// Makes `envelope` member `index` of group `group`: in Celery's format it carries them in its
/// `group` and `group_index` headers.
pub(crate) fn place_in_group(envelope: &mut crate::Envelope, group: TaskId, index: usize) {
    GroupPlace {
        group,
        index: u32::try_from(index).ok(),
    }
    .keep_in(&mut envelope.headers);
}

/// The workflow in a message's `embed`; `None` when it has none. `queue` is where steps that
/// name none go (the message's own queue); `group` the message's place in a group, which a
/// chord's member has. What celeriac does not honour yet is refused with a reason, never
/// dropped.
pub(super) fn from_embed(
    embed: &Value,
    queue: &str,
    group: Option<GroupPlace>,
) -> Result<Option<Workflow>, CeleryError> {
    let chord = match embed.get("chord") {
        None | Some(Value::Null) => None,
        Some(callback) => Some(chord_member(callback, queue, group)?),
    };
    let link = steps(embed.get("callbacks"), "callbacks", queue)?;
    let link_error = steps(embed.get("errbacks"), "errbacks", queue)?;
    let mut chain = Vec::new();
    for signature in signatures(embed.get("chain"), "chain")?.iter().rev() {
        chain.push(chain_link(signature, queue)?);
    }
    if chain.is_empty() && link.is_empty() && link_error.is_empty() && chord.is_none() {
        return Ok(None);
    }
    Ok(Some(Workflow {
        chain,
        link,
        link_error,
        chord,
        ..Workflow::default()
    }))
}

/// A signature as a chain's step, with its own `link` and `link_error`.
fn chain_link(signature: &Value, queue: &str) -> Result<ChainLink, CeleryError> {
    let mut link = ChainLink::new(step(signature, queue)?);
    let options = signature.get("options");
    link.link = steps(
        options.and_then(|options| options.get("link")),
        "link",
        queue,
    )?;
    link.link_error = steps(
        options.and_then(|options| options.get("link_error")),
        "link_error",
        queue,
    )?;
    Ok(link)
}

/// A member of a Celery chord: `callback` is `embed.chord`; the chord is joined under the group's
/// id, in Celery's keys, and its size is what the sender wrote there.
fn chord_member(
    callback: &Value,
    queue: &str,
    group: Option<GroupPlace>,
) -> Result<ChordMember, CeleryError> {
    let Some(GroupPlace {
        group,
        index: Some(index),
    }) = group
    else {
        return Err(CeleryError::Body(
            "a chord's member without its `group` and `group_index` headers".into(),
        ));
    };
    let callback = chain_link(callback, queue)?;
    let link_error = callback.link_error.clone();
    Ok(ChordMember {
        chord: group,
        index,
        size: 0,
        callback,
        link_error,
    })
}

/// The `embed` of a message whose envelope carries `workflow`, and the message's place in its
/// chord's group (its `group` and `group_index` headers).
pub(super) fn to_embed(workflow: &Workflow) -> Result<(Value, Option<GroupPlace>), CeleryError> {
    let mut chain = Vec::with_capacity(workflow.chain.len());
    for link in workflow.chain.iter().rev() {
        chain.push(link_signature(link)?);
    }
    let (chord, group) = match &workflow.chord {
        // Only Celery's chords (whose size the result backend keeps) travel in Celery's format.
        Some(member) if member.size == 0 => (
            chord_callback_signature(member)?,
            Some(GroupPlace {
                group: member.chord,
                index: Some(member.index),
            }),
        ),
        Some(_) => {
            return Err(CeleryError::Unsupported(
                "celeriac's chords in Celery's format".into(),
            ));
        }
        None => (Value::Null, None),
    };
    let embed = json!({
        "callbacks": signature_list(&workflow.link)?,
        "errbacks": signature_list(&workflow.link_error)?,
        "chain": if chain.is_empty() { Value::Null } else { Value::Array(chain) },
        "chord": chord,
    });
    Ok((embed, group))
}

/// A chord's callback as a signature; the chord's error callbacks are its `link_error`, as
/// Celery keeps them (`chord.link_error` links them to the body), once each.
fn chord_callback_signature(member: &ChordMember) -> Result<Value, CeleryError> {
    let mut callback = member.callback.clone();
    for errback in &member.link_error {
        if !callback
            .link_error
            .iter()
            .any(|known| known.id == errback.id)
        {
            callback.link_error.push(errback.clone());
        }
    }
    link_signature(&callback)
}

/// A chain's step as a signature, with its own `link` and `link_error`.
fn link_signature(link: &ChainLink) -> Result<Value, CeleryError> {
    let mut step = signature(&link.step)?;
    if !link.link.is_empty() {
        step["options"]["link"] = signature_list(&link.link)?;
    }
    if !link.link_error.is_empty() {
        step["options"]["link_error"] = signature_list(&link.link_error)?;
    }
    Ok(step)
}

/// `steps` as a list of signatures, `null` when there are none (as Celery writes it).
fn signature_list(steps: &[Step]) -> Result<Value, CeleryError> {
    if steps.is_empty() {
        return Ok(Value::Null);
    }
    steps
        .iter()
        .map(signature)
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// What an error callback of a Celery workflow is given first: the failed task's id (Celery sends
/// errbacks so when it cannot call them in its own process).
pub(crate) fn failed_task_id(id: TaskId) -> Vec<u8> {
    Value::String(id.to_string()).to_string().into_bytes()
}

/// `[args, kwargs]` (JSON) with `previous` (a JSON value) first in `args`.
pub(crate) fn prepend_result(previous: &[u8], args: &[u8]) -> Result<Vec<u8>, CeleryError> {
    let previous: Value = serde_json::from_slice(previous).map_err(|error| {
        CeleryError::Arguments(format!("the previous task's output is not JSON: {error}"))
    })?;
    let (mut args, kwargs): (Vec<Value>, Map<String, Value>) = serde_json::from_slice(args)
        .map_err(|error| CeleryError::Arguments(format!("not `[args, kwargs]`: {error}")))?;
    args.insert(0, previous);
    serde_json::to_vec(&(args, kwargs)).map_err(|error| CeleryError::Arguments(error.to_string()))
}

/// The steps of a list of signatures (or of one signature, as `link` may be).
fn steps(value: Option<&Value>, part: &str, queue: &str) -> Result<Vec<Step>, CeleryError> {
    signatures(value, part)?
        .iter()
        .map(|signature| step(signature, queue))
        .collect()
}

fn signatures(value: Option<&Value>, part: &str) -> Result<Vec<Value>, CeleryError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(single @ Value::Object(_)) => Ok(vec![single.clone()]),
        Some(Value::Array(items)) => Ok(items.clone()),
        Some(other) => Err(CeleryError::Body(format!(
            "`{part}` is not a list of signatures: {other}"
        ))),
    }
}

/// A Celery signature as a workflow step.
fn step(signature: &Value, queue: &str) -> Result<Step, CeleryError> {
    let bad = |reason: String| CeleryError::Body(format!("a signature in the workflow: {reason}"));
    let Value::Object(fields) = signature else {
        return Err(bad(format!("not an object: {signature}")));
    };
    let task = match fields.get("task") {
        Some(Value::String(task)) if !task.is_empty() => task.clone(),
        _ => return Err(bad("no task name".into())),
    };
    if !matches!(fields.get("subtask_type"), None | Some(Value::Null)) {
        return Err(CeleryError::Unsupported(format!(
            "a nested Celery workflow (`{}`) as a step",
            fields["subtask_type"]
        )));
    }
    let args = match fields.get("args") {
        None | Some(Value::Null) => Value::Array(Vec::new()),
        Some(args @ Value::Array(_)) => args.clone(),
        Some(other) => return Err(bad(format!("`args` is not a list: {other}"))),
    };
    let kwargs = match fields.get("kwargs") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(kwargs @ Value::Object(_)) => kwargs.clone(),
        Some(other) => return Err(bad(format!("`kwargs` is not an object: {other}"))),
    };
    let options = match fields.get("options") {
        Some(Value::Object(options)) => options.clone(),
        _ => Map::new(),
    };
    let id = match options.get("task_id") {
        Some(Value::String(id)) => id
            .parse()
            .map_err(|_| bad(format!("task id `{id}` is not a UUID")))?,
        _ => TaskId::new(),
    };
    let countdown = match options.get("countdown") {
        Some(Value::Number(seconds)) => seconds
            .as_f64()
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0 && *seconds < 1e9)
            .map(Duration::from_secs_f64),
        _ => None,
    };
    let queue = match options.get("queue") {
        Some(Value::String(queue)) if !queue.is_empty() => queue.clone(),
        _ => queue.to_owned(),
    };
    let immutable = matches!(fields.get("immutable"), Some(Value::Bool(true)));
    let args = serde_json::to_vec(&[args, kwargs]).map_err(|error| bad(error.to_string()))?;
    Ok(Step {
        id,
        task,
        queue,
        args,
        content_type: ARGS_CONTENT_TYPE.to_owned(),
        takes_previous: !immutable,
        args_schema: None,
        store_result: true,
        priority: None,
        time_limit: None,
        countdown,
        eta: None,
        expires_in: None,
        expires_at: None,
        headers: Default::default(),
        reply_to: match options.get("reply_to") {
            Some(Value::String(reply_to)) if !reply_to.is_empty() => Some(reply_to.clone()),
            _ => None,
        },
    })
}

/// A workflow step as a Celery signature.
fn signature(step: &Step) -> Result<Value, CeleryError> {
    let (args, kwargs) = match step.content_type.as_str() {
        ARGS_CONTENT_TYPE => serde_json::from_slice::<(Value, Value)>(&step.args)
            .map_err(|error| CeleryError::Arguments(format!("not `[args, kwargs]`: {error}")))?,
        "application/json" => match serde_json::from_slice::<Value>(&step.args)
            .map_err(|error| CeleryError::Arguments(error.to_string()))?
        {
            args @ Value::Array(_) => (args, json!({})),
            Value::Null => (json!([]), json!({})),
            other => (json!([other]), json!({})),
        },
        other => {
            return Err(CeleryError::Unsupported(format!(
                "a step's arguments encoded as `{other}`: an app in Celery's format encodes them as JSON"
            )));
        }
    };
    let mut options = json!({"task_id": step.id.to_string(), "queue": step.queue});
    if let Some(countdown) = step.countdown {
        options["countdown"] = json!(countdown.as_secs_f64());
    }
    if let Some(reply_to) = &step.reply_to {
        options["reply_to"] = json!(reply_to);
    }
    Ok(json!({
        "task": step.task,
        "args": args,
        "kwargs": kwargs,
        "options": options,
        "subtask_type": null,
        "immutable": !step.takes_previous,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from Celery 5.7: `chain(add.s(1, 2), mul.s(10), add.si(100, 1))`'s first message.
    const CHAIN: &str = r#"{"callbacks": null, "errbacks": null, "chain": [{"task": "tasks.add", "args": [100, 1], "kwargs": {}, "options": {"countdown": 0, "task_id": "c75496ff-0000-4000-8000-000000000001", "reply_to": "287784ce"}, "subtask_type": null, "immutable": true}, {"task": "tasks.mul", "args": [10], "kwargs": {}, "options": {"task_id": "6ef7214b-0000-4000-8000-000000000002", "reply_to": "287784ce"}, "subtask_type": null, "immutable": false}], "chord": null}"#;

    #[test]
    fn a_python_chain_is_a_workflow_next_step_first() {
        let embed: Value = serde_json::from_str(CHAIN).unwrap();
        let workflow = from_embed(&embed, "celery", None).unwrap().unwrap();
        let tasks: Vec<&str> = workflow
            .chain
            .iter()
            .map(|link| link.step.task.as_str())
            .collect();
        assert_eq!(tasks, ["tasks.mul", "tasks.add"]);
        let mul = &workflow.chain[0].step;
        assert!(mul.takes_previous);
        assert_eq!(mul.id.to_string(), "6ef7214b-0000-4000-8000-000000000002");
        assert_eq!(mul.queue, "celery");
        assert!(!workflow.chain[1].step.takes_previous);
        let args = prepend_result(b"3", &mul.args).unwrap();
        assert_eq!(String::from_utf8(args).unwrap(), "[[3,10],{}]");
        // And back: Celery's order again, the rest after this step.
        let (back, group) = to_embed(&workflow).unwrap();
        assert_eq!(group, None);
        assert_eq!(back["chain"][0]["task"], "tasks.add");
        assert_eq!(back["chain"][0]["immutable"], true);
        assert_eq!(back["chain"][1]["task"], "tasks.mul");
        assert_eq!(back["chain"][1]["args"], json!([10]));
    }

    #[test]
    fn callbacks_are_links_and_what_is_not_honoured_is_refused() {
        let embed = json!({"callbacks": [{"task": "tasks.mul", "args": [3], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}], "errbacks": null, "chain": null, "chord": null});
        let workflow = from_embed(&embed, "q", None).unwrap().unwrap();
        assert_eq!(workflow.link.len(), 1);
        assert!(
            from_embed(&json!({"callbacks": null, "chain": []}), "q", None)
                .unwrap()
                .is_none()
        );
        let errbacks = from_embed(&json!({"errbacks": [{"task": "e"}]}), "q", None)
            .unwrap()
            .unwrap();
        assert_eq!(errbacks.link_error.len(), 1);
        assert_eq!(to_embed(&errbacks).unwrap().0["errbacks"][0]["task"], "e");
        assert_eq!(
            failed_task_id(TaskId::from(uuid::Uuid::nil())),
            br#""00000000-0000-0000-0000-000000000000""#
        );
        let nested = json!({"chain": [{"task": "t", "subtask_type": "group"}]});
        assert!(
            matches!(
                from_embed(&nested, "q", None),
                Err(CeleryError::Unsupported(_))
            ),
            "a nested group is refused"
        );
        for bad in [
            json!({"chain": "x"}),
            json!({"errbacks": 3}),
            json!({"callbacks": [{"args": []}]}),
            json!({"callbacks": [{"task": "t", "args": 1}]}),
            json!({"callbacks": [{"task": "t", "options": {"task_id": "nope"}}]}),
            // A chord's member that does not say where it is in the group.
            json!({"chord": {"task": "t"}}),
        ] {
            assert!(
                matches!(from_embed(&bad, "q", None), Err(CeleryError::Body(_))),
                "{bad}"
            );
        }
    }
}

#[cfg(test)]
mod chord_tests {
    use super::*;

    /// Captured from Celery 5.7: a header message of `chord([add.s(1, 2), add.s(3, 4)])(xsum.s())`.
    const CHORD: &str = r#"{"callbacks": null, "errbacks": null, "chain": null, "chord": {"task": "tasks.xsum", "args": [], "kwargs": {}, "options": {"task_id": "ae7faaa0-0000-4000-8000-000000000003", "reply_to": "287784ce", "group_id": "a829edec-0000-4000-8000-000000000004", "link_error": [{"task": "tasks.note_failure", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}]}, "subtask_type": null, "immutable": false}}"#;

    #[test]
    fn a_python_chords_member_joins_under_its_group_and_goes_back_as_it_came() {
        let embed: Value = serde_json::from_str(CHORD).unwrap();
        let group: TaskId = "a829edec-0000-4000-8000-000000000004".parse().unwrap();
        let place = GroupPlace {
            group,
            index: Some(1),
        };
        let workflow = from_embed(&embed, "celery", Some(place)).unwrap().unwrap();
        let member = workflow.chord.as_ref().unwrap();
        assert_eq!((member.chord, member.index, member.size), (group, 1, 0));
        assert_eq!(member.callback.step.task, "tasks.xsum");
        assert_eq!(
            member.callback.step.id.to_string(),
            "ae7faaa0-0000-4000-8000-000000000003"
        );
        assert_eq!(member.link_error.len(), 1);
        // A retry sends it on as a chord's member still.
        let (back, back_place) = to_embed(&workflow).unwrap();
        assert_eq!(back_place, Some(place));
        assert_eq!(back["chord"]["task"], "tasks.xsum");
        assert_eq!(
            back["chord"]["options"]["link_error"][0]["task"],
            "tasks.note_failure"
        );
        assert_eq!(
            back["chord"]["options"]["link_error"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "the chord's error callbacks are its callback's, once"
        );
        // A chord celeriac built keeps its error callbacks apart from its callback's: Celery's
        // message holds both on the callback.
        let mut built = workflow.clone();
        let chord = built.chord.as_mut().unwrap();
        chord.callback.link_error.clear();
        chord.link_error[0].task = "tasks.alert".into();
        chord.link_error[0].id = TaskId::new();
        let (sent, _) = to_embed(&built).unwrap();
        assert_eq!(
            sent["chord"]["options"]["link_error"][0]["task"],
            "tasks.alert"
        );
        // Without `group_index`, it cannot be joined.
        let unplaced = GroupPlace { group, index: None };
        assert!(matches!(
            from_embed(&embed, "celery", Some(unplaced)),
            Err(CeleryError::Body(_))
        ));
    }
}
