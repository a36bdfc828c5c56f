//! `TestDaemon`: a temp folder with a config, the real binary started on `127.0.0.1:0`
//! ports (discovered from its JSON log lines), and helpers to sign and send webhooks.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const RULE_SECRET: &str = "rule-secret-for-tests";
pub const APP_SECRET: &str = "app-secret-for-tests";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_frontsync")
}

/// A config with one connection `acme` (both webhook secrets in files), sinks `archive`
/// (jsonl) and `console` (stdout), and subscription `support`. `extra` is appended.
pub fn base_config(dir: &Path, extra: &str) -> String {
    std::fs::write(dir.join("rule.secret"), RULE_SECRET).unwrap();
    std::fs::write(dir.join("app.secret"), APP_SECRET).unwrap();
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
app_webhook_secret = {{ file = "app.secret" }}

[sinks.archive]
type = "jsonl"
path = "out/highlights.jsonl"

[sinks.console]
type = "stdout"

[[subscription]]
name = "support"
front = "acme"
sinks = ["archive", "console"]
emit = ["created", "updated"]
{extra}
"#
    )
}

pub struct TestDaemon {
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub webhook: Option<SocketAddr>,
    pub admin: SocketAddr,
}

impl TestDaemon {
    /// Starts the daemon on `config_text` written to `dir/config.toml`; waits until ready.
    pub fn start(dir: &Path, config_text: &str) -> TestDaemon {
        let config = dir.join("config.toml");
        std::fs::write(&config, config_text).unwrap();
        Self::start_existing(dir)
    }

    /// Starts the daemon on the config already in `dir/config.toml`.
    pub fn start_existing(dir: &Path) -> TestDaemon {
        Self::start_with_env(dir, &[])
    }

    /// Like `start_existing`, with extra environment variables.
    pub fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> TestDaemon {
        let config = dir.join("config.toml");
        let mut child = Command::new(bin())
            .args([
                "--log-format",
                "json",
                "--log-level",
                "info",
                "run",
                "--config",
            ])
            .arg(&config)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start frontsync");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        pump(child.stderr.take().unwrap(), stderr.clone());
        pump(child.stdout.take().unwrap(), stdout.clone());
        let mut d = TestDaemon {
            dir: dir.to_path_buf(),
            config,
            child: Some(child),
            stderr,
            stdout,
            webhook: None,
            admin: "127.0.0.1:0".parse().unwrap(),
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lines = self.stderr.lock().unwrap().clone();
            let mut ready = false;
            for line in &lines {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                match (v["message"].as_str(), v["listener"].as_str()) {
                    (Some("listening"), Some("webhook")) => {
                        self.webhook = v["addr"].as_str().and_then(|a| a.parse().ok())
                    }
                    (Some("listening"), Some("admin")) => {
                        self.admin = v["addr"].as_str().and_then(|a| a.parse().ok()).unwrap()
                    }
                    (Some("ready"), _) => ready = true,
                    _ => {}
                }
            }
            if ready {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "daemon exited early with {status}; stderr:\n{}",
                    lines.join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready; stderr:\n{}",
                lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn webhook_url(&self, connection: &str) -> String {
        format!(
            "http://{}/webhooks/front/{connection}",
            self.webhook.expect("webhook listener")
        )
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// The daemon's `/status` document, or `None` when it does not answer (yet).
    pub fn try_status(&self) -> Option<Value> {
        let url = format!("http://{}/status", self.admin);
        runtime().block_on(async { reqwest::get(url).await.ok()?.json().await.ok() })
    }

    /// The daemon's `/status` document.
    pub fn status(&self) -> Value {
        self.try_status().expect("the daemon answers /status")
    }

    /// Sends a signal by name (`HUP`, `TERM`...).
    pub fn signal(&self, sig: &str) {
        unsafe_kill(self.pid(), sig)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Waits for a JSON log line whose `message` is `message`; returns it.
    pub fn wait_log(&self, message: &str, secs: u64) -> Value {
        wait_until(
            Duration::from_secs(secs),
            &format!("log {message:?}"),
            || {
                self.stderr
                    .lock()
                    .unwrap()
                    .iter()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|v| v["message"] == message)
            },
        )
    }

    /// How many JSON log lines have `message`.
    pub fn count_log(&self, message: &str) -> usize {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == message)
            .count()
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(mut self) -> (i32, TestDaemonOutput) {
        let pid = self.pid();
        unsafe_kill(pid, "TERM");
        let status = wait_timeout(self.child.as_mut().unwrap(), Duration::from_secs(30));
        self.child = None;
        // Let the pump threads read to EOF.
        std::thread::sleep(Duration::from_millis(100));
        (
            status,
            TestDaemonOutput {
                stdout: self.stdout.lock().unwrap().clone(),
                stderr: self.stderr.lock().unwrap().clone(),
            },
        )
    }

    /// Waits for an exit already requested (e.g. by a signal sent with `signal_pid`).
    pub fn terminate_wait(mut self) -> (i32, TestDaemonOutput) {
        let status = wait_timeout(self.child.as_mut().unwrap(), Duration::from_secs(30));
        self.child = None;
        std::thread::sleep(Duration::from_millis(100));
        (
            status,
            TestDaemonOutput {
                stdout: self.stdout.lock().unwrap().clone(),
                stderr: self.stderr.lock().unwrap().clone(),
            },
        )
    }

    /// SIGKILL: no cleanup at all.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn jsonl_path(&self) -> PathBuf {
        self.dir.join("out/highlights.jsonl")
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct TestDaemonOutput {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

fn pump(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(l) => into.lock().unwrap().push(l),
                Err(_) => break,
            }
        }
    });
}

/// Sends a signal to a pid by name.
pub fn signal_pid(pid: i32, sig: &str) {
    unsafe_kill(pid, sig)
}

fn unsafe_kill(pid: i32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_timeout(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not exit in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` until it returns Some, or panics after `limit`.
pub fn wait_until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The JSONL file's lines, parsed (missing file = none).
///
/// A file read while the daemon writes a batch can end in the middle of a line: a regular
/// file's size grows page by page during one `write`, and a concurrent read sees what is
/// there so far. So a torn last line is read again until it is whole; one that stays torn
/// for a second is what the sink must never leave, and fails the test.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let what = format!(
        "a whole last line in {} (torn for a second)",
        path.display()
    );
    let text = wait_until(
        Duration::from_secs(1),
        &what,
        || match std::fs::read_to_string(path) {
            Ok(text) if text.is_empty() || text.ends_with('\n') => Some(text),
            Ok(_) => None,
            Err(_) => Some(String::new()),
        },
    );
    text.lines()
        .map(|l| serde_json::from_str(l).expect("valid json line"))
        .collect()
}

/// Signs like a Front rule webhook with the test secret (the scheme is pinned by known
/// vectors in `webhook::verify`'s unit tests).
pub fn sign_rule(body: &[u8]) -> String {
    frontsync::webhook::verify::sign_rule(RULE_SECRET.as_bytes(), body)
}

/// Signs like a Front application webhook with the test secret.
pub fn sign_app(ts: &str, body: &[u8]) -> String {
    frontsync::webhook::verify::sign_app(APP_SECRET.as_bytes(), ts, body)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A full Front `inbound` event, shaped like Front's `/events` results.
pub fn inbound_event(event_id: &str, conversation_id: &str, subject: &str, text: &str) -> Value {
    json!({
        "_links": { "self": format!("https://acme.api.frontapp.com/events/{event_id}") },
        "id": event_id,
        "type": "inbound",
        "emitted_at": 1763716443.012,
        "source": {
            "_meta": { "type": "inboxes" },
            "data": [ { "id": "inb_123", "name": "Support", "is_private": false } ]
        },
        "target": {
            "_meta": { "type": "message" },
            "data": {
                "_links": { "self": "https://acme.api.frontapp.com/messages/msg_1" },
                "id": format!("msg_{event_id}"),
                "type": "email",
                "is_inbound": true,
                "created_at": 1763716443.012,
                "subject": subject,
                "blurb": text,
                "body": format!("<p>{text}</p>"),
                "text": text,
                "author": null,
                "recipients": [
                    { "name": "Ada Lovelace", "handle": "ada@example.com", "role": "from" },
                    { "name": "Support", "handle": "support@acme.test", "role": "to" }
                ],
                "attachments": []
            }
        },
        "conversation": {
            "_links": { "self": format!("https://acme.api.frontapp.com/conversations/{conversation_id}") },
            "id": conversation_id,
            "type": "conversation",
            "subject": subject,
            "status": "assigned",
            "assignee": {
                "id": "tea_2ab4", "email": "grace@acme.test", "username": "grace",
                "first_name": "Grace", "last_name": "Hopper", "is_admin": false
            },
            "recipient": { "name": "Ada Lovelace", "handle": "ada@example.com", "role": "from" },
            "tags": [ { "id": "tag_1", "name": "billing" }, { "id": "tag_2", "name": "vip" } ],
            "links": [],
            "custom_fields": {},
            "created_at": 1763716443.012,
            "updated_at": 1763716811.5,
            "is_private": false,
            "scheduled_reminders": [],
            "metadata": {}
        }
    })
}

/// Posts a rule webhook signed with the test secret.
/// The body of the inbound rule webhook for event `evt_{id}` in conversation `cnv_{id}`
/// (subject "S", text "B"): the event most tests send.
pub fn inbound_body(id: &str) -> Vec<u8> {
    serde_json::to_vec(&inbound_event(
        &format!("evt_{id}"),
        &format!("cnv_{id}"),
        "S",
        "B",
    ))
    .expect("an event serializes")
}

/// Posts [`inbound_body`]`(id)`, signed, to the daemon's connection `acme`; the answer.
pub fn post_inbound(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    d: &TestDaemon,
    id: &str,
) -> reqwest::Response {
    rt.block_on(post_rule(client, &d.webhook_url("acme"), &inbound_body(id)))
}

pub async fn post_rule(client: &reqwest::Client, url: &str, body: &[u8]) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-front-signature", sign_rule(body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// Posts an application webhook (envelope around `event`) signed now.
pub async fn post_app(client: &reqwest::Client, url: &str, event: &Value) -> reqwest::Response {
    let body = serde_json::to_vec(&json!({
        "type": "inbound_received",
        "authorization": { "id": "cmp_1" },
        "payload": event
    }))
    .unwrap();
    let ts = now_ms().to_string();
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-front-request-timestamp", &ts)
        .header("x-front-signature", sign_app(&ts, &body))
        .body(body)
        .send()
        .await
        .unwrap()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
