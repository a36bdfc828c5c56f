//! The TOML configuration: serde types, `load(path)`, and `validate()` with no I/O.
//!
//! Every key is documented in `config.example.toml` and the README. Unknown keys are errors,
//! and every error names the file, line and column.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use frontsync_sinks::Status;


use crate::secret::Secret;

/// The whole configuration, after loading: relative paths are resolved against the config
/// file's folder.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from.
    pub source_path: PathBuf,
    pub state: StateConfig,
    pub webhook: Option<WebhookConfig>,
    pub admin: AdminConfig,
    pub front: BTreeMap<String, FrontConfig>,
    pub sinks: BTreeMap<String, SinkConfig>,
    pub subscriptions: Vec<Subscription>,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Absolute path of the redb file.
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// How long a client may take to send the request head.
    pub header_timeout: Duration,
    /// Connections served at once; more wait in the kernel backlog.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct FrontConfig {
    pub name: String,
    pub api_base: String,
    pub token: Option<Secret>,
    pub rate_limit_rpm: u32,
    pub rule_webhook_secret: Option<Secret>,
    pub app_webhook_secret: Option<Secret>,
}

#[derive(Debug, Clone)]
pub enum SinkConfig {
    Jsonl(JsonlSinkConfig),
    Stdout,
    Next(NextSinkConfig),
}

#[derive(Debug, Clone)]
pub struct JsonlSinkConfig {
    /// Absolute path of the file.
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct NextSinkConfig {
    pub endpoint: String,
    pub teamspace: String,
    pub token: Secret,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub name: String,
    pub front: String,
    /// Inbox ids (`inb_...`) or names; empty = every inbox.
    pub inboxes: Vec<String>,
    /// Empty = any status.
    pub statuses: Vec<Status>,
    pub tags_any: Vec<String>,
    pub tags_none: Vec<String>,
    pub backfill: Duration,
    /// Zero = webhooks only.
    pub poll_interval: Duration,
    pub emit_created: bool,
    pub emit_updated: bool,
    pub sinks: Vec<String>,
    pub labels: Vec<LabelRule>,
}

#[derive(Debug, Clone, Default)]
pub struct LabelRule {
    /// Matches when the Highlight has any of these tags (empty = any tags).
    pub tags_any: Vec<String>,
    /// Matches when the Highlight has one of these statuses (empty = any status).
    pub statuses: Vec<Status>,
    pub add: Vec<String>,
}
