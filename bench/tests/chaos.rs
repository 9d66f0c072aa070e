//! The chaos command, small: worker processes killed and the broker restarted while tasks drain,
//! and not one task lost (Redis: a private server it starts; RabbitMQ: the local node, restarted
//! with `rabbitmqctl`). The full runs (a million tasks, 100 kills, 10 restarts) are in
//! `docs/reliability.md`.

use std::process::Command;

fn chaos(broker: &str, restarts: u32) -> serde_json::Value {
    let json = std::env::temp_dir().join(format!(
        "celeriac-chaos-{broker}-{}.json",
        std::process::id()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_celeriac-bench"))
        .args(["chaos", broker, "--tasks", "3000", "--kills", "3"])
        .args(["--broker-restarts", &restarts.to_string()])
        .args(["--workers", "3", "--concurrency", "8", "--task-us", "10000"])
        .args(["--deadline-secs", "90", "--json"])
        .arg(&json)
        .output()
        .expect("celeriac-bench runs");
    assert!(
        output.status.success(),
        "chaos {broker} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let report = std::fs::read(&json).expect("the report");
    let _ = std::fs::remove_file(&json);
    serde_json::from_slice(&report).expect("the report is JSON")
}

fn assert_nothing_lost(report: &serde_json::Value, faults: usize) {
    let number = |name: &str| report[name].as_u64().expect(name);
    assert_eq!(number("lost"), 0, "{report:#}");
    assert_eq!(number("stranded"), 0, "{report:#}");
    assert_eq!(number("distinct"), 3000, "{report:#}");
    assert_eq!(number("unknown"), 0, "{report:#}");
    assert!(
        number("duplicates") <= number("duplicates_bound"),
        "more runs twice than the faults explain: {report:#}"
    );
    let recoveries = report["recoveries"].as_array().expect("recoveries");
    assert_eq!(recoveries.len(), faults, "{report:#}");
}

#[test]
fn redis_workers_killed_and_the_server_restarted_lose_no_task() {
    let report = chaos("redis", 1);
    assert_nothing_lost(&report, 4);
    // The private server was SIGKILLed; its append-only file brought every task back.
    let restart = report["recoveries"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["fault"] == "broker restart"))
        .expect("a restart");
    assert!(restart["recovered_ms"].is_u64(), "{report:#}");
}

#[test]
fn rabbitmq_workers_killed_and_the_node_restarted_lose_no_task() {
    let report = chaos("amqp", 1);
    assert_nothing_lost(&report, 4);
}
