/// The Redis keys of one queue. They share the hash tag `{queue}`, so a queue lives on one Redis
/// Cluster slot and its Lua scripts stay valid there.
#[derive(Clone, Debug)]
pub(crate) struct QueueKeys {
    pub(crate) queue: std::sync::Arc<str>,
    /// Stream of ready messages, read through the consumer group.
    pub(crate) ready: String,
    /// Sorted set of delayed messages, scored by due time (ms since the Unix epoch).
    pub(crate) delayed: String,
    /// Stream of dead letters, with their reasons.
    pub(crate) dead: String,
}

impl QueueKeys {
    pub(crate) fn new(prefix: &str, queue: &str) -> Self {
        Self {
            queue: std::sync::Arc::from(queue),
            ready: format!("{prefix}:{{{queue}}}:ready"),
            delayed: format!("{prefix}:{{{queue}}}:delayed"),
            dead: format!("{prefix}:{{{queue}}}:dead"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::QueueKeys;

    #[test]
    fn keys_share_the_queue_hash_tag() {
        let keys = QueueKeys::new("celeriac", "sms");
        for key in [&keys.ready, &keys.delayed, &keys.dead] {
            assert!(key.contains("{sms}"), "{key}");
        }
    }
}
