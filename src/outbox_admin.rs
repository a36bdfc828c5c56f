//! Operator access to the sinks' outboxes and dead letters: `frontsync outbox` (list),
//! `frontsync outbox retry SINK (--all | ID...)` and `frontsync outbox drop SINK (--all | ID...)`,
//! and the admin routes behind them while the daemon runs:
//!
//! - `GET /outbox[?limit=N]`: per sink `outbox_depth`, `dead_letters`, `delivered_total` and
//!   the oldest `N` (default [`DEFAULT_LIST_LIMIT`]) dead letters;
//! - `POST /outbox/{sink}/retry` and `POST /outbox/{sink}/drop` with a JSON body
//!   `{"all": true}` or `{"ids": [7, 9]}`.
//!
//! A dead letter's ID is the outbox seq it had when the sink rejected it. `retry` puts its
//! Highlight back at the END of the sink's outbox with a new seq (its old slot is long
//! past, and the outbox is drained strictly by seq), so it is delivered after everything
//! queued before the retry, possibly after later revisions of the same Highlight: a
//! receiver must keep the highest `revision`, and the command warns when a newer revision
//! was already emitted. Both commands are all or nothing: one unknown ID refuses the lot.
//!
//! The single-writer rule holds in both modes. While the daemon runs, the state file is
//! locked by it, so the command goes through the admin listener and the change is made by
//! the daemon's writer thread, which then wakes the sink. While it is stopped, the command
//! opens the state file itself (no writer is running) and the change is delivered at the
//! next start. Changes are accepted only from loopback peers and only with
//! `Content-Type: application/json` (a web page cannot send that without a preflight the
//! admin listener never grants), even when `[admin] allow_remote` exposes the reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::{Deserialize, Serialize};

use crate::admin::AdminState;
use crate::config::Config;
use crate::http::{Resp, error};
use crate::ingest::{ConversationState, IngestError};
use crate::store::{
    DeadLetterOutcome, DeadLetterSelection, LetterMoved, Store, StoreError, counters,
};

/// Dead letters listed per sink unless asked otherwise.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// The largest accepted `POST /outbox/...` body.
const MAX_BODY_BYTES: usize = 1 << 20;

/// How long the command waits for the daemon.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);

/// Detail lines printed for one retry or drop (the JSON output has them all).
const MAX_PRINTED: usize = 100;

/// Why an outbox command failed. Nothing was changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum OutboxAdminError {
    #[error("unknown sink {sink:?}; configured sinks: {known}")]
    UnknownSink { sink: String, known: String },
    #[error("sink {sink:?} has no dead letter {ids} (see `frontsync outbox`); nothing was changed")]
    UnknownIds { sink: String, ids: String },
    #[error(
        "dead letter {ids} of sink {sink:?} holds no highlight that can be resent (drop it instead); nothing was changed"
    )]
    Unresendable { sink: String, ids: String },
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Writer(#[from] IngestError),
    #[error("the daemon is not reachable at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the daemon refused: {0}")]
    Daemon(String),
}

impl OutboxAdminError {
    fn http_status(&self) -> StatusCode {
        match self {
            OutboxAdminError::UnknownSink { .. } | OutboxAdminError::UnknownIds { .. } => {
                StatusCode::NOT_FOUND
            }
            OutboxAdminError::Unresendable { .. } => StatusCode::CONFLICT,
            OutboxAdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            OutboxAdminError::Writer(IngestError::Stopped) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What to do with the selected dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Back to the end of the outbox.
    Retry,
    /// Deleted for good.
    Drop,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Drop => "drop",
        }
    }
}

/// One `frontsync outbox` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Show every sink, with at most `limit` dead letters each.
    List { limit: usize },
    /// Retry or drop dead letters of one sink.
    Change {
        action: Action,
        sink: String,
        selection: DeadLetterSelection,
    },
}

/// `GET /outbox` and `frontsync outbox --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxReport {
    pub sinks: BTreeMap<String, SinkOutbox>,
}

/// One sink's outbox and dead letters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkOutbox {
    pub outbox_depth: u64,
    /// How many dead letters there are (the list below may be cut at the limit).
    pub dead_letters: u64,
    pub delivered_total: u64,
    /// The oldest dead letters.
    pub dead: Vec<DeadLetterView>,
}

/// A dead letter as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterView {
    /// What `retry` and `drop` take: the outbox seq it had when rejected.
    pub seq: u64,
    pub highlight_id: String,
    pub revision: u64,
    /// The receiver's HTTP status, for HTTP sinks.
    pub status: Option<u16>,
    pub error: String,
    pub body_excerpt: Option<String>,
    pub attempts: u32,
    /// When it was rejected (RFC 3339 UTC).
    pub at: String,
}

/// What a retry or drop did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeReport {
    pub sink: String,
    pub action: Action,
    /// One per dead letter, in seq order; `new_seq` is set for a retry.
    pub letters: Vec<LetterMoved>,
    /// Lowercase, one line each: e.g. a retried revision older than one already emitted.
    pub warnings: Vec<String>,
}

/// The body of `POST /outbox/{sink}/retry|drop`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeRequest {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    ids: Vec<u64>,
}

impl ChangeRequest {
    fn selection(self) -> Result<DeadLetterSelection, OutboxAdminError> {
        match (self.all, self.ids.is_empty()) {
            (true, true) => Ok(DeadLetterSelection::All),
            (false, false) => Ok(DeadLetterSelection::Seqs(self.ids)),
            _ => Err(OutboxAdminError::BadRequest(
                "give either \"all\": true or a non-empty \"ids\" list".into(),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shared by both modes

/// The listing, read from `store` for the named sinks. Blocking.
pub fn report(store: &Store, sinks: &[String], limit: usize) -> Result<OutboxReport, StoreError> {
    let mut out = BTreeMap::new();
    for name in sinks {
        let dead = store
            .dead_letters_head(name, limit)?
            .into_iter()
            .map(|(seq, letter)| DeadLetterView {
                seq,
                highlight_id: letter.highlight["id"].as_str().unwrap_or("").to_string(),
                revision: letter.highlight["revision"].as_u64().unwrap_or(0),
                status: letter.status,
                error: letter.error,
                body_excerpt: letter.body_excerpt,
                attempts: letter.attempts,
                at: crate::normalize::format_ms(i64::try_from(letter.at_ms).unwrap_or(i64::MAX)),
            })
            .collect();
        out.insert(
            name.clone(),
            SinkOutbox {
                outbox_depth: store.outbox_depth(name)?,
                dead_letters: store.counter(counters::DEAD_LETTERS, name)?,
                delivered_total: store.counter(counters::DELIVERED, name)?,
                dead,
            },
        );
    }
    Ok(OutboxReport { sinks: out })
}

fn check_sink(sink: &str, known: &[String]) -> Result<(), OutboxAdminError> {
    if known.iter().any(|k| k == sink) {
        return Ok(());
    }
    Err(OutboxAdminError::UnknownSink {
        sink: sink.to_string(),
        known: if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        },
    })
}

fn join_ids(ids: &[u64]) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Turns the store's answer into a report, or the error that says why nothing changed.
fn interpret(
    sink: &str,
    action: Action,
    outcome: DeadLetterOutcome,
) -> Result<ChangeReport, OutboxAdminError> {
    match outcome {
        DeadLetterOutcome::Done(letters) => Ok(ChangeReport {
            sink: sink.to_string(),
            action,
            letters,
            warnings: Vec::new(),
        }),
        DeadLetterOutcome::Unknown(ids) => Err(OutboxAdminError::UnknownIds {
            sink: sink.to_string(),
            ids: join_ids(&ids),
        }),
        DeadLetterOutcome::Unresendable(ids) => Err(OutboxAdminError::Unresendable {
            sink: sink.to_string(),
            ids: join_ids(&ids),
        }),
    }
}

/// Warns about retried revisions older than the conversation's latest emission: they now
/// arrive after it. Blocking; a read failure only loses the warning.
fn order_warnings(store: &Store, report: &mut ChangeReport) {
    if report.action != Action::Retry {
        return;
    }
    for letter in &report.letters {
        let Some((subscription, conversation)) = letter.highlight_id.split_once(':') else {
            continue;
        };
        let Ok(Some(state)) = store.conversation::<ConversationState>(subscription, conversation)
        else {
            continue;
        };
        if state.revision > letter.revision {
            report.warnings.push(format!(
                "{} revision {} is now queued after revision {}, which was emitted before it; the receiver must keep the highest revision",
                letter.highlight_id, letter.revision, state.revision
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Admin routes (daemon running)

/// Serves `/outbox` and `/outbox/{sink}/{retry|drop}` on the admin listener.
pub async fn handle(state: Arc<AdminState>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let path = req.uri().path().to_string();
    if path == "/outbox" {
        if req.method() != Method::GET {
            return error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        let limit = match list_limit(req.uri().query()) {
            Ok(l) => l,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let sinks = sink_names(&state);
        let store = state.store.clone();
        return match tokio::task::spawn_blocking(move || report(&store, &sinks, limit)).await {
            Ok(Ok(r)) => json_body(StatusCode::OK, &r),
            Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (sink, action) = match parts.as_slice() {
        ["outbox", sink, "retry"] if !sink.is_empty() => (sink.to_string(), Action::Retry),
        ["outbox", sink, "drop"] if !sink.is_empty() => (sink.to_string(), Action::Drop),
        _ => return error(StatusCode::NOT_FOUND, "not found"),
    };
    if let Some(refused) = crate::http::guard_local_json_post(&req, peer, "outbox changes") {
        return refused;
    }
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body too large or cut off"),
    };
    match change_in_daemon(&state, &sink, action, &body).await {
        Ok(report) => json_body(StatusCode::OK, &report),
        Err(e) => error(e.http_status(), &e.to_string()),
    }
}

async fn change_in_daemon(
    state: &AdminState,
    sink: &str,
    action: Action,
    body: &[u8],
) -> Result<ChangeReport, OutboxAdminError> {
    let request: ChangeRequest = serde_json::from_slice(body)
        .map_err(|e| OutboxAdminError::BadRequest(format!("invalid body: {e}")))?;
    let selection = request.selection()?;
    check_sink(sink, &sink_names(state))?;
    // The daemon's own writer: the change is committed in its order with everything else,
    // and it rings the sink's bell after the commit.
    let writer = &state.writer;
    let outcome = match action {
        Action::Retry => writer.requeue_dead_letters(sink, selection).await?,
        Action::Drop => writer.drop_dead_letters(sink, selection).await?,
    };
    let mut report = interpret(sink, action, outcome)?;
    if !report.letters.is_empty() {
        tracing::info!(
            sink,
            action = action.as_str(),
            letters = report.letters.len(),
            "dead letters changed by an operator"
        );
    }
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        order_warnings(&store, &mut report);
        report
    })
    .await
    .map_err(|e| OutboxAdminError::BadRequest(e.to_string()))
}

fn sink_names(state: &AdminState) -> Vec<String> {
    match state.sinks.read() {
        Ok(m) => m.keys().cloned().collect(),
        Err(p) => p.into_inner().keys().cloned().collect(),
    }
}

fn list_limit(query: Option<&str>) -> Result<usize, String> {
    let Some(query) = query else {
        return Ok(DEFAULT_LIST_LIMIT);
    };
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("limit=") {
            return v
                .parse()
                .map_err(|_| format!("limit must be a whole number, not {v:?}"));
        }
    }
    Ok(DEFAULT_LIST_LIMIT)
}

fn json_body<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    match serde_json::to_value(value) {
        Ok(v) => crate::http::json(status, &v),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// The command (daemon running or stopped)

/// What the command did, to print.
enum Done {
    Report(OutboxReport),
    Changed(ChangeReport),
}

/// Runs `frontsync outbox ...` and prints the result; returns the exit code (0 done,
/// 1 refused or failed).
pub fn command(config: &Config, command: Command, json: bool) -> u8 {
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
    let (done, daemon_running) = match runtime.block_on(execute(config, command)) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let printed = match &done {
        Done::Report(r) if json => serde_json::to_string_pretty(r).map(|s| s + "\n"),
        Done::Changed(c) if json => serde_json::to_string_pretty(c).map(|s| s + "\n"),
        Done::Report(r) => Ok(render_report(r)),
        Done::Changed(c) => Ok(render_change(c)),
    };
    match printed {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    }
    if let Done::Changed(c) = &done {
        for w in &c.warnings {
            eprintln!("warning: {w}");
        }
        if c.action == Action::Retry && !c.letters.is_empty() && !daemon_running {
            eprintln!(
                "note: the daemon is not running; the requeued highlights are delivered at its next start"
            );
        }
    }
    0
}

/// Where the command was carried out: the state file itself, or the running daemon.
async fn execute(config: &Config, command: Command) -> Result<(Done, bool), OutboxAdminError> {
    let path = &config.state.path;
    let sinks: Vec<String> = config.sinks.keys().cloned().collect();
    if let Command::Change { sink, .. } = &command {
        // Also keeps the name safe to put in the admin URL.
        check_sink(sink, &sinks)?;
    }
    if !path.exists() {
        // Never create the state file from here: as another user (root) it would leave
        // the daemon a file it cannot write.
        return Ok((without_state(&sinks, command)?, false));
    }
    let open_path = path.clone();
    let opened = tokio::task::spawn_blocking(move || Store::open(&open_path))
        .await
        .map_err(|e| OutboxAdminError::BadRequest(e.to_string()))?;
    match opened {
        Ok(store) => {
            let done = tokio::task::spawn_blocking(move || in_store(&store, &sinks, command))
                .await
                .map_err(|e| OutboxAdminError::BadRequest(e.to_string()))??;
            Ok((done, false))
        }
        // The daemon holds the file: ask it.
        Err(StoreError::AlreadyInUse(_)) => Ok((in_daemon(config, command).await?, true)),
        // Perhaps not ours to open (the daemon runs as another user): the daemon may still
        // answer; if it does not, the open error is the one that explains.
        Err(open_error) => match in_daemon(config, command).await {
            Ok(done) => Ok((done, true)),
            Err(OutboxAdminError::Unreachable { .. }) => Err(open_error.into()),
            Err(other) => Err(other),
        },
    }
}

/// No state file yet: nothing is queued and there are no dead letters.
fn without_state(sinks: &[String], command: Command) -> Result<Done, OutboxAdminError> {
    match command {
        Command::List { .. } => Ok(Done::Report(OutboxReport {
            sinks: sinks
                .iter()
                .map(|s| {
                    (
                        s.clone(),
                        SinkOutbox {
                            outbox_depth: 0,
                            dead_letters: 0,
                            delivered_total: 0,
                            dead: Vec::new(),
                        },
                    )
                })
                .collect(),
        })),
        Command::Change {
            action,
            sink,
            selection,
        } => {
            check_sink(&sink, sinks)?;
            let outcome = match selection {
                DeadLetterSelection::All => DeadLetterOutcome::Done(Vec::new()),
                DeadLetterSelection::Seqs(ids) => DeadLetterOutcome::Unknown(ids),
            };
            interpret(&sink, action, outcome).map(Done::Changed)
        }
    }
}

/// The daemon is stopped and this process holds the state file: no writer runs, so this
/// is the single writer. Blocking.
fn in_store(store: &Store, sinks: &[String], command: Command) -> Result<Done, OutboxAdminError> {
    match command {
        Command::List { limit } => Ok(Done::Report(report(store, sinks, limit)?)),
        Command::Change {
            action,
            sink,
            selection,
        } => {
            check_sink(&sink, sinks)?;
            let outcome = store.write(|t| match action {
                Action::Retry => t.requeue_dead_letters(&sink, &selection),
                Action::Drop => t.drop_dead_letters(&sink, &selection),
            })?;
            let mut report = interpret(&sink, action, outcome)?;
            order_warnings(store, &mut report);
            Ok(Done::Changed(report))
        }
    }
}

/// Through the admin listener at `[admin] listen`.
async fn in_daemon(config: &Config, command: Command) -> Result<Done, OutboxAdminError> {
    let base = format!("http://{}", config.admin.listen);
    let client = reqwest::Client::builder()
        .timeout(DAEMON_TIMEOUT)
        .build()
        .map_err(|e| OutboxAdminError::Unreachable {
            url: base.clone(),
            message: e.to_string(),
        })?;
    let (url, request) = match &command {
        Command::List { limit } => {
            let url = format!("{base}/outbox?limit={limit}");
            (url.clone(), client.get(url))
        }
        Command::Change {
            action,
            sink,
            selection,
        } => {
            let url = format!("{base}/outbox/{sink}/{}", action.as_str());
            let body = match selection {
                DeadLetterSelection::All => serde_json::json!({ "all": true }),
                DeadLetterSelection::Seqs(ids) => serde_json::json!({ "ids": ids }),
            };
            (url.clone(), client.post(url).json(&body))
        }
    };
    let unreachable = |e: reqwest::Error| OutboxAdminError::Unreachable {
        url: url.clone(),
        message: e.to_string(),
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let body = response.bytes().await.map_err(unreachable)?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("http status {status}"));
        return Err(OutboxAdminError::Daemon(message));
    }
    let bad = |e: serde_json::Error| {
        OutboxAdminError::Daemon(format!("unexpected answer from {url}: {e}"))
    };
    Ok(match command {
        Command::List { .. } => Done::Report(serde_json::from_slice(&body).map_err(bad)?),
        Command::Change { .. } => Done::Changed(serde_json::from_slice(&body).map_err(bad)?),
    })
}

// ---------------------------------------------------------------------------------------
// Text output

/// The listing as tables: one line per sink, then each sink's dead letters.
pub fn render_report(report: &OutboxReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>8} {:>8} {:>10}",
        "SINK", "OUTBOX", "DEAD", "DELIVERED"
    );
    for (name, s) in &report.sinks {
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:>8} {:>10}",
            name, s.outbox_depth, s.dead_letters, s.delivered_total
        );
    }
    for (name, s) in &report.sinks {
        if s.dead_letters == 0 && s.dead.is_empty() {
            continue;
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "dead letters of {name} (frontsync outbox retry|drop {name} ID...):"
        );
        let _ = writeln!(
            out,
            "{:>8}  {:<32} {:>4} {:>6} {:>8}  {:<24}  ERROR",
            "ID", "HIGHLIGHT", "REV", "STATUS", "ATTEMPTS", "AT"
        );
        for d in &s.dead {
            let _ = writeln!(
                out,
                "{:>8}  {:<32} {:>4} {:>6} {:>8}  {:<24}  {}",
                d.seq,
                d.highlight_id,
                d.revision,
                d.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                d.attempts,
                d.at,
                one_line(&d.error)
            );
        }
        let shown = s.dead.len() as u64;
        if s.dead_letters > shown {
            let _ = writeln!(
                out,
                "  ... and {} more (--limit N shows more)",
                s.dead_letters - shown
            );
        }
    }
    out
}

/// What a retry or drop did, one line per dead letter (bounded).
pub fn render_change(report: &ChangeReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let n = report.letters.len();
    let plural = if n == 1 { "" } else { "s" };
    match report.action {
        Action::Retry if n == 0 => {
            let _ = writeln!(out, "sink {}: no dead letters to retry", report.sink);
        }
        Action::Drop if n == 0 => {
            let _ = writeln!(out, "sink {}: no dead letters to drop", report.sink);
        }
        Action::Retry => {
            let _ = writeln!(
                out,
                "sink {}: requeued {n} dead letter{plural} at the end of the outbox",
                report.sink
            );
        }
        Action::Drop => {
            let _ = writeln!(out, "sink {}: dropped {n} dead letter{plural}", report.sink);
        }
    }
    for l in report.letters.iter().take(MAX_PRINTED) {
        match l.new_seq {
            Some(new) => {
                let _ = writeln!(
                    out,
                    "  {} -> outbox {new}  {} revision {}",
                    l.seq, l.highlight_id, l.revision
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  {}  {} revision {}",
                    l.seq, l.highlight_id, l.revision
                );
            }
        }
    }
    if n > MAX_PRINTED {
        let _ = writeln!(out, "  ... and {} more (--json lists all)", n - MAX_PRINTED);
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_request_needs_all_or_ids() {
        let parse = |s: &str| {
            serde_json::from_str::<ChangeRequest>(s)
                .map_err(|e| e.to_string())
                .and_then(|r| r.selection().map_err(|e| e.to_string()))
        };
        assert_eq!(parse(r#"{"all":true}"#), Ok(DeadLetterSelection::All));
        assert_eq!(
            parse(r#"{"ids":[3,1]}"#),
            Ok(DeadLetterSelection::Seqs(vec![3, 1]))
        );
        for bad in [
            r#"{}"#,
            r#"{"all":false}"#,
            r#"{"ids":[]}"#,
            r#"{"all":true,"ids":[1]}"#,
            r#"{"id":[1]}"#,
            r#"{"ids":[-1]}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn list_limit_from_the_query() {
        assert_eq!(list_limit(None), Ok(DEFAULT_LIST_LIMIT));
        assert_eq!(list_limit(Some("limit=5")), Ok(5));
        assert_eq!(list_limit(Some("x=1&limit=0")), Ok(0));
        assert!(list_limit(Some("limit=many")).is_err());
    }

    #[test]
    fn unknown_sink_names_the_configured_ones() {
        let err = check_sink("nxt", &["archive".into(), "next".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown sink \"nxt\"; configured sinks: archive, next"
        );
        assert_eq!(err.http_status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn stopped_daemon_retry_warns_about_an_older_revision() {
        use crate::store::Rejection;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let rev1 = serde_json::json!({"id": "support:cnv_1", "revision": 1});
        store
            .write(|t| t.enqueue("next", &serde_json::to_vec(&rev1).unwrap()))
            .unwrap();
        let rejection = Rejection {
            error: "rejected".into(),
            status: Some(400),
            body_excerpt: None,
            attempts: 1,
        };
        store
            .write(|t| t.dead_letter("next", 1, &rejection, 0))
            .unwrap();
        // Revision 3 was emitted since.
        let state: serde_json::Value = serde_json::json!({
            "revision": 3, "content_hash": 0, "snapshot": {"conversation_id": "cnv_1"}
        });
        store
            .write(|t| t.put_conversation("support", "cnv_1", &state))
            .unwrap();
        let sinks = vec!["next".to_string()];
        let change = |action, selection| Command::Change {
            action,
            sink: "next".into(),
            selection,
        };

        let err = in_store(
            &store,
            &sinks,
            change(Action::Drop, DeadLetterSelection::Seqs(vec![2])),
        )
        .err()
        .expect("unknown id");
        assert_eq!(
            err.to_string(),
            "sink \"next\" has no dead letter 2 (see `frontsync outbox`); nothing was changed"
        );
        let Ok(Done::Changed(report)) = in_store(
            &store,
            &sinks,
            change(Action::Retry, DeadLetterSelection::All),
        ) else {
            panic!("retry failed");
        };
        assert_eq!(report.letters.len(), 1);
        assert_eq!(report.letters[0].new_seq, Some(2));
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].contains("after revision 3"));
        let Ok(Done::Report(listing)) = in_store(&store, &sinks, Command::List { limit: 10 })
        else {
            panic!("list failed");
        };
        let next = &listing.sinks["next"];
        assert_eq!((next.outbox_depth, next.dead_letters), (1, 0));
    }

    #[test]
    fn text_output() {
        let report = OutboxReport {
            sinks: [(
                "next".to_string(),
                SinkOutbox {
                    outbox_depth: 2,
                    dead_letters: 3,
                    delivered_total: 9,
                    dead: vec![DeadLetterView {
                        seq: 7,
                        highlight_id: "support:cnv_1".into(),
                        revision: 1,
                        status: Some(400),
                        error: "rejected\nwith 400".into(),
                        body_excerpt: None,
                        attempts: 1,
                        at: "2026-11-22T00:00:00.000Z".into(),
                    }],
                },
            )]
            .into(),
        };
        let text = render_report(&report);
        assert!(text.contains("next"), "{text}");
        assert!(text.contains("support:cnv_1"), "{text}");
        assert!(text.contains("rejected with 400"), "{text}");
        assert!(text.contains("and 2 more"), "{text}");
        let change = ChangeReport {
            sink: "next".into(),
            action: Action::Retry,
            letters: vec![LetterMoved {
                seq: 7,
                new_seq: Some(12),
                highlight_id: "support:cnv_1".into(),
                revision: 1,
            }],
            warnings: vec![],
        };
        assert_eq!(
            render_change(&change),
            "sink next: requeued 1 dead letter at the end of the outbox\n  7 -> outbox 12  support:cnv_1 revision 1\n"
        );
    }
}
