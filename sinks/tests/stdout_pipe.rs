//! The `stdout` sink against a real pipe whose reader goes away, as with `frontsync | head`:
//! the lines arrive intact and the writer gets a retryable error instead of dying.
//!
//! The test binary runs itself as the child process (selected by an environment variable),
//! so the sink writes to a real standard output.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use frontsync_sinks::stdout::StdoutSink;
use frontsync_sinks::{Delivery, Sink};

const CHILD: &str = "FRONTSYNC_STDOUT_PIPE_CHILD";

fn item(seq: u64) -> Delivery {
    let id = format!("support:cnv_{seq}");
    let json = format!(r#"{{"schema":"frontsync.highlight.v1","id":"{id}","revision":1}}"#);
    Delivery {
        seq,
        id,
        revision: 1,
        json: json.into_bytes(),
    }
}

/// In the child: write batches until the pipe breaks, report on stderr, exit before the test
/// harness prints anything more to the closed stdout.
#[tokio::test]
async fn child_writes_until_the_pipe_breaks() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let mut sink = StdoutSink::new();
    let batch: Vec<_> = (0..64).map(item).collect();
    for _ in 0..100_000 {
        if let Err(e) = sink.deliver(&batch).await {
            // Straight to the stderr handle: the harness captures `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "result: retryable={} delivered={} message={e}",
                e.is_retryable(),
                e.delivered
            );
            std::process::exit(0);
        }
    }
    let _ = writeln!(std::io::stderr(), "result: never failed");
    std::process::exit(3);
}

#[test]
fn broken_pipe_is_a_retryable_error_not_a_crash() {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_writes_until_the_pipe_breaks",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // The test harness prints its own preamble before the sink's first line.
    let mut json_lines = Vec::new();
    while json_lines.len() < 3 {
        let line = lines.next().expect("a line").expect("utf-8 line");
        // In pretty mode the harness's `test name ... ` has no newline before the first line.
        if let Some(start) = line.find('{') {
            json_lines.push(line[start..].to_string());
        }
    }
    drop(lines); // the reader goes away, like `head`

    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "status {:?}, stderr: {stderr}",
        out.status
    );
    assert!(
        stderr.contains("result: retryable=true delivered=0 message=stdout sink: the reader of standard output went away (broken pipe)"),
        "stderr: {stderr}"
    );
    for (i, line) in json_lines.iter().enumerate() {
        assert_eq!(line.as_bytes(), item(i as u64).json.as_slice());
    }
}
