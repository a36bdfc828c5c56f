//! Operating the daemon: SIGHUP reload (valid, invalid, logrotate), sd_notify, metrics.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

fn send(d: &TestDaemon, rt: &tokio::runtime::Runtime, id: &str) -> u16 {
    post_inbound(rt, &reqwest::Client::new(), d, id)
        .status()
        .as_u16()
}

#[test]
fn reload_applies_a_new_subscription_and_sink_without_losing_in_flight_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path(), "");
    let d = TestDaemon::start(dir.path(), &config);
    let rt = runtime();
    assert_eq!(send(&d, &rt, "before"), 200);

    // A second sink and subscription appear; webhooks keep flowing during the reload.
    let extended = format!(
        "{config}\n[sinks.second]\ntype = \"jsonl\"\npath = \"out/second.jsonl\"\n\n[[subscription]]\nname = \"escalations\"\nfront = \"acme\"\nsinks = [\"second\"]\n"
    );
    std::fs::write(&d.config, extended).unwrap();
    let sender = {
        let url = d.webhook_url("acme");
        std::thread::spawn(move || {
            let rt = runtime();
            let client = reqwest::Client::new();
            let mut codes = Vec::new();
            for i in 0..60 {
                let body = serde_json::to_vec(&inbound_event(
                    &format!("evt_during{i}"),
                    &format!("cnv_during{i}"),
                    "S",
                    "B",
                ))
                .unwrap();
                codes.push(
                    rt.block_on(post_rule(&client, &url, &body))
                        .status()
                        .as_u16(),
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            codes
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    d.signal("HUP");
    d.wait_log("configuration reloaded", 10);
    let codes = sender.join().unwrap();
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    assert_eq!(send(&d, &rt, "after"), 200);

    let archive = wait_until(Duration::from_secs(10), "62 archive lines", || {
        let l = read_jsonl(&d.jsonl_path());
        (l.len() >= 62).then_some(l)
    });
    assert_eq!(
        archive.len(),
        62,
        "every event acknowledged during the reload reached the old sink once"
    );
    let second = wait_until(Duration::from_secs(10), "new sink line", || {
        let l = read_jsonl(&dir.path().join("out/second.jsonl"));
        l.iter()
            .any(|h| h["id"] == "escalations:cnv_after")
            .then_some(l)
    });
    assert!(second.iter().all(|h| h["subscription"] == "escalations"));
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
}

#[test]
fn an_invalid_config_on_reload_is_refused_and_the_old_one_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path(), "");
    let mut d = TestDaemon::start(dir.path(), &config);
    let rt = runtime();
    std::fs::write(
        &d.config,
        config.replace("sinks = [\"archive\", \"console\"]", "sinks = [\"nope\"]"),
    )
    .unwrap();
    d.signal("HUP");
    let refused = d.wait_log(
        "reload refused; still running on the previous configuration",
        10,
    );
    assert!(
        refused["error"].as_str().unwrap().contains("nope"),
        "{refused}"
    );
    assert!(d.is_running());
    assert_eq!(send(&d, &rt, "still"), 200);
    wait_until(Duration::from_secs(10), "line", || {
        (read_jsonl(&d.jsonl_path()).len() == 1).then_some(())
    });
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
}

#[test]
fn logrotate_rename_then_hup_writes_the_next_highlight_to_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &base_config(dir.path(), ""));
    let rt = runtime();
    assert_eq!(send(&d, &rt, "one"), 200);
    wait_until(Duration::from_secs(10), "first line", || {
        (read_jsonl(&d.jsonl_path()).len() == 1).then_some(())
    });
    let rotated = dir.path().join("out/highlights.jsonl.1");
    std::fs::rename(d.jsonl_path(), &rotated).unwrap();
    d.signal("HUP");
    d.wait_log("configuration reloaded", 10);
    assert_eq!(send(&d, &rt, "two"), 200);
    let fresh = wait_until(Duration::from_secs(10), "new file", || {
        let l = read_jsonl(&d.jsonl_path());
        (l.len() == 1).then_some(l)
    });
    assert_eq!(fresh[0]["id"], "support:cnv_two");
    assert_eq!(
        read_jsonl(&rotated).len(),
        1,
        "the rotated file is left alone"
    );
}

#[test]
fn sd_notify_sees_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), base_config(dir.path(), "")).unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let d = TestDaemon::start_with_env(
        dir.path(),
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let recv = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = recv();
    assert!(ready.starts_with("READY=1"), "{ready}");
    d.signal("HUP");
    let reloading = recv();
    assert!(reloading.starts_with("RELOADING=1"), "{reloading}");
    let ready_again = recv();
    assert!(ready_again.starts_with("READY=1"), "{ready_again}");
    let pid = d.pid();
    signal_pid(pid, "TERM");
    let stopping = recv();
    assert_eq!(stopping, "STOPPING=1");
    let (code, _) = d.terminate_wait();
    assert_eq!(code, 0);
}

#[test]
fn metrics_and_status_reflect_delivered_events() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &base_config(dir.path(), ""));
    let rt = runtime();
    for i in 0..3 {
        assert_eq!(send(&d, &rt, &format!("m{i}")), 200);
    }
    let client = reqwest::Client::new();
    let bad = rt
        .block_on(client.post(d.webhook_url("acme")).body("{}").send())
        .unwrap();
    assert_eq!(bad.status(), 401);
    wait_until(Duration::from_secs(10), "3 lines", || {
        (read_jsonl(&d.jsonl_path()).len() == 3).then_some(())
    });
    let status: Value = wait_until(Duration::from_secs(10), "delivered_total 3", || {
        let v: Value = d.status();
        (v["sinks"]["archive"]["delivered_total"] == 3
            && v["sinks"]["console"]["delivered_total"] == 3)
            .then_some(v)
    });
    assert_eq!(status["sinks"]["archive"]["outbox_depth"], 0);
    let metrics = rt.block_on(async {
        reqwest::get(format!("http://{}/metrics", d.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    for expected in [
        "frontsync_webhooks_received_total{connection=\"acme\",outcome=\"accepted\"} 3",
        "frontsync_webhooks_received_total{connection=\"acme\",outcome=\"unauthorized\"} 1",
        "frontsync_sink_delivered_total{sink=\"archive\"} 3",
        "frontsync_outbox_depth{sink=\"archive\"} 0",
        "frontsync_events_ingested_total{result=\"new\"} 3",
        "frontsync_highlights_emitted_total{subscription=\"support\",change=\"created\"} 3",
        "frontsync_ingest_commit_seconds_bucket{le=\"+Inf\"}",
        "frontsync_ingest_batch_size_count",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
}

#[test]
fn under_journald_lines_have_priority_prefixes_and_no_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, base_config(dir.path(), "")).unwrap();
    let child = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .env("JOURNAL_STREAM", "8:12345")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    signal_pid(child.id() as i32, "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ready = stderr
        .lines()
        .find(|l| l.contains("ready"))
        .expect("a ready line");
    assert!(ready.starts_with("<6>ready"), "{ready}");
    assert!(
        !stderr.contains("2026-") && !stderr.contains("INFO"),
        "{stderr}"
    );
}
