//! The subcommands, each returning its exit code. Errors go to stderr, one line per cause.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use frontsync_sinks::Change;

use crate::cli::OutboxAction;
use crate::config::{self, Config, SinkConfig};
use crate::daemon;
use crate::front::client::FrontClient;
use crate::front::model::{Event, Inbox, Me};
use crate::front::ratelimit::RateLimiter;
use crate::normalize::{highlight, snapshot_from_event};

/// Prints an error chain as one lowercase line per cause.
fn report(err: &anyhow::Error) {
    for cause in err.chain() {
        eprintln!("error: {cause}");
    }
}

fn load(path: &Path) -> Result<Config, u8> {
    config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        2
    })
}

/// `frontsync run`.
pub fn run(path: &Path) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let shutdown = CancellationToken::new();
    let (control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
    if let Err(e) = crate::signals::install(shutdown.clone(), control_tx) {
        eprintln!("error: cannot install signal handlers: {e}");
        return 1;
    }
    let result = runtime.block_on(daemon::run(config, shutdown, control_rx, |_| {}));
    match result {
        Ok(()) => 0,
        Err(daemon::RunError::Config(msg)) => {
            for line in msg.lines() {
                eprintln!("error: {line}");
            }
            2
        }
        Err(daemon::RunError::Failure(e)) => {
            report(&e);
            1
        }
    }
}

/// `frontsync check`.
pub fn check(path: &Path, online: bool) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let secret_errors = config.check_secrets();
    for e in &secret_errors {
        eprintln!("{}: {e}", path.display());
    }
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    if !secret_errors.is_empty() {
        return 2;
    }
    for line in config.summary() {
        println!("{line}");
    }
    if online {
        let Some(runtime) = small_runtime() else {
            return 1;
        };
        return if runtime.block_on(check_online(&config)) {
            0
        } else {
            1
        };
    }
    0
}

/// `frontsync status`.
pub fn status(path: &Path, raw_json: bool) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let url = format!("http://{}/status", config.admin.listen);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let fetched = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()?;
        client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json::<serde_json::Value>()
            .await
    });
    let doc = match fetched {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: the daemon is not reachable at {url}: {e}");
            return 1;
        }
    };
    if raw_json {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", render_status(&doc));
    }
    0
}

/// The `/status` document as a readable table.
pub fn render_status(doc: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let dash = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let _ = writeln!(
        out,
        "{:<24} {:>12} {:>8} {:<22} LAST ERROR",
        "SUBSCRIPTION", "CURSOR", "LAG S", "LAST POLL"
    );
    if let Some(subs) = doc["subscriptions"].as_object() {
        for (name, s) in subs {
            let _ = writeln!(
                out,
                "{:<24} {:>12} {:>8} {:<22} {}",
                name,
                dash(&s["cursor"]),
                dash(&s["lag_seconds"]),
                dash(&s["last_poll_at"]),
                dash(&s["last_error"])
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<24} {:>8} {:>8} {:>10} LAST ERROR",
        "SINK", "OUTBOX", "DEAD", "DELIVERED"
    );
    if let Some(sinks) = doc["sinks"].as_object() {
        for (name, s) in sinks {
            let _ = writeln!(
                out,
                "{:<24} {:>8} {:>8} {:>10} {}",
                name,
                dash(&s["outbox_depth"]),
                dash(&s["dead_letters"]),
                dash(&s["delivered_total"]),
                dash(&s["last_error"])
            );
        }
    }
    out
}

fn small_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// A client for one connection, or a printed error.
fn front_client(config: &Config, name: &str) -> Option<FrontClient> {
    let Some(front) = config.front.get(name) else {
        eprintln!(
            "error: no [front.{name}] in {}",
            config.source_path.display()
        );
        return None;
    };
    if let Some(oauth) = &front.oauth {
        return oauth_client(config, name, front, oauth);
    }
    let Some(token) = &front.token else {
        eprintln!("error: [front.{name}] has no token; the api cannot be called without one");
        return None;
    };
    let token = match token.resolve() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: [front.{name}] token: {e}");
            return None;
        }
    };
    let limiter = RateLimiter::new(front.rate_limit_rpm);
    match FrontClient::new(name, &front.api_base, token, limiter) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// A client for an OAuth connection, with the grant from the state database. The daemon
/// must not be running (it holds the file); a refresh made here is stored in the file.
fn oauth_client(
    config: &Config,
    name: &str,
    front: &crate::config::FrontConfig,
    oauth: &crate::config::OAuthConfig,
) -> Option<FrontClient> {
    use crate::front::oauth::{OAuthApp, OAuthSource, Persist, auth_command};
    use crate::store::{Store, StoreError};
    let app = match OAuthApp::from_config(oauth) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: [front.{name}] auth.oauth.client_secret: {e}");
            return None;
        }
    };
    let path = &config.state.path;
    if !path.exists() {
        eprintln!(
            "error: [front.{name}] has no oauth grant yet (there is no state database at {}): run `{}`",
            path.display(),
            auth_command(name, &config.source_path)
        );
        return None;
    }
    // One open per process: a second `Store::open` of the same file would be refused as
    // "in use" (`check --online` with two oauth connections).
    static OPENED: std::sync::Mutex<Option<Store>> = std::sync::Mutex::new(None);
    let mut opened = match OPENED.lock() {
        Ok(o) => o,
        Err(p) => p.into_inner(),
    };
    let store = match opened.clone().map_or_else(|| Store::open(path), Ok) {
        Ok(s) => {
            *opened = Some(s.clone());
            s
        }
        Err(StoreError::AlreadyInUse(_)) => {
            eprintln!(
                "error: [front.{name}] uses oauth and its grant is in the state database the running daemon holds: stop the daemon to call front from the command line (the daemon's own view is in `frontsync status`)"
            );
            return None;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    let client = OAuthSource::new(name, &config.source_path, app, store, Persist::Store)
        .map_err(|e| e.to_string())
        .and_then(|source| {
            FrontClient::with_oauth(
                name,
                &front.api_base,
                source,
                RateLimiter::new(front.rate_limit_rpm),
                crate::front::client::ClientOptions::default(),
            )
            .map_err(|e| e.to_string())
        });
    match client {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

/// `check --online`: Front's `/me` and `/inboxes` per connection with a token, then each
/// sink's health check. Prints one line per check; true when all passed.
async fn check_online(config: &Config) -> bool {
    let mut ok = true;
    for (name, front) in &config.front {
        if !front.has_api_access() {
            println!("front {name}: webhook-only (no token), nothing to call");
            continue;
        }
        let Some(client) = front_client(config, name) else {
            ok = false;
            continue;
        };
        let checked = async {
            let me: Me = client.me().await?;
            let inboxes: Vec<Inbox> = client.inboxes().await?;
            Ok::<_, crate::front::client::FrontError>((me, inboxes))
        }
        .await;
        match checked {
            Ok((me, inboxes)) => {
                let private = inboxes
                    .iter()
                    .filter(|i| i.is_private == Some(true))
                    .count();
                println!(
                    "front {name}: ok, company {} ({}), {} inboxes visible ({private} private)",
                    me.name.as_deref().unwrap_or("?"),
                    me.id,
                    inboxes.len()
                );
                for sub in config.subscriptions.iter().filter(|s| &s.front == name) {
                    for wanted in &sub.inboxes {
                        if !inboxes.iter().any(|i| &i.id == wanted || &i.name == wanted) {
                            println!(
                                "front {name}: subscription {}: inbox {wanted:?} is not visible to the token",
                                sub.name
                            );
                            ok = false;
                        }
                    }
                }
            }
            Err(e) => {
                println!("front {name}: failed: {e}");
                ok = false;
            }
        }
    }
    for (name, sink) in &config.sinks {
        let result = match sink {
            SinkConfig::Stdout => Ok(()),
            SinkConfig::Jsonl(j) => {
                frontsync_sinks::jsonl::check_writable(&j.path).map_err(|e| e.to_string())
            }
            SinkConfig::Next(n) => match n.token.resolve() {
                Err(e) => Err(format!("token: {e}")),
                Ok(token) => {
                    match frontsync_sinks::next::NextSink::new(daemon::next_config(
                        n,
                        token.expose(),
                    )) {
                        Err(e) => Err(e),
                        Ok(sink) => sink.health_check().await.map_err(|e| e.to_string()),
                    }
                }
            },
        };
        match result {
            Ok(()) => println!("sink {name}: ok"),
            Err(e) => {
                println!("sink {name}: failed: {e}");
                ok = false;
            }
        }
    }
    ok
}

/// `frontsync inboxes --front NAME`.
pub fn inboxes(path: &Path, front: &str) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(client) = front_client(&config, front) else {
        return 1;
    };
    let Some(runtime) = small_runtime() else {
        return 1;
    };
    match runtime.block_on(client.inboxes::<Inbox>()) {
        Ok(mut list) => {
            list.sort_by(|a, b| a.name.cmp(&b.name));
            println!("{:<20} {:<8} NAME", "ID", "PRIVATE");
            for i in list {
                let private = match i.is_private {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "?",
                };
                println!("{:<20} {:<8} {}", i.id, private, i.name);
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// `frontsync preview --subscription NAME cnv_ID`: fetches the conversation and its latest
/// message and prints the Highlight as a first emission (revision 1). Writes nothing.
pub fn preview(path: &Path, subscription: &str, conversation_id: &str) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(sub) = config.subscriptions.iter().find(|s| s.name == subscription) else {
        eprintln!(
            "error: no subscription named {subscription:?} in {}",
            path.display()
        );
        return 1;
    };
    let Some(client) = front_client(&config, &sub.front) else {
        return 1;
    };
    let Some(runtime) = small_runtime() else {
        return 1;
    };
    let fetched = runtime.block_on(async {
        let conversation: serde_json::Value = client.conversation(conversation_id).await?;
        let mut pager = client.conversation_messages::<serde_json::Value>(conversation_id, 1);
        let latest = pager
            .next_page()
            .await?
            .and_then(|(msgs, _)| msgs.into_iter().next());
        Ok::<_, crate::front::client::FrontError>((conversation, latest))
    });
    let (conversation, latest) = match fetched {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let event: Event = match serde_json::from_value(synthetic_event(conversation, latest)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: front answered something that is not a conversation: {e}");
            return 1;
        }
    };
    let snapshot = match snapshot_from_event(&event) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let mut h = highlight(sub, &snapshot, 1, Change::Created);
    // No event caused this: it was fetched on request.
    h.source.event_id = None;
    match serde_json::to_string_pretty(&h) {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// An event shaped like Front's, made of a conversation and its latest message, so that
/// `preview` goes through exactly the normalization the daemon uses.
fn synthetic_event(
    conversation: serde_json::Value,
    latest: Option<serde_json::Value>,
) -> serde_json::Value {
    let at = latest
        .as_ref()
        .and_then(|m| m["created_at"].as_f64())
        .or_else(|| conversation["updated_at"].as_f64());
    let inbound = latest
        .as_ref()
        .and_then(|m| m["is_inbound"].as_bool())
        .unwrap_or(true);
    let mut event = serde_json::json!({
        "id": "preview",
        "type": if inbound { "inbound" } else { "outbound" },
        "emitted_at": at,
        "conversation": conversation,
    });
    if let Some(m) = latest {
        event["target"] = serde_json::json!({ "_meta": { "type": "message" }, "data": m });
    }
    event
}

/// `frontsync outbox [retry|drop]`: see [`crate::outbox_admin`].
pub fn outbox(path: &Path, action: Option<OutboxAction>, json: bool, limit: usize) -> u8 {
    use crate::outbox_admin::{Action, Command};
    use crate::store::DeadLetterSelection;
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let selection = |all: bool, ids: Vec<u64>| {
        if all {
            DeadLetterSelection::All
        } else {
            DeadLetterSelection::Seqs(ids)
        }
    };
    let command = match action {
        None => Command::List { limit },
        Some(OutboxAction::Retry { sink, all, ids }) => Command::Change {
            action: Action::Retry,
            sink,
            selection: selection(all, ids),
        },
        Some(OutboxAction::Drop { sink, all, ids }) => Command::Change {
            action: Action::Drop,
            sink,
            selection: selection(all, ids),
        },
    };
    crate::outbox_admin::command(&config, command, json)
}

/// `frontsync auth front NAME`: see [`crate::auth`].
pub fn auth(path: &Path, target: crate::cli::AuthTarget) -> u8 {
    let crate::cli::AuthTarget::Front {
        name,
        code,
        timeout,
    } = target;
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::auth::command(&config, &name, crate::auth::AuthOptions { code, timeout })
}
