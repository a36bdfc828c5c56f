//! Disk faults: the JSONL folder fills up (a tiny tmpfs), and the state file becomes
//! unwritable (`chattr +i`). Both need root; each test says so and skips otherwise.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Mounts a tmpfs of `size` at `dir`; false (with a note) when this machine cannot.
fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    let ok = run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            dir.to_str().unwrap(),
        ],
    );
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
    }
    ok
}

struct Unmount<'a>(&'a Path);
impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

#[test]
fn a_full_jsonl_disk_is_retried_while_other_sinks_continue_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    if !mount_tmpfs(&out, "16k") {
        return;
    }
    let _unmount = Unmount(&out);
    let d = TestDaemon::start(dir.path(), &base_config(dir.path(), ""));
    let rt = runtime();
    let client = reqwest::Client::new();
    let n = 60; // ~40 KB of Highlights: more than the 16 KiB folder holds
    for i in 0..n {
        let body = serde_json::to_vec(&inbound_event(
            &format!("evt_full{i}"),
            &format!("cnv_full{i}"),
            "Subject",
            &"x".repeat(300),
        ))
        .unwrap();
        assert_eq!(
            rt.block_on(post_rule(&client, &d.webhook_url("acme"), &body))
                .status(),
            200
        );
    }
    // stdout is not held back by the full disk.
    wait_until(Duration::from_secs(15), "all lines on stdout", || {
        (d.stdout.lock().unwrap().len() == n).then_some(())
    });
    let status: Value = wait_until(
        Duration::from_secs(15),
        "the jsonl error in /status",
        || {
            let v: Value = d.try_status()?;
            v["sinks"]["archive"]["last_error"].is_string().then_some(v)
        },
    );
    assert!(
        status["sinks"]["archive"]["outbox_depth"].as_u64().unwrap() > 0,
        "{status}"
    );
    let partial = read_jsonl(&d.jsonl_path()).len();
    assert!(partial < n, "the disk was not full ({partial} lines)");

    // The disk grows: the sink catches up, exactly once, with no torn line.
    assert!(run(
        "mount",
        &["-o", "remount,size=4m", out.to_str().unwrap()]
    ));
    let lines = wait_until(Duration::from_secs(30), "all jsonl lines", || {
        let l = read_jsonl(&d.jsonl_path());
        (l.len() >= n).then_some(l)
    });
    let mut ids: Vec<_> = lines
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!((lines.len(), ids.len()), (n, n));
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
}

#[test]
fn an_unwritable_state_file_stops_acknowledging_instead_of_losing() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &base_config(dir.path(), ""));
    // The state database is the redb file and its redo log: both unwritable.
    let state = dir.path().join("state/frontsync.redb");
    let log = dir.path().join("state/frontsync.redb-wal");
    if !run(
        "chattr",
        &["+i", state.to_str().unwrap(), log.to_str().unwrap()],
    ) {
        eprintln!(
            "skipped: chattr +i is not available here (needs root and a filesystem that supports it)"
        );
        return;
    }
    struct Mutable<'a>(&'a [&'a Path]);
    impl Drop for Mutable<'_> {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").args(self.0).status();
        }
    }
    let guard = Mutable(&[&state, &log]);
    let rt = runtime();
    let client = reqwest::Client::new();
    let resp = post_inbound(&rt, &client, &d, "ro");
    assert_eq!(
        resp.status(),
        503,
        "nothing is acknowledged that cannot be persisted"
    );
    drop(guard);
    // After the disk recovers, a restart accepts the same event as new: nothing was half-written.
    d.kill9();
    let d = TestDaemon::start_existing(dir.path());
    let resp = post_inbound(&rt, &client, &d, "ro");
    assert_eq!(resp.status(), 200);
    let v: Value = rt.block_on(resp.json()).unwrap();
    assert_eq!(v["status"], "accepted");
    wait_until(Duration::from_secs(10), "one line", || {
        (read_jsonl(&d.jsonl_path()).len() == 1).then_some(())
    });
}
