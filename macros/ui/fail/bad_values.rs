#[celeriac::task(priority = 12, rate_limit = "5/fortnight", max_retries = "three", time_limit = 0, name = "")]
async fn t() {}

#[celeriac::task(retry_backoff = 3, retry_delay = 5)]
async fn both_delays() {}

#[celeriac::task(retry_jitter = false)]
async fn jitter_without_backoff() {}

fn main() {}
