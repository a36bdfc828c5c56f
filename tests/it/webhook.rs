//! The webhook door end to end: signed requests in, Highlights out in JSONL and on stdout,
//! each status code of the contract, dedupe across restarts, graceful stop.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

#[test]
fn signed_rule_webhook_becomes_one_highlight_in_jsonl_and_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &base_config(dir.path(), ""));
    let rt = runtime();
    let client = reqwest::Client::new();
    let event = inbound_event(
        "evt_r1",
        "cnv_55c8c149",
        "Refund for order 1042",
        "Hi, I was charged twice",
    );
    let body = serde_json::to_vec(&event).unwrap();
    let resp = rt.block_on(post_rule(&client, &d.webhook_url("acme"), &body));
    assert_eq!(resp.status(), 200);

    // 200 means committed: the line follows once the sink task runs.
    let lines = wait_until(Duration::from_secs(10), "jsonl line", || {
        let l = read_jsonl(&d.jsonl_path());
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(lines.len(), 1);
    let h = &lines[0];
    assert_eq!(h["schema"], "frontsync.highlight.v1");
    assert_eq!(h["id"], "support:cnv_55c8c149");
    assert_eq!(h["revision"], 1);
    assert_eq!(h["change"], "created");
    assert_eq!(h["subscription"], "support");
    assert_eq!(h["title"], "Refund for order 1042");
    assert_eq!(h["text"], "Hi, I was charged twice");
    assert_eq!(
        h["requester"],
        json!({"name": "Ada Lovelace", "handle": "ada@example.com"})
    );
    assert_eq!(
        h["assignee"],
        json!({"id": "tea_2ab4", "name": "Grace Hopper", "email": "grace@acme.test"})
    );
    assert_eq!(h["status"], "open");
    assert_eq!(h["front_status"], "assigned");
    assert_eq!(h["tags"], json!(["billing", "vip"]));
    assert_eq!(h["inbox_ids"], json!(["inb_123"]));
    assert_eq!(h["created_at"], "2025-11-21T09:14:03.012Z");
    assert_eq!(h["updated_at"], "2025-11-21T09:20:11.500Z");
    assert_eq!(h["source"]["system"], "front");
    assert_eq!(h["source"]["conversation_id"], "cnv_55c8c149");
    assert_eq!(h["source"]["message_id"], "msg_evt_r1");
    assert_eq!(h["source"]["event_id"], "evt_r1");
    assert_eq!(
        h["source"]["url"],
        "https://app.frontapp.com/open/cnv_55c8c149"
    );

    let stdout = wait_until(Duration::from_secs(10), "stdout line", || {
        let s = d.stdout.lock().unwrap().clone();
        (!s.is_empty()).then_some(s)
    });
    assert_eq!(stdout.len(), 1);
    let from_stdout: Value = serde_json::from_str(&stdout[0]).unwrap();
    assert_eq!(&from_stdout, h);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d.jsonl_path()), 0o600);
        assert_eq!(mode(&dir.path().join("state/frontsync.redb")), 0o600);
    }
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
}

#[test]
fn signed_app_webhook_becomes_a_highlight_and_challenge_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &base_config(dir.path(), ""));
    let rt = runtime();
    let client = reqwest::Client::new();
    let url = d.webhook_url("acme");

    // The validation handshake: signed, answered with the challenge, creates nothing.
    let body = br#"{"type":"sync","authorization":{"id":"cmp_abc"}}"#;
    let ts = now_ms().to_string();
    let resp = rt
        .block_on(
            client
                .post(&url)
                .header("x-front-request-timestamp", &ts)
                .header("x-front-signature", sign_app(&ts, body))
                .header("x-front-challenge", "ch4ll3nge")
                .body(body.to_vec())
                .send(),
        )
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = rt.block_on(resp.json()).unwrap();
    assert_eq!(answer, json!({"challenge": "ch4ll3nge"}));

    let event = inbound_event("evt_a1", "cnv_app1", "Hello from the app", "App body");
    let resp = rt.block_on(post_app(&client, &url, &event));
    assert_eq!(resp.status(), 200);
    let lines = wait_until(Duration::from_secs(10), "jsonl line", || {
        let l = read_jsonl(&d.jsonl_path());
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(lines.len(), 1, "the challenge created nothing");
    assert_eq!(lines[0]["id"], "support:cnv_app1");
    assert_eq!(lines[0]["title"], "Hello from the app");
    assert_eq!(lines[0]["source"]["event_id"], "evt_a1");
}

#[test]
fn rejected_requests_get_their_status_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &base_config(dir.path(), ""));
    let rt = runtime();
    let client = reqwest::Client::new();
    let url = d.webhook_url("acme");
    let event = inbound_event("evt_x", "cnv_x", "Subject", "Body");
    let body = serde_json::to_vec(&event).unwrap();

    let status = |req: reqwest::RequestBuilder| rt.block_on(req.send()).unwrap().status().as_u16();

    // Bad, missing and malformed signatures.
    assert_eq!(
        status(
            client
                .post(&url)
                .header("x-front-signature", sign_rule(b"other"))
                .body(body.clone())
        ),
        401
    );
    assert_eq!(status(client.post(&url).body(body.clone())), 401);
    assert_eq!(
        status(
            client
                .post(&url)
                .header("x-front-signature", "%%%")
                .body(body.clone())
        ),
        401
    );
    // Application webhook with a stale timestamp, correctly signed otherwise.
    let old = (now_ms() - 6 * 60 * 1000).to_string();
    assert_eq!(
        status(
            client
                .post(&url)
                .header("x-front-request-timestamp", &old)
                .header("x-front-signature", sign_app(&old, &body))
                .body(body.clone())
        ),
        401
    );
    // Malformed JSON and valid JSON that is no Front event, both correctly signed.
    let garbage = b"{not json";
    assert_eq!(
        status(
            client
                .post(&url)
                .header("x-front-signature", sign_rule(garbage))
                .body(garbage.to_vec())
        ),
        400
    );
    let not_event = br#"{"hello":"world"}"#;
    assert_eq!(
        status(
            client
                .post(&url)
                .header("x-front-signature", sign_rule(not_event))
                .body(not_event.to_vec())
        ),
        400
    );
    // Oversized body (limit 65536 in the test config). The body is not read to its end, so
    // the connection is closed and the answer says so (no client reuses it).
    let big = vec![b' '; 70_000];
    let refused = rt
        .block_on(
            reqwest::Client::new()
                .post(&url)
                .header("x-front-signature", sign_rule(&big))
                .body(big.clone())
                .send(),
        )
        .unwrap();
    assert_eq!(refused.status(), 413);
    assert_eq!(refused.headers()["connection"], "close");
    assert_eq!(
        status(
            client
                .post(&url)
                .header("x-front-signature", sign_rule(&big))
                .body(big.clone())
        ),
        413
    );
    // Unknown connection, unknown path, wrong method.
    assert_eq!(
        status(
            client
                .post(d.webhook_url("nope"))
                .header("x-front-signature", sign_rule(&body))
                .body(body.clone())
        ),
        404
    );
    assert_eq!(
        status(
            client
                .post(format!("http://{}/other", d.webhook.unwrap()))
                .body(body.clone())
        ),
        404
    );
    assert_eq!(status(client.get(&url)), 405);

    // Nothing was recorded: the same event is new when finally sent correctly.
    let resp = rt.block_on(post_rule(&client, &url, &body));
    assert_eq!(resp.status(), 200);
    let answer: Value = rt.block_on(resp.json()).unwrap();
    assert_eq!(answer["status"], "accepted");
    let lines = wait_until(Duration::from_secs(10), "jsonl line", || {
        let l = read_jsonl(&d.jsonl_path());
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(lines.len(), 1);
}

#[test]
fn the_same_event_twice_and_after_a_restart_makes_one_highlight() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &base_config(dir.path(), ""));
    let rt = runtime();
    let client = reqwest::Client::new();
    let body = serde_json::to_vec(&inbound_event("evt_d1", "cnv_d1", "Dup", "Twice")).unwrap();
    for expected in ["accepted", "duplicate"] {
        let resp = rt.block_on(post_rule(&client, &d.webhook_url("acme"), &body));
        assert_eq!(resp.status(), 200);
        let v: Value = rt.block_on(resp.json()).unwrap();
        assert_eq!(v["status"], expected);
    }
    wait_until(Duration::from_secs(10), "jsonl line", || {
        (read_jsonl(&d.jsonl_path()).len() == 1).then_some(())
    });
    let (code, _) = d.terminate();
    assert_eq!(code, 0);

    let d = TestDaemon::start_existing(dir.path());
    let resp = rt.block_on(post_rule(&client, &d.webhook_url("acme"), &body));
    assert_eq!(resp.status(), 200);
    let v: Value = rt.block_on(resp.json()).unwrap();
    assert_eq!(v["status"], "duplicate");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read_jsonl(&d.jsonl_path()).len(), 1);
}

#[test]
fn a_change_emits_an_updated_revision() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &base_config(dir.path(), ""));
    let rt = runtime();
    let client = reqwest::Client::new();
    let first = inbound_event("evt_u1", "cnv_u1", "Printer on fire", "It is burning");
    let mut second = inbound_event("evt_u2", "cnv_u1", "Printer on fire", "Still burning");
    second["emitted_at"] = json!(1763716500.0);
    second["conversation"]["status"] = json!("archived");
    for e in [&first, &second] {
        let resp = rt.block_on(post_rule(
            &client,
            &d.webhook_url("acme"),
            &serde_json::to_vec(e).unwrap(),
        ));
        assert_eq!(resp.status(), 200);
    }
    let lines = wait_until(Duration::from_secs(10), "two lines", || {
        let l = read_jsonl(&d.jsonl_path());
        (l.len() == 2).then_some(l)
    });
    assert_eq!(
        (lines[0]["revision"].as_u64(), lines[0]["change"].as_str()),
        (Some(1), Some("created"))
    );
    assert_eq!(
        (lines[1]["revision"].as_u64(), lines[1]["change"].as_str()),
        (Some(2), Some("updated"))
    );
    assert_eq!(lines[1]["status"], "archived");
    assert_eq!(lines[1]["text"], "Still burning");
}

#[test]
fn concurrent_webhooks_share_commits_and_all_land_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &base_config(dir.path(), ""));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let url = d.webhook_url("acme");
    let n = 300;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..n {
            let client = client.clone();
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let body = inbound_body(&format!("c{i}"));
                post_rule(&client, &url, &body).await.status().as_u16()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
    });
    // Everything acknowledged is on disk after a graceful stop.
    let (code, out) = d.terminate();
    assert_eq!(code, 0, "stderr: {}", out.stderr.join("\n"));
    let lines = read_jsonl(&dir.path().join("out/highlights.jsonl"));
    assert_eq!(lines.len(), n);
    let mut ids: Vec<_> = lines
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no duplicates");
    assert_eq!(out.stdout.len(), n, "stdout got every highlight too");
}

#[test]
fn jsonl_sink_does_not_write_again_after_a_kill_before_the_outbox_delete() {
    // Deliver, then kill -9 at once: whatever the JSONL holds must not be written twice on
    // restart, and whatever it lacks must arrive.
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let client = reqwest::Client::new();
    let config = base_config(dir.path(), "");
    for round in 0..3 {
        let d = if round == 0 {
            TestDaemon::start(dir.path(), &config)
        } else {
            TestDaemon::start_existing(dir.path())
        };
        for i in 0..40 {
            let id = format!("k{round}_{i}");
            assert_eq!(post_inbound(&rt, &client, &d, &id).status(), 200);
        }
        d.kill9();
    }
    let d = TestDaemon::start_existing(dir.path());
    let lines = wait_until(Duration::from_secs(10), "all 120 lines", || {
        let l = read_jsonl(&d.jsonl_path());
        (l.len() >= 120).then_some(l)
    });
    std::thread::sleep(Duration::from_millis(300));
    let lines_after = read_jsonl(&d.jsonl_path());
    assert_eq!(lines_after.len(), lines.len());
    let mut ids: Vec<_> = lines_after
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 120);
    assert_eq!(lines_after.len(), 120);
}

#[test]
fn second_instance_on_the_same_state_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _d = TestDaemon::start(dir.path(), &base_config(dir.path(), ""));
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(dir.path().join("config.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already in use"), "{stderr}");
}
