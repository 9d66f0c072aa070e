//! The dashboard in headless Chromium, on the real Redis: the page loads behind a token with no
//! script errors and goes live; a worker shows within 5 s of starting; a task whose argument is
//! `<script>` fails, and its dead letter shows that as text (nothing runs); the requeue button
//! puts the dead letter back in its queue; a change without the page's CSRF token and a request
//! without the token are refused. Screenshots of the pages go to `target/dashboard-screenshots`.

use std::time::{Duration, Instant};

use celeriac::App;
use celeriac::dashboard::{Auth, Dashboard, DashboardError};
use celeriac_tests::browser::{Browser, skipped};
use celeriac_tests::harness::{BackgroundWorker, eventually, redis_url, unique_queue};
use fantoccini::Locator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[celeriac::task(name = "dash_fail", max_retries = 0)]
async fn dash_fail(note: String) -> Result<(), std::io::Error> {
    Err(std::io::Error::other(format!("could not handle {note}")))
}

#[celeriac::task(name = "dash_ok")]
async fn dash_ok(millis: u64) -> Result<u64, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    Ok(millis)
}

const TOKEN: &str = "dashboard-test-token-0123456789";
const XSS: &str = "<script>window.xss=1</script><img src=x onerror=\"window.xss=2\">";

/// A plain HTTP request to the dashboard, without the browser's cookie: its status code.
async fn status_without_token(addr: std::net::SocketAddr, request: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

async fn screenshot(browser: &Browser, name: &str) {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots");
    if let Ok(png) = browser.client.screenshot().await {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{name}.png")), png);
    }
}

#[test]
fn the_dashboard_refuses_to_listen_beyond_loopback_without_auth() {
    let app = App::builder().broker_url("memory://").build().expect("app");
    let open = Dashboard::builder(app.clone())
        .bind("0.0.0.0:5555".parse().expect("addr"))
        .build();
    assert!(matches!(open, Err(DashboardError::Unprotected { .. })));
    let guarded = Dashboard::builder(app)
        .bind("0.0.0.0:5555".parse().expect("addr"))
        .auth(Auth::token(TOKEN).expect("a long token"))
        .build();
    assert!(guarded.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_live_safe_and_requeues_dead_letters_in_chromium() {
    if skipped() || celeriac_tests::harness::skipped("redis") {
        return;
    }
    let queue = unique_queue("dash");
    let app = App::builder()
        .broker_url(redis_url())
        .result_backend_url(redis_url())
        .default_queue(&queue)
        .register::<dash_fail>()
        .register::<dash_ok>()
        .build()
        .expect("the app builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("an address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dashboard = Dashboard::builder(app.clone())
        .queues([queue.clone()])
        .auth(Auth::token(TOKEN).expect("a long token"))
        .build()
        .expect("the dashboard builds");
    let serving = tokio::spawn(dashboard.serve_on(listener, async {
        let _ = stopped.await;
    }));

    // Without the token: refused, page and API alike.
    let get =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    assert_eq!(status_without_token(addr, &get("/")).await, 401);
    assert_eq!(status_without_token(addr, &get("/api/snapshot")).await, 401);

    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("http://{addr}/?token={TOKEN}"))
        .await
        .expect("open the page");
    browser.text_of("connection", "live").await;

    // A worker shows within 5 s of starting.
    let name = format!("{queue}@dash");
    let started = Instant::now();
    let worker = BackgroundWorker::start(
        app.worker()
            .hostname(&name)
            .events(true)
            .concurrency(2)
            .build()
            .expect("the worker builds"),
    );
    browser.text_of("workers", &name).await;
    assert!(
        started.elapsed() <= Duration::from_secs(5),
        "the worker showed after {:?}",
        started.elapsed()
    );
    browser.text_of("workers", "online").await;

    // Tasks that succeed show with their run time.
    let mut succeeded = Vec::new();
    for millis in [5, 20, 40, 80] {
        succeeded.push(dash_ok::delay(&app, millis).await.expect("sent"));
    }
    browser.text_of("tasks", "succeeded").await;

    // A task whose argument is markup fails; its error shows as text, and nothing ran.
    let failed = app
        .delay::<dash_fail>((XSS.to_owned(),))
        .await
        .expect("sent");
    browser.text_of("tasks", "dead-lettered").await;
    // The queue's traffic shows: the five tasks were received from it.
    let received: serde_json::Value = browser
        .client
        .execute_async(
            &format!(
                "const done = arguments[0]; fetch('/api/snapshot').then(r => r.json()).then(s => done(s.queues.find(q => q.queue === '{queue}').received));"
            ),
            vec![],
        )
        .await
        .expect("run a script");
    assert_eq!(received, 5);
    browser
        .text_of("tasks", "<script>window.xss=1</script>")
        .await;
    screenshot(&browser, "overview").await;
    worker.stop().await;
    browser.text_of("workers", "offline").await;

    browser
        .client
        .goto(&format!("http://{addr}/#dlq/{queue}"))
        .await
        .expect("open the dead letters");
    let letters = browser.text_of("letters", &failed.id().to_string()).await;
    assert!(letters.contains(XSS), "{letters}");
    let xss: serde_json::Value = browser
        .client
        .execute(
            "return window.xss === undefined ? null : window.xss;",
            vec![],
        )
        .await
        .expect("run a script");
    assert_eq!(xss, serde_json::Value::Null, "the page ran task data");
    screenshot(&browser, "dead-letters").await;

    // A change without the page's CSRF token is refused, even with the cookie.
    let refused: serde_json::Value = browser
        .client
        .execute_async(
            &format!(
                "const done = arguments[0]; fetch('/api/dlq/{queue}/purge', {{method: 'POST'}}).then(r => done(r.status));"
            ),
            vec![],
        )
        .await
        .expect("run a script");
    assert_eq!(refused, 403);
    assert_eq!(
        app.broker()
            .stats(&queue)
            .await
            .expect("stats")
            .dead_lettered,
        1
    );

    // The requeue button (confirmed) puts it back in the queue.
    browser
        .client
        .execute("window.confirm = () => true;", vec![])
        .await
        .expect("run a script");
    browser
        .client
        .find(Locator::Id("requeue"))
        .await
        .expect("the button")
        .click()
        .await
        .expect("click");
    browser.text_of("dlq-outcome", "requeued 1").await;
    eventually(
        Duration::from_secs(10),
        "the dead letter back in its queue",
        || async {
            app.broker()
                .stats(&queue)
                .await
                .is_ok_and(|stats| stats.ready == 1 && stats.dead_lettered == 0)
        },
    )
    .await;

    browser
        .client
        .goto(&format!("http://{addr}/#task/{}", failed.id()))
        .await
        .expect("open the task");
    browser.text_of("timeline", "task-dead-lettered").await;
    let fields = browser.text_of("task-fields", "redacted").await;
    assert!(fields.contains("dash_fail"), "{fields}");
    screenshot(&browser, "task").await;

    // A success's page shows what the result backend holds: its state and value.
    let last = succeeded.pop().expect("four sent");
    let value = last.get_timeout(Duration::from_secs(10)).await;
    assert_eq!(value.expect("its result"), 80);
    browser
        .client
        .goto(&format!("http://{addr}/#task/{}", last.id()))
        .await
        .expect("open the task");
    let fields = browser
        .text_of("task-fields", "bytes of application/x-bincode")
        .await;
    assert!(fields.contains("SUCCESS"), "{fields}");

    let errors: serde_json::Value = browser
        .client
        .execute("return window.dashboardErrors;", vec![])
        .await
        .expect("run a script");
    assert_eq!(errors, serde_json::json!([]), "script errors on the page");
    browser.close().await;
    let _ = stop.send(());
    serving
        .await
        .expect("the dashboard task")
        .expect("the dashboard served");
    app.broker().purge(&queue).await.expect("purge");
}
