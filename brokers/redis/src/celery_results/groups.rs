//! Celery's saved groups on Redis: what `GroupResult.save()` writes to
//! `celery-taskset-meta-<group>`, so either language restores a group the other saved.

use std::time::Duration;

use celeriac_core::BrokerError;
use serde_json::{Value, json};

use super::CeleryResultBackend;
use crate::error::bounded;

impl CeleryResultBackend {
    /// Writes group `group`'s meta and publishes it on its key's channel, as Celery's backend
    /// does.
    pub(super) async fn save_celery_group(
        &self,
        group: &str,
        members: &[String],
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let (key, meta) = (self.group_key(group, ""), group_meta(group, members));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set_ex(&key, &meta, ttl.as_secs().max(1))
            .ignore()
            .publish(&key, &meta)
            .ignore();
        let mut conn = self.inner.conn.clone();
        bounded(
            "save_group",
            self.inner.timeout,
            pipe.query_async(&mut conn),
        )
        .await
    }

    /// The members of group `group`, as its meta lists them.
    pub(super) async fn restore_celery_group(
        &self,
        group: &str,
    ) -> Result<Option<Vec<String>>, BrokerError> {
        let mut conn = self.inner.conn.clone();
        let meta: Option<Vec<u8>> = bounded(
            "restore_group",
            self.inner.timeout,
            redis::cmd("GET")
                .arg(self.group_key(group, ""))
                .query_async(&mut conn),
        )
        .await?;
        meta.map(|meta| group_members(group, &meta)).transpose()
    }

    /// Deletes group `group`'s meta (Celery's `delete_group`).
    pub(super) async fn forget_celery_group(&self, group: &str) -> Result<(), BrokerError> {
        let mut conn = self.inner.conn.clone();
        bounded(
            "forget_group",
            self.inner.timeout,
            redis::cmd("DEL")
                .arg(self.group_key(group, ""))
                .query_async(&mut conn),
        )
        .await
    }
}

/// A group's meta as Celery writes it: `GroupResult.as_tuple()` under `result`, each member being
/// `[[id, parent], children]`.
fn group_meta(group: &str, members: &[String]) -> String {
    let members: Vec<Value> = members
        .iter()
        .map(|member| json!([[member, null], null]))
        .collect();
    json!({"result": [[group, null], members]}).to_string()
}

/// The member ids in group `group`'s meta.
fn group_members(group: &str, meta: &[u8]) -> Result<Vec<String>, BrokerError> {
    let invalid = |reason: String| {
        BrokerError::Invalid(format!(
            "the meta of group {group} is not Celery's saved group: {reason}"
        ))
    };
    let meta: Value = serde_json::from_slice(meta).map_err(|error| invalid(error.to_string()))?;
    let Some(Value::Array(members)) = meta.pointer("/result/1") else {
        return Err(invalid("no `result` of `[[id, parent], members]`".into()));
    };
    members
        .iter()
        .map(|member| match (member.pointer("/0/0"), member.get(1)) {
            (Some(Value::String(id)), Some(Value::Null) | None) => Ok(id.clone()),
            (Some(Value::String(id)), Some(_)) => Err(invalid(format!(
                "member {id} is a group itself, which celeriac does not restore"
            ))),
            _ => Err(invalid(format!(
                "a member that is not `[[id, parent], null]`: {member}"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metas_read_as_celery_writes_them() {
        let members = ["t1".to_owned(), "t2".to_owned()];
        let meta = group_meta("g", &members);
        assert_eq!(
            meta,
            r#"{"result":[["g",null],[[["t1",null],null],[["t2",null],null]]]}"#
        );
        assert_eq!(group_members("g", meta.as_bytes()).unwrap(), members);
        // Python's spelling, with spaces, in the shape captured from Celery 5.7's
        // `GroupResult.save()` (ids shortened).
        let python =
            br#"{"result": [["3f0c", null], [[["a1", null], null], [["b2", null], null]]]}"#;
        assert_eq!(group_members("3f0c", python).unwrap(), ["a1", "b2"]);
        let nested = br#"{"result": [["g", null], [[["inner", null], [[["t", null], null]]]]]}"#;
        assert!(group_members("g", nested).is_err(), "a nested group");
        for bad in [
            &b"nope"[..],
            br#"{"result": 3}"#,
            br#"{"result": [["g", null], [7]]}"#,
        ] {
            assert!(group_members("g", bad).is_err());
        }
    }
}
