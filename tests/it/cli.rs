//! The command line: `check` exit codes and messages, `run` on a bad config, health endpoints.

use std::process::Command;

use crate::harness::*;

fn check(config: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_valid_config_and_summarizes_each_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, base_config(dir.path(), "")).unwrap();
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1);
    assert!(stdout.contains("support"), "{stdout}");
}

#[test]
fn config_errors_name_file_line_and_column_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = base_config(dir.path(), "inboxs = [\"inb_1\"]\n");
    std::fs::write(&path, &text).unwrap();
    let line = text.lines().position(|l| l.starts_with("inboxs")).unwrap() + 1;
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    let expected = format!(
        "{}:{line}:1: unknown key \"inboxs\" in [[subscription]]",
        path.display()
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in {stderr:?}"
    );

    // `run` refuses the same config with the same exit code, before binding anything.
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_missing_secret_is_a_config_error_that_does_not_leak_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = base_config(dir.path(), "").replace(
        "rule_webhook_secret = { file = \"rule.secret\" }",
        "rule_webhook_secret = { env = \"FRONTSYNC_TEST_UNSET_SECRET\" }",
    );
    std::fs::write(&path, text).unwrap();
    let (code, _, stderr) = check(&path);
    assert_eq!(code, 2);
    assert!(stderr.contains("FRONTSYNC_TEST_UNSET_SECRET"), "{stderr}");
}

#[test]
fn health_endpoints_answer() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &base_config(dir.path(), ""));
    let rt = runtime();
    let get = |path: &str| {
        rt.block_on(async {
            let r = reqwest::get(format!("http://{}{path}", d.admin))
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    assert_eq!(get("/healthz").0, 200);
    assert_eq!(get("/readyz").0, 200);
    let (code, body) = get("/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["sinks"]["archive"]["outbox_depth"], 0);
    assert!(v["subscriptions"]["support"].is_object());
    let (code, body) = get("/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("frontsync_up 1"), "{body}");
}

#[test]
fn status_command_prints_the_daemons_figures() {
    let dir = tempfile::tempdir().unwrap();
    // `status` finds the daemon through `[admin] listen`, so this test needs a fixed port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = base_config(dir.path(), "").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"127.0.0.1:{port}\""),
    );
    let d = TestDaemon::start(dir.path(), &text);
    let out = Command::new(bin())
        .args(["status", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("SINK") && table.contains("archive") && table.contains("support"),
        "{table}"
    );
    let out = Command::new(bin())
        .args(["status", "--json", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sinks"]["console"]["delivered_total"], 0);
    let (code, _) = d.terminate();
    assert_eq!(code, 0);

    // With the daemon gone, `status` says so and exits 1.
    let out = Command::new(bin())
        .args(["status", "--config"])
        .arg(dir.path().join("config.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not reachable"));
}
