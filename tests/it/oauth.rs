//! OAuth connections end to end: `frontsync auth front NAME` (browser redirect to the
//! loopback listener, or `--code`), the daemon polling with the stored grant, refreshes
//! ahead of expiry and after a 401, rotated refresh tokens across a restart and across a
//! crash, a refused grant, no grant yet, and a grant handed to the running daemon.
//!
//! Each test checks that no token (nor the client secret) shows in the command's output,
//! the daemon's logs, `/status` or `/metrics`.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::fake::front::{FakeFront, inbound_event_at};
use crate::fake::oauth::{
    ACCESS_PREFIX, CLIENT_ID, CLIENT_SECRET, FakeOAuth, REFRESH_PREFIX, Rotation, decode_form,
};
use crate::harness::*;

fn now_secs() -> f64 {
    now_ms() as f64 / 1000.0
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One OAuth connection of a test config.
struct Conn<'a> {
    name: &'a str,
    front: &'a FakeFront,
    oauth: &'a FakeOAuth,
    redirect_port: u16,
}

impl Conn<'_> {
    fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.redirect_port)
    }
}

/// A config with the OAuth connections `conns`, one JSONL sink and `subscriptions`; the
/// admin listener on a fixed free port (so `frontsync auth` can find the daemon).
fn write_config(dir: &Path, conns: &[&Conn<'_>], subscriptions: &str) {
    let mut text = format!(
        "[state]\npath = \"state/frontsync.redb\"\n\n[admin]\nlisten = \"127.0.0.1:{}\"\n\n",
        free_port()
    );
    for c in conns {
        std::fs::write(dir.join(format!("{}.oauth.secret", c.name)), CLIENT_SECRET).unwrap();
        text.push_str(&format!(
            r#"[front.{name}]
api_base = "{api}"
rate_limit_rpm = 6000

[front.{name}.auth.oauth]
client_id = "{CLIENT_ID}"
client_secret = {{ file = "{name}.oauth.secret" }}
authorize_url = "{authorize}"
token_url = "{token}"
redirect_uri = "{redirect}"

"#,
            name = c.name,
            api = c.front.base_url(),
            authorize = c.oauth.authorize_url(),
            token = c.oauth.token_url(),
            redirect = c.redirect_uri(),
        ));
    }
    text.push_str("[sinks.archive]\ntype = \"jsonl\"\npath = \"out/highlights.jsonl\"\n\n");
    text.push_str(subscriptions);
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

fn subscription(name: &str, front: &str) -> String {
    format!(
        "[[subscription]]\nname = \"{name}\"\nfront = \"{front}\"\nsinks = [\"archive\"]\nbackfill = \"1h\"\npoll_interval = \"1s\"\n\n"
    )
}

/// Front accepts whatever access token the fake OAuth server issued last, and nothing
/// else: an old token gets 401, as an expired or revoked one would.
fn link(front: &Arc<FakeFront>, oauth: &FakeOAuth) {
    let front = Arc::downgrade(front);
    oauth.on_issue(move |token| {
        if let Some(front) = front.upgrade() {
            front.set_token(token);
        }
    });
}

/// Runs the CLI on `dir/config.toml`: (exit code, stdout, stderr).
fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env_remove("RUST_LOG")
        .env_remove("FRONTSYNC_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `frontsync auth front NAME --code CODE` with a code the fake issued (as if the admin
/// approved in a browser elsewhere and pasted the code).
fn authorize_with_code(dir: &Path, conn: &Conn<'_>) -> (String, String) {
    let code = conn.oauth.issue_code(&conn.redirect_uri());
    let (status, out, err) = cli(dir, &["auth", "front", conn.name, "--code", &code]);
    assert_eq!(status, 0, "auth failed:\n{out}\n{err}");
    (out, err)
}

/// Fails when `text` shows a token or the client secret.
fn assert_no_secrets(what: &str, text: &str, oauths: &[&FakeOAuth]) {
    for oauth in oauths {
        for secret in oauth.secrets() {
            assert!(!text.contains(&secret), "{what} shows a secret:\n{text}");
        }
    }
    for prefix in [ACCESS_PREFIX, REFRESH_PREFIX, CLIENT_SECRET] {
        assert!(!text.contains(prefix), "{what} shows a secret:\n{text}");
    }
}

fn logs(d: &TestDaemon) -> String {
    let mut all = d.stderr.lock().unwrap().join("\n");
    all.push('\n');
    all.push_str(&d.stdout.lock().unwrap().join("\n"));
    all
}

fn get_text(url: String) -> String {
    runtime().block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

fn status(d: &TestDaemon) -> Value {
    serde_json::from_str(&get_text(format!("http://{}/status", d.admin))).unwrap()
}

/// Logs, `/status` and `/metrics` of a running daemon show no secret.
fn assert_daemon_keeps_secrets(d: &TestDaemon, oauths: &[&FakeOAuth]) {
    assert_no_secrets(
        "/status",
        &get_text(format!("http://{}/status", d.admin)),
        oauths,
    );
    assert_no_secrets(
        "/metrics",
        &get_text(format!("http://{}/metrics", d.admin)),
        oauths,
    );
    assert_no_secrets("the daemon's logs", &logs(d), oauths);
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

fn assert_unique(lines: &[Value]) {
    let mut ids: Vec<String> = lines
        .iter()
        .map(|l| format!("{}:{}", l["id"], l["revision"]))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate highlights");
}

/// JSON log lines at ERROR for `connection` with `message`.
fn errors(d: &TestDaemon, connection: &str, message: &str) -> Vec<Value> {
    d.stderr
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["level"] == "ERROR" && v["connection"] == connection && v["message"] == message
        })
        .collect()
}

fn count_401(front: &FakeFront) -> usize {
    front.requests().iter().filter(|r| r.status == 401).count()
}

#[test]
fn authorize_in_a_browser_through_the_loopback_listener_then_poll() {
    let front = Arc::new(FakeFront::start());
    front.seed_inbound(3, now_secs() - 600.0, 5.0);
    let oauth = FakeOAuth::start();
    link(&front, &oauth);
    let dir = tempfile::tempdir().unwrap();
    let conn = Conn {
        name: "acme",
        front: &front,
        oauth: &oauth,
        redirect_port: free_port(),
    };
    write_config(dir.path(), &[&conn], &subscription("support", "acme"));

    let mut child = Command::new(bin())
        .args(["auth", "front", "acme", "--config"])
        .arg(dir.path().join("config.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let stdout_lines = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let lines = stdout_lines.clone();
        let pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }
    // The first line is the authorize URL.
    let url = wait_until(Duration::from_secs(10), "the authorize url", || {
        stdout_lines.lock().unwrap().first().cloned()
    });
    let url = reqwest::Url::parse(url.trim()).unwrap();
    assert!(url.as_str().starts_with(&oauth.authorize_url()), "{url}");
    let params = decode_form(url.query().unwrap());
    let redirect_uri = params["redirect_uri"].clone();
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], CLIENT_ID);
    assert!(redirect_uri.starts_with("http://127.0.0.1:") && redirect_uri.ends_with("/callback"));
    let state = &params["state"];
    assert!(
        state.len() == 32 && state.bytes().all(|b| b.is_ascii_hexdigit()),
        "{state}"
    );

    let rt = runtime();
    let browser = reqwest::Client::new();
    // A redirect this command did not start (another state) is refused; it keeps waiting.
    let forged = wait_until(Duration::from_secs(10), "the loopback listener", || {
        rt.block_on(
            browser
                .get(format!("{redirect_uri}?code=forged&state=0123"))
                .send(),
        )
        .ok()
    });
    assert_eq!(forged.status(), 400);
    assert!(rt.block_on(forged.text()).unwrap().contains("state"));
    // The browser: Front's consent page (the fake approves at once) redirects to the
    // listener, which answers once the grant is stored.
    let page = rt.block_on(browser.get(url.as_str()).send()).unwrap();
    assert_eq!(page.status(), 200);
    let page = rt.block_on(page.text()).unwrap();
    assert!(page.contains("frontsync is authorized"), "{page}");

    let exit = wait_until(Duration::from_secs(20), "auth to exit", || {
        child.try_wait().unwrap()
    });
    let stderr = stderr.join().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let stdout = stdout_lines.lock().unwrap().join("\n");
    assert!(exit.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("connection acme is authorized"), "{stdout}");
    assert!(stderr.contains("front accepts the token"), "{stderr}");
    assert!(stderr.contains("ignored a redirect"), "{stderr}");
    for text in [&stdout, &stderr, &page] {
        assert_no_secrets("the auth command", text, &[&oauth]);
    }
    let exchanges: Vec<_> = oauth
        .requests()
        .into_iter()
        .filter(|r| r.grant_type == "authorization_code")
        .collect();
    assert_eq!(exchanges.len(), 1, "{exchanges:?}");
    assert!(exchanges[0].client_ok, "http basic client credentials");
    assert_eq!(
        exchanges[0].redirect_uri.as_deref(),
        Some(redirect_uri.as_str())
    );
    assert_eq!(
        exchanges[0].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(exchanges[0].status, 200);

    // The API commands use the stored grant while the daemon is stopped...
    let (code, out, err) = cli(dir.path(), &["inboxes", "--front", "acme"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("inb_123") && out.contains("Support"), "{out}");

    // The daemon polls with the stored grant.
    let d = TestDaemon::start_existing(dir.path());
    let lines = wait_lines(&d, 3, 20);
    assert_unique(&lines);
    assert_eq!(count_401(&front), 0);
    // ...and say why they cannot while it holds the state file.
    let (code, _, err) = cli(dir.path(), &["inboxes", "--front", "acme"]);
    assert_eq!(code, 1);
    assert!(err.contains("stop the daemon"), "{err}");
    assert_daemon_keeps_secrets(&d, &[&oauth]);
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
}

#[test]
fn a_pasted_code_authorizes_and_tokens_are_refreshed_ahead_of_expiry() {
    let front = Arc::new(FakeFront::start());
    front.seed_inbound(3, now_secs() - 600.0, 5.0);
    let oauth = FakeOAuth::start();
    link(&front, &oauth);
    // Three-second tokens, expires_at in milliseconds: a refresh is due every 1.5 s.
    oauth.set_lifetime(Duration::from_secs(3));
    oauth.set_expires_at_ms(true);
    let dir = tempfile::tempdir().unwrap();
    let conn = Conn {
        name: "acme",
        front: &front,
        oauth: &oauth,
        redirect_port: free_port(),
    };
    write_config(dir.path(), &[&conn], &subscription("support", "acme"));
    let (out, err) = authorize_with_code(dir.path(), &conn);
    assert!(out.contains("connection acme is authorized"), "{out}");
    assert!(err.contains("state check is skipped"), "{err}");
    assert_no_secrets("the auth command", &format!("{out}{err}"), &[&oauth]);

    let d = TestDaemon::start_existing(dir.path());
    wait_lines(&d, 3, 20);
    wait_until(Duration::from_secs(20), "two refreshes", || {
        (oauth.refreshes().len() >= 2).then_some(())
    });
    front.add_event(inbound_event_at(
        "evt_after_refresh",
        "cnv_after_refresh",
        now_secs() - 1.0,
        "After",
        "a refresh",
    ));
    let lines = wait_lines(&d, 4, 20);
    assert_unique(&lines);
    // Refreshed before expiry: Front never saw an expired (replaced) token.
    assert_eq!(count_401(&front), 0, "{:?}", front.requests());
    assert!(d.count_log("oauth access token refreshed") >= 2);
    assert!(oauth.refreshes().iter().all(|r| r.client_ok));
    assert_daemon_keeps_secrets(&d, &[&oauth]);
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
}

#[test]
fn a_401_refreshes_the_token_once_and_polling_goes_on() {
    let front = Arc::new(FakeFront::start());
    front.seed_inbound(2, now_secs() - 600.0, 5.0);
    let oauth = FakeOAuth::start();
    link(&front, &oauth);
    let dir = tempfile::tempdir().unwrap();
    let conn = Conn {
        name: "acme",
        front: &front,
        oauth: &oauth,
        redirect_port: free_port(),
    };
    write_config(dir.path(), &[&conn], &subscription("support", "acme"));
    authorize_with_code(dir.path(), &conn);
    let d = TestDaemon::start_existing(dir.path());
    wait_lines(&d, 2, 20);
    assert!(
        oauth.refreshes().is_empty(),
        "an hour-long token is not refreshed yet"
    );

    // Front stops accepting the access token (revoked, or expired early).
    front.set_token("no-longer-the-issued-token");
    front.add_event(inbound_event_at(
        "evt_after_401",
        "cnv_after_401",
        now_secs() - 1.0,
        "After",
        "a 401",
    ));
    let lines = wait_lines(&d, 3, 20);
    assert_unique(&lines);
    assert_eq!(oauth.refreshes().len(), 1);
    assert!(count_401(&front) >= 1);
    assert!(errors(&d, "acme", "polling stopped for this connection").is_empty());
    assert_daemon_keeps_secrets(&d, &[&oauth]);
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
}

#[test]
fn a_rotated_refresh_token_is_the_one_used_after_a_restart() {
    let front = Arc::new(FakeFront::start());
    front.seed_inbound(2, now_secs() - 600.0, 5.0);
    let oauth = FakeOAuth::start();
    link(&front, &oauth);
    // Every refresh retires the refresh token presented: only the latest one works.
    oauth.set_rotation(Rotation::Strict);
    oauth.set_lifetime(Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap();
    let conn = Conn {
        name: "acme",
        front: &front,
        oauth: &oauth,
        redirect_port: free_port(),
    };
    write_config(dir.path(), &[&conn], &subscription("support", "acme"));
    authorize_with_code(dir.path(), &conn);
    let d = TestDaemon::start_existing(dir.path());
    wait_lines(&d, 2, 20);
    wait_until(Duration::from_secs(20), "a rotation", || {
        (oauth.refreshes().len() >= 2).then_some(())
    });
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
    let before = oauth.refreshes().len();
    let latest = oauth.issued_refresh_tokens().last().cloned().unwrap();

    let d = TestDaemon::start_existing(dir.path());
    wait_until(
        Duration::from_secs(20),
        "a refresh after the restart",
        || (oauth.refreshes().len() > before).then_some(()),
    );
    assert_eq!(
        oauth.refreshes()[before].refresh_token.as_deref(),
        Some(latest.as_str()),
        "the restart presents the last refresh token issued"
    );
    assert!(
        oauth.requests().iter().all(|r| r.status == 200),
        "no refresh was refused: {:?}",
        oauth.requests()
    );
    front.add_event(inbound_event_at(
        "evt_after_restart",
        "cnv_after_restart",
        now_secs() - 1.0,
        "After",
        "a restart",
    ));
    let lines = wait_lines(&d, 3, 20);
    assert_unique(&lines);
    assert_daemon_keeps_secrets(&d, &[&oauth]);
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
}

/// The daemon dies (`kill -9`) as the token endpoint answers a refresh: the fake has
/// rotated the refresh token and built its answer, and kills the daemon just before
/// sending it. The new refresh token never reaches the state file, which is exactly the
/// state the file is in when the process dies anywhere between receiving that answer and
/// committing it (the daemon commits before it uses or forgets anything).
///
/// Assumption, stated because Front does not document it: like the fake's
/// [`Rotation::Grace`] (and many rotating providers), the endpoint keeps the presented
/// refresh token valid until its successor is used. Front's documentation only says a
/// refresh returns "the same, or a new" refresh token. Under that assumption the stored
/// (previous) grant still works after the restart; without it no client could recover
/// from a crash in that window, since the new token is only ever learnt from the answer.
#[test]
fn a_crash_between_the_refresh_answer_and_its_commit_leaves_a_working_grant() {
    let front = Arc::new(FakeFront::start());
    front.seed_inbound(2, now_secs() - 600.0, 5.0);
    let oauth = FakeOAuth::start();
    link(&front, &oauth);
    oauth.set_rotation(Rotation::Grace);
    oauth.set_lifetime(Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap();
    let conn = Conn {
        name: "acme",
        front: &front,
        oauth: &oauth,
        redirect_port: free_port(),
    };
    write_config(dir.path(), &[&conn], &subscription("support", "acme"));
    authorize_with_code(dir.path(), &conn);
    let first_refresh = oauth.issued_refresh_tokens()[0].clone();

    // Armed before the daemon starts (its first refresh is due 1.5 s after auth); the
    // hook waits for the pid.
    let pid: Arc<Mutex<Option<i32>>> = Arc::new(Mutex::new(None));
    {
        let pid = pid.clone();
        oauth.before_next_refresh_answer(move || {
            let pid = wait_until(Duration::from_secs(10), "the daemon's pid", || {
                *pid.lock().unwrap()
            });
            signal_pid(pid, "KILL");
        });
    }
    let mut d = TestDaemon::start_existing(dir.path());
    *pid.lock().unwrap() = Some(d.pid());
    wait_until(Duration::from_secs(20), "the kill", || {
        (!d.is_running()).then_some(())
    });
    let killed_at = oauth.refreshes().len();
    assert_eq!(killed_at, 1, "the answer that rotated the token");
    let unseen = oauth.issued_refresh_tokens().last().cloned().unwrap();
    assert_ne!(unseen, first_refresh, "the endpoint rotated");
    let before_crash = read_jsonl(&dir.path().join("out/highlights.jsonl")).len();
    drop(d);

    let d = TestDaemon::start_existing(dir.path());
    front.add_event(inbound_event_at(
        "evt_after_crash",
        "cnv_after_crash",
        now_secs() - 1.0,
        "After",
        "a crash",
    ));
    let lines = wait_lines(&d, 3, 30);
    assert_unique(&lines);
    assert!(before_crash <= 2);
    let refreshes = oauth.refreshes();
    assert!(refreshes.len() > killed_at);
    // The stored grant was the previous one: it was presented again, the unseen one never.
    assert_eq!(
        refreshes[killed_at].refresh_token.as_deref(),
        Some(first_refresh.as_str())
    );
    assert!(
        refreshes
            .iter()
            .all(|r| r.refresh_token.as_deref() != Some(unseen.as_str()))
    );
    assert!(errors(&d, "acme", "polling stopped for this connection").is_empty());
    assert_daemon_keeps_secrets(&d, &[&oauth]);
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
}

#[test]
fn a_refused_grant_stops_only_its_connection_with_one_clear_error() {
    let front_a = Arc::new(FakeFront::start());
    front_a.seed_inbound(2, now_secs() - 600.0, 5.0);
    let oauth_a = FakeOAuth::start();
    link(&front_a, &oauth_a);
    let front_b = Arc::new(FakeFront::start());
    front_b.seed_inbound(2, now_secs() - 600.0, 5.0);
    let oauth_b = FakeOAuth::start();
    link(&front_b, &oauth_b);
    let dir = tempfile::tempdir().unwrap();
    let a = Conn {
        name: "acme",
        front: &front_a,
        oauth: &oauth_a,
        redirect_port: free_port(),
    };
    let b = Conn {
        name: "beta",
        front: &front_b,
        oauth: &oauth_b,
        redirect_port: free_port(),
    };
    let subs = format!(
        "{}{}",
        subscription("support", "acme"),
        subscription("sales", "beta")
    );
    write_config(dir.path(), &[&a, &b], &subs);
    authorize_with_code(dir.path(), &a);
    authorize_with_code(dir.path(), &b);

    let d = TestDaemon::start_existing(dir.path());
    wait_lines(&d, 4, 20);
    // The admin revokes the app in acme's Front: the token stops working, the refresh
    // token is refused.
    oauth_a.revoke_all();
    front_a.set_token("revoked");
    let error = wait_until(Duration::from_secs(20), "the invalid_grant error", || {
        errors(&d, "acme", "polling stopped for this connection")
            .into_iter()
            .next()
    });
    let text = error["error"].as_str().unwrap();
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(text.contains("frontsync auth front acme"), "{text}");

    // beta keeps working.
    front_b.add_event(inbound_event_at(
        "evt_beta_later",
        "cnv_beta_later",
        now_secs() - 1.0,
        "Beta",
        "still flowing",
    ));
    let lines = wait_lines(&d, 5, 20);
    assert!(lines.iter().any(|l| l["id"] == "sales:cnv_beta_later"));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        errors(&d, "acme", "polling stopped for this connection").len(),
        1,
        "one error, not one per poll"
    );
    assert!(errors(&d, "beta", "polling stopped for this connection").is_empty());
    let s = status(&d);
    assert!(
        s["subscriptions"]["support"]["last_error"]
            .as_str()
            .unwrap()
            .contains("frontsync auth front acme"),
        "{s}"
    );
    assert!(s["subscriptions"]["sales"]["last_error"].is_null(), "{s}");
    // The refused refresh token is not presented again and again.
    let refused = oauth_a
        .requests()
        .iter()
        .filter(|r| r.grant_type == "refresh_token")
        .count();
    assert_eq!(refused, 1);
    assert_daemon_keeps_secrets(&d, &[&oauth_a, &oauth_b]);
    let (code, _) = d.terminate();
    assert_eq!(code, 0);
}

#[test]
fn without_a_grant_the_daemon_says_to_authorize_and_resumes_when_auth_hands_one_over() {
    let front = Arc::new(FakeFront::start());
    front.seed_inbound(2, now_secs() - 600.0, 5.0);
    let oauth = FakeOAuth::start();
    link(&front, &oauth);
    let dir = tempfile::tempdir().unwrap();
    let conn = Conn {
        name: "acme",
        front: &front,
        oauth: &oauth,
        redirect_port: free_port(),
    };
    write_config(dir.path(), &[&conn], &subscription("support", "acme"));
    let d = TestDaemon::start_existing(dir.path());
    let error = wait_until(Duration::from_secs(20), "the no-grant error", || {
        errors(&d, "acme", "polling stopped for this connection")
            .into_iter()
            .next()
    });
    let text = error["error"].as_str().unwrap();
    assert!(text.contains("no oauth grant"), "{text}");
    assert!(
        text.contains("frontsync auth front acme --config"),
        "{text}"
    );
    assert_eq!(front.requests().len(), 0, "nothing is sent without a token");

    // The hand-over is refused without the app's signature (any local user can reach a
    // loopback port).
    let forged = runtime().block_on(async {
        reqwest::Client::new()
            .post(format!("http://{}/oauth/acme/grant", d.admin))
            .header("content-type", "application/json")
            .header("x-frontsync-signature", "AAAA")
            .body(format!(
                r#"{{"access_token":"x","refresh_token":"y","access_expires_at_ms":{0},"obtained_at_ms":{0}}}"#,
                now_ms()
            ))
            .send()
            .await
            .unwrap()
    });
    assert_eq!(forged.status(), 401);

    // `auth` while the daemon holds the state file: through the admin listener.
    let (out, err) = authorize_with_code(dir.path(), &conn);
    assert!(
        out.contains("the running daemon stored the grant"),
        "{out}\n{err}"
    );
    // The poller wakes at once (its retry after an auth error is minutes away).
    let lines = wait_lines(&d, 2, 10);
    assert_unique(&lines);
    d.wait_log(
        "oauth grant stored by `frontsync auth`; the connection resumes",
        5,
    );
    assert_eq!(
        errors(&d, "acme", "polling stopped for this connection").len(),
        1
    );
    assert_no_secrets("the auth command", &format!("{out}{err}"), &[&oauth]);
    assert_daemon_keeps_secrets(&d, &[&oauth]);
    let (code, _) = d.terminate();
    assert_eq!(code, 0);

    // The grant the daemon committed is there at the next start.
    let d = TestDaemon::start_existing(dir.path());
    front.add_event(inbound_event_at(
        "evt_next_start",
        "cnv_next_start",
        now_secs() - 1.0,
        "Next",
        "start",
    ));
    wait_lines(&d, 3, 20);
    assert!(errors(&d, "acme", "polling stopped for this connection").is_empty());
}
