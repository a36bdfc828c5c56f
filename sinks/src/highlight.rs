//! The Highlight record (schema `frontsync.highlight.v1`): what every sink receives.
//!
//! Field order here is the field order on the wire, so keep it as the contract shows it.

use serde::{Deserialize, Serialize};

/// The value of the `schema` field of every Highlight this crate version produces.
pub const SCHEMA_V1: &str = "frontsync.highlight.v1";

/// One customer conversation, as delivered to sinks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Highlight {
    /// Always [`SCHEMA_V1`].
    pub schema: String,
    /// `{subscription}:{conversation id}`, stable for the life of the conversation.
    pub id: String,
    /// 1 for `created`, then one more for each `updated` emission.
    pub revision: u64,
    /// Why this record was emitted.
    pub change: Change,
    /// The subscription that produced it.
    pub subscription: String,
    /// The subject, else the first non-empty line of `text`; at most 200 chars.
    pub title: String,
    /// Plain text of the latest message; at most 10,000 chars.
    pub text: String,
    /// Who wrote in, when known.
    pub requester: Option<Requester>,
    /// The Front teammate the conversation is assigned to.
    pub assignee: Option<Assignee>,
    /// Normalized status.
    pub status: Status,
    /// Front's own status value (`assigned`, `unassigned`, `archived`, `deleted`, ...).
    pub front_status: String,
    /// Tag names.
    pub tags: Vec<String>,
    /// Labels added by the subscription's `[[subscription.label]]` rules.
    pub labels: Vec<String>,
    /// Inboxes the conversation is known to be in.
    pub inbox_ids: Vec<String>,
    /// RFC 3339 UTC with milliseconds.
    pub created_at: String,
    /// RFC 3339 UTC with milliseconds.
    pub updated_at: String,
    /// Where it came from.
    pub source: Source,
}

impl Highlight {
    /// The key a sink must never deliver twice: `{id}:{revision}`.
    pub fn delivery_key(&self) -> String {
        format!("{}:{}", self.id, self.revision)
    }
}

/// Why a Highlight was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// The first Highlight of a conversation.
    Created,
    /// A later emission after status, tags, assignee or the latest message changed.
    Updated,
}

/// The normalized conversation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Front `assigned` or `unassigned`.
    Open,
    /// Front `archived`.
    Archived,
    /// Front `deleted` (filtered as `trashed` in Front's API).
    Trashed,
    /// Front `spam`.
    Spam,
}

impl Status {
    /// Every status, in display order.
    pub const ALL: [Status; 4] = [
        Status::Open,
        Status::Archived,
        Status::Trashed,
        Status::Spam,
    ];

    /// The lowercase name used in JSON and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Archived => "archived",
            Status::Trashed => "trashed",
            Status::Spam => "spam",
        }
    }

    /// Parses the lowercase name used in JSON and config.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The person who wrote in.
///
/// The daemon also stores it inside each conversation state, as an array of its fields in
/// this order: a new field goes at the end with `#[serde(default)]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requester {
    /// Display name, when Front knows one.
    pub name: Option<String>,
    /// Email address, phone number or other channel handle.
    pub handle: String,
}

/// The Front teammate a conversation is assigned to.
///
/// The daemon also stores it inside each conversation state, as an array of its fields in
/// this order: a new field goes at the end with `#[serde(default)]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignee {
    /// `tea_...`
    pub id: String,
    /// First and last name, else the username.
    pub name: Option<String>,
    /// Teammate email.
    pub email: Option<String>,
}

/// Provenance and a link back to Front.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Always `front`.
    pub system: String,
    /// `cnv_...`
    pub conversation_id: String,
    /// The latest message, when known.
    pub message_id: Option<String>,
    /// The event that caused this emission, when there was one.
    pub event_id: Option<String>,
    /// Opens the conversation in Front's web app.
    pub url: String,
}
