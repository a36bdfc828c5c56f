//! Hostile input against the real binary: slowloris, idle connections past
//! `max_connections`, a flood of badly signed requests, oversized bodies, and a run that
//! provokes every error it can while checking that no secret value is ever printed.
//!
//! Figures (latencies, disconnect times) are printed with `eprintln!`; run with
//! `cargo test --test it security -- --nocapture --test-threads 1` to see them. With
//! `FRONTSYNC_SECURITY_DUMP=FILE`, the secrets test also writes every output it checked to
//! FILE, for a look by eye.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fake::FakeFront;
use crate::fake::next::FakeNext;
use crate::harness::*;

/// The webhook head deadline in these tests.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// `max_connections` in these tests.
const MAX_CONNECTIONS: usize = 64;

/// `base_config` with a 1 s header timeout and at most 64 connections.
fn hardened_config(dir: &Path) -> String {
    base_config(dir, "").replace(
        "max_body_bytes = 65536\n",
        &format!(
            "max_body_bytes = 65536\nheader_timeout = \"{}s\"\nmax_connections = {MAX_CONNECTIONS}\n",
            HEADER_TIMEOUT.as_secs()
        ),
    )
}

/// A signed rule webhook request for a new event, as raw HTTP/1.1 bytes.
fn good_request(addr: SocketAddr, n: usize, keep_alive: bool) -> Vec<u8> {
    let body = serde_json::to_vec(&inbound_event(
        &format!("evt_sec{n}"),
        &format!("cnv_sec{n}"),
        "Hostile-test subject",
        "Body",
    ))
    .unwrap();
    let mut req = format!(
        "POST /webhooks/front/acme HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Front-Signature: {}\r\nContent-Length: {}\r\n{}\r\n",
        sign_rule(&body),
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" }
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req
}

/// Reads one HTTP response head and its `Content-Length` body; returns the status code.
fn read_response(stream: &mut TcpStream) -> std::io::Result<u16> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte)? {
            0 => return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed")),
            _ => buf.push(byte[0]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(status)
}

/// Sends `request` on a new connection and returns (status, latency from connect).
fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> (u16, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(request).unwrap();
    let status = read_response(&mut s)
        .unwrap_or_else(|e| panic!("no answer in {limit:?} ({e}) after {:?}", start.elapsed()));
    (status, start.elapsed())
}

/// How long until the server closes `s` (EOF or reset), reading and discarding anything.
fn time_to_close(s: &mut TcpStream, start: Instant, limit: Duration) -> Option<Duration> {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = [0u8; 512];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn slowloris_is_cut_at_the_header_timeout_and_others_are_served_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &hardened_config(dir.path()));
    let addr = d.webhook.unwrap();

    // 32 clients dribble a request head, one byte every 200 ms: never a complete head.
    let head = b"POST /webhooks/front/acme HTTP/1.1\r\nHost: x\r\nX-Front-Signature: abcdefghijklmnopqrstuvwxyz0123456789\r\n";
    let slow: Vec<_> = (0..32)
        .map(|_| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
                for b in head.iter().cycle() {
                    if s.write_all(&[*b]).is_err() {
                        return Some(start.elapsed());
                    }
                    let mut buf = [0u8; 256];
                    match s.read(&mut buf) {
                        Ok(0) => return Some(start.elapsed()),
                        // A 408 answer before the close is fine.
                        Ok(_) => {}
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => return Some(start.elapsed()),
                    }
                    if start.elapsed() > Duration::from_secs(15) {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                None
            })
        })
        .collect();

    // Meanwhile, good requests on fresh connections are answered at once.
    std::thread::sleep(Duration::from_millis(300));
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_millis(2500);
    let mut n = 0;
    while Instant::now() < until {
        let (status, took) = exchange(addr, &good_request(addr, n, false), Duration::from_secs(5));
        assert_eq!(status, 200);
        latencies.push(took);
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let cut: Vec<Duration> = slow
        .into_iter()
        .map(|t| t.join().unwrap().expect("slowloris connection never cut"))
        .collect();
    latencies.sort();
    let max_cut = cut.iter().max().unwrap();
    let min_cut = cut.iter().min().unwrap();
    eprintln!(
        "slowloris: 32 dribbling clients cut after {min_cut:?}..{max_cut:?} (header_timeout {HEADER_TIMEOUT:?}); {} good requests meanwhile: p50 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        latencies.last().unwrap()
    );
    assert!(*min_cut >= HEADER_TIMEOUT - Duration::from_millis(100));
    assert!(
        *max_cut < HEADER_TIMEOUT * 3,
        "a dribbling client kept its connection for {max_cut:?}"
    );
    assert!(*latencies.last().unwrap() < Duration::from_secs(1));
}

#[test]
fn idle_connections_beyond_max_connections_delay_good_requests_by_a_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &hardened_config(dir.path()));
    let addr = d.webhook.unwrap();

    // Keep-alive connections that made one request and then say nothing: the server closes
    // them at the header timeout (the deadline restarts for the next request head), so they
    // cannot hold their connection slots forever.
    let mut kept: Vec<TcpStream> = (0..16)
        .map(|n| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(&good_request(addr, 1000 + n, true)).unwrap();
            assert_eq!(read_response(&mut s).unwrap(), 200);
            s
        })
        .collect();
    let idle_start = Instant::now();
    let closes: Vec<Duration> = kept
        .iter_mut()
        .map(|s| {
            time_to_close(s, idle_start, Duration::from_secs(10))
                .expect("idle keep-alive kept open")
        })
        .collect();
    let kept_max = closes.iter().max().unwrap();
    eprintln!("idle keep-alive: 16 connections closed by the server after at most {kept_max:?}");
    assert!(*kept_max < HEADER_TIMEOUT * 3);

    // 200 connections that never send a byte, with room for 64: the first 64 hold every slot
    // and the rest wait in the kernel backlog, in order, ahead of the good request.
    let idle: usize = 200;
    let start = Instant::now();
    let mut idlers: Vec<TcpStream> = (0..idle)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let (status, took) = exchange(
        addr,
        &good_request(addr, 2000, false),
        Duration::from_secs(20),
    );
    assert_eq!(status, 200);
    // Each idle connection is served for at most header_timeout, 64 at a time, so the good
    // one waits at most ceil((idle + 1) / max_connections) header timeouts.
    let rounds = (idle + 1).div_ceil(MAX_CONNECTIONS) as u32;
    let bound = HEADER_TIMEOUT * rounds;
    eprintln!(
        "idle flood: {idle} silent connections (max_connections {MAX_CONNECTIONS}): good request answered after {took:?} (bound {bound:?} + slack)"
    );
    assert!(
        took < bound + Duration::from_secs(2),
        "{took:?} > {bound:?}"
    );
    // And every idler was disconnected by the server.
    let all_closed = idlers
        .iter_mut()
        .map(|s| time_to_close(s, start, Duration::from_secs(15)))
        .collect::<Option<Vec<_>>>()
        .expect("an idle connection stayed open");
    eprintln!(
        "idle flood: last idler closed after {:?}",
        all_closed.iter().max().unwrap()
    );
    // Once they are gone, good requests are immediate again.
    let (status, took) = exchange(
        addr,
        &good_request(addr, 2001, false),
        Duration::from_secs(5),
    );
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn a_flood_of_bad_signatures_is_refused_while_good_requests_pass() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &hardened_config(dir.path()));
    let url = d.webhook_url("acme");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .build()
        .unwrap();
    let bad_total = 2000;
    let good_every = 50;
    let started = Instant::now();
    let results: Arc<Mutex<(Vec<u16>, Vec<Duration>)>> = Arc::default();
    rt.block_on(async {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let total = bad_total + bad_total / good_every;
        let mut workers = Vec::new();
        for _ in 0..32 {
            let (client, url, next, results) =
                (client.clone(), url.clone(), next.clone(), results.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let body = serde_json::to_vec(&inbound_event(
                        &format!("evt_flood{i}"),
                        &format!("cnv_flood{i}"),
                        "S",
                        "B",
                    ))
                    .unwrap();
                    let good = i % (good_every + 1) == good_every;
                    let signature = if good {
                        sign_rule(&body)
                    } else {
                        // Right length and alphabet, wrong key.
                        let mut tampered = body.clone();
                        tampered.push(b' ');
                        sign_rule(&tampered)
                    };
                    let t = Instant::now();
                    let resp = client
                        .post(&url)
                        .header("x-front-signature", signature)
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    let took = t.elapsed();
                    let status = resp.status().as_u16();
                    let mut r = results.lock().unwrap();
                    if good {
                        assert_eq!(status, 200, "good request {i}");
                        r.1.push(took);
                    } else {
                        r.0.push(status);
                    }
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
    });
    let elapsed = started.elapsed();
    let (bad, mut good) = std::mem::take(&mut *results.lock().unwrap());
    assert_eq!(bad.len(), bad_total);
    assert!(
        bad.iter().all(|s| *s == 401),
        "every bad signature gets 401"
    );
    good.sort();
    eprintln!(
        "bad-signature flood: {} x 401 and {} x 200 in {elapsed:?} ({:.0} req/s, 32 concurrent); good latency p50 {:?}, p99 {:?}, max {:?}",
        bad.len(),
        good.len(),
        (bad.len() + good.len()) as f64 / elapsed.as_secs_f64(),
        percentile(&good, 0.5),
        percentile(&good, 0.99),
        good.last().unwrap()
    );
    assert!(*good.last().unwrap() < Duration::from_secs(2));

    // Nothing of the flood was recorded: one line per good request only.
    let lines = wait_until(Duration::from_secs(10), "good lines", || {
        let l = read_jsonl(&d.jsonl_path());
        (l.len() >= good.len()).then_some(l)
    });
    assert_eq!(lines.len(), good.len());
    let metrics = rt
        .block_on(async {
            reqwest::get(format!("http://{}/metrics", d.admin))
                .await
                .unwrap()
                .text()
                .await
        })
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "frontsync_webhooks_received_total{{connection=\"acme\",outcome=\"unauthorized\"}} {bad_total}"
        )),
        "{metrics}"
    );

    // Requests to 300 made-up connection names (with characters a label would need to
    // escape) are counted under one label: the metrics do not grow with what clients send.
    let statuses: Vec<u16> = rt.block_on(async {
        let mut out = Vec::new();
        for i in 0..300 {
            let url = format!(
                "http://{}/webhooks/front/made-up-{i}%22%0A\"x",
                d.webhook.unwrap()
            );
            out.push(
                client
                    .post(url)
                    .body("{}")
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        out
    });
    assert!(statuses.iter().all(|s| *s == 404));
    let metrics = rt
        .block_on(async {
            reqwest::get(format!("http://{}/metrics", d.admin))
                .await
                .unwrap()
                .text()
                .await
        })
        .unwrap();
    assert!(!metrics.contains("made-up"), "{metrics}");
    assert!(
        metrics.contains(
            "frontsync_webhooks_received_total{connection=\"(unknown)\",outcome=\"unknown_connection\"} 300"
        ),
        "{metrics}"
    );
}

#[test]
fn an_oversized_body_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start(dir.path(), &hardened_config(dir.path()));
    let addr = d.webhook.unwrap();

    // A declared length over max_body_bytes (65536): 413 without sending a single body byte.
    for extra in ["", "Expect: 100-continue\r\n"] {
        let start = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "POST /webhooks/front/acme HTTP/1.1\r\nHost: x\r\nX-Front-Signature: AAAA\r\nContent-Length: 10000000\r\n{extra}\r\n"
        )
        .unwrap();
        let status = read_response(&mut s).expect("an answer without the body");
        eprintln!(
            "oversized content-length ({}): {status} after {:?}",
            if extra.is_empty() {
                "plain"
            } else {
                "expect 100-continue"
            },
            start.elapsed()
        );
        assert_eq!(status, 413, "no 100 Continue, no reading");
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    // A length no integer holds: refused by the HTTP layer, and the daemon lives on.
    let (status, _) = exchange(
        addr,
        b"POST /webhooks/front/acme HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status, 400);

    // Chunked, so no declared length: cut at the limit while reading.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /webhooks/front/acme HTTP/1.1\r\nHost: x\r\nX-Front-Signature: AAAA\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    let chunk = vec![b'a'; 8192];
    let mut sent = 0;
    let mut status = None;
    while sent < 200_000 {
        let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(&chunk);
        piece.extend_from_slice(b"\r\n");
        if s.write_all(&piece).is_err() {
            break;
        }
        sent += chunk.len();
        if sent > 70_000 && status.is_none() {
            status = read_response(&mut s).ok();
            break;
        }
    }
    let status = status.or_else(|| read_response(&mut s).ok());
    assert_eq!(status, Some(413));

    // Still serving.
    let (status, _) = exchange(addr, &good_request(addr, 1, false), Duration::from_secs(5));
    assert_eq!(status, 200);
}

// ---------------------------------------------------------------------------------------------
// Secrets never leak.
// ---------------------------------------------------------------------------------------------

const RULE: &str = "rule-S3CRET-9f8e7d6c5b";
const APP: &str = "app-S3CRET-1a2b3c4d5e";
const FRONT_TOKEN: &str = "front-T0KEN-5e6f7a8b9c";
const NEXT_TOKEN: &str = "next-T0KEN-c9d0e1f2a3";
/// Written as a literal string in an invalid config (the mistake the format forbids).
const LITERAL: &str = "literal-T0KEN-3141592653";

const SECRETS: [&str; 5] = [RULE, APP, FRONT_TOKEN, NEXT_TOKEN, LITERAL];

/// Fails naming where a secret value (or its base64, as in a Basic auth header) appears.
fn assert_no_secret(what: &str, text: &str) {
    use base64::Engine;
    for secret in SECRETS {
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        // The distinctive middle is enough: a secret cut or quoted still counts.
        let core = &secret[secret.len() - 14..];
        for needle in [secret, core, b64.as_str()] {
            if let Some(at) = text.find(needle) {
                let from = at.saturating_sub(200);
                let context = text.get(from..(at + 200).min(text.len())).unwrap_or(text);
                panic!("secret {secret:?} appears in {what}: ...{context}...");
            }
        }
    }
}

/// A receiver that answers every request 400 with the request's headers in the body, as a
/// debugging proxy or a careless API might: the token comes back in an error body.
fn start_echo_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let body =
                    serde_json::json!({"error": "bad request", "you_sent": head}).to_string();
                let _ = write!(
                    s,
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The environment every command of the secrets test gets.
fn secret_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("FRONTSYNC_SEC_APP", APP),
        ("FRONTSYNC_SEC_RULE", RULE),
        ("FRONTSYNC_SEC_NEXT", NEXT_TOKEN),
    ]
}

/// Runs `frontsync ARGS` to completion with the secrets in its environment; returns
/// (exit code, stdout + stderr).
fn run_cli(args: &[&str], config: &Path) -> (i32, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["--log-level", "debug"])
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .envs(secret_env())
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn secrets_never_appear_in_output_status_metrics_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("secrets")).unwrap();
    std::fs::write(root.join("secrets/front-token"), format!("{FRONT_TOKEN}\n")).unwrap();
    std::fs::write(root.join("secrets/rule"), RULE).unwrap();

    // Front answers 401 to our token (it expects another); a second connection points at a
    // closed port. NEXT refuses our token (401, retried), one sink points at a closed port,
    // one at a receiver that echoes the request headers in a 400 (dead letter).
    let front = FakeFront::start();
    front.set_token("the-token-front-expects");
    let next = FakeNext::start();
    let echo = start_echo_server();
    let admin_port = free_port();
    let config_text = format!(
        r#"[state]
path = "state/frontsync.redb"

[webhook]
listen = "127.0.0.1:0"
header_timeout = "2s"

[admin]
listen = "127.0.0.1:{admin_port}"

[front.acme]
api_base = "{front_url}"
token = {{ file = "secrets/front-token" }}
rule_webhook_secret = {{ file = "secrets/rule" }}
app_webhook_secret = {{ env = "FRONTSYNC_SEC_APP" }}

[front.down]
api_base = "http://127.0.0.1:1"
token = {{ file = "secrets/front-token" }}
rule_webhook_secret = {{ env = "FRONTSYNC_SEC_RULE" }}

[sinks.next]
type = "next"
endpoint = "{next_url}"
teamspace = "ts_test"
token = {{ env = "FRONTSYNC_SEC_NEXT" }}

[sinks.next_closed]
type = "next"
endpoint = "http://127.0.0.1:1/v1"
teamspace = "ts_test"
token = {{ env = "FRONTSYNC_SEC_NEXT" }}

[sinks.echo]
type = "next"
endpoint = "http://{echo}/v1"
teamspace = "ts_test"
token = {{ env = "FRONTSYNC_SEC_NEXT" }}

[sinks.archive]
type = "jsonl"
path = "out/highlights.jsonl"

[[subscription]]
name = "support"
front = "acme"
poll_interval = "1s"
backfill = "1h"
sinks = ["next", "next_closed", "echo", "archive"]

[[subscription]]
name = "down"
front = "down"
poll_interval = "1s"
sinks = ["archive"]
"#,
        front_url = front.base_url(),
        next_url = next.endpoint(),
    );
    let config = root.join("config.toml");
    std::fs::write(&config, &config_text).unwrap();
    let mut seen: Vec<(String, String)> = Vec::new();
    let t0 = Instant::now();

    // Offline check: valid, reads every secret.
    let (code, out) = run_cli(&["check"], &config);
    assert_eq!(code, 0, "{out}");
    seen.push(("check".into(), out));

    // The daemon, under a permissive umask so file modes cannot come from it.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\" \"$@\"")
        .arg(bin())
        .args([
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "run",
            "--config",
        ])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .envs(secret_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    let stdout = collect(child.stdout.take().unwrap());
    let webhook: SocketAddr = wait_until(Duration::from_secs(30), "daemon ready", || {
        let lines = stderr.lock().unwrap();
        let parsed: Vec<Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let ready = parsed.iter().any(|v| v["message"] == "ready");
        let addr = parsed.iter().find_map(|v| {
            (v["message"] == "listening" && v["listener"] == "webhook")
                .then(|| v["addr"].as_str()?.parse().ok())?
        });
        if let Ok(Some(status)) = child.try_wait() {
            panic!("daemon exited with {status}: {}", lines.join("\n"));
        }
        ready.then_some(addr).flatten()
    });
    let rt = runtime();
    let client = reqwest::Client::new();
    let url = format!("http://{webhook}/webhooks/front/acme");
    let send = |req: reqwest::RequestBuilder| rt.block_on(req.send()).unwrap().status().as_u16();
    let body = serde_json::to_vec(&inbound_event("evt_s1", "cnv_s1", "Secret test", "Hi")).unwrap();

    // Bad signatures of every kind, including the secrets themselves as the header value.
    for sig in [RULE, APP, "%%%", ""] {
        assert_eq!(
            send(
                client
                    .post(&url)
                    .header("x-front-signature", sig)
                    .body(body.clone())
            ),
            401
        );
    }
    let ts = now_ms().to_string();
    assert_eq!(
        send(
            client
                .post(&url)
                .header("x-front-request-timestamp", &ts)
                .header("x-front-signature", sign_rule(&body))
                .body(body.clone())
        ),
        401
    );
    assert_eq!(
        send(
            client
                .post(&url)
                .header("x-front-request-timestamp", "1")
                .header("x-front-signature", APP)
                .body(body.clone())
        ),
        401
    );
    // A correctly signed one (our test signer uses the harness secret, so sign here).
    let good_sig = frontsync::webhook::verify::sign_rule(RULE.as_bytes(), &body);
    assert_eq!(
        send(
            client
                .post(&url)
                .header("x-front-signature", good_sig)
                .body(body.clone())
        ),
        200
    );
    // An unknown connection, a wrong method.
    assert_eq!(
        send(client.post(format!("http://{webhook}/webhooks/front/nope"))),
        404
    );
    assert_eq!(send(client.get(&url)), 405);

    // Let the failures happen: Front 401s and refusals, NEXT 401s, a closed port, a dead
    // letter carrying the echoed request.
    let admin = format!("http://127.0.0.1:{admin_port}");
    let status: Value = wait_until(Duration::from_secs(30), "errors in /status", || {
        let v: Value = rt.block_on(async {
            reqwest::get(format!("{admin}/status"))
                .await
                .ok()?
                .json()
                .await
                .ok()
        })?;
        let sinks = &v["sinks"];
        let failing = ["next", "next_closed"]
            .iter()
            .all(|s| !sinks[*s]["last_error"].is_null());
        let dead = sinks["echo"]["dead_letters"].as_u64().unwrap_or(0) > 0;
        let polls = v["subscriptions"]
            .as_array()
            .map(|subs| subs.iter().all(|s| !s["last_error"].is_null()))
            .or_else(|| {
                v["subscriptions"]
                    .as_object()
                    .map(|subs| subs.values().all(|s| !s["last_error"].is_null()))
            })
            .unwrap_or(false);
        (failing && dead && polls).then_some(v)
    });
    eprintln!(
        "secrets: remote failures visible in /status after {:?}",
        t0.elapsed()
    );
    seen.push(("/status".into(), status.to_string()));
    let metrics = rt
        .block_on(async {
            reqwest::get(format!("{admin}/metrics"))
                .await
                .unwrap()
                .text()
                .await
        })
        .unwrap();
    seen.push(("/metrics".into(), metrics));

    // Commands against the running daemon and the failing remotes.
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["outbox"],
        vec!["outbox", "--json"],
        vec!["check", "--online"],
        vec!["inboxes", "--front", "acme"],
        vec!["preview", "--subscription", "support", "cnv_s1"],
    ] {
        let (code, out) = run_cli(&args, &config);
        if args == ["check", "--online"] {
            assert_eq!(code, 1, "a remote check fails: {out}");
        }
        seen.push((format!("frontsync {}", args.join(" ")), out));
    }

    // Stop, then look at everything the daemon printed and wrote.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = wait_until(Duration::from_secs(30), "daemon exit", || {
        child.try_wait().unwrap()
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(exit.code(), Some(0));
    seen.push(("daemon stderr".into(), stderr.lock().unwrap().join("\n")));
    seen.push(("daemon stdout".into(), stdout.lock().unwrap().join("\n")));
    let jsonl = std::fs::read_to_string(root.join("out/highlights.jsonl")).unwrap();
    assert!(!jsonl.is_empty());
    seen.push(("highlights.jsonl".into(), jsonl));

    // Files: 0600 in a 0700 state folder, whatever the umask.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join("state/frontsync.redb")), 0o600);
        assert_eq!(mode(&root.join("state")), 0o700);
        assert_eq!(mode(&root.join("out/highlights.jsonl")), 0o600);
    }

    // Invalid configurations: a literal secret, odd secret tables, a syntax error on the
    // secret's own line; each must be refused without quoting the value.
    let invalid = [
        format!("token = \"{LITERAL}\""),
        format!("token = [\"{LITERAL}\"]"),
        format!("token = {{ value = \"{LITERAL}\" }}"),
        format!("token = {{ env = \"A\", literal = \"{LITERAL}\" }}"),
        // The secret pasted where a variable name belongs.
        format!("token = {{ env = \"{LITERAL}=\" }}"),
        format!("token = \"{LITERAL}"),
        format!("token = '{LITERAL}' x"),
        format!("token = {{ env = {LITERAL} }}"),
        format!("token = \"\"\"{LITERAL}"),
        format!("token = {LITERAL}"),
    ];
    for (i, line) in invalid.iter().enumerate() {
        let text = config_text.replace(
            "token = { file = \"secrets/front-token\" }\nrule",
            &format!("{line}\nrule"),
        );
        assert_ne!(text, config_text);
        let path = root.join(format!("invalid-{i}.toml"));
        std::fs::write(&path, &text).unwrap();
        for cmd in [vec!["check"], vec!["run"]] {
            let (code, out) = run_cli(&cmd, &path);
            assert_eq!(code, 2, "{line}: {out}");
            seen.push((format!("{} on {line}", cmd[0]), out));
        }
    }
    // A secret file that is missing, and an env var that is unset: named, never read out.
    let text = config_text
        .replace("FRONTSYNC_SEC_APP", "FRONTSYNC_SEC_UNSET")
        .replace("secrets/rule", "secrets/missing");
    let path = root.join("missing.toml");
    std::fs::write(&path, text).unwrap();
    let (code, out) = run_cli(&["check"], &path);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("FRONTSYNC_SEC_UNSET") && out.contains("missing"),
        "{out}"
    );
    seen.push(("check with missing secrets".into(), out));

    if let Some(dump) = std::env::var_os("FRONTSYNC_SECURITY_DUMP") {
        let all: Vec<String> = seen
            .iter()
            .map(|(w, t)| format!("===== {w}\n{t}"))
            .collect();
        std::fs::write(dump, all.join("\n")).unwrap();
    }
    for (what, text) in &seen {
        assert_no_secret(what, text);
    }
    // The state database keeps no secret either.
    let db = std::fs::read(root.join("state/frontsync.redb")).unwrap();
    assert_no_secret("the state database", &String::from_utf8_lossy(&db));
    eprintln!(
        "secrets: {} outputs checked ({} bytes), none holds a secret value",
        seen.len(),
        seen.iter().map(|(_, t)| t.len()).sum::<usize>()
    );
}

fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let into = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stream).lines() {
            match line {
                Ok(l) => into.lock().unwrap().push(l),
                Err(_) => break,
            }
        }
    });
    lines
}
