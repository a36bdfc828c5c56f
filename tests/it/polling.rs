//! The polling door against the fake Front: backfill economy, catch-up, overlap with
//! webhooks, restarts half way, fault storms, auth failures, previews, inbox names, and the
//! API commands (`check --online`, `inboxes`, `preview`).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::fake::front::{FakeFront, Fault, inbound_event_at};
use crate::harness::*;

/// Unix seconds now, as Front writes them.
fn now_secs() -> f64 {
    now_ms() as f64 / 1000.0
}

/// The harness config plus a token for `acme` pointing at the fake, with polling.
fn polling_config(dir: &std::path::Path, fake: &FakeFront, sub_extra: &str, rpm: u32) -> String {
    std::fs::write(dir.join("front.token"), "test-token").unwrap();
    base_config(dir, sub_extra).replace(
        "[front.acme]\n",
        &format!(
            "[front.acme]\napi_base = \"{}\"\ntoken = {{ file = \"front.token\" }}\nrate_limit_rpm = {rpm}\n",
            fake.base_url()
        ),
    )
}

fn ids_of(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| format!("{}:{}", l["id"].as_str().unwrap(), l["revision"]))
        .collect()
}

fn assert_unique(lines: &[Value]) -> BTreeSet<String> {
    let ids = ids_of(lines);
    let set: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(
        set.len(),
        ids.len(),
        "duplicate (id, revision) in the JSONL"
    );
    set
}

fn wait_lines(d: &TestDaemon, n: usize, secs: u64) -> Vec<Value> {
    wait_until(
        Duration::from_secs(secs),
        &format!("{n} jsonl lines"),
        || {
            let l = read_jsonl(&d.jsonl_path());
            (l.len() >= n).then_some(l)
        },
    )
}

#[test]
fn backfill_makes_one_highlight_per_conversation_within_the_request_budget() {
    let fake = FakeFront::start();
    fake.set_rate_limit(600);
    let n = 300;
    fake.seed_inbound(n, now_secs() - 1800.0, 5.0);
    let dir = tempfile::tempdir().unwrap();
    let config = polling_config(
        dir.path(),
        &fake,
        "backfill = \"1h\"\npoll_interval = \"30s\"",
        600,
    );
    let d = TestDaemon::start(dir.path(), &config);
    let lines = wait_lines(&d, n, 60);
    assert_eq!(lines.len(), n);
    assert_unique(&lines);
    std::thread::sleep(Duration::from_millis(300));
    let events_requests = fake.count("/events");
    let budget = n.div_ceil(15) + 2;
    assert!(
        events_requests <= budget,
        "{events_requests} /events requests for {n} events (budget {budget})"
    );
    let throttled = fake.requests().iter().filter(|r| r.status == 429).count();
    assert_eq!(throttled, 0, "no 429 with the limit known");
    // Event-stream queries ask oldest first, 15 at a time, for message events.
    let first = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/events")
        .unwrap();
    assert_eq!(first.param("sort_order").as_deref(), Some("asc"));
    assert_eq!(first.param("limit").as_deref(), Some("15"));
    assert!(first.params("q[types]").contains(&"inbound".to_string()));
}

#[test]
fn new_events_arrive_on_the_next_poll_and_overlap_with_webhooks_makes_no_duplicate() {
    let fake = FakeFront::start();
    let dir = tempfile::tempdir().unwrap();
    let config = polling_config(
        dir.path(),
        &fake,
        "backfill = \"1h\"\npoll_interval = \"1s\"",
        6000,
    );
    let d = TestDaemon::start(dir.path(), &config);
    let rt = runtime();
    let client = reqwest::Client::new();

    // Seen by webhook first, then by polling.
    let a = inbound_event_at(
        "evt_ov_a",
        "cnv_ov_a",
        now_secs() - 5.0,
        "A",
        "first by webhook",
    );
    let resp = rt.block_on(post_rule(
        &client,
        &d.webhook_url("acme"),
        &serde_json::to_vec(&a).unwrap(),
    ));
    assert_eq!(resp.status(), 200);
    fake.add_event(a.clone());
    // Seen by polling only.
    fake.add_event(inbound_event_at(
        "evt_ov_b",
        "cnv_ov_b",
        now_secs() - 4.0,
        "B",
        "only polled",
    ));
    let lines = wait_lines(&d, 2, 20);
    // Then the webhook for the polled one arrives late: a duplicate.
    let b_body = serde_json::to_vec(&inbound_event_at(
        "evt_ov_b",
        "cnv_ov_b",
        now_secs() - 4.0,
        "B",
        "only polled",
    ))
    .unwrap();
    wait_until(Duration::from_secs(10), "second poll", || {
        (fake.count("/events") >= 2).then_some(())
    });
    let resp = rt.block_on(post_rule(&client, &d.webhook_url("acme"), &b_body));
    let v: Value = rt.block_on(resp.json()).unwrap();
    assert_eq!(v["status"], "duplicate");
    std::thread::sleep(Duration::from_millis(1500));
    let after = read_jsonl(&d.jsonl_path());
    assert_eq!(after.len(), 2, "{:?}", ids_of(&after));
    assert_eq!(assert_unique(&lines).len(), 2);

    // Status shows the poller's cursor.
    let status: Value = d.status();
    assert!(
        status["subscriptions"]["support"]["cursor"].is_string(),
        "{status}"
    );
    assert!(
        status["subscriptions"]["support"]["last_poll_at"].is_string(),
        "{status}"
    );
    assert!(
        status["subscriptions"]["support"]["last_error"].is_null(),
        "{status}"
    );
}

#[test]
fn a_restart_half_way_through_a_backfill_resumes_without_loss_or_duplicate() {
    let fake = FakeFront::start();
    let n = 450;
    fake.seed_inbound(n, now_secs() - 3000.0, 5.0);
    let dir = tempfile::tempdir().unwrap();
    // 600 rpm paces 30 pages over ~3 s, time enough to kill in the middle.
    let config = polling_config(
        dir.path(),
        &fake,
        "backfill = \"1h\"\npoll_interval = \"30s\"",
        600,
    );
    let d = TestDaemon::start(dir.path(), &config);
    wait_until(Duration::from_secs(30), "some lines", || {
        let l = read_jsonl(&d.jsonl_path());
        (l.len() >= 60).then_some(())
    });
    d.kill9();
    let partial = read_jsonl(&dir.path().join("out/highlights.jsonl")).len();
    assert!(partial < n, "killed too late to test anything ({partial})");
    let requests_before = fake.count("/events");
    let d = TestDaemon::start_existing(dir.path());
    wait_lines(&d, n, 60);
    std::thread::sleep(Duration::from_millis(500));
    let lines = read_jsonl(&d.jsonl_path())
        .into_iter()
        .chain(std::iter::empty())
        .collect::<Vec<_>>();
    assert_eq!(lines.len(), n);
    assert_unique(&lines);
    // The restart resumed from the committed cursor rather than from the start.
    let resumed = fake.count("/events") - requests_before;
    assert!(
        resumed <= n.div_ceil(15) + 3,
        "{resumed} requests after restart"
    );
}

#[test]
fn fault_storms_end_in_complete_data() {
    let fake = FakeFront::start();
    let n = 120;
    fake.seed_inbound(n, now_secs() - 1000.0, 5.0);
    let events = Some("/events".to_string());
    for fault in [
        Fault::Status {
            code: 429,
            retry_after: Some(0.2),
            path_prefix: events.clone(),
        },
        Fault::Status {
            code: 500,
            retry_after: None,
            path_prefix: events.clone(),
        },
        Fault::Status {
            code: 429,
            retry_after: None,
            path_prefix: events.clone(),
        },
        Fault::Status {
            code: 502,
            retry_after: None,
            path_prefix: events.clone(),
        },
        Fault::ResetConnection {
            path_prefix: events.clone(),
        },
        Fault::Status {
            code: 503,
            retry_after: Some(0.5),
            path_prefix: events.clone(),
        },
        Fault::TruncatedJson {
            path_prefix: events.clone(),
        },
        Fault::RepeatNext {
            path_prefix: events.clone(),
        },
    ] {
        fake.inject(fault);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = polling_config(
        dir.path(),
        &fake,
        "backfill = \"1h\"\npoll_interval = \"1s\"",
        6000,
    );
    let d = TestDaemon::start(dir.path(), &config);
    let lines = wait_lines(&d, n, 90);
    assert_eq!(fake.pending_faults(), 0, "every fault was met");
    std::thread::sleep(Duration::from_millis(300));
    let lines_after = read_jsonl(&d.jsonl_path());
    assert_eq!(lines_after.len(), lines.len());
    assert_eq!(assert_unique(&lines_after).len(), n);
    let (code, _) = d.terminate();
    assert_eq!(code, 0, "the daemon never exited on its own");
}

#[test]
fn a_rejected_token_stops_polling_with_a_clear_error_and_webhooks_keep_working() {
    let fake = FakeFront::start();
    fake.set_token("a-different-token");
    let dir = tempfile::tempdir().unwrap();
    let config = polling_config(
        dir.path(),
        &fake,
        "backfill = \"1h\"\npoll_interval = \"1s\"",
        6000,
    );
    let d = TestDaemon::start(dir.path(), &config);
    let error_line = wait_until(Duration::from_secs(20), "an auth error", || {
        d.stderr
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("polling stopped"))
            .cloned()
    });
    let v: Value = serde_json::from_str(&error_line).unwrap();
    assert_eq!(v["level"], "ERROR");
    assert_eq!(v["connection"], "acme");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("401") && error.contains("token"), "{error}");
    assert!(
        !error_line.contains("test-token"),
        "the token never appears in logs"
    );

    let rt = runtime();
    let client = reqwest::Client::new();
    assert_eq!(post_inbound(&rt, &client, &d, "auth_w").status(), 200);
    wait_lines(&d, 1, 10);
    let status: Value = d.status();
    assert!(
        status["subscriptions"]["support"]["last_error"]
            .as_str()
            .unwrap()
            .contains("401")
    );
    // One ERROR, not one per poll.
    std::thread::sleep(Duration::from_millis(2500));
    let errors = d
        .stderr
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("polling stopped"))
        .count();
    assert_eq!(errors, 1);
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
}

#[test]
fn previews_are_completed_through_the_api() {
    let fake = FakeFront::start();
    fake.set_previews(true);
    let full = inbound_event_at(
        "evt_pv_1",
        "cnv_pv_1",
        now_secs() - 10.0,
        "Full subject",
        "Full text",
    );
    fake.add_event(full.clone());
    let dir = tempfile::tempdir().unwrap();
    // Webhooks only (no polling): the webhook preview is completed with GET /events/{id}.
    let config = polling_config(dir.path(), &fake, "poll_interval = \"0s\"", 6000);
    let d = TestDaemon::start(dir.path(), &config);
    let preview = serde_json::json!({
        "_links": { "self": format!("{}/events/evt_pv_1", fake.base_url()) },
        "id": "evt_pv_1",
        "type": "inbound",
        "emitted_at": full["emitted_at"],
        "conversation": { "_links": { "self": "x" }, "id": "cnv_pv_1" },
        "target": { "_meta": { "type": "message" }, "data": { "_links": { "self": "y" }, "id": "msg_evt_pv_1" } }
    });
    let rt = runtime();
    let client = reqwest::Client::new();
    let resp = rt.block_on(post_rule(
        &client,
        &d.webhook_url("acme"),
        &serde_json::to_vec(&preview).unwrap(),
    ));
    assert_eq!(resp.status(), 200);
    let lines = wait_lines(&d, 1, 20);
    assert_eq!(lines[0]["title"], "Full subject");
    assert_eq!(lines[0]["text"], "Full text");
    assert_eq!(lines[0]["front_status"], "assigned");
    assert_eq!(fake.count("/events/evt_pv_1"), 1);
}

#[test]
fn inbox_names_are_resolved_and_scope_the_stream() {
    let fake = FakeFront::start();
    fake.add_inbox("inb_123", "Support", false);
    fake.add_inbox("inb_999", "Sales", false);
    fake.seed_inbound(20, now_secs() - 600.0, 5.0);
    let mut other = inbound_event_at(
        "evt_sales",
        "cnv_sales",
        now_secs() - 100.0,
        "Sales",
        "not ours",
    );
    other["source"]["data"] = serde_json::json!([{ "id": "inb_999", "name": "Sales" }]);
    fake.add_event(other);
    let dir = tempfile::tempdir().unwrap();
    let config = polling_config(
        dir.path(),
        &fake,
        "inboxes = [\"Support\"]\nbackfill = \"1h\"\npoll_interval = \"30s\"",
        6000,
    );
    let d = TestDaemon::start(dir.path(), &config);
    let lines = wait_lines(&d, 20, 30);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        read_jsonl(&d.jsonl_path()).len(),
        20,
        "the Sales conversation is not ours"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["inbox_ids"] == serde_json::json!(["inb_123"]))
    );
    let q = fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/events")
        .unwrap();
    assert_eq!(q.params("q[inboxes]"), vec!["inb_123".to_string()]);
    assert_eq!(fake.count("/inboxes"), 1);
}

#[test]
fn api_commands_check_online_inboxes_and_preview() {
    let fake = FakeFront::start();
    fake.add_inbox("inb_123", "Support", false);
    fake.add_inbox("inb_777", "Private", true);
    fake.add_event(inbound_event_at(
        "evt_cmd",
        "cnv_cmd",
        now_secs() - 10.0,
        "Preview me",
        "Body text",
    ));
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        polling_config(dir.path(), &fake, "poll_interval = \"0s\"", 6000),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["check", "--online"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("front acme: ok") && out.contains("2 inboxes visible (1 private)"),
        "{out}"
    );
    assert!(out.contains("sink archive: ok"), "{out}");

    let (code, out, _) = run(&["inboxes", "--front", "acme"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("inb_777") && out.contains("yes") && out.contains("Support"),
        "{out}"
    );

    let (code, out, err) = run(&["preview", "--subscription", "support", "cnv_cmd"]);
    assert_eq!(code, 0, "{err}");
    let h: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(h["id"], "support:cnv_cmd");
    assert_eq!(h["title"], "Preview me");
    assert_eq!(h["text"], "Body text");
    assert!(!dir.path().join("state").exists(), "preview writes nothing");

    fake.set_token("revoked");
    let (code, out, _) = run(&["check", "--online"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("front acme: failed") && out.contains("401"),
        "{out}"
    );
}
