use std::time::Duration;

/// Settings of a [`RedisBroker`](crate::RedisBroker); see [`RedisBrokerBuilder`](crate::RedisBrokerBuilder).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) visibility_timeout: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) operation_timeout: Duration,
    pub(crate) key_prefix: String,
    pub(crate) group: String,
    /// Certificates (PEM) trusted for `rediss://` besides the system's roots. Public data.
    pub(crate) tls_roots_pem: Option<String>,
    /// Replicas that must confirm each publish, if any.
    pub(crate) min_replicas: Option<crate::publish::MinReplicas>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            operation_timeout: Duration::from_secs(5),
            key_prefix: "celeriac".to_owned(),
            group: "celeriac".to_owned(),
            tls_roots_pem: None,
            min_replicas: None,
        }
    }
}
