use celeriac::{App, Task, TaskContext};

#[celeriac::task(
    name = "ccp_send_sms_code",
    queue = "sms",
    max_retries = 3,
    retry_backoff = 3,
    retry_backoff_max = 60,
    retry_jitter = false,
    time_limit = 2.5,
    rate_limit = "10/m",
    expires = 300,
    priority = 9,
    acks_late = true,
    ignore_result = true,
    track_started = true,
    crate = "::celeriac"
)]
async fn ccp_send_sms_code(ctx: TaskContext, mobile: String, code: String) -> Result<u8, std::io::Error> {
    let _ = (ctx.id(), mobile, code);
    Ok(0)
}

#[celeriac::task(retry_delay = 10, max_retries = None)]
fn blocking_forever(n: u64) -> Result<u64, celeriac::BoxError> {
    Ok(n * 2)
}

#[celeriac::task]
async fn no_arguments_no_return() {}

#[celeriac::task(retry_backoff = true)]
async fn context_only(ctx: TaskContext) -> Result<(), celeriac::TaskError> {
    Err(ctx.retry())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
}

#[celeriac::task]
async fn custom_argument(order: Order, mut count: u32) -> Result<(), std::fmt::Error> {
    count += 1;
    let _ = (order.id, count);
    Ok(())
}

/// A plain (blocking) function may take the context and state too: it runs on tokio's blocking pool.
#[celeriac::task]
fn blocking_with_context(
    ctx: TaskContext,
    celeriac::State(limit): celeriac::State<u64>,
    n: u64,
) -> Result<u64, celeriac::BoxError> {
    Ok(n.min(limit) + u64::from(ctx.retries()))
}

/// A `Result` alias is a result too.
#[celeriac::task]
async fn aliased_result(path: String) -> std::io::Result<u64> {
    Ok(path.len() as u64)
}

/// Unique per mobile number for an hour and a half, or until it has run.
#[celeriac::task(unique_for = "1h 30m", unique_key = ["mobile"], unique_until = "executed")]
async fn unique_by_mobile(mobile: String, code: String) {
    let _ = (mobile, code);
}

/// Five SMS an hour per number, across every worker.
#[celeriac::task(rate_limit = "5/h", rate_limit_key = "mobile")]
async fn limited_per_mobile(mobile: String, code: String) {
    let _ = (mobile, code);
}

/// Ten reports a minute, across every worker.
#[celeriac::task(rate_limit = "10/m", rate_limit_scope = "cluster")]
async fn limited_cluster_wide(day: String) {
    let _ = day;
}

/// Unique per argument list for 90 seconds.
#[celeriac::task(unique_for = 90, unique_until = "expired")]
async fn unique_by_all(n: u64) {
    let _ = n;
}

async fn senders(app: &App) -> Result<(), celeriac::Error> {
    ccp_send_sms_code::delay(app, "13800138000".into(), "1".into()).await?;
    blocking_forever::delay(app, 1).await?;
    no_arguments_no_return::delay(app).await?;
    context_only::delay(app).await?;
    custom_argument::delay(app, Order { id: 1 }, 2).await?;
    blocking_with_context::delay(app, 7).await?;
    aliased_result::delay(app, "/tmp".into()).await?;
    custom_argument::delay(app, Order { id: 1 }, 2)
        .countdown(std::time::Duration::from_secs(1))
        .queue("orders")
        .await?;
    app.apply_async::<custom_argument>((Order { id: 1 }, 2), celeriac::SendOptions::new())
        .await?;
    Ok(())
}

fn main() {
    assert_eq!(<ccp_send_sms_code as Task>::NAME, "ccp_send_sms_code");
    assert_eq!(<blocking_forever as Task>::NAME, "blocking_forever");
    let options = <ccp_send_sms_code as Task>::options();
    assert_eq!(options.queue_name(), Some("sms"));
    assert_eq!(options.time_limit, Some(std::time::Duration::from_millis(2500)));
    assert_eq!((options.ignore_result, options.track_started), (Some(true), true));
    assert_eq!(<blocking_forever as Task>::options().retry.retry_limit(), None);
    assert_eq!(blocking_forever(2).unwrap(), 4);
    let unique = <unique_by_mobile as Task>::options().unique;
    let hour_and_a_half = std::time::Duration::from_secs(5400);
    assert_eq!(unique, Some(celeriac::task::Unique::new(hour_and_a_half).until_executed()));
    let key = |mobile: &str, code: &str| {
        <unique_by_mobile as Task>::unique_key(&(mobile.to_owned(), code.to_owned())).unwrap()
    };
    assert_eq!(key("13800138000", "1"), key("13800138000", "2"), "the code is not in the key");
    assert_ne!(key("13800138000", "1"), key("13800138001", "1"));
    let unique = <unique_by_all as Task>::options().unique;
    assert_eq!(unique, Some(celeriac::task::Unique::new(std::time::Duration::from_secs(90))));
    assert_ne!(
        <unique_by_all as Task>::unique_key(&(1,)).unwrap(),
        <unique_by_all as Task>::unique_key(&(2,)).unwrap()
    );
    let options = <limited_per_mobile as Task>::options();
    assert_eq!(options.rate_limit_scope, celeriac::RateLimitScope::ClusterPerKey);
    let rate_key = |mobile: &str, code: &str| {
        <limited_per_mobile as Task>::rate_limit_key(&(mobile.to_owned(), code.to_owned())).unwrap()
    };
    assert_eq!(rate_key("13800138000", "1"), rate_key("13800138000", "2"));
    assert_ne!(rate_key("13800138000", "1"), rate_key("13800138001", "1"));
    let options = <limited_cluster_wide as Task>::options();
    assert_eq!(options.rate_limit_scope, celeriac::RateLimitScope::Cluster);
    assert_eq!(<ccp_send_sms_code as Task>::options().rate_limit_scope, celeriac::RateLimitScope::Worker);
    let _ = senders;
}
