//! The TOML configuration: reads the file, checks every key and resolves it into [`Config`].
//!
//! [`load`] reads the file; [`parse`] does the rest with no I/O beyond environment lookups
//! (secrets are only *described* here; [`Config::check_secrets`] reads them on demand).
//!
//! Two passes:
//! 1. The document is parsed into toml's spanned tree, then each section is deserialized on
//!    its own into a private `Raw*` struct with `deny_unknown_fields`: `[state]`, `[webhook]`,
//!    `[admin]`, every `[front.X]`, every `[sinks.X]`, every `[[subscription]]` and every
//!    `[[subscription.label]]`. Serde stops at the first error of a struct, so going section
//!    by section means one typo does not hide the mistakes in the other sections.
//! 2. A validation pass turns the raw values into the public, resolved types: defaults,
//!    ranges, names, durations, secrets, relative paths, and references between sections.
//!
//! Every error is collected (not only the first) and carries the file, line and column, so
//! `frontsync check` can print them all, one per line, like a compiler. Every key and its
//! default is documented in `config.example.toml`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use frontsync_sinks::Status;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::secret::Secret;

/// `[state] path` when absent, relative to the config file's folder.
pub const DEFAULT_STATE_PATH: &str = "state/frontsync.redb";
/// `[webhook] listen` when absent.
pub const DEFAULT_WEBHOOK_LISTEN: &str = "127.0.0.1:8787";
/// `[webhook] max_body_bytes` when absent (1 MiB: Front's events are far smaller).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1_048_576;
/// Smallest allowed `[webhook] max_body_bytes`: below this real events would be refused.
pub const MIN_MAX_BODY_BYTES: usize = 1024;
/// Largest allowed `[webhook] max_body_bytes` (64 MiB): bodies are held in memory.
pub const MAX_MAX_BODY_BYTES: usize = 67_108_864;
/// `[webhook] header_timeout` when absent.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `[webhook] max_connections` when absent.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// `[admin] listen` when absent.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8788";
/// `[front.X] api_base` when absent.
pub const DEFAULT_API_BASE: &str = "https://api2.frontapp.com";
/// `[front.X] rate_limit_rpm` when absent: the limit of Front's smallest plans.
pub const DEFAULT_RATE_LIMIT_RPM: u32 = 50;
/// `[front.X] rate_limit_rpm` when absent on an OAuth connection: Front gives each OAuth
/// app its own bucket of 120 requests per minute.
pub const DEFAULT_OAUTH_RATE_LIMIT_RPM: u32 = 120;
/// `[front.X] auth.oauth.authorize_url` when absent.
pub const DEFAULT_OAUTH_AUTHORIZE_URL: &str = "https://app.frontapp.com/oauth/authorize";
/// `[front.X] auth.oauth.token_url` when absent.
pub const DEFAULT_OAUTH_TOKEN_URL: &str = "https://app.frontapp.com/oauth/token";
/// `[front.X] auth.oauth.redirect_uri` when absent: where `frontsync auth` listens.
pub const DEFAULT_OAUTH_REDIRECT_URI: &str = "http://127.0.0.1:8790/callback";
/// Largest allowed `[front.X] rate_limit_rpm`.
pub const MAX_RATE_LIMIT_RPM: u32 = 10_000;
/// `[[subscription]] poll_interval` when absent and the connection has a token. Without a
/// token the default is zero (webhooks only), since polling needs the API.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);

/// The whole configuration, after loading: relative paths are resolved against the config
/// file's folder, defaults are filled in, and every cross-reference has been checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from, as given.
    pub source_path: PathBuf,
    pub state: StateConfig,
    /// `None` when the `[webhook]` table is absent: no listener, polling only.
    pub webhook: Option<WebhookConfig>,
    pub admin: AdminConfig,
    /// `[front.NAME]` connections, by name.
    pub front: BTreeMap<String, FrontConfig>,
    /// `[sinks.NAME]`, by name.
    pub sinks: BTreeMap<String, SinkConfig>,
    /// `[[subscription]]`, in file order.
    pub subscriptions: Vec<Subscription>,
    /// Non-fatal findings, one line each, already prefixed with `file:line:col: `: a sink no
    /// subscription uses, a connection whose webhooks would all be refused...
    pub warnings: Vec<String>,
}

/// `[state]`: where the daemon keeps its database.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Absolute path of the redb file. Default `state/frontsync.redb` beside the config.
    pub path: PathBuf,
}

/// `[webhook]`: the listener Front posts to.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Default `127.0.0.1:8787`.
    pub listen: SocketAddr,
    /// Larger bodies are answered `413`. Default 1048576, allowed 1024..=67108864.
    pub max_body_bytes: usize,
    /// How long a client may take to send the request head. Default 10s, more than zero.
    pub header_timeout: Duration,
    /// Connections served at once; more wait in the kernel backlog. Default 1024, at least 1.
    pub max_connections: usize,
}

/// `[admin]`: `/healthz`, `/readyz`, `/metrics`, `/status`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Default `127.0.0.1:8788`. Only a loopback address unless `allow_remote = true`.
    pub listen: SocketAddr,
}

/// `[front.NAME]`: one Front company.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// The `NAME` of `[front.NAME]`, `[a-z0-9_-]+`; also the webhook path segment.
    pub name: String,
    /// No trailing `/`. Default `https://api2.frontapp.com`.
    pub api_base: String,
    /// `None`: webhook-only connection (no polling, no enrichment, no inbox names), unless
    /// `oauth` is set.
    pub token: Option<Secret>,
    /// `auth = { oauth = { ... } }`: API access through an OAuth grant obtained with
    /// `frontsync auth front NAME`. Never set together with `token`.
    pub oauth: Option<OAuthConfig>,
    /// Requests per minute. Default 50 (120 for OAuth), allowed 1..=10000.
    pub rate_limit_rpm: u32,
    /// Verifies "Send to a Webhook" rules (HMAC-SHA1).
    pub rule_webhook_secret: Option<Secret>,
    /// Verifies application webhooks (HMAC-SHA256 + timestamp).
    pub app_webhook_secret: Option<Secret>,
}

impl FrontConfig {
    /// Whether the connection can call Front's API (a token or an OAuth app).
    pub fn has_api_access(&self) -> bool {
        self.token.is_some() || self.oauth.is_some()
    }
}

/// `[front.NAME] auth = { oauth = { ... } }`: a Front OAuth app. The grant itself (access
/// and refresh tokens) lives in the state database, never in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    /// The app's client id (not a secret: it is part of the authorize URL).
    pub client_id: String,
    pub client_secret: Secret,
    /// Default `https://app.frontapp.com/oauth/authorize`.
    pub authorize_url: String,
    /// Default `https://app.frontapp.com/oauth/token`.
    pub token_url: String,
    /// Exactly as registered in the Front app. Default `http://127.0.0.1:8790/callback`.
    pub redirect_uri: String,
}

/// `[sinks.NAME]`, by `type`.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Jsonl(JsonlSinkConfig),
    Stdout,
    Next(NextSinkConfig),
}

impl SinkConfig {
    /// The `type` key as written in the config.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Jsonl(_) => "jsonl",
            SinkConfig::Stdout => "stdout",
            SinkConfig::Next(_) => "next",
        }
    }
}

/// `type = "jsonl"`: appends one Highlight per line to a file.
#[derive(Debug, Clone)]
pub struct JsonlSinkConfig {
    /// Absolute path of the file.
    pub path: PathBuf,
}

/// `type = "next"`: pushes Highlights to NEXT AI over HTTP.
#[derive(Debug, Clone)]
pub struct NextSinkConfig {
    /// Base URL, `http://` or `https://`, no trailing `/`; the sink appends its own path.
    pub endpoint: String,
    pub teamspace: String,
    pub token: Secret,
    /// Path template appended to `endpoint`; `{teamspace}` is replaced.
    /// Default: `/teamspaces/{teamspace}/highlights`.
    pub path: Option<String>,
    /// Highlights per request; above 1 they go as `{"highlights":[...]}` to `{path}:batch`.
    /// Default: 1.
    pub batch_size: usize,
    /// Whole-request timeout. Default: 10s.
    pub timeout: Duration,
}

/// `[[subscription]]`: which conversations of one connection go to which sinks.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Unique, `[a-z0-9_-]+`; part of every Highlight id.
    pub name: String,
    /// The `NAME` of a `[front.NAME]`.
    pub front: String,
    /// Inbox ids (`inb_...`) or names; empty = every inbox.
    pub inboxes: Vec<String>,
    /// Empty = any status.
    pub statuses: Vec<Status>,
    /// Keep only conversations with at least one of these tags (empty = no filter).
    pub tags_any: Vec<String>,
    /// Drop conversations with any of these tags.
    pub tags_none: Vec<String>,
    /// How far back the first start reaches. Default zero.
    pub backfill: Duration,
    /// Zero = webhooks only.
    pub poll_interval: Duration,
    pub emit_created: bool,
    pub emit_updated: bool,
    /// Names of `[sinks.NAME]`, no duplicates, in the order written.
    pub sinks: Vec<String>,
    pub labels: Vec<LabelRule>,
}

/// `[[subscription.label]]`: labels added to the Highlights it matches.
#[derive(Debug, Clone, Default)]
pub struct LabelRule {
    /// Matches when the Highlight has any of these tags (empty = any tags).
    pub tags_any: Vec<String>,
    /// Matches when the Highlight has one of these statuses (empty = any status).
    pub statuses: Vec<Status>,
    /// Never empty.
    pub add: Vec<String>,
}

/// One problem in the configuration, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The config path as the user gave it.
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file (it could not be read).
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    /// Lowercase, one line, no trailing period, never a secret.
    pub message: String,
}

impl ConfigError {
    fn render(&self) -> String {
        if self.line == 0 {
            format!("{}: {}", self.file, self.message)
        } else {
            format!("{}:{}:{}: {}", self.file, self.line, self.col, self.message)
        }
    }
}

/// Every problem found in a configuration, in file order. `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// Never empty.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// The errors, in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// Reads and validates the configuration file. An unreadable file is one error naming it.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => Err(ConfigErrors {
            errors: vec![ConfigError {
                file: path.display().to_string(),
                line: 0,
                col: 0,
                message: format!("cannot read config file: {}", crate::secret::io_reason(&e)),
            }],
        }),
    }
}

/// Validates `text` as if read from `path`: `path` names the file in errors and its folder
/// anchors relative paths. No I/O beyond environment lookups (the working directory, to
/// make relative paths absolute).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let mut cx = Cx::new(text, path);
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // The recovered tree is partial: checking it would only add confusing follow-ups.
        for e in syntax {
            cx.syntax_error(&e);
        }
        return Err(cx.into_errors());
    }
    let raw = cx.split(root.into_inner());
    let config = cx.validate(raw, path);
    if cx.errors.is_empty() {
        Ok(config)
    } else {
        Err(cx.into_errors())
    }
}

impl Config {
    /// One line per subscription, for `frontsync check`. Names where secrets come from, never
    /// their values.
    pub fn summary(&self) -> Vec<String> {
        self.subscriptions.iter().map(summarize).collect()
    }

    /// Reads every secret the configuration references and returns one line per failure, like
    /// `[front.acme] token: environment variable FRONT_API_TOKEN is not set`. Never the value.
    pub fn check_secrets(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |table: String, key: &str, secret: &Secret| {
            if let Err(e) = secret.resolve() {
                problems.push(format!("{table} {key}: {e}"));
            }
        };
        for (name, front) in &self.front {
            let table = format!("[front.{name}]");
            let secrets = [
                ("token", &front.token),
                ("rule_webhook_secret", &front.rule_webhook_secret),
                ("app_webhook_secret", &front.app_webhook_secret),
            ];
            for (key, secret) in secrets {
                if let Some(secret) = secret {
                    check(table.clone(), key, secret);
                }
            }
            if let Some(oauth) = &front.oauth {
                check(
                    table.clone(),
                    "auth.oauth.client_secret",
                    &oauth.client_secret,
                );
            }
        }
        for (name, sink) in &self.sinks {
            if let SinkConfig::Next(next) = sink {
                check(format!("[sinks.{name}]"), "token", &next.token);
            }
        }
        problems
    }

    /// The `[front.NAME]` a subscription reads from.
    pub fn front_of(&self, subscription: &Subscription) -> Option<&FrontConfig> {
        self.front.get(&subscription.front)
    }
}

fn summarize(s: &Subscription) -> String {
    let list = |items: &[String], empty: &str| {
        if items.is_empty() {
            empty.to_string()
        } else {
            items.join(", ")
        }
    };
    let statuses: Vec<String> = s.statuses.iter().map(|st| st.to_string()).collect();
    let mut line = format!(
        "subscription {}: front {}, inboxes {}; statuses {}",
        s.name,
        s.front,
        list(&s.inboxes, "all"),
        list(&statuses, "any"),
    );
    if !s.tags_any.is_empty() {
        line.push_str(&format!("; tags any of {}", s.tags_any.join(", ")));
    }
    if !s.tags_none.is_empty() {
        line.push_str(&format!("; tags none of {}", s.tags_none.join(", ")));
    }
    if s.backfill.is_zero() {
        line.push_str("; no backfill");
    } else {
        line.push_str(&format!("; backfill {}", compact_duration(s.backfill)));
    }
    if s.poll_interval.is_zero() {
        line.push_str("; webhooks only");
    } else {
        line.push_str(&format!(
            "; poll every {}",
            compact_duration(s.poll_interval)
        ));
    }
    let emit: Vec<&str> = [(s.emit_created, "created"), (s.emit_updated, "updated")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    line.push_str(&format!("; emit {}", emit.join(", ")));
    line.push_str(&format!("; sinks {}", s.sinks.join(", ")));
    match s.labels.len() {
        0 => {}
        1 => line.push_str("; 1 label rule"),
        n => line.push_str(&format!("; {n} label rules")),
    }
    line
}

/// `7d`, `1m30s`, `500ms`: how a user would write it, unlike humantime's `7days`.
fn compact_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    let ms = d.subsec_millis();
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    if out.is_empty() {
        out = format!("{}ns", d.subsec_nanos());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Raw types: the TOML as written. Spans are kept on every value a later check may point at.
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawState {
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawWebhook {
    listen: Option<Spanned<String>>,
    // Signed so that a negative value gets our range message rather than a serde type error.
    max_body_bytes: Option<Spanned<i64>>,
    header_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawAdmin {
    listen: Option<Spanned<String>>,
    #[serde(default)]
    allow_remote: bool,
}

// Secrets are taken as any value and checked by hand: a serde error could echo a literal.
type RawSecret = Spanned<toml::Value>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawFront {
    api_base: Option<Spanned<String>>,
    token: Option<RawSecret>,
    rate_limit_rpm: Option<Spanned<i64>>,
    rule_webhook_secret: Option<RawSecret>,
    app_webhook_secret: Option<RawSecret>,
    /// `auth`, split off before deserializing (like `[[subscription.label]]`) so its own
    /// unknown keys are reported with their place, and filled in afterwards.
    #[serde(skip)]
    auth: Option<RawAuth>,
}

/// `auth` of a `[front.NAME]`: its span and the `oauth` table, when it could be read.
struct RawAuth {
    span: Range<usize>,
    oauth: Option<RawOAuth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawOAuth {
    client_id: Spanned<String>,
    client_secret: RawSecret,
    authorize_url: Option<Spanned<String>>,
    token_url: Option<Spanned<String>>,
    redirect_uri: Option<Spanned<String>>,
}

/// The sink types, as written in `type`. One raw struct per type, so each type's unknown
/// keys are reported exactly and adding a key is adding a field.
const SINK_TYPES: [&str; 3] = ["jsonl", "stdout", "next"];

enum RawSink {
    Jsonl(RawJsonlSink),
    Stdout(RawStdoutSink),
    Next(RawNextSink),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawJsonlSink {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    path: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawStdoutSink {
    #[serde(rename = "type")]
    _type: IgnoredAny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawNextSink {
    #[serde(rename = "type")]
    _type: IgnoredAny,
    endpoint: Spanned<String>,
    teamspace: Spanned<String>,
    token: RawSecret,
    path: Option<Spanned<String>>,
    batch_size: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
}

/// `[[subscription]]` without its `label` array, which is split off and read entry by entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawSubscription {
    name: Spanned<String>,
    front: Spanned<String>,
    #[serde(default)]
    inboxes: Vec<Spanned<String>>,
    #[serde(default)]
    statuses: Vec<Spanned<String>>,
    #[serde(default)]
    tags_any: Vec<Spanned<String>>,
    #[serde(default)]
    tags_none: Vec<Spanned<String>>,
    backfill: Option<Spanned<String>>,
    poll_interval: Option<Spanned<String>>,
    emit: Option<Spanned<Vec<Spanned<String>>>>,
    sinks: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawLabel {
    #[serde(default)]
    tags_any: Vec<Spanned<String>>,
    #[serde(default)]
    statuses: Vec<Spanned<String>>,
    add: Spanned<Vec<Spanned<String>>>,
}

/// One `[[subscription]]` entry; `None` parts failed to deserialize (already reported).
struct RawSubscriptionEntry {
    /// The `[[subscription]]` header (or inline table).
    span: Range<usize>,
    sub: Option<RawSubscription>,
    labels: Vec<RawLabel>,
}

/// Everything read in pass 1. Named entries are kept even when their body failed, so a
/// reference to them is not reported a second time as "unknown".
#[derive(Default)]
struct RawConfig {
    state: Option<RawState>,
    /// A `[webhook]` table was written (its body may have failed).
    webhook_table: bool,
    webhook: Option<RawWebhook>,
    admin: Option<RawAdmin>,
    /// Span of the `[admin]` table, for errors about it.
    admin_span: Option<Range<usize>>,
    front: Vec<(Spanned<String>, Option<RawFront>)>,
    sinks: Vec<(Spanned<String>, Option<RawSink>)>,
    subscriptions: Vec<RawSubscriptionEntry>,
    /// `subscription` is not an array (already reported, so "no subscription" would repeat it).
    subscription_invalid: bool,
}

// ---------------------------------------------------------------------------------------------
// The checker: holds the text to turn byte offsets into line:col, and the errors found.
// ---------------------------------------------------------------------------------------------

struct Cx<'a> {
    text: &'a str,
    file: String,
    /// The folder relative paths are resolved against, absolute when the working directory
    /// is known.
    base: PathBuf,
    errors: Vec<ConfigError>,
    warnings: Vec<(usize, usize, String)>,
}

impl<'a> Cx<'a> {
    fn new(text: &'a str, path: &Path) -> Self {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = std::path::absolute(&parent).unwrap_or(parent);
        Cx {
            text,
            file: path.display().to_string(),
            base,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
        // A byte order mark is not a column anyone can see.
        let col = before[line_start..]
            .chars()
            .filter(|c| *c != '\u{feff}')
            .count()
            + 1;
        (line, col)
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = self.position(span.start);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            col,
            message: message.into(),
        });
    }

    fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = self.position(span.start);
        self.warnings.push((line, col, message.into()));
    }

    fn into_errors(mut self) -> ConfigErrors {
        // Stable: errors at one place keep the order they were found in.
        self.errors.sort_by_key(|e| (e.line, e.col));
        ConfigErrors {
            errors: self.errors,
        }
    }

    fn syntax_error(&mut self, e: &toml::de::Error) {
        let span = e.span().unwrap_or(0..0);
        self.error(span, one_line(e.message()));
    }

    /// Deserializes one section; on failure reports toml's error in our words and returns
    /// `None`. `table` names the section as the user would write its header.
    ///
    /// Serde stops at the first unknown key, and toml's tables iterate in name order, so
    /// unknown keys are found here first, all of them, in file order.
    fn de<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>, table: &str) -> Option<T> {
        let (span, mut value) = (value.span(), value.into_inner());
        if let DeValue::Table(entries) = &mut value {
            let known = struct_fields::<T>();
            let mut unknown: Vec<(Range<usize>, String)> = entries
                .keys()
                .filter(|k| !known.contains(&k.get_ref().as_ref()))
                .map(|k| (k.span(), k.get_ref().to_string()))
                .collect();
            if !known.is_empty() && !unknown.is_empty() {
                unknown.sort_by_key(|(span, _)| span.start);
                // Reported, then dropped so the rest of the section is still checked (the
                // whole configuration is invalid anyway).
                for (key_span, key) in &unknown {
                    self.error(key_span.clone(), format!("unknown key {key:?} in {table}"));
                    entries.remove(key.as_str());
                }
            }
        }
        match T::deserialize(ValueDeserializer::from(Spanned::new(span.clone(), value))) {
            Ok(v) => Some(v),
            Err(e) => {
                let span = e.span().unwrap_or(span);
                let message = describe_de_error(&e, table);
                self.error(span, message);
                None
            }
        }
    }

    /// Pass 1: splits the document into sections and deserializes each one on its own.
    fn split(&mut self, root: DeTable<'_>) -> RawConfig {
        let mut raw = RawConfig::default();
        for (key, value) in root {
            match key.get_ref().as_ref() {
                "state" => raw.state = self.de(value, "[state]"),
                "webhook" => {
                    raw.webhook_table = true;
                    raw.webhook = self.de(value, "[webhook]");
                }
                "admin" => {
                    raw.admin_span = Some(value.span());
                    raw.admin = self.de(value, "[admin]");
                }
                "front" => {
                    for (name, value) in self.named_tables(value, "front", "[front.acme]") {
                        let table = format!("[front.{}]", shown(name.get_ref()));
                        let (value, auth) = self.split_auth(value, &table);
                        let front = self.de::<RawFront>(value, &table).map(|mut f| {
                            f.auth = auth;
                            f
                        });
                        raw.front.push((name, front));
                    }
                }
                "sinks" => {
                    for (name, value) in self.named_tables(value, "sinks", "[sinks.archive]") {
                        let sink = self.sink(&name, value);
                        raw.sinks.push((name, sink));
                    }
                }
                "subscription" => {
                    raw.subscription_invalid = !value.get_ref().is_array();
                    for table in self.array_of_tables(value, "subscription", "[[subscription]]") {
                        let entry = self.subscription_entry(table);
                        raw.subscriptions.push(entry);
                    }
                }
                other => {
                    let message = format!("unknown key {other:?} at top level");
                    self.error(key.span(), message);
                }
            }
        }
        raw
    }

    /// Takes `auth` out of a `[front.X]` body and reads it: `auth = { oauth = { ... } }`
    /// (or `[front.X.auth.oauth]`). Its problems are reported here, each at its place.
    fn split_auth<'t>(
        &mut self,
        value: Spanned<DeValue<'t>>,
        table: &str,
    ) -> (Spanned<DeValue<'t>>, Option<RawAuth>) {
        let span = value.span();
        let mut body = match value.into_inner() {
            DeValue::Table(body) => body,
            // Not a table: `de` reports it.
            other => return (Spanned::new(span, other), None),
        };
        let Some((_, auth)) = body.remove_entry("auth") else {
            return (Spanned::new(span, DeValue::Table(body)), None);
        };
        let auth_span = auth.span();
        const SHAPE: &str =
            "use auth = { oauth = { client_id = \"...\", client_secret = { env = \"...\" } } }";
        let mut raw = RawAuth {
            span: auth_span.clone(),
            oauth: None,
        };
        match auth.into_inner() {
            DeValue::Table(entries) => {
                if entries.is_empty() {
                    self.error(auth_span, format!("auth in {table} is empty: {SHAPE}"));
                }
                let mut entries: Vec<_> = entries.into_iter().collect();
                entries.sort_by_key(|(k, _)| k.span().start);
                for (key, v) in entries {
                    match key.get_ref().as_ref() {
                        "oauth" => {
                            let name = format!("{}.auth.oauth]", table.trim_end_matches(']'));
                            raw.oauth = self.de::<RawOAuth>(v, &name);
                        }
                        other => {
                            let message =
                                format!("unknown key {other:?} in auth of {table}: {SHAPE}");
                            self.error(key.span(), message);
                        }
                    }
                }
            }
            _ => self.error(
                auth_span,
                format!("auth in {table} must be a table: {SHAPE}"),
            ),
        }
        (Spanned::new(span, DeValue::Table(body)), Some(raw))
    }

    /// `[front.X]` / `[sinks.X]`: the table of named tables, as (name, body) pairs.
    fn named_tables<'t>(
        &mut self,
        value: Spanned<DeValue<'t>>,
        key: &str,
        example: &str,
    ) -> Vec<(Spanned<String>, Spanned<DeValue<'t>>)> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Table(table) => table
                .into_iter()
                .map(|(name, body)| {
                    let name_span = name.span();
                    (
                        Spanned::new(name_span, name.into_inner().into_owned()),
                        body,
                    )
                })
                .collect(),
            _ => {
                self.error(
                    span,
                    format!("key \"{key}\" must be a table of named tables, like {example}"),
                );
                Vec::new()
            }
        }
    }

    /// `[[subscription]]` / `[[subscription.label]]`: each entry with its span.
    fn array_of_tables<'t>(
        &mut self,
        value: Spanned<DeValue<'t>>,
        key: &str,
        header: &str,
    ) -> Vec<Spanned<DeValue<'t>>> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => items.into_iter().collect(),
            _ => {
                self.error(
                    span,
                    format!("key \"{key}\" must be an array of tables: write {header}"),
                );
                Vec::new()
            }
        }
    }

    fn sink(&mut self, name: &Spanned<String>, value: Spanned<DeValue<'_>>) -> Option<RawSink> {
        let table_name = format!("[sinks.{}]", shown(name.get_ref()));
        let span = value.span();
        let DeValue::Table(table) = value.get_ref() else {
            self.error(span, format!("{table_name} must be a table"));
            return None;
        };
        let Some(kind) = table.get("type") else {
            self.error(span, format!("missing key \"type\" in {table_name}"));
            return None;
        };
        let kind_span = kind.span();
        let known = quoted_or(&SINK_TYPES);
        match kind.get_ref().as_str() {
            Some("jsonl") => self.de(value, &table_name).map(RawSink::Jsonl),
            Some("stdout") => self.de(value, &table_name).map(RawSink::Stdout),
            Some("next") => self.de(value, &table_name).map(RawSink::Next),
            Some(other) => {
                let message = format!("unknown sink type {other:?} in {table_name}: use {known}");
                self.error(kind_span, message);
                None
            }
            None => {
                let message = format!("type in {table_name} must be a string: use {known}");
                self.error(kind_span, message);
                None
            }
        }
    }

    fn subscription_entry(&mut self, value: Spanned<DeValue<'_>>) -> RawSubscriptionEntry {
        let span = value.span();
        let DeValue::Table(mut table) = value.into_inner() else {
            self.error(
                span.clone(),
                "each subscription must be a table: write [[subscription]]",
            );
            return RawSubscriptionEntry {
                span,
                sub: None,
                labels: Vec::new(),
            };
        };
        let mut labels = Vec::new();
        if let Some((_, label_value)) = table.remove_entry("label") {
            let entries = self.array_of_tables(label_value, "label", "[[subscription.label]]");
            for entry in entries {
                if let Some(label) = self.de(entry, "[[subscription.label]]") {
                    labels.push(label);
                }
            }
        }
        let sub = self.de(
            Spanned::new(span.clone(), DeValue::Table(table)),
            "[[subscription]]",
        );
        RawSubscriptionEntry { span, sub, labels }
    }

    // -----------------------------------------------------------------------------------------
    // Pass 2: validation.
    // -----------------------------------------------------------------------------------------

    fn validate(&mut self, mut raw: RawConfig, path: &Path) -> Config {
        let state = self.state(raw.state);
        let webhook = raw.webhook_table.then(|| self.webhook(raw.webhook.take()));
        let admin = self.admin(raw.admin.take(), raw.admin_span.clone().unwrap_or(0..0));
        if let (Some(webhook), Some(admin_listen)) = (&webhook, &admin.1) {
            // Port 0 asks the kernel for a free port: two of them never collide.
            if webhook.listen == admin.0.listen && webhook.listen.port() != 0 {
                let message = format!(
                    "admin listen {} is the same address as [webhook] listen",
                    admin.0.listen
                );
                self.error(admin_listen.clone(), message);
            }
        }

        // The document tree is sorted by name; report in file order instead.
        raw.front.sort_by_key(|(name, _)| name.span().start);
        raw.sinks.sort_by_key(|(name, _)| name.span().start);

        // `*_seen` hold every name written, even of entries that failed, so that references
        // to them are not reported a second time as unknown.

        let mut front = BTreeMap::new();
        let mut front_spans = BTreeMap::new();
        let mut fronts_seen = BTreeSet::new();
        for (name, raw_front) in raw.front {
            fronts_seen.insert(name.get_ref().clone());
            self.check_name(&name, "connection");
            if let Some(f) = raw_front.and_then(|f| self.front(&name, f)) {
                front_spans.insert(name.get_ref().clone(), name.span());
                front.insert(name.get_ref().clone(), f);
            }
        }

        let mut sinks = BTreeMap::new();
        let mut sink_spans = BTreeMap::new();
        let mut sinks_seen = BTreeSet::new();
        let mut jsonl_paths: BTreeMap<PathBuf, String> = BTreeMap::new();
        for (name, raw_sink) in raw.sinks {
            sinks_seen.insert(name.get_ref().clone());
            self.check_name(&name, "sink");
            let Some(raw_sink) = raw_sink else { continue };
            let table = format!("[sinks.{}]", shown(name.get_ref()));
            let sink = match raw_sink {
                RawSink::Stdout(_) => Some(SinkConfig::Stdout),
                RawSink::Jsonl(j) => self.jsonl_sink(j, &table, &state, &mut jsonl_paths),
                RawSink::Next(n) => self.next_sink(n, &table),
            };
            if let Some(sink) = sink {
                sink_spans.insert(name.get_ref().clone(), name.span());
                sinks.insert(name.get_ref().clone(), sink);
            }
        }

        let refs = Refs {
            front: &front,
            fronts_seen: &fronts_seen,
            sinks_seen: &sinks_seen,
        };
        let mut subscriptions = Vec::new();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        if raw.subscriptions.is_empty() && !raw.subscription_invalid {
            self.error(
                0..0,
                "no subscription: add at least one [[subscription]] (see config.example.toml)",
            );
        }
        let mut subscription_spans = Vec::new();
        for entry in raw.subscriptions {
            let span = entry.span.clone();
            if let Some(sub) = self.subscription(entry, &refs, &mut names) {
                subscriptions.push(sub);
                subscription_spans.push(span);
            }
        }

        // Warnings: things that run, but probably not as meant.
        let used_sinks: BTreeSet<&String> = subscriptions.iter().flat_map(|s| &s.sinks).collect();
        for (name, span) in &sink_spans {
            if !used_sinks.contains(name) {
                let message = format!(
                    "sink \"{name}\" is not used by any subscription: nothing will be written to it"
                );
                self.warn(span.clone(), message);
            }
        }
        let used_fronts: BTreeSet<&String> = subscriptions.iter().map(|s| &s.front).collect();
        for (name, f) in &front {
            let span = front_spans.get(name).cloned().unwrap_or(0..0);
            if !used_fronts.contains(name) {
                let message = format!("[front.{name}] is not used by any subscription");
                self.warn(span.clone(), message);
            }
            if webhook.is_some()
                && f.rule_webhook_secret.is_none()
                && f.app_webhook_secret.is_none()
            {
                let message = format!(
                    "[front.{name}] has no rule_webhook_secret or app_webhook_secret: its webhooks will be refused with 401"
                );
                self.warn(span, message);
            }
        }
        if webhook.is_none() {
            for (sub, span) in subscriptions.iter().zip(&subscription_spans) {
                if sub.poll_interval.is_zero() {
                    let message = format!(
                        "subscription \"{}\" receives nothing: [webhook] is absent and poll_interval is \"0s\"",
                        sub.name
                    );
                    self.warn(span.clone(), message);
                }
            }
        }

        self.warnings.sort_by_key(|(line, col, _)| (*line, *col));
        let warnings = self
            .warnings
            .drain(..)
            .map(|(line, col, message)| format!("{}:{line}:{col}: {message}", self.file))
            .collect();

        Config {
            source_path: path.to_path_buf(),
            state,
            webhook,
            admin: admin.0,
            front,
            sinks,
            subscriptions,
            warnings,
        }
    }

    fn state(&mut self, raw: Option<RawState>) -> StateConfig {
        let path = match raw.and_then(|s| s.path) {
            Some(p) => self.path(&p, "path", "[state]"),
            None => None,
        };
        StateConfig {
            path: path.unwrap_or_else(|| self.resolve(DEFAULT_STATE_PATH)),
        }
    }

    fn webhook(&mut self, raw: Option<RawWebhook>) -> WebhookConfig {
        let mut config = WebhookConfig {
            listen: default_addr(DEFAULT_WEBHOOK_LISTEN),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        };
        let Some(raw) = raw else { return config };
        if let Some(listen) = raw.listen
            && let Some(addr) = self.socket_addr(&listen, "[webhook]")
        {
            config.listen = addr;
        }
        if let Some(n) = raw.max_body_bytes {
            let range = MIN_MAX_BODY_BYTES as i64..=MAX_MAX_BODY_BYTES as i64;
            if let Some(n) = self.int_in(&n, "max_body_bytes", range) {
                config.max_body_bytes = n as usize;
            }
        }
        if let Some(t) = raw.header_timeout {
            match self.duration(&t, "header_timeout") {
                Some(d) if d.is_zero() => {
                    self.error(t.span(), "header_timeout must be more than 0s")
                }
                Some(d) => config.header_timeout = d,
                None => {}
            }
        }
        if let Some(n) = raw.max_connections
            && let Some(n) = self.int_in(&n, "max_connections", 1..=i64::from(u32::MAX))
        {
            config.max_connections = n as usize;
        }
        config
    }

    /// The admin config, and the span of its `listen` when written.
    fn admin(
        &mut self,
        raw: Option<RawAdmin>,
        table_span: Range<usize>,
    ) -> (AdminConfig, Option<Range<usize>>) {
        let mut config = AdminConfig {
            listen: default_addr(DEFAULT_ADMIN_LISTEN),
        };
        let Some(raw) = raw else {
            return (config, None);
        };
        let mut listen_span = None;
        if let Some(listen) = raw.listen {
            listen_span = Some(listen.span());
            if let Some(addr) = self.socket_addr(&listen, "[admin]") {
                config.listen = addr;
            }
        }
        // /status and /metrics tell anyone who can reach them about the mail flowing through;
        // exposing them must be a deliberate choice.
        if !config.listen.ip().is_loopback() && !raw.allow_remote {
            let message = format!(
                "admin listen {} is not a loopback address: set allow_remote = true in [admin] to expose /status and /metrics to the network",
                config.listen
            );
            self.error(listen_span.clone().unwrap_or(table_span), message);
        }
        (config, listen_span)
    }

    fn front(&mut self, name: &Spanned<String>, raw: RawFront) -> Option<FrontConfig> {
        let table = format!("[front.{}]", shown(name.get_ref()));
        let before = self.errors.len();
        let api_base = match raw.api_base {
            Some(url) => self.http_url(&url, "api_base"),
            None => Some(DEFAULT_API_BASE.to_string()),
        };
        let default_rpm = if raw.auth.is_some() {
            DEFAULT_OAUTH_RATE_LIMIT_RPM
        } else {
            DEFAULT_RATE_LIMIT_RPM
        };
        let rate_limit_rpm = match raw.rate_limit_rpm {
            Some(n) => self
                .int_in(&n, "rate_limit_rpm", 1..=i64::from(MAX_RATE_LIMIT_RPM))
                .map(|n| n as u32),
            None => Some(default_rpm),
        };
        let has_token = raw.token.is_some();
        let token = raw.token.map(|s| self.secret(s, "token", &table));
        // An auth table whose body failed was reported in pass 1: the connection is
        // invalid (returning it without oauth would only add "needs a token" follow-ups).
        let oauth = match raw.auth {
            None => Some(None),
            Some(auth) => {
                if has_token {
                    let message = format!(
                        "{table} has both token and auth: use token for an api token or auth = {{ oauth = {{ ... }} }} for an oauth app, not both"
                    );
                    self.error(auth.span.clone(), message);
                }
                auth.oauth.and_then(|o| self.oauth(o, &table)).map(Some)
            }
        };
        let rule = raw
            .rule_webhook_secret
            .map(|s| self.secret(s, "rule_webhook_secret", &table));
        let app = raw
            .app_webhook_secret
            .map(|s| self.secret(s, "app_webhook_secret", &table));
        if self.errors.len() > before {
            return None;
        }
        Some(FrontConfig {
            name: name.get_ref().clone(),
            api_base: api_base?,
            token: token.flatten(),
            oauth: oauth?,
            rate_limit_rpm: rate_limit_rpm?,
            rule_webhook_secret: rule.flatten(),
            app_webhook_secret: app.flatten(),
        })
    }

    fn oauth(&mut self, raw: RawOAuth, front_table: &str) -> Option<OAuthConfig> {
        let table = format!("{}.auth.oauth]", front_table.trim_end_matches(']'));
        let before = self.errors.len();
        let client_id = raw.client_id.get_ref().trim().to_string();
        if client_id.is_empty() {
            self.error(
                raw.client_id.span(),
                format!("client_id in {table} is empty"),
            );
        }
        let client_secret = self.secret(raw.client_secret, "client_secret", &table);
        let mut url = |raw: Option<Spanned<String>>, key: &str, default: &str| match raw {
            Some(u) => self.http_url(&u, key),
            None => Some(default.to_string()),
        };
        let authorize_url = url(
            raw.authorize_url,
            "authorize_url",
            DEFAULT_OAUTH_AUTHORIZE_URL,
        );
        let token_url = url(raw.token_url, "token_url", DEFAULT_OAUTH_TOKEN_URL);
        // Kept exactly as written: Front compares it with the app's registered redirect URL.
        let redirect_uri = match raw.redirect_uri {
            None => Some(DEFAULT_OAUTH_REDIRECT_URI.to_string()),
            Some(r) => {
                let value = r.get_ref().trim();
                match reqwest::Url::parse(value) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                        Some(value.to_string())
                    }
                    _ => {
                        let message = format!(
                            "redirect_uri in {table} must be an http:// or https:// url with a host, like {DEFAULT_OAUTH_REDIRECT_URI:?}, got {value:?}"
                        );
                        self.error(r.span(), message);
                        None
                    }
                }
            }
        };
        if self.errors.len() > before {
            return None;
        }
        Some(OAuthConfig {
            client_id,
            client_secret: client_secret?,
            authorize_url: authorize_url?,
            token_url: token_url?,
            redirect_uri: redirect_uri?,
        })
    }

    fn jsonl_sink(
        &mut self,
        raw: RawJsonlSink,
        table: &str,
        state: &StateConfig,
        seen: &mut BTreeMap<PathBuf, String>,
    ) -> Option<SinkConfig> {
        let path = self.path(&raw.path, "path", table)?;
        let key = lexical(&path);
        if key == lexical(&state.path) {
            let message = format!(
                "path in {table} is the state database {}: use another file",
                shown_path(&path)
            );
            self.error(raw.path.span(), message);
            return None;
        }
        if let Some(first) = seen.get(&key) {
            // Two writers on one file would interleave lines and break the no-duplicate rule.
            let message = format!(
                "path in {table} is the same file as in {first}: {}",
                shown_path(&path)
            );
            self.error(raw.path.span(), message);
            return None;
        }
        seen.insert(key, table.to_string());
        Some(SinkConfig::Jsonl(JsonlSinkConfig { path }))
    }

    fn next_sink(&mut self, raw: RawNextSink, table: &str) -> Option<SinkConfig> {
        let endpoint = self.http_url(&raw.endpoint, "endpoint");
        let teamspace = raw.teamspace.get_ref().trim().to_string();
        if teamspace.is_empty() {
            self.error(
                raw.teamspace.span(),
                format!("teamspace in {table} is empty"),
            );
        }
        let token = self.secret(raw.token, "token", table);
        let batch_size = match raw.batch_size {
            None => 1,
            Some(b) if (1..=512).contains(b.get_ref()) => *b.get_ref() as usize,
            Some(b) => {
                self.error(b.span(), format!("batch_size in {table} must be 1 to 512"));
                return None;
            }
        };
        let timeout = match raw.timeout {
            None => Duration::from_secs(10),
            Some(t) => {
                let d = self.duration(&t, "timeout")?;
                if d.is_zero() {
                    self.error(
                        t.span(),
                        format!("timeout in {table} must be more than zero"),
                    );
                    return None;
                }
                d
            }
        };
        let path = raw.path.map(|p| {
            let probe = frontsync_sinks::next::NextSinkConfig {
                path: Some(p.get_ref().clone()),
                ..frontsync_sinks::next::NextSinkConfig::new("https://x.invalid", "ts", "t")
            };
            if let Err(e) = probe.validate() {
                self.error(p.span(), e);
            }
            p.into_inner()
        });
        if teamspace.is_empty() {
            return None;
        }
        Some(SinkConfig::Next(NextSinkConfig {
            endpoint: endpoint?,
            teamspace,
            token: token?,
            path,
            batch_size,
            timeout,
        }))
    }

    fn subscription(
        &mut self,
        entry: RawSubscriptionEntry,
        refs: &Refs<'_>,
        names: &mut BTreeMap<String, usize>,
    ) -> Option<Subscription> {
        let labels: Vec<LabelRule> = entry
            .labels
            .into_iter()
            .filter_map(|l| self.label(l))
            .collect();
        let raw = entry.sub?;
        let before = self.errors.len();
        let name = raw.name.get_ref().clone();

        if self.check_name(&raw.name, "subscription") {
            let (line, _) = self.position(raw.name.span().start);
            match names.get(&name) {
                Some(first) => {
                    let message =
                        format!("duplicate subscription name \"{name}\" (first at line {first})");
                    self.error(raw.name.span(), message);
                }
                None => {
                    names.insert(name.clone(), line);
                }
            }
        }

        // The connection: `None` when unknown or itself invalid (then already reported).
        let front_name = raw.front.get_ref().clone();
        let front = refs.front.get(&front_name);
        if !refs.fronts_seen.contains(&front_name) {
            let known = refs.fronts_seen.iter().cloned().collect::<Vec<_>>();
            let message = format!(
                "unknown front {front_name:?}: define [front.{}]{}",
                shown(&front_name),
                one_of(&known)
            );
            self.error(raw.front.span(), message);
        }
        let has_token = front.is_some_and(FrontConfig::has_api_access);
        let needs_token = |what: &str| {
            format!(
                "polling needs a token: set token in [front.{}] or {what} = \"0s\"",
                shown(&front_name)
            )
        };

        let mut inboxes = Vec::new();
        for inbox in raw.inboxes {
            let value = inbox.get_ref().trim();
            if value.is_empty() {
                self.error(inbox.span(), "empty inbox in inboxes");
                continue;
            }
            if front.is_some() && !has_token && !value.starts_with("inb_") {
                let message = format!(
                    "inbox {value:?} is a name, and names are looked up through the api: set token in [front.{}] or use the inbox id (inb_...)",
                    shown(&front_name)
                );
                self.error(inbox.span(), message);
            }
            inboxes.push(value.to_string());
        }

        let statuses = self.statuses(&raw.statuses);
        let tags_any = self.strings(&raw.tags_any, "tag", "tags_any");
        let tags_none = self.strings(&raw.tags_none, "tag", "tags_none");

        let backfill = match &raw.backfill {
            Some(b) => {
                let d = self.duration(b, "backfill");
                if d.is_some_and(|d| !d.is_zero()) && front.is_some() && !has_token {
                    self.error(b.span(), needs_token("backfill"));
                }
                d.unwrap_or_default()
            }
            None => Duration::ZERO,
        };
        let poll_interval = match &raw.poll_interval {
            Some(p) => {
                let d = self.duration(p, "poll_interval");
                if d.is_some_and(|d| !d.is_zero()) && front.is_some() && !has_token {
                    self.error(p.span(), needs_token("poll_interval"));
                }
                d.unwrap_or_default()
            }
            None if has_token => DEFAULT_POLL_INTERVAL,
            None => Duration::ZERO,
        };

        let (emit_created, emit_updated) = match &raw.emit {
            Some(emit) => self.emit(emit),
            None => (true, false),
        };

        let mut sinks: Vec<String> = Vec::new();
        if raw.sinks.get_ref().is_empty() {
            self.error(
                raw.sinks.span(),
                "sinks is empty: list at least one [sinks.NAME]",
            );
        }
        for sink in raw.sinks.get_ref() {
            let sink_name = sink.get_ref();
            if sinks.contains(sink_name) {
                self.error(sink.span(), format!("sink {sink_name:?} is listed twice"));
            } else if !refs.sinks_seen.contains(sink_name) {
                let known = refs.sinks_seen.iter().cloned().collect::<Vec<_>>();
                let message = format!(
                    "unknown sink {sink_name:?}: define [sinks.{}]{}",
                    shown(sink_name),
                    one_of(&known)
                );
                self.error(sink.span(), message);
            }
            if !sinks.contains(sink_name) {
                sinks.push(sink_name.clone());
            }
        }

        if self.errors.len() > before || front.is_none() {
            return None;
        }
        Some(Subscription {
            name,
            front: front_name,
            inboxes,
            statuses,
            tags_any,
            tags_none,
            backfill,
            poll_interval,
            emit_created,
            emit_updated,
            sinks,
            labels,
        })
    }

    fn label(&mut self, raw: RawLabel) -> Option<LabelRule> {
        let before = self.errors.len();
        let tags_any = self.strings(&raw.tags_any, "tag", "tags_any");
        let statuses = self.statuses(&raw.statuses);
        if raw.add.get_ref().is_empty() {
            self.error(
                raw.add.span(),
                "add is empty: list at least one label to add",
            );
        }
        let add = self.strings(raw.add.get_ref(), "label", "add");
        (self.errors.len() == before).then_some(LabelRule {
            tags_any,
            statuses,
            add,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Value checks. Each reports at the value's span and returns `None` on error.
    // -----------------------------------------------------------------------------------------

    /// `[a-z0-9_-]+`: names end up in URLs, Highlight ids and database keys.
    fn check_name(&mut self, name: &Spanned<String>, what: &str) -> bool {
        let n = name.get_ref();
        let ok = !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            let message = format!(
                "invalid {what} name {n:?}: use lowercase letters, digits, \"_\" and \"-\""
            );
            self.error(name.span(), message);
        }
        ok
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        };
        // Drops `.` components; `..` is kept, as a symlink may sit before it.
        joined.components().collect()
    }

    fn path(&mut self, raw: &Spanned<String>, key: &str, table: &str) -> Option<PathBuf> {
        if raw.get_ref().trim().is_empty() {
            self.error(raw.span(), format!("{key} in {table} is empty"));
            return None;
        }
        Some(self.resolve(raw.get_ref()))
    }

    fn socket_addr(&mut self, raw: &Spanned<String>, table: &str) -> Option<SocketAddr> {
        match raw.get_ref().trim().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                let message = format!(
                    "invalid address {:?} for listen in {table}: use ip:port, like 127.0.0.1:8787 or [::1]:8787",
                    raw.get_ref()
                );
                self.error(raw.span(), message);
                None
            }
        }
    }

    fn int_in(
        &mut self,
        raw: &Spanned<i64>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let n = *raw.get_ref();
        if range.contains(&n) {
            Some(n)
        } else {
            let message = format!(
                "{key} must be between {} and {}, got {n}",
                range.start(),
                range.end()
            );
            self.error(raw.span(), message);
            None
        }
    }

    fn duration(&mut self, raw: &Spanned<String>, key: &str) -> Option<Duration> {
        match humantime::parse_duration(raw.get_ref().trim()) {
            Ok(d) => Some(d),
            Err(e) => {
                let message = format!("invalid duration {:?} for {key}: {e}", raw.get_ref());
                self.error(raw.span(), message);
                None
            }
        }
    }

    /// An `http://` or `https://` URL with a host, without its trailing `/`.
    fn http_url(&mut self, raw: &Spanned<String>, key: &str) -> Option<String> {
        let url = raw.get_ref().trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        match rest {
            Some(rest) if !rest.trim_matches('/').is_empty() => {
                Some(url.trim_end_matches('/').to_string())
            }
            Some(_) => {
                self.error(raw.span(), format!("{key} {url:?} has no host"));
                None
            }
            None => {
                let message = format!("{key} must start with http:// or https://, got {url:?}");
                self.error(raw.span(), message);
                None
            }
        }
    }

    fn statuses(&mut self, raw: &[Spanned<String>]) -> Vec<Status> {
        let mut out = Vec::new();
        for s in raw {
            let value = s.get_ref().as_str();
            match Status::parse(value) {
                Some(status) if !out.contains(&status) => out.push(status),
                Some(_) => {}
                None => {
                    let hint = match value {
                        "assigned" | "unassigned" => format!(
                            "use \"open\" (front's {value} conversations are open in frontsync)"
                        ),
                        "deleted" => "use \"trashed\"".to_string(),
                        _ => "use \"open\", \"archived\", \"trashed\" or \"spam\"".to_string(),
                    };
                    self.error(s.span(), format!("unknown status {value:?}: {hint}"));
                }
            }
        }
        out
    }

    /// Non-empty strings (tags, labels), trimmed.
    fn strings(&mut self, raw: &[Spanned<String>], what: &str, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for s in raw {
            let value = s.get_ref().trim();
            if value.is_empty() {
                self.error(s.span(), format!("empty {what} in {key}"));
            } else {
                out.push(value.to_string());
            }
        }
        out
    }

    fn emit(&mut self, raw: &Spanned<Vec<Spanned<String>>>) -> (bool, bool) {
        let (mut created, mut updated) = (false, false);
        if raw.get_ref().is_empty() {
            self.error(
                raw.span(),
                "emit is empty: use [\"created\"], [\"updated\"] or both",
            );
        }
        for e in raw.get_ref() {
            match e.get_ref().as_str() {
                "created" => created = true,
                "updated" => updated = true,
                other => {
                    let message = format!(
                        "unknown emit value {other:?}: use \"created\", \"updated\" or both"
                    );
                    self.error(e.span(), message);
                }
            }
        }
        (created, updated)
    }

    /// `{ env = "VAR" }`, `{ file = "/path" }` or `{ credential = "name" }`. The messages
    /// never include a value: a literal string here is most likely the secret itself.
    fn secret(&mut self, raw: RawSecret, key: &str, table: &str) -> Option<Secret> {
        const USE: &str =
            "use { env = \"VAR\" }, { file = \"/path\" } or { credential = \"name\" }";
        let span = raw.span();
        let fields = match raw.into_inner() {
            toml::Value::Table(t) => t,
            toml::Value::String(_) => {
                self.error(span, format!("secrets are never literal strings: {USE}"));
                return None;
            }
            _ => {
                let message = format!("{key} in {table} must be a secret table: {USE}");
                self.error(span, message);
                return None;
            }
        };
        let mut found: Vec<(&str, String)> = Vec::new();
        let mut ok = true;
        for (k, v) in &fields {
            let kind = match k.as_str() {
                "env" => "env",
                "file" => "file",
                "credential" => "credential",
                other => {
                    let message =
                        format!("unknown key {other:?} in the secret {key} of {table}: {USE}");
                    self.error(span.clone(), message);
                    ok = false;
                    continue;
                }
            };
            match v.as_str().map(str::trim) {
                Some(s) if !s.is_empty() => found.push((kind, s.to_string())),
                Some(_) => {
                    let message = format!("{kind} of the secret {key} in {table} is empty");
                    self.error(span.clone(), message);
                    ok = false;
                }
                None => {
                    let message = format!("{kind} of the secret {key} in {table} must be a string");
                    self.error(span.clone(), message);
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        match found.as_slice() {
            [] => {
                let message = format!("the secret {key} in {table} is empty: {USE}");
                self.error(span, message);
                None
            }
            [(kind, value)] => self.secret_source(kind, value, span, key, table),
            [..] => {
                let kinds: Vec<&str> = found.iter().map(|(k, _)| *k).collect();
                let message = format!(
                    "the secret {key} in {table} has {}: set exactly one of env, file or credential",
                    kinds.join(" and ")
                );
                self.error(span, message);
                None
            }
        }
    }

    fn secret_source(
        &mut self,
        kind: &str,
        value: &str,
        span: Range<usize>,
        key: &str,
        table: &str,
    ) -> Option<Secret> {
        match kind {
            "env" if value.contains(['=', '\0']) => {
                // Not echoed: a value with "=" is often the secret itself, pasted by mistake.
                let message = format!(
                    "env of the secret {key} in {table} is not a variable name (it contains \"=\"; env takes the name of a variable, never the secret itself)"
                );
                self.error(span, message);
                None
            }
            "env" => Some(Secret::Env(value.to_string())),
            "file" => Some(Secret::File(self.resolve(value))),
            // systemd credential names are file names inside $CREDENTIALS_DIRECTORY.
            _ if value.contains('/') || value == "." || value == ".." => {
                let message = format!(
                    "credential of the secret {key} in {table} must be a name without \"/\", as in LoadCredential=NAME:PATH"
                );
                self.error(span, message);
                None
            }
            _ => Some(Secret::Credential(value.to_string())),
        }
    }
}

/// What subscriptions may refer to.
struct Refs<'r> {
    front: &'r BTreeMap<String, FrontConfig>,
    fronts_seen: &'r BTreeSet<String>,
    sinks_seen: &'r BTreeSet<String>,
}

/// The keys a derived `Deserialize` struct accepts (empty if `T` is not such a struct), read
/// by handing it a deserializer that only records what `deserialize_struct` is asked for.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor, value::Error};

    struct Probe<'f>(&'f mut &'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("probe"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Error> {
            *self.0 = fields;
            Err(Error::custom("probe"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // Always an error: the probe only wants to be asked.
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// `"a", "b" or "c"`.
fn quoted_or(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// `: or use one of: a, b` when there is anything to suggest.
fn one_of(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        let names: Vec<_> = known.iter().map(|n| shown(n)).collect();
        format!(" or use one of: {}", names.join(", "))
    }
}

/// A path for a one-line message: as is, or quoted with escapes when it holds a control char.
fn shown_path(path: &Path) -> String {
    let text = path.display().to_string();
    if text.chars().any(char::is_control) {
        format!("{text:?}")
    } else {
        text
    }
}

/// A name from the file as it can appear in a one-line message: bare when it is a plain
/// TOML key, else quoted with escapes (as TOML writes it), so a name holding a line break or
/// a control char cannot split or garble the message.
fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        name.into()
    } else {
        format!("{name:?}").into()
    }
}

fn default_addr(s: &str) -> SocketAddr {
    // The defaults are constants that parse; the fallback only keeps this free of panics.
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Folds `.` and `..` without touching the disk: only to compare paths for equality.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Turns a toml/serde error into our one-line message naming the table.
fn describe_de_error(e: &toml::de::Error, table: &str) -> String {
    let message = e.message();
    if let Some(key) = backquoted_after(message, "unknown field ") {
        return format!("unknown key {key:?} in {table}");
    }
    if let Some(key) = backquoted_after(message, "missing field ") {
        return format!("missing key {key:?} in {table}");
    }
    // toml adds the key path as a last line "in `a.b`" when it has no document to quote.
    let rendered = e.to_string();
    let key = rendered
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')));
    match key {
        Some(key) => format!("key {key:?} in {table}: {}", one_line(message)),
        None => format!("in {table}: {}", one_line(message)),
    }
}

/// `unknown field `x`, expected ...` -> `x`.
fn backquoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split_once('`').map(|(key, _)| key)
}

/// toml's messages may span lines and start with a capital; ours do neither.
fn one_line(message: &str) -> String {
    let joined = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    lowercase_first(joined.trim_end_matches('.'))
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Joins lines so that line numbers in the tests are the index + 1.
    fn doc(lines: &[&str]) -> String {
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }

    const FRONT_AND_SINK: [&str; 3] = ["[front.acme]", "[sinks.console]", "type = \"stdout\""];

    /// The smallest valid configuration, with the subscription's lines appended.
    fn with_subscription(extra: &[&str]) -> String {
        let mut lines = FRONT_AND_SINK.to_vec();
        lines.extend([
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme\"",
            "sinks = [\"console\"]",
        ]);
        lines.extend(extra);
        doc(&lines)
    }

    fn ok(text: &str) -> Config {
        match parse(text, Path::new("/etc/frontsync/config.toml")) {
            Ok(c) => c,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(text, Path::new("config.toml")) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    fn one_error(text: &str) -> String {
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn the_example_parses_with_the_documented_values() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let c = parse(
            include_str!("../config.example.toml"),
            &root.join("config.example.toml"),
        )
        .unwrap();
        assert_eq!(c.state.path, root.join("state/frontsync.redb"));
        let webhook = c.webhook.as_ref().unwrap();
        assert_eq!(webhook.listen.to_string(), "127.0.0.1:8787");
        assert_eq!(webhook.max_body_bytes, 1_048_576);
        assert_eq!(webhook.header_timeout, Duration::from_secs(10));
        assert_eq!(webhook.max_connections, 1024);
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8788");

        let acme = &c.front["acme"];
        assert_eq!(acme.name, "acme");
        assert_eq!(acme.api_base, "https://api2.frontapp.com");
        assert_eq!(acme.token, None);
        assert_eq!(acme.rate_limit_rpm, 50);
        assert_eq!(
            acme.rule_webhook_secret,
            Some(Secret::File(root.join("examples/dev-rule-secret")))
        );
        assert_eq!(
            acme.app_webhook_secret,
            Some(Secret::File(root.join("examples/dev-app-secret")))
        );

        assert_eq!(c.sinks.len(), 2);
        match &c.sinks["archive"] {
            SinkConfig::Jsonl(j) => assert_eq!(j.path, root.join("state/highlights.jsonl")),
            other => panic!("archive is {other:?}"),
        }
        assert!(matches!(c.sinks["console"], SinkConfig::Stdout));

        assert_eq!(c.subscriptions.len(), 1);
        let s = &c.subscriptions[0];
        assert_eq!(s.name, "support");
        assert_eq!(s.front, "acme");
        assert!(s.inboxes.is_empty() && s.statuses.is_empty());
        assert!(s.tags_any.is_empty() && s.tags_none.is_empty());
        assert_eq!(s.backfill, Duration::ZERO);
        assert_eq!(s.poll_interval, Duration::ZERO);
        assert!(s.emit_created && !s.emit_updated);
        assert_eq!(s.sinks, ["archive", "console"]);
        assert_eq!(s.labels.len(), 1);
        assert_eq!(s.labels[0].tags_any, ["bug"]);
        assert!(s.labels[0].statuses.is_empty());
        assert_eq!(s.labels[0].add, ["bug-report"]);

        assert_eq!(c.warnings, Vec::<String>::new());
        // The example must run with no credentials: its secrets are files in the repo.
        assert_eq!(c.check_secrets(), Vec::<String>::new());
        assert_eq!(
            c.summary(),
            [
                "subscription support: front acme, inboxes all; statuses any; no backfill; \
              webhooks only; emit created; sinks archive, console; 1 label rule"
            ]
        );
    }

    #[test]
    fn the_dev_secrets_hold_the_documented_values() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let rule = Secret::File(root.join("examples/dev-rule-secret"))
            .resolve()
            .unwrap();
        let app = Secret::File(root.join("examples/dev-app-secret"))
            .resolve()
            .unwrap();
        assert_eq!(rule.expose(), "dev-rule-secret-change-me");
        assert_eq!(app.expose(), "dev-app-secret-change-me");
    }

    #[test]
    fn defaults_of_a_minimal_config() {
        let c = ok(&with_subscription(&[]));
        assert_eq!(c.source_path, Path::new("/etc/frontsync/config.toml"));
        assert_eq!(
            c.state.path,
            Path::new("/etc/frontsync/state/frontsync.redb")
        );
        assert!(c.webhook.is_none());
        assert_eq!(c.admin.listen.to_string(), DEFAULT_ADMIN_LISTEN);
        let acme = &c.front["acme"];
        assert_eq!(acme.api_base, DEFAULT_API_BASE);
        assert_eq!(acme.rate_limit_rpm, DEFAULT_RATE_LIMIT_RPM);
        assert!(acme.token.is_none() && acme.rule_webhook_secret.is_none());
        assert!(acme.app_webhook_secret.is_none());
        let s = &c.subscriptions[0];
        assert!(s.inboxes.is_empty() && s.statuses.is_empty());
        assert!(s.tags_any.is_empty() && s.tags_none.is_empty());
        assert_eq!(s.backfill, Duration::ZERO);
        // No token: webhooks only.
        assert_eq!(s.poll_interval, Duration::ZERO);
        assert!(s.emit_created && !s.emit_updated);
        assert!(s.labels.is_empty());
    }

    #[test]
    fn webhook_defaults_when_the_table_is_empty() {
        let mut text = with_subscription(&[]);
        text.push_str("[webhook]\n");
        let c = ok(&text);
        let w = c.webhook.unwrap();
        assert_eq!(w.listen.to_string(), DEFAULT_WEBHOOK_LISTEN);
        assert_eq!(w.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(w.header_timeout, DEFAULT_HEADER_TIMEOUT);
        assert_eq!(w.max_connections, DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn poll_interval_defaults_to_60s_with_a_token() {
        let text = doc(&[
            "[front.acme]",
            "token = { env = \"FRONT_API_TOKEN\" }",
            "[sinks.console]",
            "type = \"stdout\"",
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme\"",
            "inboxes = [\"inb_1\", \"Support\"]",
            "sinks = [\"console\"]",
        ]);
        let c = ok(&text);
        assert_eq!(
            c.front["acme"].token,
            Some(Secret::Env("FRONT_API_TOKEN".into()))
        );
        assert_eq!(c.subscriptions[0].poll_interval, Duration::from_secs(60));
        assert_eq!(c.subscriptions[0].inboxes, ["inb_1", "Support"]);
    }

    #[test]
    fn every_key_set() {
        let text = doc(&[
            "[state]",
            "path = \"/var/lib/frontsync/db.redb\"",
            "[webhook]",
            "listen = \"0.0.0.0:9000\"",
            "max_body_bytes = 2048",
            "header_timeout = \"3s\"",
            "max_connections = 7",
            "[admin]",
            "listen = \"10.0.0.1:9001\"",
            "allow_remote = true",
            "[front.acme]",
            "api_base = \"http://localhost:1234/\"",
            "token = { credential = \"front-token\" }",
            "rate_limit_rpm = 120",
            "rule_webhook_secret = { env = \"RULE\" }",
            "app_webhook_secret = { file = \"/run/app\" }",
            "[sinks.next]",
            "type = \"next\"",
            "endpoint = \"https://api.nextapp.co/v1/\"",
            "teamspace = \"ts_123\"",
            "token = { env = \"NEXT_API_TOKEN\" }",
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme\"",
            "inboxes = [\"inb_123\", \"Support\"]",
            "statuses = [\"open\", \"archived\"]",
            "tags_any = [\"vip\"]",
            "tags_none = [\"spam-filter\"]",
            "backfill = \"7d\"",
            "poll_interval = \"90s\"",
            "emit = [\"created\", \"updated\"]",
            "sinks = [\"next\"]",
            "[[subscription.label]]",
            "tags_any = [\"bug\"]",
            "statuses = [\"open\"]",
            "add = [\"bug-report\", \"triage\"]",
        ]);
        let c = ok(&text);
        assert_eq!(c.state.path, Path::new("/var/lib/frontsync/db.redb"));
        let w = c.webhook.as_ref().unwrap();
        assert_eq!(w.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(w.max_body_bytes, 2048);
        assert_eq!(w.header_timeout, Duration::from_secs(3));
        assert_eq!(w.max_connections, 7);
        assert_eq!(c.admin.listen.to_string(), "10.0.0.1:9001");
        let f = &c.front["acme"];
        assert_eq!(f.api_base, "http://localhost:1234");
        assert_eq!(f.token, Some(Secret::Credential("front-token".into())));
        assert_eq!(f.rate_limit_rpm, 120);
        assert_eq!(f.rule_webhook_secret, Some(Secret::Env("RULE".into())));
        assert_eq!(f.app_webhook_secret, Some(Secret::File("/run/app".into())));
        match &c.sinks["next"] {
            SinkConfig::Next(n) => {
                assert_eq!(n.endpoint, "https://api.nextapp.co/v1");
                assert_eq!(n.teamspace, "ts_123");
                assert_eq!(n.token, Secret::Env("NEXT_API_TOKEN".into()));
            }
            other => panic!("next is {other:?}"),
        }
        let s = &c.subscriptions[0];
        assert_eq!(s.statuses, [Status::Open, Status::Archived]);
        assert_eq!(s.tags_any, ["vip"]);
        assert_eq!(s.tags_none, ["spam-filter"]);
        assert_eq!(s.backfill, Duration::from_secs(7 * 86_400));
        assert_eq!(s.poll_interval, Duration::from_secs(90));
        assert!(s.emit_created && s.emit_updated);
        assert_eq!(s.labels[0].statuses, [Status::Open]);
        assert_eq!(s.labels[0].add, ["bug-report", "triage"]);
        assert_eq!(c.warnings, Vec::<String>::new());
        assert_eq!(
            c.summary(),
            [
                "subscription support: front acme, inboxes inb_123, Support; statuses open, \
              archived; tags any of vip; tags none of spam-filter; backfill 7d; poll every \
              1m30s; emit created, updated; sinks next; 1 label rule"
            ]
        );
    }

    #[test]
    fn unknown_key_in_a_subscription_points_at_the_key() {
        let mut lines = FRONT_AND_SINK.to_vec();
        lines.extend([
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme\"",
            "  inboxs = [\"inb_1\"]",
            "sinks = [\"console\"]",
        ]);
        assert_eq!(
            one_error(&doc(&lines)),
            "config.toml:7:3: unknown key \"inboxs\" in [[subscription]]"
        );
    }

    #[test]
    fn unknown_keys_in_other_tables() {
        let mut text = with_subscription(&[
            "[[subscription.label]]",
            "add = [\"x\"]",
            "tag_any = [\"y\"]",
        ]);
        text.push_str("[webhook]\nlisten_on = \"x\"\n[front.other]\ntokn = { env = \"X\" }\n");
        text.push_str("subscriptions = 1\n");
        assert_eq!(
            errors(&text),
            [
                "config.toml:10:1: unknown key \"tag_any\" in [[subscription.label]]",
                "config.toml:12:1: unknown key \"listen_on\" in [webhook]",
                "config.toml:14:1: unknown key \"tokn\" in [front.other]",
                // After [front.other], this line belongs to that table; every unknown key of
                // a table is reported, in file order.
                "config.toml:15:1: unknown key \"subscriptions\" in [front.other]",
            ]
        );
        let text = format!("subscriptions = 1\n{}", with_subscription(&[]));
        assert_eq!(
            one_error(&text),
            "config.toml:1:1: unknown key \"subscriptions\" at top level"
        );
    }

    #[test]
    fn missing_key_points_at_the_table_header() {
        let mut lines = FRONT_AND_SINK.to_vec();
        lines.extend([
            "[[subscription]]",
            "name = \"support\"",
            "sinks = [\"console\"]",
        ]);
        assert_eq!(
            one_error(&doc(&lines)),
            "config.toml:4:1: missing key \"front\" in [[subscription]]"
        );
    }

    #[test]
    fn bad_duration() {
        let text = with_subscription(&["poll_interval = \"5x\""]);
        let reason = humantime::parse_duration("5x").unwrap_err();
        assert_eq!(
            one_error(&text),
            format!("config.toml:8:17: invalid duration \"5x\" for poll_interval: {reason}")
        );
    }

    #[test]
    fn unknown_front() {
        let mut lines = FRONT_AND_SINK.to_vec();
        lines.extend([
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme2\"",
            "sinks = [\"console\"]",
        ]);
        assert_eq!(
            one_error(&doc(&lines)),
            "config.toml:6:9: unknown front \"acme2\": define [front.acme2] or use one of: acme"
        );
    }

    #[test]
    fn unknown_sink() {
        let mut lines = FRONT_AND_SINK.to_vec();
        lines.extend([
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme\"",
            "sinks = [\"console\", \"nxt\"]",
        ]);
        assert_eq!(
            one_error(&doc(&lines)),
            "config.toml:7:21: unknown sink \"nxt\": define [sinks.nxt] or use one of: console"
        );
    }

    #[test]
    fn sinks_of_a_subscription_must_be_non_empty_and_distinct() {
        let mut lines = FRONT_AND_SINK.to_vec();
        lines.extend([
            "[[subscription]]",
            "name = \"a\"",
            "front = \"acme\"",
            "sinks = []",
            "[[subscription]]",
            "name = \"b\"",
            "front = \"acme\"",
            "sinks = [\"console\", \"console\"]",
        ]);
        assert_eq!(
            errors(&doc(&lines)),
            [
                "config.toml:7:9: sinks is empty: list at least one [sinks.NAME]",
                "config.toml:11:21: sink \"console\" is listed twice",
            ]
        );
    }

    #[test]
    fn duplicate_subscription_name() {
        let text = with_subscription(&[
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme\"",
            "sinks = [\"console\"]",
        ]);
        assert_eq!(
            one_error(&text),
            "config.toml:9:8: duplicate subscription name \"support\" (first at line 5)"
        );
    }

    #[test]
    fn invalid_names() {
        let text = doc(&[
            "[front.Acme]",
            "[sinks.\"my sink\"]",
            "type = \"stdout\"",
            "[[subscription]]",
            "name = \"Support\"",
            "front = \"Acme\"",
            "sinks = [\"my sink\"]",
        ]);
        assert_eq!(
            errors(&text),
            [
                "config.toml:1:8: invalid connection name \"Acme\": use lowercase letters, digits, \"_\" and \"-\"",
                "config.toml:2:8: invalid sink name \"my sink\": use lowercase letters, digits, \"_\" and \"-\"",
                "config.toml:5:8: invalid subscription name \"Support\": use lowercase letters, digits, \"_\" and \"-\"",
            ]
        );
    }

    #[test]
    fn bad_statuses_get_a_hint() {
        let text = with_subscription(&["statuses = [\"assigned\", \"deleted\", \"closed\"]"]);
        assert_eq!(
            errors(&text),
            [
                "config.toml:8:13: unknown status \"assigned\": use \"open\" (front's assigned \
                 conversations are open in frontsync)",
                "config.toml:8:25: unknown status \"deleted\": use \"trashed\"",
                "config.toml:8:36: unknown status \"closed\": use \"open\", \"archived\", \
                 \"trashed\" or \"spam\"",
            ]
        );
        let text = with_subscription(&[
            "[[subscription.label]]",
            "statuses = [\"unassigned\"]",
            "add = [\"x\"]",
        ]);
        assert_eq!(
            one_error(&text),
            "config.toml:9:13: unknown status \"unassigned\": use \"open\" (front's unassigned \
             conversations are open in frontsync)"
        );
    }

    #[test]
    fn a_literal_secret_is_refused_without_echoing_it() {
        let text = with_subscription(&[]).replacen(
            "[front.acme]\n",
            "[front.acme]\ntoken = \"sk_live_hunter2\"\n",
            1,
        );
        let err = one_error(&text);
        assert_eq!(
            err,
            "config.toml:2:9: secrets are never literal strings: use { env = \"VAR\" }, \
             { file = \"/path\" } or { credential = \"name\" }"
        );
        assert!(!err.contains("hunter2"));
        // Nor a number, nor in the full Display.
        let text = with_subscription(&[]).replacen(
            "[front.acme]\n",
            "[front.acme]\nrule_webhook_secret = 987654321\n",
            1,
        );
        let all = parse(&text, Path::new("config.toml"))
            .unwrap_err()
            .to_string();
        assert!(!all.contains("987654321"), "{all}");
    }

    #[test]
    fn secret_tables_need_exactly_one_source() {
        let text = doc(&[
            "[front.acme]",
            "token = { env = \"A\", file = \"/b\" }",
            "rule_webhook_secret = {}",
            "app_webhook_secret = { path = \"/x\" }",
            "[sinks.console]",
            "type = \"stdout\"",
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme\"",
            "sinks = [\"console\"]",
        ]);
        assert_eq!(
            errors(&text),
            [
                "config.toml:2:9: the secret token in [front.acme] has env and file: set exactly \
                 one of env, file or credential",
                "config.toml:3:23: the secret rule_webhook_secret in [front.acme] is empty: use \
                 { env = \"VAR\" }, { file = \"/path\" } or { credential = \"name\" }",
                "config.toml:4:22: unknown key \"path\" in the secret app_webhook_secret of \
                 [front.acme]: use { env = \"VAR\" }, { file = \"/path\" } or { credential = \
                 \"name\" }",
            ]
        );
    }

    #[test]
    fn bad_sink_type() {
        let text = with_subscription(&[]).replace("type = \"stdout\"", "type = \"kafka\"");
        assert_eq!(
            one_error(&text),
            "config.toml:3:8: unknown sink type \"kafka\" in [sinks.console]: use \"jsonl\", \
             \"stdout\" or \"next\""
        );
    }

    #[test]
    fn sink_keys_depend_on_the_type() {
        let text = doc(&[
            "[front.acme]",
            "[sinks.console]",
            "type = \"stdout\"",
            "path = \"x\"",
            "[sinks.archive]",
            "type = \"jsonl\"",
            "[sinks.next]",
            "type = \"next\"",
            "endpoint = \"ftp://x\"",
            "teamspace = \"ts\"",
            "token = { env = \"T\" }",
            "[sinks.typeless]",
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme\"",
            "sinks = [\"console\"]",
        ]);
        assert_eq!(
            errors(&text),
            [
                "config.toml:2:1: unknown key \"path\" in [sinks.console]".replace("2:1", "4:1"),
                "config.toml:5:1: missing key \"path\" in [sinks.archive]".to_string(),
                "config.toml:9:12: endpoint must start with http:// or https://, got \"ftp://x\""
                    .to_string(),
                "config.toml:12:1: missing key \"type\" in [sinks.typeless]".to_string(),
            ]
        );
    }

    #[test]
    fn duplicate_jsonl_path() {
        let text = doc(&[
            "[front.acme]",
            "[sinks.b]",
            "type = \"jsonl\"",
            "path = \"out.jsonl\"",
            "[sinks.a]",
            "type = \"jsonl\"",
            "path = \"./sub/../out.jsonl\"",
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme\"",
            "sinks = [\"a\", \"b\"]",
        ]);
        let errs: Vec<String> = parse(&text, Path::new("/etc/frontsync/config.toml"))
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            [
                "/etc/frontsync/config.toml:7:8: path in [sinks.a] is the same file as in \
              [sinks.b]: /etc/frontsync/sub/../out.jsonl"
            ]
        );
    }

    #[test]
    fn jsonl_path_may_not_be_the_database() {
        let text = with_subscription(&[]).replace(
            "type = \"stdout\"",
            "type = \"jsonl\"\npath = \"state/frontsync.redb\"",
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("config.toml:4:8: path in [sinks.console] is the state database ")
        );
    }

    #[test]
    fn admin_must_be_loopback_unless_allowed() {
        let mut text = with_subscription(&[]);
        text.push_str("[admin]\nlisten = \"0.0.0.0:8788\"\n");
        assert_eq!(
            one_error(&text),
            "config.toml:9:10: admin listen 0.0.0.0:8788 is not a loopback address: set \
             allow_remote = true in [admin] to expose /status and /metrics to the network"
        );
        text.push_str("allow_remote = true\n");
        assert_eq!(ok(&text).admin.listen.to_string(), "0.0.0.0:8788");
        let mut text = with_subscription(&[]);
        text.push_str("[admin]\nlisten = \"[::1]:8788\"\n");
        assert!(ok(&text).admin.listen.ip().is_loopback());
    }

    #[test]
    fn webhook_and_admin_may_not_share_an_address() {
        let mut text = with_subscription(&[]);
        text.push_str("[webhook]\nlisten = \"127.0.0.1:9000\"\n");
        text.push_str("[admin]\nlisten = \"127.0.0.1:9000\"\n");
        assert_eq!(
            one_error(&text),
            "config.toml:11:10: admin listen 127.0.0.1:9000 is the same address as [webhook] listen"
        );
        // Port 0 means "any free port", as tests do.
        let text = text.replace(":9000", ":0");
        ok(&text);
    }

    #[test]
    fn webhook_ranges_and_addresses() {
        let mut text = with_subscription(&[]);
        text.push_str(
            "[webhook]\nlisten = \"localhost:80\"\nmax_body_bytes = 10\nheader_timeout = \"0s\"\nmax_connections = 0\n",
        );
        assert_eq!(
            errors(&text),
            [
                "config.toml:9:10: invalid address \"localhost:80\" for listen in [webhook]: use \
                 ip:port, like 127.0.0.1:8787 or [::1]:8787",
                "config.toml:10:18: max_body_bytes must be between 1024 and 67108864, got 10",
                "config.toml:11:18: header_timeout must be more than 0s",
                "config.toml:12:19: max_connections must be between 1 and 4294967295, got 0",
            ]
        );
    }

    #[test]
    fn front_values_are_checked() {
        let text = with_subscription(&[]).replacen(
            "[front.acme]\n",
            "[front.acme]\napi_base = \"api2.frontapp.com\"\nrate_limit_rpm = 0\n",
            1,
        );
        assert_eq!(
            errors(&text),
            [
                "config.toml:2:12: api_base must start with http:// or https://, got \
                 \"api2.frontapp.com\"",
                "config.toml:3:18: rate_limit_rpm must be between 1 and 10000, got 0",
            ]
        );
    }

    #[test]
    fn polling_and_inbox_names_need_a_token() {
        let text = with_subscription(&[
            "inboxes = [\"inb_1\", \"Support\"]",
            "backfill = \"7d\"",
            "poll_interval = \"1m\"",
        ]);
        assert_eq!(
            errors(&text),
            [
                "config.toml:8:21: inbox \"Support\" is a name, and names are looked up through \
                 the api: set token in [front.acme] or use the inbox id (inb_...)",
                "config.toml:9:12: polling needs a token: set token in [front.acme] or backfill = \"0s\"",
                "config.toml:10:17: polling needs a token: set token in [front.acme] or \
                 poll_interval = \"0s\"",
            ]
        );
    }

    #[test]
    fn emit_values() {
        let errs = errors(&with_subscription(&["emit = []"]));
        assert_eq!(
            errs,
            ["config.toml:8:8: emit is empty: use [\"created\"], [\"updated\"] or both"]
        );
        let errs = errors(&with_subscription(&["emit = [\"deleted\"]"]));
        assert_eq!(
            errs,
            [
                "config.toml:8:9: unknown emit value \"deleted\": use \"created\", \"updated\" or both"
            ]
        );
        let c = ok(&with_subscription(&["emit = [\"updated\"]"]));
        assert!(!c.subscriptions[0].emit_created && c.subscriptions[0].emit_updated);
    }

    #[test]
    fn labels_need_add() {
        let text = with_subscription(&[
            "[[subscription.label]]",
            "tags_any = [\"bug\"]",
            "[[subscription.label]]",
            "add = []",
        ]);
        assert_eq!(
            errors(&text),
            [
                "config.toml:8:1: missing key \"add\" in [[subscription.label]]",
                "config.toml:11:7: add is empty: list at least one label to add",
            ]
        );
    }

    #[test]
    fn unknown_keys_and_other_errors_of_one_table_are_all_reported() {
        let text = with_subscription(&[
            "statuses = [\"closed\"]",
            "poll = \"1m\"",
            "emitt = []",
            "tags_none = 3",
        ]);
        assert_eq!(
            errors(&text),
            [
                "config.toml:9:1: unknown key \"poll\" in [[subscription]]",
                "config.toml:10:1: unknown key \"emitt\" in [[subscription]]",
                "config.toml:11:13: key \"tags_none\" in [[subscription]]: invalid type: \
                 integer `3`, expected a sequence",
            ]
        );
    }

    #[test]
    fn at_least_one_subscription() {
        let text = doc(&FRONT_AND_SINK);
        assert_eq!(
            one_error(&text),
            "config.toml:1:1: no subscription: add at least one [[subscription]] (see \
             config.example.toml)"
        );
        assert_eq!(
            one_error(""),
            "config.toml:1:1: no subscription: add at least one [[subscription]] (see \
             config.example.toml)"
        );
    }

    #[test]
    fn type_errors_name_the_key() {
        let mut text = with_subscription(&["tags_any = \"bug\""]);
        text.push_str("[state]\npath = 5\n");
        assert_eq!(
            errors(&text),
            [
                "config.toml:8:12: key \"tags_any\" in [[subscription]]: invalid type: string \
                 \"bug\", expected a sequence",
                "config.toml:10:8: key \"path\" in [state]: invalid type: integer `5`, expected \
                 a string",
            ]
        );
        let text = format!("subscription = 1\n{}", doc(&FRONT_AND_SINK));
        assert_eq!(
            one_error(&text),
            "config.toml:1:16: key \"subscription\" must be an array of tables: write \
             [[subscription]]"
        );
    }

    #[test]
    fn syntax_errors_are_one_line_each() {
        let errs = errors("[front.acme\nname = \"x\nname2 = 1\n");
        assert!(!errs.is_empty());
        for e in &errs {
            assert!(e.starts_with("config.toml:"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(errs[0].starts_with("config.toml:1:12: "), "{errs:?}");
        let errs = errors("a = 1\na = 2\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("config.toml:2:1: "), "{errs:?}");
        assert!(errs[0].contains("duplicate key"), "{errs:?}");
    }

    #[test]
    fn several_errors_are_reported_at_once_in_file_order() {
        let text = doc(&[
            "[webhook]",
            "listn = \"127.0.0.1:1\"",
            "[front.acme]",
            "[sinks.console]",
            "type = \"stdout\"",
            "[[subscription]]",
            "name = \"support\"",
            "front = \"nope\"",
            "backfill = \"2 fortnights\"",
            "sinks = [\"console\", \"gone\"]",
            "[[subscription]]",
            "name = \"other\"",
            "front = \"acme\"",
            "inboxs = []",
            "sinks = [\"console\", \"gone\"]",
        ]);
        let errs = errors(&text);
        let places: Vec<&str> = errs.iter().map(|e| e.split(": ").next().unwrap()).collect();
        assert_eq!(
            places,
            [
                "config.toml:2:1",
                "config.toml:8:9",
                "config.toml:9:12",
                "config.toml:10:21",
                "config.toml:14:1",
                // The unknown key above does not stop the checks of the rest.
                "config.toml:15:21",
            ],
            "{errs:#?}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let text = doc(&[
            "[state]",
            "path = \"db/frontsync.redb\"",
            "[front.acme]",
            "token = { file = \"secrets/token\" }",
            "rule_webhook_secret = { file = \"/run/secrets/rule\" }",
            "[sinks.archive]",
            "type = \"jsonl\"",
            "path = \"../out/highlights.jsonl\"",
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme\"",
            "sinks = [\"archive\"]",
        ]);
        let c = parse(&text, Path::new("/srv/frontsync/./conf/config.toml")).unwrap();
        assert_eq!(
            c.state.path,
            Path::new("/srv/frontsync/conf/db/frontsync.redb")
        );
        assert_eq!(
            c.front["acme"].token,
            Some(Secret::File("/srv/frontsync/conf/secrets/token".into()))
        );
        assert_eq!(
            c.front["acme"].rule_webhook_secret,
            Some(Secret::File("/run/secrets/rule".into()))
        );
        match &c.sinks["archive"] {
            SinkConfig::Jsonl(j) => {
                assert_eq!(
                    j.path,
                    Path::new("/srv/frontsync/conf/../out/highlights.jsonl")
                );
            }
            other => panic!("{other:?}"),
        }
        // A bare file name: its folder is the working directory, made absolute.
        let c = parse(&text, Path::new("config.toml")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.state.path, cwd.join("db/frontsync.redb"));
    }

    #[test]
    fn warnings_for_unused_sinks_and_missing_webhook_secrets() {
        let mut text = with_subscription(&[]);
        text.push_str("[sinks.spare]\ntype = \"stdout\"\n[webhook]\n");
        let c = parse(&text, Path::new("config.toml")).unwrap();
        assert_eq!(
            c.warnings,
            [
                "config.toml:1:8: [front.acme] has no rule_webhook_secret or app_webhook_secret: \
                 its webhooks will be refused with 401",
                "config.toml:8:8: sink \"spare\" is not used by any subscription: nothing will be \
                 written to it",
            ]
        );
    }

    #[test]
    fn check_secrets_names_what_is_missing_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("present"), "hunter2\n").unwrap();
        let text = doc(&[
            "[front.acme]",
            "token = { env = \"FRONTSYNC_TEST_SURELY_UNSET_TOKEN\" }",
            "rule_webhook_secret = { file = \"present\" }",
            "app_webhook_secret = { file = \"absent\" }",
            "[sinks.next]",
            "type = \"next\"",
            "endpoint = \"https://next.invalid\"",
            "teamspace = \"ts\"",
            "token = { env = \"FRONTSYNC_TEST_SURELY_UNSET_NEXT\" }",
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme\"",
            "sinks = [\"next\"]",
        ]);
        let c = parse(&text, &dir.path().join("config.toml")).unwrap();
        let problems = c.check_secrets();
        let absent = dir.path().join("absent");
        assert_eq!(
            problems,
            [
                "[front.acme] token: environment variable FRONTSYNC_TEST_SURELY_UNSET_TOKEN is \
                 not set"
                    .to_string(),
                format!(
                    "[front.acme] app_webhook_secret: cannot read secret file {}: no such file \
                     or directory",
                    absent.display()
                ),
                "[sinks.next] token: environment variable FRONTSYNC_TEST_SURELY_UNSET_NEXT is \
                 not set"
                    .to_string(),
            ]
        );
        assert!(!problems.concat().contains("hunter2"));
    }

    #[test]
    fn load_names_an_unreadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let err = load(&path).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot read config file: no such file or directory",
                path.display()
            )
        );
        std::fs::write(&path, with_subscription(&[])).unwrap();
        assert_eq!(load(&path).unwrap().source_path, path);
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let mut lines = FRONT_AND_SINK.to_vec();
        lines.extend([
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme\"",
            "tags_any = [\"été\"] ; inboxs = 1",
            "sinks = [\"console\"]",
        ]);
        let errs = errors(&doc(&lines));
        assert!(errs[0].starts_with("config.toml:7:"), "{errs:?}");
        let text = with_subscription(&["tags_none = [\"été\", \"\"]"]);
        assert_eq!(one_error(&text), "config.toml:8:21: empty tag in tags_none");
    }

    #[test]
    fn compact_durations() {
        assert_eq!(compact_duration(Duration::from_secs(60)), "1m");
        assert_eq!(compact_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(compact_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(compact_duration(Duration::ZERO), "0s");
    }

    fn with_oauth(front_lines: &[&str], sub_extra: &[&str]) -> String {
        let mut lines = vec!["[front.acme]"];
        lines.extend(front_lines);
        lines.extend([
            "[sinks.console]",
            "type = \"stdout\"",
            "[[subscription]]",
            "name = \"support\"",
            "front = \"acme\"",
            "sinks = [\"console\"]",
        ]);
        lines.extend(sub_extra);
        doc(&lines)
    }

    #[test]
    fn oauth_connections_parse_with_defaults_and_allow_polling() {
        let text = with_oauth(
            &[
                "auth = { oauth = { client_id = \"cli_1\", client_secret = { env = \"FRONT_OAUTH_SECRET\" } } }",
            ],
            &["inboxes = [\"Support\"]", "backfill = \"1d\""],
        );
        let c = ok(&text);
        let acme = &c.front["acme"];
        assert!(acme.token.is_none() && acme.has_api_access());
        assert_eq!(acme.rate_limit_rpm, DEFAULT_OAUTH_RATE_LIMIT_RPM);
        assert_eq!(
            acme.oauth,
            Some(OAuthConfig {
                client_id: "cli_1".into(),
                client_secret: Secret::Env("FRONT_OAUTH_SECRET".into()),
                authorize_url: DEFAULT_OAUTH_AUTHORIZE_URL.into(),
                token_url: DEFAULT_OAUTH_TOKEN_URL.into(),
                redirect_uri: DEFAULT_OAUTH_REDIRECT_URI.into(),
            })
        );
        // Names and polling need api access, which the oauth app gives.
        assert_eq!(c.subscriptions[0].poll_interval, DEFAULT_POLL_INTERVAL);
        assert_eq!(c.subscriptions[0].backfill, Duration::from_secs(86_400));

        // The table form, with every optional key and an explicit rate limit.
        let text = with_oauth(
            &[
                "rate_limit_rpm = 30",
                "[front.acme.auth.oauth]",
                "client_id = \"cli_1\"",
                "client_secret = { file = \"oauth.secret\" }",
                "authorize_url = \"http://127.0.0.1:9/oauth/authorize\"",
                "token_url = \"http://127.0.0.1:9/oauth/token/\"",
                "redirect_uri = \"http://localhost:9999/cb/\"",
            ],
            &[],
        );
        let c = ok(&text);
        let oauth = c.front["acme"].oauth.clone().unwrap();
        assert_eq!(c.front["acme"].rate_limit_rpm, 30);
        assert_eq!(oauth.token_url, "http://127.0.0.1:9/oauth/token");
        // Kept exactly as written: it must match the app's registered redirect URL.
        assert_eq!(oauth.redirect_uri, "http://localhost:9999/cb/");
        assert_eq!(
            oauth.client_secret,
            Secret::File("/etc/frontsync/oauth.secret".into())
        );
    }

    #[test]
    fn oauth_mistakes_are_reported_at_their_place() {
        let text = with_oauth(
            &[
                "token = { env = \"T\" }",
                "auth = { oauth = { client_id = \"c\", client_secret = { env = \"S\" } } }",
            ],
            &[],
        );
        assert_eq!(
            one_error(&text),
            "config.toml:3:8: [front.acme] has both token and auth: use token for an api \
             token or auth = { oauth = { ... } } for an oauth app, not both"
        );
        let text = with_oauth(
            &[
                "[front.acme.auth.oauth]",
                "client_id = \"c\"",
                "client_secret = \"literally-the-secret\"",
                "scope = \"all\"",
                "redirect_uri = \"127.0.0.1:8790/callback\"",
            ],
            &["poll_interval = \"1m\""],
        );
        let errs = errors(&text);
        assert_eq!(
            errs,
            [
                "config.toml:4:17: secrets are never literal strings: use { env = \"VAR\" }, \
                 { file = \"/path\" } or { credential = \"name\" }",
                "config.toml:5:1: unknown key \"scope\" in [front.acme.auth.oauth]",
                "config.toml:6:16: redirect_uri in [front.acme.auth.oauth] must be an http:// \
                 or https:// url with a host, like \"http://127.0.0.1:8790/callback\", got \
                 \"127.0.0.1:8790/callback\"",
            ]
        );
        assert!(!errs.concat().contains("literally-the-secret"));
        let text = with_oauth(&["auth = { oauth2 = {} }"], &[]);
        assert_eq!(
            errors(&text),
            [
                "config.toml:2:10: unknown key \"oauth2\" in auth of [front.acme]: use auth = \
                 { oauth = { client_id = \"...\", client_secret = { env = \"...\" } } }"
            ]
        );
        let text = with_oauth(&["auth = { oauth = { client_id = \"c\" } }"], &[]);
        assert_eq!(
            one_error(&text),
            "config.toml:2:18: missing key \"client_secret\" in [front.acme.auth.oauth]"
        );
        let text = with_oauth(&["auth = \"oauth\""], &[]);
        assert!(
            one_error(&text).starts_with("config.toml:2:8: auth in [front.acme] must be a table")
        );
    }

    #[test]
    fn check_secrets_reads_the_oauth_client_secret() {
        let text = with_oauth(
            &[
                "auth = { oauth = { client_id = \"c\", client_secret = { env = \"FRONTSYNC_TEST_SURELY_UNSET_OAUTH\" } } }",
            ],
            &[],
        );
        assert_eq!(
            ok(&text).check_secrets(),
            [
                "[front.acme] auth.oauth.client_secret: environment variable \
                 FRONTSYNC_TEST_SURELY_UNSET_OAUTH is not set"
            ]
        );
    }

    #[test]
    fn the_commented_oauth_example_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = include_str!("../config.example.toml");
        let line = text
            .lines()
            .find(|l| l.starts_with("# auth = { oauth = "))
            .expect("config.example.toml shows auth = { oauth = ... }");
        let text = text.replacen(line, &line[2..], 1);
        let c = parse(&text, &root.join("config.example.toml")).unwrap();
        let oauth = c.front["acme"].oauth.clone().unwrap();
        assert_eq!(oauth.client_id, "YOUR_CLIENT_ID");
        assert_eq!(
            oauth.client_secret,
            Secret::Env("FRONT_OAUTH_CLIENT_SECRET".into())
        );
        assert_eq!(oauth.redirect_uri, DEFAULT_OAUTH_REDIRECT_URI);
    }
}
