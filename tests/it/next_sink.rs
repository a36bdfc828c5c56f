//! The `next` sink end to end: the real binary delivering to [`FakeNext`] beside a JSONL
//! sink, through outages, throttling, rejections, `kill -9` and a deep outbox, plus the
//! `frontsync outbox` commands with the daemon running and stopped.
//!
//! Exactly once is counted at the receiver: it creates each `Idempotency-Key` once, and
//! every test checks that the created keys are exactly the Highlights sent. The sink's
//! backoff starts at 0.5 s and doubles, so outages here are kept to a second or two.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake::next::{FakeNext, TEAMSPACE, TOKEN};
use crate::harness::*;

/// A config with connection `acme`, sinks `next` (the fake) and `archive` (JSONL), and
/// subscription `support` feeding both and emitting updates. The admin port is chosen by
/// the daemon; [`start`] writes `cli.toml` with the bound one for the `outbox` command.
fn config_text(dir: &Path, next: &FakeNext) -> String {
    std::fs::write(dir.join("rule.secret"), RULE_SECRET).unwrap();
    std::fs::write(dir.join("next.token"), format!("{TOKEN}\n")).unwrap();
    format!(
        r#"[state]
path = "state/frontsync.redb"

[webhook]
listen = "127.0.0.1:0"
max_body_bytes = 65536

[admin]
listen = "127.0.0.1:0"

[front.acme]
rule_webhook_secret = {{ file = "rule.secret" }}

[sinks.next]
type = "next"
endpoint = "{endpoint}"
teamspace = "{TEAMSPACE}"
token = {{ file = "next.token" }}
timeout = "2s"

[sinks.archive]
type = "jsonl"
path = "out/highlights.jsonl"

[[subscription]]
name = "support"
front = "acme"
sinks = ["next", "archive"]
emit = ["created", "updated"]
"#,
        endpoint = next.endpoint()
    )
}

/// Starts the daemon on `dir/config.toml` (written from `next` when absent) and points
/// `dir/cli.toml` at its admin address.
fn start(dir: &Path, next: &FakeNext) -> TestDaemon {
    let config = dir.join("config.toml");
    if !config.exists() {
        std::fs::write(&config, config_text(dir, next)).unwrap();
    }
    let d = TestDaemon::start_existing(dir);
    write_cli_config(dir, &d.admin.to_string());
    d
}

/// `cli.toml`: the daemon's config with `[admin] listen` set to the bound `admin`.
fn write_cli_config(dir: &Path, admin: &str) {
    let text = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    let text = text.replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"{admin}\""),
        1,
    );
    std::fs::write(dir.join("cli.toml"), text).unwrap();
}

/// `frontsync outbox ARGS --config dir/cli.toml`: (exit code, stdout, stderr).
fn outbox(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("outbox")
        .args(args)
        .arg("--config")
        .arg(dir.join("cli.toml"))
        .env_remove("RUST_LOG")
        .env_remove("FRONTSYNC_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn outbox_json(dir: &Path) -> Value {
    let (code, stdout, stderr) = outbox(dir, &["--json"]);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// An inbound event of conversation `cnv`, `step` seconds after the first one: each step
/// is a new message, so with `emit = ["created","updated"]` each one is a new revision.
fn event(evt: &str, cnv: &str, step: u64) -> Value {
    let mut e = inbound_event(evt, cnv, "Order 1042", &format!("message {step} of {cnv}"));
    let at = 1_763_716_443.012 + step as f64;
    e["emitted_at"] = json!(at);
    e["target"]["data"]["created_at"] = json!(at);
    e["conversation"]["updated_at"] = json!(at);
    e
}

fn send(rt: &tokio::runtime::Runtime, d: &TestDaemon, event: &Value) {
    let body = serde_json::to_vec(event).unwrap();
    let client = reqwest::Client::new();
    let resp = rt.block_on(post_rule(&client, &d.webhook_url("acme"), &body));
    assert_eq!(resp.status(), 200);
}

/// `support:{cnv}:{revision}`.
fn key(cnv: &str, revision: u64) -> String {
    format!("support:{cnv}:{revision}")
}

/// Waits until the fake created `n` keys.
fn wait_created(next: &FakeNext, n: usize, secs: u64) -> Vec<String> {
    wait_until(Duration::from_secs(secs), &format!("{n} creations"), || {
        let keys = next.created_keys();
        (keys.len() >= n).then_some(keys)
    })
}

/// Every created key is distinct and the set is `expected`.
fn assert_created_exactly(next: &FakeNext, expected: &[String]) {
    let created = next.created_keys();
    let distinct: BTreeSet<_> = created.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        created.len(),
        "a key created twice: {created:?}"
    );
    let want: BTreeSet<_> = expected.iter().cloned().collect();
    assert_eq!(distinct, want);
    // The key is the body's own id and revision (the fake refuses a mismatch with 400).
    for c in next.created() {
        assert_eq!(
            c.key,
            format!(
                "{}:{}",
                c.highlight["id"].as_str().unwrap(),
                c.highlight["revision"]
            )
        );
    }
}

fn vm_rss_kb(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn an_outage_at_start_delays_only_next_and_recovery_creates_each_highlight_once() {
    let dir = tempfile::tempdir().unwrap();
    let next = FakeNext::start();
    next.set_down(true);
    let d = start(dir.path(), &next);
    let rt = runtime();
    let n = 12;
    for i in 0..n {
        send(
            &rt,
            &d,
            &event(&format!("evt_o{i}"), &format!("cnv_o{i}"), 0),
        );
    }
    // The JSONL sink is not held back by the outage.
    let lines = wait_until(Duration::from_secs(10), "jsonl lines", || {
        let l = read_jsonl(&d.jsonl_path());
        (l.len() >= n).then_some(l)
    });
    assert_eq!(lines.len(), n);
    assert_eq!(next.created_count(), 0);
    let s = wait_until(Duration::from_secs(10), "a recorded next failure", || {
        let s = d.status();
        (!s["sinks"]["next"]["last_error"].is_null() && next.refused_connections() > 0).then_some(s)
    });
    assert_eq!(s["sinks"]["next"]["outbox_depth"], n);
    // The last lines may be in the file a moment before their acknowledgement commits.
    wait_until(Duration::from_secs(5), "an empty archive outbox", || {
        (d.status()["sinks"]["archive"]["outbox_depth"] == 0).then_some(())
    });

    next.set_down(false);
    wait_created(&next, n, 30);
    let expected: Vec<String> = (0..n).map(|i| key(&format!("cnv_o{i}"), 1)).collect();
    assert_created_exactly(&next, &expected);
    // Same objects in both sinks, in outbox order.
    let sent: Vec<Value> = next.created().into_iter().map(|c| c.highlight).collect();
    assert_eq!(sent, lines);
    for r in next.requests().iter().filter(|r| r.status != 0) {
        assert_eq!(r.header("authorization"), Some(&*format!("Bearer {TOKEN}")));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let s = wait_until(Duration::from_secs(5), "next delivered", || {
        let s = d.status();
        (s["sinks"]["next"]["delivered_total"] == n).then_some(s)
    });
    assert_eq!(s["sinks"]["next"]["outbox_depth"], 0);
    assert_eq!(s["sinks"]["next"]["dead_letters"], 0);
    assert!(s["sinks"]["next"]["last_error"].is_null(), "{s}");
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
}

#[test]
fn retry_after_on_429_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let next = FakeNext::start();
    next.answer_next(1, 429, Some("1"));
    let d = start(dir.path(), &next);
    let rt = runtime();
    send(&rt, &d, &event("evt_t1", "cnv_t1", 0));
    wait_created(&next, 1, 10);
    let requests = next.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].status, 429);
    assert!(requests[1].created);
    assert_eq!(requests[0].key(), requests[1].key());
    let gap = requests[1].at - requests[0].at;
    // Without Retry-After the first backoff would be 0.25 to 0.5 s.
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    assert!(gap < Duration::from_secs(3), "retried after {gap:?}");
    assert_created_exactly(&next, &[key("cnv_t1", 1)]);
}

#[test]
fn a_rejected_highlight_is_dead_lettered_then_retried_or_dropped_by_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let next = FakeNext::start();
    next.answer_next(1, 400, None);
    let d = start(dir.path(), &next);
    let rt = runtime();

    // A is refused for good; B and C keep flowing.
    send(&rt, &d, &event("evt_a", "cnv_a", 0));
    let sink = wait_until(Duration::from_secs(10), "a dead letter", || {
        let s = d.status();
        (s["sinks"]["next"]["dead_letters"] == 1).then(|| s["sinks"]["next"].clone())
    });
    // The rejection is the sink's last error until its next success.
    assert!(
        sink["last_error"].as_str().unwrap_or("").contains("400"),
        "{sink}"
    );
    send(&rt, &d, &event("evt_b", "cnv_b", 0));
    send(&rt, &d, &event("evt_c", "cnv_c", 0));
    wait_created(&next, 2, 10);
    assert_created_exactly(&next, &[key("cnv_b", 1), key("cnv_c", 1)]);
    let s = d.status();
    let sink = &s["sinks"]["next"];
    assert_eq!(sink["dead_letters"], 1);
    assert_eq!(sink["outbox_depth"], 0);
    assert_eq!(sink["delivered_total"], 2);

    // `frontsync outbox` through the running daemon: the table and the JSON.
    let (code, table, stderr) = outbox(dir.path(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(table.contains("support:cnv_a"), "{table}");
    assert!(table.contains("archive"), "{table}");
    let listed = outbox_json(dir.path());
    let dead = listed["sinks"]["next"]["dead"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 1, "{listed}");
    assert_eq!(dead[0]["highlight_id"], "support:cnv_a");
    assert_eq!(dead[0]["revision"], 1);
    assert_eq!(dead[0]["status"], 400);
    assert_eq!(listed["sinks"]["next"]["dead_letters"], 1);
    assert_eq!(listed["sinks"]["archive"]["dead_letters"], 0);
    let a_seq = dead[0]["seq"].as_u64().unwrap();

    // Mistakes are refused with exit 1 and change nothing.
    let (code, _, stderr) = outbox(dir.path(), &["retry", "nope", "--all"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("unknown sink \"nope\""), "{stderr}");
    let (code, _, stderr) = outbox(dir.path(), &["drop", "next", "999", &a_seq.to_string()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no dead letter 999"), "{stderr}");
    assert_eq!(d.status()["sinks"]["next"]["dead_letters"], 1);

    // Retry while the daemon runs: A is created once, at the end.
    let (code, stdout, stderr) = outbox(dir.path(), &["retry", "next", "--all"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("requeued 1 dead letter"), "{stdout}");
    // Done by the daemon (the state file is locked by it), not beside it.
    assert!(!stderr.contains("not running"), "{stderr}");
    assert!(stdout.contains("support:cnv_a"), "{stdout}");
    wait_created(&next, 3, 10);
    assert_created_exactly(&next, &[key("cnv_a", 1), key("cnv_b", 1), key("cnv_c", 1)]);
    let s = wait_until(Duration::from_secs(5), "delivered 3", || {
        let s = d.status();
        (s["sinks"]["next"]["delivered_total"] == 3).then_some(s)
    });
    assert_eq!(s["sinks"]["next"]["dead_letters"], 0);
    assert_eq!(s["sinks"]["next"]["outbox_depth"], 0);
    assert!(s["sinks"]["next"]["last_error"].is_null(), "{s}");

    // Drop: D is refused, then deleted; it is never created.
    next.answer_next(1, 422, None);
    send(&rt, &d, &event("evt_d", "cnv_d", 0));
    let d_seq = wait_until(Duration::from_secs(10), "d dead-lettered", || {
        let dead = outbox_json(dir.path())["sinks"]["next"]["dead"].clone();
        dead.as_array()
            .and_then(|a| a.first())
            .filter(|l| l["highlight_id"] == "support:cnv_d")
            .and_then(|l| l["seq"].as_u64())
    });
    let (code, stdout, stderr) = outbox(dir.path(), &["drop", "next", &d_seq.to_string()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("dropped 1 dead letter"), "{stdout}");
    let s = d.status();
    assert_eq!(s["sinks"]["next"]["dead_letters"], 0);
    assert_eq!(s["sinks"]["next"]["outbox_depth"], 0);
    assert!(
        outbox_json(dir.path())["sinks"]["next"]["dead"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The stopped-daemon path: E is refused, the daemon stops, the command works on the
    // state file, and the next start delivers E.
    next.answer_next(1, 400, None);
    send(&rt, &d, &event("evt_e", "cnv_e", 0));
    wait_until(Duration::from_secs(10), "e dead-lettered", || {
        (d.status()["sinks"]["next"]["dead_letters"] == 1).then_some(())
    });
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
    let listed = outbox_json(dir.path());
    let e_seq = listed["sinks"]["next"]["dead"][0]["seq"].as_u64().unwrap();
    assert_eq!(
        listed["sinks"]["next"]["dead"][0]["highlight_id"],
        "support:cnv_e"
    );
    let (code, stdout, stderr) = outbox(dir.path(), &["retry", "next", &e_seq.to_string()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("requeued 1 dead letter"), "{stdout}");
    assert!(stderr.contains("not running"), "{stderr}");
    let listed = outbox_json(dir.path());
    assert_eq!(listed["sinks"]["next"]["dead_letters"], 0);
    assert_eq!(listed["sinks"]["next"]["outbox_depth"], 1);
    let d = start(dir.path(), &next);
    wait_created(&next, 4, 10);
    assert_created_exactly(
        &next,
        &[
            key("cnv_a", 1),
            key("cnv_b", 1),
            key("cnv_c", 1),
            key("cnv_e", 1),
        ],
    );
    wait_until(Duration::from_secs(5), "status after restart", || {
        let s = d.status();
        let sink = &s["sinks"]["next"];
        (sink["dead_letters"] == 0 && sink["outbox_depth"] == 0 && sink["delivered_total"] == 4)
            .then_some(())
    });
    // The JSONL sink had every Highlight once, whatever NEXT did.
    let ids: Vec<String> = read_jsonl(&d.jsonl_path())
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        ["a", "b", "c", "d", "e"].map(|c| format!("support:cnv_{c}"))
    );
}

#[test]
fn kill_9_during_delivery_loses_nothing_and_creates_each_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let next = FakeNext::start();
    // The worst case: NEXT creates the first Highlight but its answer never arrives.
    next.hang(true, None);
    let d = start(dir.path(), &next);
    let rt = runtime();
    let n = 5;
    for i in 0..n {
        send(
            &rt,
            &d,
            &event(&format!("evt_k{i}"), &format!("cnv_k{i}"), 0),
        );
    }
    wait_until(Duration::from_secs(10), "a hanging request", || {
        (!next.requests().is_empty()).then_some(())
    });
    d.kill9();
    next.stop_hanging();
    assert_eq!(next.created_keys(), vec![key("cnv_k0", 1)]);

    let d = start(dir.path(), &next);
    wait_created(&next, n, 20);
    let expected: Vec<String> = (0..n).map(|i| key(&format!("cnv_k{i}"), 1)).collect();
    assert_created_exactly(&next, &expected);
    // The first one was sent again after the restart (same key), and created nothing.
    let first: Vec<_> = next
        .requests()
        .into_iter()
        .filter(|r| r.key() == Some(&*key("cnv_k0", 1)))
        .collect();
    assert!(first.len() >= 2, "{first:?}");
    assert!(first.iter().skip(1).all(|r| !r.created));
    wait_until(Duration::from_secs(5), "outbox drained", || {
        let s = d.status();
        (s["sinks"]["next"]["outbox_depth"] == 0).then_some(())
    });
    // The JSONL sink lost nothing and holds no line twice.
    let lines = read_jsonl(&d.jsonl_path());
    let ids: BTreeSet<_> = lines.iter().map(|h| h["id"].to_string()).collect();
    assert_eq!((lines.len(), ids.len()), (n, n));
}

#[test]
fn revisions_of_one_highlight_arrive_in_order_after_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let next = FakeNext::start();
    next.set_down(true);
    let d = start(dir.path(), &next);
    let rt = runtime();
    for step in 0..3 {
        send(&rt, &d, &event(&format!("evt_v{step}"), "cnv_v", step));
    }
    let lines = wait_until(Duration::from_secs(10), "three revisions in jsonl", || {
        let l = read_jsonl(&d.jsonl_path());
        (l.len() >= 3).then_some(l)
    });
    let revisions: Vec<_> = lines.iter().map(|h| h["revision"].clone()).collect();
    assert_eq!(revisions, [json!(1), json!(2), json!(3)]);
    next.set_down(false);
    wait_created(&next, 3, 30);
    assert_eq!(
        next.created_keys(),
        vec![key("cnv_v", 1), key("cnv_v", 2), key("cnv_v", 3)]
    );
    let changes: Vec<_> = next
        .created()
        .iter()
        .map(|c| c.highlight["change"].clone())
        .collect();
    assert_eq!(
        changes,
        [json!("created"), json!("updated"), json!("updated")]
    );
    // No revision was ever sent before an earlier one was created.
    let mut highest_created = 0;
    for r in next.requests().iter().filter(|r| r.status != 0) {
        let rev: u64 = r
            .key()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rev <= highest_created + 1, "revision {rev} sent too early");
        if r.created {
            highest_created = rev;
        }
    }
}

#[test]
fn a_10000_deep_outbox_does_not_grow_memory() {
    let dir = tempfile::tempdir().unwrap();
    let next = FakeNext::start();
    next.set_down(true);
    let d = start(dir.path(), &next);
    let pid = d.pid();
    let url = d.webhook_url("acme");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    // Distinct conversations, so each webhook is one more Highlight in each outbox. The
    // bodies come from one template (the test's own CPU is shared with the daemon).
    let template = Arc::new(serde_json::to_string(&event("evt_m@N@", "cnv_m@N@", 0)).unwrap());
    // Many at once: the writer commits them in large groups, as in production.
    let send_range = |from: usize, to: usize| {
        rt.block_on(async {
            let next_i = Arc::new(std::sync::atomic::AtomicUsize::new(from));
            let mut tasks = Vec::new();
            for _ in 0..128 {
                let (client, url, next_i) = (client.clone(), url.clone(), next_i.clone());
                let template = template.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next_i.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= to {
                            return;
                        }
                        let body = template.replace("@N@", &i.to_string()).into_bytes();
                        let resp = post_rule(&client, &url, &body).await;
                        assert_eq!(resp.status(), 200);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    send_range(0, 1_000);
    // Let the JSONL sink catch up so both samples see the same steady state.
    wait_until(Duration::from_secs(20), "jsonl at 1000", || {
        (read_jsonl(&d.jsonl_path()).len() >= 1_000).then_some(())
    });
    let rss_1k = vm_rss_kb(pid);
    send_range(1_000, 10_000);
    wait_until(Duration::from_secs(30), "outbox at 10000", || {
        (d.status()["sinks"]["next"]["outbox_depth"] == 10_000).then_some(())
    });
    let rss_10k = vm_rss_kb(pid);
    let growth_mb = (rss_10k.saturating_sub(rss_1k)) as f64 / 1024.0;
    eprintln!(
        "rss after 1000 webhooks: {rss_1k} kB, after 10000: {rss_10k} kB (+{growth_mb:.1} MB); sent in {:?}",
        started.elapsed()
    );
    assert!(growth_mb < 30.0, "rss grew by {growth_mb:.1} MB");
    assert_eq!(next.created_count(), 0);
}
