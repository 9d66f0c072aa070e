use std::time::Duration;

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) operation_timeout: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) max_priority: Option<u8>,
    pub(crate) publisher_channels: usize,
    pub(crate) shards: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            operation_timeout: Duration::from_secs(5),
            max_deliveries: 5,
            max_priority: None,
            publisher_channels: 4,
            shards: 1,
        }
    }
}
