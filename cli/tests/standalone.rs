//! The standalone `celeriac` binary: it has every verb but the two that need task code, and says
//! so; its `--json` output parses; a broker it cannot reach is exit code 1, and the password
//! stays hidden.

use std::process::Stdio;

const BIN: &str = env!("CARGO_BIN_EXE_celeriac");

fn celeriac(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(BIN)
        .args(args)
        .env_remove("CELERIAC_BROKER_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run celeriac");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn worker_and_beat_need_an_apps_own_binary() {
    for verb in [&["worker"][..], &["beat", "--schedule", "beat.toml"]] {
        let mut args = vec!["--broker", "memory://"];
        args.extend_from_slice(verb);
        let (code, _, stderr) = celeriac(&args);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("celeriac::cli::run"), "{stderr}");
    }
}

#[test]
fn help_lists_the_verbs_and_hides_secrets_from_the_environment() {
    let output = std::process::Command::new(BIN)
        .arg("--help")
        .env("CELERIAC_BROKER_URL", "amqp://guest:s3cret@127.0.0.1:1/%2f")
        .output()
        .expect("run celeriac");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for verb in [
        "status", "queues", "inspect", "control", "revoke", "purge", "dlq", "events",
    ] {
        assert!(help.contains(verb), "{verb} missing from --help");
    }
    assert!(!help.contains("s3cret"), "{help}");
}

#[test]
fn an_unreachable_broker_is_exit_code_1_without_its_password() {
    let (code, stdout, stderr) = celeriac(&[
        "--broker",
        "amqp://guest:s3cret@127.0.0.1:1/%2f",
        "--json",
        "queues",
        "celery",
    ]);
    assert_eq!(code, 1, "{stderr}");
    let error: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(error["code"], 1);
    assert!(!stdout.contains("s3cret") && !stderr.contains("s3cret"));
}

#[test]
fn the_dashboard_refuses_to_listen_beyond_loopback_without_auth() {
    let (code, _, stderr) =
        celeriac(&["--broker", "memory://", "dashboard", "--bind", "0.0.0.0:0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("without authentication"), "{stderr}");
    let (code, _, stderr) = celeriac(&[
        "--broker",
        "memory://",
        "dashboard",
        "--bind",
        "0.0.0.0:0",
        "--token",
        "short",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("at least 16"), "{stderr}");
}
