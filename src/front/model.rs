//! Serde models of Front API resources, and the parser of webhook bodies.
//!
//! Front's payloads vary a lot: the OpenAPI schema marks most fields required, but event
//! previews (rule webhooks without "Send Full Event Data", and most application webhooks)
//! carry only ids, `_links` and a type for `conversation`, `source` and `target`. So every
//! field except the identifiers we cannot work without is optional, unknown fields are
//! ignored, and a field of an unexpected shape reads as absent instead of failing the whole
//! event: a webhook we reject is lost (rule webhooks are not retried), while a webhook with
//! one odd field still carries a usable conversation id.
//!
//! Parsing webhook bodies is on the hot path, so [`parse_webhook_body`] first reads a body
//! straight into these types with plain, strict fields (module `strict`); only a body that
//! does not fit them as is goes through the lenient reading, which builds a `Value` first.
//!
//! The resource types carry a lifetime: their strings are `Cow`s, which the fast path borrows
//! from the body wherever they hold no escapes (but in the rare parts `strict` reads as JSON),
//! so a webhook's event copies nothing until its snapshot copies what it keeps. Everything
//! read through serde's derived code (the lenient path, API pages, stored previews) owns its
//! strings and lives as `Event<'static>`.
//!
//! Timestamps stay as Front sends them (Unix seconds as floats with 3 decimals); convert
//! them with [`secs_to_ms`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Event types whose target is the message that was received or sent.
const MESSAGE_EVENT_TYPES: [&str; 3] = ["inbound", "outbound", "out_reply"];

/// The last millisecond RFC 3339 formatting (4-digit years) can show: 9999-12-31T23:59:59.999Z.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Converts Front's Unix seconds (a float with 3 decimals) to Unix milliseconds.
///
/// Rounds rather than truncates, because `1454453901.012 * 1000.0` is `1454453901011.9998`
/// in binary floating point. Returns `None` for values no real timestamp has: NaN,
/// infinities, negative values, and anything past year 9999.
pub fn secs_to_ms(secs: f64) -> Option<i64> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    let ms = (secs * 1000.0).round();
    // Comparing as f64 before the cast: `as` saturates silently, which would hide garbage.
    if ms > MAX_TIMESTAMP_MS as f64 {
        return None;
    }
    Some(ms as i64)
}

/// `_links` of a Front resource: `self` and the named `related` links.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Links<'a> {
    /// The resource's own API URL.
    #[serde(
        rename = "self",
        default,
        deserialize_with = "lenient::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub self_: Option<Cow<'a, str>>,
    /// Related API URLs by name (`conversation`, `messages`, `last_message`, ...); links that
    /// are null or not strings are left out.
    #[serde(
        default,
        deserialize_with = "lenient::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub related: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

impl Links<'_> {
    /// The id at the end of the related link `name`, e.g. `cnv_123` from
    /// `https://acme.api.frontapp.com/conversations/cnv_123?referer=x`, when it carries `prefix`.
    pub fn related_id(&self, name: &str, prefix: &str) -> Option<String> {
        self.related
            .get(name)
            .and_then(|url| id_from_url(url, prefix))
    }
}

/// The last path segment of `url` when it starts with `prefix` and has more after it.
fn id_from_url(url: &str, prefix: &str) -> Option<String> {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    (last.len() > prefix.len() && last.starts_with(prefix)).then(|| last.to_owned())
}

/// One entry of Front's event stream (`GET /events`), and the body of a rule webhook.
///
/// A full event embeds the conversation and the source/target resources; a preview has only
/// their ids and links (see [`Event::is_preview`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Event<'a> {
    /// `evt_...`
    pub id: Cow<'a, str>,
    /// `inbound`, `outbound`, `out_reply`, `assign`, `archive`, `tag`, ...
    #[serde(rename = "type")]
    pub type_: Cow<'a, str>,
    /// Unix seconds.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub emitted_at: Option<f64>,
    /// Who or what caused the event (teammate, rule, inboxes, ...).
    #[serde(default, deserialize_with = "lenient::opt")]
    pub source: Option<EventRef<'a>>,
    /// What the event acted on (message, teammate, tag, inboxes, ...).
    #[serde(default, deserialize_with = "lenient::opt")]
    pub target: Option<EventRef<'a>>,
    /// The conversation; in a preview, only its id and links.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub conversation: Option<Conversation<'a>>,
    /// `_links.self` is the event's API URL.
    #[serde(rename = "_links", default, deserialize_with = "lenient::default")]
    pub links: Links<'a>,
}

/// The `source` or `target` of an [`Event`]: a type tag and the resource, whose shape depends
/// on the type. A message and inboxes, which every message event has, are read once, when the
/// event is parsed; any other resource is kept as JSON and read by the helpers on [`Event`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(from = "JsonEventRef")]
pub struct EventRef<'a> {
    /// `_meta.type`: `message`, `inboxes`, `teammate`, `tag`, `rule`, ...
    #[serde(rename = "_meta")]
    pub meta: Option<Meta<'a>>,
    /// The resource: an object, or an array for `inboxes`. Serialized as the JSON it was read
    /// from, except a message (as the [`Message`] read from it) and inboxes (as their ids).
    data: Option<RefData<'a>>,
}

/// The `data` of an [`EventRef`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
enum RefData<'a> {
    /// `data` when `_meta.type` is `message` and `data` reads as a [`Message`]. Boxed, as a
    /// `Message` is many times the size of a `Value`.
    Message(Box<Message<'a>>),
    /// `data` when `_meta.type` is `inboxes`: the inboxes that have an id, which is all that
    /// is read of them.
    Inboxes(Vec<InboxRef<'a>>),
    /// Anything else, `null` included.
    Json(Value),
}

/// One inbox of [`RefData::Inboxes`]; serializes as `{"id": ...}`, which reads back the same.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct InboxRef<'a> {
    /// Never empty.
    id: Cow<'a, str>,
}

impl RefData<'_> {
    /// `data` read as its `_meta` says, tolerantly: a message `data` that is not a
    /// [`Message`] stays JSON, so [`Event::target_message`] finds none; inboxes are the
    /// items of an array (or a single object, as in previews) with a non-empty string `id`.
    fn read(meta: Option<&Meta<'_>>, data: Value) -> Self {
        match meta.map(|m| &*m.type_) {
            Some("message") => match Message::deserialize(&data) {
                Ok(message) => RefData::Message(Box::new(message)),
                Err(_) => RefData::Json(data),
            },
            Some("inboxes") => {
                let inbox = |v: &Value| {
                    v.get("id")
                        .and_then(Value::as_str)
                        .filter(|id| !id.is_empty())
                        .map(|id| InboxRef {
                            id: Cow::Owned(id.to_owned()),
                        })
                };
                RefData::Inboxes(match &data {
                    Value::Array(items) => items.iter().filter_map(inbox).collect(),
                    v @ Value::Object(_) => inbox(v).into_iter().collect(),
                    _ => Vec::new(),
                })
            }
            _ => RefData::Json(data),
        }
    }
}

/// [`EventRef`] as its JSON reads: `_meta` may come after `data`, so `data` is read as a
/// [`Message`] only once both are known.
#[derive(Deserialize)]
struct JsonEventRef {
    #[serde(rename = "_meta", default, deserialize_with = "lenient::opt")]
    meta: Option<Meta<'static>>,
    /// `null` is kept (as `Some(Value::Null)`): it serializes back the same.
    #[serde(default, deserialize_with = "lenient::opt")]
    data: Option<Value>,
}

impl From<JsonEventRef> for EventRef<'_> {
    fn from(json: JsonEventRef) -> Self {
        let data = json
            .data
            .map(|data| RefData::read(json.meta.as_ref(), data));
        EventRef {
            meta: json.meta,
            data,
        }
    }
}

/// `_meta` of an [`EventRef`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Meta<'a> {
    /// The resource type.
    #[serde(rename = "type")]
    pub type_: Cow<'a, str>,
}

impl EventRef<'_> {
    /// Whether `_meta.type` is `type_`.
    pub fn is_type(&self, type_: &str) -> bool {
        self.meta.as_ref().is_some_and(|m| m.type_ == type_)
    }

    /// `data` as JSON; `None` for a message or inboxes (and when absent).
    fn json(&self) -> Option<&Value> {
        match &self.data {
            Some(RefData::Json(v)) => Some(v),
            Some(RefData::Message(_) | RefData::Inboxes(_)) | None => None,
        }
    }

    /// The ids of the inboxes in `data`, when `_meta.type` is `inboxes`: Front sends an array
    /// of inboxes, but a preview may carry a single `{id}` object, so both are read.
    pub fn inbox_ids(&self) -> Vec<String> {
        match &self.data {
            Some(RefData::Inboxes(inboxes)) if self.is_type("inboxes") => {
                inboxes.iter().map(|inbox| inbox.id.to_string()).collect()
            }
            _ => Vec::new(),
        }
    }
}

impl<'a> Event<'a> {
    /// The message this event is about, when the target is a message (`inbound`, `outbound`,
    /// `out_reply`, `forward`, `sending_error`, ...). In a preview it has only its id and links.
    pub fn target_message(&self) -> Option<&Message<'a>> {
        let target = self.target.as_ref()?;
        match &target.data {
            Some(RefData::Message(message)) if target.is_type("message") => Some(message),
            _ => None,
        }
    }

    /// The teammate this event is about, when the target is a teammate (`assign`). Read on
    /// each call: only `assign` events ask, once.
    pub fn target_teammate(&self) -> Option<Teammate<'static>> {
        let target = self.target.as_ref().filter(|t| t.is_type("teammate"))?;
        Teammate::deserialize(target.json()?).ok()
    }

    /// The ids of the inboxes a message event went through (`source` of `inbound`,
    /// `outbound`, `out_reply`); empty for other sources.
    pub fn source_inbox_ids(&self) -> Vec<String> {
        self.source
            .as_ref()
            .map(EventRef::inbox_ids)
            .unwrap_or_default()
    }

    /// The ids of the inboxes a `move` event moved the conversation to; empty otherwise.
    pub fn target_inbox_ids(&self) -> Vec<String> {
        self.target
            .as_ref()
            .map(EventRef::inbox_ids)
            .unwrap_or_default()
    }

    /// Whether this is an event preview that needs `GET /events/{id}` to be complete: the
    /// conversation is missing or lacks its status or subject (a full conversation always
    /// has both), or, for a message event, the message has no text, body nor blurb.
    pub fn is_preview(&self) -> bool {
        let conversation_incomplete = self
            .conversation
            .as_ref()
            .is_none_or(|c| c.status.is_none() || c.subject.is_none());
        let message_incomplete = self.is_message_event()
            && self
                .target_message()
                .is_none_or(|m| m.text.is_none() && m.body.is_none() && m.blurb.is_none());
        conversation_incomplete || message_incomplete
    }

    /// Whether a message was received or sent (`inbound`, `outbound`, `out_reply`).
    pub fn is_message_event(&self) -> bool {
        MESSAGE_EVENT_TYPES.contains(&&*self.type_)
    }
}

/// A conversation (`ConversationResponse`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Conversation<'a> {
    /// `cnv_...`
    pub id: Cow<'a, str>,
    /// May be empty in Front; absent in previews.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub subject: Option<Cow<'a, str>>,
    /// `assigned`, `unassigned`, `archived`, `deleted` (and perhaps more); absent in previews.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub status: Option<Cow<'a, str>>,
    /// Null when unassigned.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub assignee: Option<Teammate<'a>>,
    /// The main recipient (the customer for an inbound conversation).
    #[serde(default, deserialize_with = "lenient::opt")]
    pub recipient: Option<Recipient<'a>>,
    /// Empty when absent: read [`Conversation::status`] to tell a preview from a conversation
    /// without tags.
    #[serde(default, deserialize_with = "lenient::vec")]
    pub tags: Vec<Tag<'a>>,
    /// Unix seconds.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub created_at: Option<f64>,
    /// Unix seconds.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub updated_at: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub is_private: Option<bool>,
    /// `_links` (not Front's `links` field, which lists external links and is ignored).
    #[serde(rename = "_links", default, deserialize_with = "lenient::default")]
    pub links: Links<'a>,
}

/// A message (`MessageResponse`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Message<'a> {
    /// `msg_...`
    pub id: Cow<'a, str>,
    /// `email`, `sms`, `front_chat`, ...; absent in previews.
    #[serde(rename = "type", default, deserialize_with = "lenient::opt")]
    pub type_: Option<Cow<'a, str>>,
    /// True when received, false when sent.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub is_inbound: Option<bool>,
    /// Unix seconds: when the message was sent or received.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub created_at: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub subject: Option<Cow<'a, str>>,
    /// A short preview of the body.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub blurb: Option<Cow<'a, str>>,
    /// HTML.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub body: Option<Cow<'a, str>>,
    /// Plain text version of the body (email messages only).
    #[serde(default, deserialize_with = "lenient::opt")]
    pub text: Option<Cow<'a, str>>,
    /// The teammate who sent it; absent on inbound messages.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub author: Option<Teammate<'a>>,
    /// `from`, `to`, `cc`, `bcc`, `reply-to`.
    #[serde(default, deserialize_with = "lenient::vec")]
    pub recipients: Vec<Recipient<'a>>,
    /// `_links.related.conversation` names the conversation.
    #[serde(rename = "_links", default, deserialize_with = "lenient::default")]
    pub links: Links<'a>,
}

/// A Front user (`TeammateResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Teammate<'a> {
    /// `tea_...`
    pub id: Cow<'a, str>,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub email: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub username: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub first_name: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub last_name: Option<Cow<'a, str>>,
}

/// A message recipient or a conversation's main recipient (`RecipientResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Recipient<'a> {
    #[serde(default, deserialize_with = "lenient::opt")]
    pub name: Option<Cow<'a, str>>,
    /// Email address, phone number or other channel handle.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub handle: Option<Cow<'a, str>>,
    /// `from`, `to`, `cc`, `bcc`, `reply-to`.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub role: Option<Cow<'a, str>>,
}

/// A tag (`TagResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Tag<'a> {
    /// `tag_...`
    #[serde(default, deserialize_with = "lenient::opt")]
    pub id: Option<Cow<'a, str>>,
    pub name: Cow<'a, str>,
}

/// An inbox (`InboxResponse`), as listed by `GET /inboxes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Inbox {
    /// `inb_...`
    pub id: String,
    /// Empty when Front sent none.
    #[serde(default, deserialize_with = "lenient::default")]
    pub name: String,
    /// True for a teammate's individual inbox.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub is_private: Option<bool>,
}

/// The company the token belongs to (`GET /me`, `IdentityResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Me {
    /// `cmp_...`
    pub id: String,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub name: Option<String>,
}

/// Front's list envelope: `{_results, _pagination: {next}, _links}`.
///
/// Items are strict (a malformed one fails the page, so a poller never skips an event
/// silently); the envelope is not: `GET /inboxes` has no `_pagination` at all.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Page<T> {
    #[serde(rename = "_results", default = "Vec::new")]
    pub results: Vec<T>,
    #[serde(rename = "_pagination", default, deserialize_with = "lenient::opt")]
    pub pagination: Option<Pagination>,
    /// Total matches, sent by the search endpoint only.
    #[serde(rename = "_total", default, deserialize_with = "lenient::opt")]
    pub total: Option<u64>,
}

/// `_pagination` of a [`Page`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Pagination {
    /// The full URL of the next page (query string included); null on the last page.
    #[serde(default, deserialize_with = "lenient::opt")]
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// The URL of the next page, or `None` on the last page (an empty URL counts as none).
    pub fn next_url(&self) -> Option<&str> {
        self.pagination
            .as_ref()
            .and_then(|p| p.next.as_deref())
            .filter(|url| !url.is_empty())
    }
}

/// Front's error body: `{"_error": {status, title, message, details}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ApiErrorBody {
    #[serde(rename = "_error")]
    pub error: ApiError,
}

/// The `_error` object of an [`ApiErrorBody`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ApiError {
    #[serde(default, deserialize_with = "lenient::opt")]
    pub status: Option<u16>,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "lenient::vec")]
    pub details: Vec<String>,
}

/// The body of an application webhook: `{type, authorization: {id}, payload: <event>}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AppWebhook {
    /// `inbound_received`, `conversation_archived`, ..., or `sync` for the validation request.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, deserialize_with = "lenient::opt")]
    pub authorization: Option<Authorization>,
    /// The event; absent on `sync`.
    #[serde(default)]
    pub payload: Option<Event<'static>>,
}

/// `authorization` of an [`AppWebhook`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Authorization {
    /// The company id, `cmp_...`.
    pub id: String,
}

/// A webhook body, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookBody<'a> {
    /// A rule webhook ("Send to a Webhook"): the body is the event itself.
    Rule(Event<'a>),
    /// An application webhook.
    App {
        /// The app webhook type (`inbound_received`, ..., `sync`).
        type_: String,
        /// `authorization.id`, the company id.
        company_id: Option<String>,
        /// The payload event; `None` for `sync`.
        event: Option<Event<'a>>,
    },
}

/// Why a webhook body is not a Front event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not JSON at all.
    #[error("not json: {0}")]
    NotJson(String),
    /// JSON, but not the shape of a Front event or app webhook.
    #[error("not a front event: {0}")]
    NotEvent(String),
}

fn not_event(reason: impl Into<String>) -> ParseError {
    ParseError::NotEvent(reason.into())
}

/// Classifies and parses a webhook body.
///
/// An object with an `authorization` or `payload` key is an application webhook (its
/// `payload`, when present and not null, must be an event); an object with a string `id` and
/// `type` is a rule webhook. Everything else is a [`ParseError`]. Never panics: serde_json
/// bounds nesting depth, and nothing here indexes.
///
/// Most bodies are read straight into the model (module `strict`); a body with anything
/// unusual about it (a field of an unexpected shape, a missing id, a repeated key, ...) is
/// read again through a `serde_json::Value` by `parse_lenient`, whose result or error it gets.
pub fn parse_webhook_body(body: &[u8]) -> Result<WebhookBody<'_>, ParseError> {
    match strict::parse(body) {
        Some(parsed) => Ok(parsed),
        None => parse_lenient(body),
    }
}

/// [`parse_webhook_body`] through a `serde_json::Value`: tolerates fields of any shape, and
/// names what is wrong with a body it rejects.
fn parse_lenient(body: &[u8]) -> Result<WebhookBody<'static>, ParseError> {
    let value: Value =
        // serde_json's syntax errors quote no input, only positions; lowercased for our
        // message style ("EOF while parsing" -> "eof while parsing").
        serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string().to_lowercase()))?;
    let Value::Object(obj) = &value else {
        return Err(not_event("body is not a json object"));
    };
    if obj.contains_key("authorization") || obj.contains_key("payload") {
        let type_ = match obj.get("type") {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            Some(Value::String(_)) => return Err(not_event("empty app webhook type")),
            Some(_) => return Err(not_event("app webhook type is not a string")),
            None => return Err(not_event("app webhook without type")),
        };
        let company_id = obj
            .get("authorization")
            .and_then(|a| a.get("id"))
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        let event = match obj.get("payload") {
            None | Some(Value::Null) => None,
            Some(payload) => Some(
                event_from_value(payload)
                    .map_err(|e| not_event(format!("payload: {}", event_reason(&e))))?,
            ),
        };
        return Ok(WebhookBody::App {
            type_,
            company_id,
            event,
        });
    }
    event_from_value(&value).map(WebhookBody::Rule)
}

/// The reason inside a [`ParseError`], without its prefix.
fn event_reason(e: &ParseError) -> &str {
    match e {
        ParseError::NotJson(r) | ParseError::NotEvent(r) => r,
    }
}

/// Reads one event, checking first the two fields we cannot do without so the error says
/// which one is wrong.
fn event_from_value(value: &Value) -> Result<Event<'static>, ParseError> {
    let Value::Object(obj) = value else {
        return Err(not_event("event is not a json object"));
    };
    match obj.get("id") {
        Some(Value::String(id)) if !id.is_empty() => {}
        Some(Value::String(_)) => return Err(not_event("empty id")),
        Some(_) => return Err(not_event("id is not a string")),
        None => return Err(not_event("missing id")),
    }
    match obj.get("type") {
        Some(Value::String(t)) if !t.is_empty() => {}
        Some(Value::String(_)) => return Err(not_event("empty type")),
        Some(_) => return Err(not_event("type is not a string")),
        None => return Err(not_event("missing type")),
    }
    Event::deserialize(value).map_err(|e| not_event(e.to_string()))
}

mod strict;

/// Deserializers that read a field of the wrong shape as absent instead of failing.
mod lenient {
    use std::borrow::Cow;
    use std::collections::BTreeMap;

    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// `Some(T)` when the value reads as a `T`; `None` for null and for anything else.
    pub fn opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned,
    {
        let v = Value::deserialize(d)?;
        Ok(T::deserialize(v).ok())
    }

    /// The value as a `T`, else `T::default()`.
    pub fn default<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned + Default,
    {
        Ok(opt(d)?.unwrap_or_default())
    }

    /// The items of an array that read as a `T`; empty for null or a non-array.
    pub fn vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned,
    {
        match Value::deserialize(d)? {
            Value::Array(items) => Ok(items
                .into_iter()
                .filter_map(|v| T::deserialize(v).ok())
                .collect()),
            _ => Ok(Vec::new()),
        }
    }

    /// The string-valued entries of an object; empty for anything else.
    pub fn string_map<'de, 'a, D>(d: D) -> Result<BTreeMap<Cow<'a, str>, Cow<'a, str>>, D::Error>
    where
        D: Deserializer<'de>,
    {
        match Value::deserialize(d)? {
            Value::Object(map) => Ok(map
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((Cow::Owned(k), Cow::Owned(s))),
                    _ => None,
                })
                .collect()),
            _ => Ok(BTreeMap::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A full `inbound` event, modeled on the OpenAPI examples.
    fn full_inbound() -> Value {
        json!({
            "_links": {"self": "https://yourCompany.api.frontapp.com/events/evt_4ckcra8e"},
            "id": "evt_4ckcra8e",
            "type": "inbound",
            "emitted_at": 1701292649.333,
            "source": {
                "_meta": {"type": "inboxes"},
                "data": [
                    {"_links": {"self": "https://yourCompany.api.frontapp.com/inboxes/inb_1ix6"},
                     "id": "inb_1ix6", "name": "The Dundies", "is_private": false, "is_public": true},
                    {"id": "inb_2"}
                ]
            },
            "target": {
                "_meta": {"type": "message"},
                "data": {
                    "_links": {
                        "self": "https://yourCompany.api.frontapp.com/messages/msg_1q15qmtq",
                        "related": {
                            "conversation": "https://yourCompany.api.frontapp.com/conversations/cnv_yo1kg5q",
                            "message_replied_to": null
                        }
                    },
                    "id": "msg_1q15qmtq",
                    "message_uid": "1eab543f84a0785f7b6b8967cck18f4d",
                    "type": "email",
                    "is_inbound": true,
                    "draft_mode": null,
                    "created_at": 1701292639,
                    "subject": "Jim's pranks are getting out of hand",
                    "blurb": "It's high time we discuss the pranking culture in the office",
                    "body": "<p>Hi there,</p>",
                    "text": "Hi there,",
                    "author": null,
                    "recipients": [
                        {"_links": {"related": {"contact": null}}, "name": "Phyllis Lapin-Vance",
                         "handle": "purpleboss@limitlesspaper.com", "role": "from"},
                        {"name": null, "handle": "support@dundermifflin.com", "role": "to"}
                    ],
                    "attachments": [],
                    "metadata": {}
                }
            },
            "conversation": {
                "_links": {
                    "self": "https://yourCompany.api.frontapp.com/conversations/cnv_yo1kg5q",
                    "related": {"last_message": "https://yourCompany.api.frontapp.com/messages/msg_1q15qmtq?referer=conversation"}
                },
                "id": "cnv_yo1kg5q",
                "type": "conversation",
                "subject": "How to prank Dwight Schrute",
                "status": "assigned",
                "ticket_ids": ["TICKET-1"],
                "assignee": {
                    "id": "tea_6r55a", "email": "michael.scott@dundermifflin.com",
                    "username": "PrisonMike", "first_name": "Michael", "last_name": "Scott",
                    "is_admin": true, "is_available": false, "is_blocked": false, "type": "user",
                    "custom_fields": {}
                },
                "recipient": {"name": "Phyllis Lapin-Vance", "handle": "purpleboss@limitlesspaper.com", "role": "from"},
                "tags": [
                    {"id": "tag_2oxhvy", "name": "Warehouse task", "highlight": null, "is_private": false},
                    {"id": "tag_x", "name": "vip"}
                ],
                "links": [{"id": "top_1", "name": "JIRA-1", "type": "app_x", "external_url": "https://x"}],
                "custom_fields": {},
                "created_at": 1701292600.001,
                "updated_at": 1701292649.333,
                "waiting_since": 1701292649.333,
                "is_private": false,
                "scheduled_reminders": [],
                "metadata": {}
            }
        })
    }

    /// A preview `inbound` event: only ids, links and types.
    fn preview_inbound() -> Value {
        json!({
            "_links": {"self": "https://api2.frontapp.com/events/evt_55c8c149"},
            "id": "evt_55c8c149",
            "type": "inbound",
            "emitted_at": 1453770984.123,
            "source": {"_meta": {"type": "inboxes"}, "data": {"id": "inb_55c8c149"}},
            "target": {
                "_meta": {"type": "message"},
                "data": {"_links": {"self": "https://api2.frontapp.com/messages/msg_55c8c149"}, "id": "msg_55c8c149"}
            },
            "conversation": {
                "_links": {"self": "https://api2.frontapp.com/conversations/cnv_55c8c149"},
                "id": "cnv_55c8c149"
            }
        })
    }

    /// The rule webhook `v` parsed; its body is leaked so the event may borrow from it for
    /// the rest of the test.
    fn parse_rule(v: &Value) -> Event<'static> {
        let body: &'static str = Box::leak(v.to_string().into_boxed_str());
        match parse_webhook_body(body.as_bytes()).unwrap() {
            WebhookBody::Rule(e) => e,
            other => panic!("expected a rule webhook, got {other:?}"),
        }
    }

    #[test]
    fn full_event_parses_every_field() {
        let e = parse_rule(&full_inbound());
        assert_eq!(e.id, "evt_4ckcra8e");
        assert_eq!(e.type_, "inbound");
        assert_eq!(e.emitted_at, Some(1701292649.333));
        assert_eq!(
            e.links.self_.as_deref(),
            Some("https://yourCompany.api.frontapp.com/events/evt_4ckcra8e")
        );
        assert!(e.is_message_event());
        assert!(!e.is_preview());
        assert_eq!(e.source_inbox_ids(), vec!["inb_1ix6", "inb_2"]);
        assert!(e.target_inbox_ids().is_empty());

        let c = e.conversation.as_ref().unwrap();
        assert_eq!(c.id, "cnv_yo1kg5q");
        assert_eq!(c.subject.as_deref(), Some("How to prank Dwight Schrute"));
        assert_eq!(c.status.as_deref(), Some("assigned"));
        let a = c.assignee.as_ref().unwrap();
        assert_eq!(a.id, "tea_6r55a");
        assert_eq!(a.first_name.as_deref(), Some("Michael"));
        assert_eq!(a.username.as_deref(), Some("PrisonMike"));
        let r = c.recipient.as_ref().unwrap();
        assert_eq!(r.handle.as_deref(), Some("purpleboss@limitlesspaper.com"));
        assert_eq!(r.role.as_deref(), Some("from"));
        let names: Vec<_> = c.tags.iter().map(|t| &*t.name).collect();
        assert_eq!(names, ["Warehouse task", "vip"]);
        assert_eq!(c.tags[0].id.as_deref(), Some("tag_2oxhvy"));
        assert_eq!(c.created_at, Some(1701292600.001));
        assert_eq!(c.is_private, Some(false));
        assert_eq!(
            c.links.related_id("last_message", "msg_").as_deref(),
            Some("msg_1q15qmtq")
        );

        let m = e.target_message().unwrap();
        assert_eq!(m.id, "msg_1q15qmtq");
        assert_eq!(m.type_.as_deref(), Some("email"));
        assert_eq!(m.is_inbound, Some(true));
        assert_eq!(m.created_at, Some(1701292639.0));
        assert_eq!(m.text.as_deref(), Some("Hi there,"));
        assert_eq!(m.body.as_deref(), Some("<p>Hi there,</p>"));
        assert!(m.author.is_none());
        assert_eq!(m.recipients.len(), 2);
        assert_eq!(m.recipients[1].name, None);
        assert_eq!(
            m.links.related_id("conversation", "cnv_").as_deref(),
            Some("cnv_yo1kg5q")
        );
        // A null related link is dropped, not an error.
        assert!(!m.links.related.contains_key("message_replied_to"));
    }

    #[test]
    fn preview_event_parses_and_is_a_preview() {
        let e = parse_rule(&preview_inbound());
        assert!(e.is_preview());
        assert_eq!(e.conversation.as_ref().unwrap().id, "cnv_55c8c149");
        assert!(e.conversation.as_ref().unwrap().status.is_none());
        assert!(e.conversation.as_ref().unwrap().tags.is_empty());
        // A preview's inbox source is a single object, not an array.
        assert_eq!(e.source_inbox_ids(), vec!["inb_55c8c149"]);
        let m = e.target_message().unwrap();
        assert_eq!(m.id, "msg_55c8c149");
        assert!(m.type_.is_none() && m.text.is_none() && m.body.is_none());
    }

    #[test]
    fn preview_detection() {
        // No conversation at all.
        let mut v = full_inbound();
        v.as_object_mut().unwrap().remove("conversation");
        assert!(parse_rule(&v).is_preview());
        // A conversation with a subject but no status (seen in app webhook previews).
        let mut v = full_inbound();
        v["conversation"].as_object_mut().unwrap().remove("status");
        assert!(parse_rule(&v).is_preview());
        // A full conversation but a message with only its id.
        let mut v = full_inbound();
        v["target"]["data"] = json!({"id": "msg_1"});
        assert!(parse_rule(&v).is_preview());
        // An empty subject is still a subject.
        let mut v = full_inbound();
        v["conversation"]["subject"] = json!("");
        assert!(!parse_rule(&v).is_preview());
        // A non-message event needs only the conversation.
        let v = json!({"id": "evt_1", "type": "archive",
            "conversation": {"id": "cnv_1", "subject": "s", "status": "archived"}});
        let e = parse_rule(&v);
        assert!(!e.is_preview());
        assert!(!e.is_message_event());
        assert!(e.target_message().is_none());
    }

    #[test]
    fn message_event_types() {
        for (t, expected) in [
            ("inbound", true),
            ("outbound", true),
            ("out_reply", true),
            ("forward", false),
            ("tag", false),
            ("assign", false),
        ] {
            let e = parse_rule(&json!({"id": "evt_1", "type": t}));
            assert_eq!(e.is_message_event(), expected, "{t}");
        }
    }

    #[test]
    fn assign_target_teammate_and_move_target_inboxes() {
        let e = parse_rule(&json!({
            "id": "evt_1", "type": "assign",
            "source": {"_meta": {"type": "rule"}, "data": {"id": "rul_1", "name": "r"}},
            "target": {"_meta": {"type": "teammate"}, "data": {"id": "tea_1", "first_name": "Grace"}}
        }));
        assert_eq!(e.target_teammate().unwrap().id, "tea_1");
        assert!(e.target_message().is_none());
        assert!(e.source_inbox_ids().is_empty());

        let e = parse_rule(&json!({
            "id": "evt_2", "type": "move",
            "target": {"_meta": {"type": "inboxes"}, "data": [{"id": "inb_9"}, {"name": "no id"}, {"id": ""}]}
        }));
        assert_eq!(e.target_inbox_ids(), vec!["inb_9"]);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut v = full_inbound();
        v["brand_new_field"] = json!({"nested": [1, 2, 3]});
        v["conversation"]["status_category"] = json!("resolved");
        v["target"]["data"]["future"] = json!(true);
        let e = parse_rule(&v);
        assert_eq!(e.id, "evt_4ckcra8e");
        assert_eq!(
            e.conversation.as_ref().unwrap().status.as_deref(),
            Some("assigned")
        );
        assert_eq!(e.target_message().unwrap().id, "msg_1q15qmtq");
    }

    #[test]
    fn missing_and_oddly_shaped_fields_are_tolerated() {
        let e = parse_rule(&json!({
            "id": "evt_1",
            "type": "tag",
            "emitted_at": "not a number",
            "source": 42,
            "target": {"_meta": "x", "data": null},
            "conversation": {
                "id": "cnv_1",
                "subject": null,
                "status": 7,
                "assignee": {"email": "no id"},
                "recipient": {"handle": 5},
                "tags": [{"name": "ok"}, {"id": "tag_no_name"}, "junk", null],
                "created_at": null,
                "_links": ["not", "an", "object"]
            },
            "_links": null
        }));
        assert_eq!(e.emitted_at, None);
        assert!(e.source.is_none());
        assert!(e.target.as_ref().unwrap().meta.is_none());
        let c = e.conversation.unwrap();
        assert_eq!(c.subject, None);
        assert_eq!(c.status, None);
        assert!(c.assignee.is_none());
        assert_eq!(c.recipient.unwrap().handle, None);
        assert_eq!(c.tags.len(), 1);
        assert_eq!(c.tags[0].name, "ok");
        assert_eq!(c.links, Links::default());

        // The bare minimum.
        let e = parse_rule(&json!({"id": "evt_1", "type": "reminder"}));
        assert!(e.conversation.is_none() && e.source.is_none() && e.target.is_none());
        assert!(e.is_preview());

        // A conversation without an id is unusable, so it reads as absent.
        let e = parse_rule(&json!({"id": "evt_1", "type": "x", "conversation": {"subject": "s"}}));
        assert!(e.conversation.is_none());
    }

    #[test]
    fn app_webhook_sync_has_no_event() {
        let body = br#"{"type":"sync","authorization":{"id":"cmp_abc"}}"#;
        assert_eq!(
            parse_webhook_body(body).unwrap(),
            WebhookBody::App {
                type_: "sync".into(),
                company_id: Some("cmp_abc".into()),
                event: None
            }
        );
        let body = br#"{"type":"sync","authorization":{"id":"cmp_abc"},"payload":null}"#;
        assert!(matches!(
            parse_webhook_body(body).unwrap(),
            WebhookBody::App { event: None, .. }
        ));
    }

    #[test]
    fn app_webhook_with_payload() {
        let body = json!({
            "type": "inbound_received",
            "authorization": {"id": "cmp_k30"},
            "payload": preview_inbound(),
        });
        let text = body.to_string();
        let WebhookBody::App {
            type_,
            company_id,
            event,
        } = parse_webhook_body(text.as_bytes()).unwrap()
        else {
            panic!("expected an app webhook");
        };
        assert_eq!(type_, "inbound_received");
        assert_eq!(company_id.as_deref(), Some("cmp_k30"));
        let event = event.unwrap();
        assert_eq!(event.id, "evt_55c8c149");
        assert_eq!(event.type_, "inbound");

        // Also usable through the plain serde model.
        let app: AppWebhook = serde_json::from_value(body).unwrap();
        assert_eq!(app.authorization.unwrap().id, "cmp_k30");
        assert_eq!(app.payload.unwrap().id, "evt_55c8c149");

        // A payload without authorization is still an app webhook.
        let body = json!({"type": "tag_added", "payload": {"id": "evt_1", "type": "tag"}});
        assert!(matches!(
            parse_webhook_body(body.to_string().as_bytes()).unwrap(),
            WebhookBody::App {
                company_id: None,
                event: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "not json"),
            (b"not json", "not json"),
            (b"\xff\xfe", "not json"),
            (b"[1,2]", "not a front event: body is not a json object"),
            (b"\"evt_1\"", "not a front event: body is not a json object"),
            (b"null", "not a front event: body is not a json object"),
            (b"{}", "not a front event: missing id"),
            (b"{\"type\":\"inbound\"}", "not a front event: missing id"),
            (
                b"{\"id\":42,\"type\":\"inbound\"}",
                "not a front event: id is not a string",
            ),
            (
                b"{\"id\":\"\",\"type\":\"inbound\"}",
                "not a front event: empty id",
            ),
            (b"{\"id\":\"evt_1\"}", "not a front event: missing type"),
            (
                b"{\"id\":\"evt_1\",\"type\":null}",
                "not a front event: type is not a string",
            ),
            (
                b"{\"authorization\":{\"id\":\"cmp_1\"}}",
                "not a front event: app webhook without type",
            ),
            (
                b"{\"type\":5,\"payload\":{}}",
                "not a front event: app webhook type is not a string",
            ),
            (
                b"{\"type\":\"x\",\"payload\":{}}",
                "not a front event: payload: missing id",
            ),
            (
                b"{\"type\":\"x\",\"payload\":[]}",
                "not a front event: payload: event is not a json object",
            ),
            (b"{\"id\":\"evt_1\",\"type\":\"x\"} trailing", "not json"),
        ];
        for (body, expected) in cases {
            let err = parse_webhook_body(body).unwrap_err().to_string();
            assert!(
                err.starts_with(expected),
                "{:?}: {err:?} should start with {expected:?}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(err, err.to_lowercase(), "messages are lowercase");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_webhook_body(body.as_bytes()).is_err());
        let body = format!(
            "{{\"id\":\"evt_1\",\"type\":\"x\",\"conversation\":{}1{}}}",
            "{\"a\":".repeat(10_000),
            "}".repeat(10_000)
        );
        assert!(parse_webhook_body(body.as_bytes()).is_err());
    }

    #[test]
    fn truncated_bodies_never_panic() {
        for value in [
            full_inbound(),
            json!({"type": "inbound_received", "authorization": {"id": "cmp_1"}, "payload": preview_inbound()}),
        ] {
            let body = value.to_string();
            let bytes = body.as_bytes();
            for end in 0..bytes.len() {
                let result = parse_webhook_body(&bytes[..end]);
                assert!(result.is_err(), "a strict prefix of an object is not json");
            }
            assert!(parse_webhook_body(bytes).is_ok());
            // Every prefix of every single-byte mutation, cheaply: flip one byte at a time.
            for i in (0..bytes.len()).step_by(7) {
                let mut mutated = bytes.to_vec();
                mutated[i] ^= 0x55;
                let _ = parse_webhook_body(&mutated);
            }
        }
    }

    #[test]
    fn unicode_survives() {
        let body = json!({"id": "evt_1", "type": "inbound", "conversation": {
            "id": "cnv_1", "subject": "🎉 שלום 日本語", "status": "unassigned"}});
        let e = parse_rule(&body);
        assert_eq!(
            e.conversation.unwrap().subject.as_deref(),
            Some("🎉 שלום 日本語")
        );
    }

    #[test]
    fn pages() {
        let page: Page<Event> = serde_json::from_value(json!({
            "_pagination": {"next": "https://yourCompany.api.frontapp.com/events?page_token=2d018a"},
            "_links": {"self": "https://yourCompany.api.frontapp.com/events"},
            "_results": [preview_inbound()]
        }))
        .unwrap();
        assert_eq!(page.results.len(), 1);
        assert_eq!(
            page.next_url(),
            Some("https://yourCompany.api.frontapp.com/events?page_token=2d018a")
        );

        let last: Page<Event> =
            serde_json::from_value(json!({"_pagination": {"next": null}, "_results": []})).unwrap();
        assert!(last.results.is_empty());
        assert_eq!(last.next_url(), None);

        // `/inboxes` has no `_pagination`.
        let inboxes: Page<Inbox> = serde_json::from_value(json!({
            "_links": {"self": "https://yourCompany.api.frontapp.com/inboxes"},
            "_results": [
                {"id": "inb_1ix6", "name": "The Dundies", "is_private": false, "is_public": true},
                {"id": "inb_2"}
            ]
        }))
        .unwrap();
        assert_eq!(inboxes.next_url(), None);
        assert_eq!(inboxes.results[0].name, "The Dundies");
        assert_eq!(inboxes.results[0].is_private, Some(false));
        assert_eq!(inboxes.results[1].name, "");

        let search: Page<Conversation> = serde_json::from_value(json!({
            "_total": 212, "_results": [{"id": "cnv_1"}]
        }))
        .unwrap();
        assert_eq!(search.total, Some(212));

        // A malformed item fails the page rather than vanishing.
        assert!(serde_json::from_value::<Page<Event>>(json!({"_results": [{"id": 1}]})).is_err());
    }

    #[test]
    fn me_and_api_errors() {
        let me: Me = serde_json::from_value(json!({
            "_links": {"self": "https://yourCompany.api.frontapp.com/me"},
            "id": "cmp_k30", "name": "Dunder Mifflin Paper Company, Inc."
        }))
        .unwrap();
        assert_eq!(me.id, "cmp_k30");
        assert_eq!(
            me.name.as_deref(),
            Some("Dunder Mifflin Paper Company, Inc.")
        );

        let err: ApiErrorBody = serde_json::from_str(
            r#"{"_error":{"status":401,"title":"Unauthenticated","message":"Invalid token"}}"#,
        )
        .unwrap();
        assert_eq!(err.error.status, Some(401));
        assert_eq!(err.error.title.as_deref(), Some("Unauthenticated"));
        assert!(err.error.details.is_empty());

        let err: ApiErrorBody = serde_json::from_str(
            r#"{"_error":{"status":429,"title":"Too many requests","message":"Rate limit exceeded","details":["a",1]}}"#,
        )
        .unwrap();
        assert_eq!(err.error.details, vec!["a"]);
        assert!(serde_json::from_str::<ApiErrorBody>("{}").is_err());
    }

    #[test]
    fn seconds_to_milliseconds() {
        assert_eq!(secs_to_ms(1454453901.012), Some(1_454_453_901_012));
        assert_eq!(secs_to_ms(1701292649.333), Some(1_701_292_649_333));
        assert_eq!(secs_to_ms(1703102616.0), Some(1_703_102_616_000));
        assert_eq!(secs_to_ms(0.0), Some(0));
        assert_eq!(secs_to_ms(0.0005), Some(1));
        assert_eq!(secs_to_ms(-1.0), None);
        assert_eq!(secs_to_ms(f64::NAN), None);
        assert_eq!(secs_to_ms(f64::INFINITY), None);
        assert_eq!(secs_to_ms(1e300), None);
        assert_eq!(secs_to_ms(253_402_300_799.999), Some(MAX_TIMESTAMP_MS));
        assert_eq!(secs_to_ms(253_402_300_800.0), None);
        // Every 3-decimal value round-trips exactly.
        for frac in 0..1000 {
            let secs = 1_800_000_000.0 + f64::from(frac) / 1000.0;
            assert_eq!(secs_to_ms(secs), Some(1_800_000_000_000 + i64::from(frac)));
        }
    }

    #[test]
    fn link_ids() {
        assert_eq!(
            id_from_url(
                "https://x.api.frontapp.com/conversations/cnv_1?referer=y",
                "cnv_"
            ),
            Some("cnv_1".into())
        );
        assert_eq!(
            id_from_url("https://x/conversations/cnv_1/", "cnv_"),
            Some("cnv_1".into())
        );
        assert_eq!(id_from_url("https://x/messages/msg_1", "cnv_"), None);
        assert_eq!(id_from_url("https://x/conversations/cnv_", "cnv_"), None);
        assert_eq!(id_from_url("", "cnv_"), None);
    }

    #[test]
    fn events_round_trip_through_serialize() {
        let e = parse_rule(&full_inbound());
        let back: Event = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    // The fast path (`strict`) against the lenient parser.

    /// Bodies of every kind the fast path should take as they are.
    fn well_shaped_bodies() -> Vec<Value> {
        vec![
            full_inbound(),
            preview_inbound(),
            json!({"type": "inbound_received", "authorization": {"id": "cmp_1"}, "payload": full_inbound()}),
            json!({"type": "inbound_received", "authorization": {"id": "cmp_1"}, "payload": preview_inbound()}),
            json!({"type": "sync", "authorization": {"id": "cmp_abc"}}),
            json!({"type": "sync", "authorization": null, "payload": null}),
            json!({
                "id": "evt_1", "type": "assign", "emitted_at": 1701292649,
                "source": {"_meta": {"type": "rule"}, "data": {"id": "rul_1", "name": "r"}},
                "target": {"_meta": {"type": "teammate"}, "data": {"id": "tea_1", "first_name": "Grace"}},
                "conversation": {"id": "cnv_1", "_links": {"related": {"events": "https://x/cnv_1/events"}}}
            }),
            json!({
                "id": "evt_2", "type": "move",
                "target": {"_meta": {"type": "inboxes"}, "data": [{"id": "inb_9"}, {"name": "no id"}]}
            }),
            json!({
                "id": "evt_3", "type": "outbound", "_links": null,
                "target": {"_meta": {"type": "message"}, "data": null},
                "conversation": {"id": "cnv_1", "tags": null, "assignee": null, "subject": null}
            }),
        ]
    }

    /// One step into a JSON value.
    #[derive(Debug, Clone)]
    enum Step {
        Key(String),
        Index(usize),
    }

    /// The path to every value inside `v` (not `v` itself).
    fn paths(v: &Value) -> Vec<Vec<Step>> {
        fn walk(v: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
            let children: Vec<(Step, &Value)> = match v {
                Value::Object(map) => map.iter().map(|(k, v)| (Step::Key(k.clone()), v)).collect(),
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (Step::Index(i), v))
                    .collect(),
                _ => Vec::new(),
            };
            for (step, child) in children {
                at.push(step);
                out.push(at.clone());
                walk(child, at, out);
                at.pop();
            }
        }
        let mut out = Vec::new();
        walk(v, &mut Vec::new(), &mut out);
        out
    }

    fn get_mut<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
        path.iter().try_fold(v, |v, step| match step {
            Step::Key(k) => v.get_mut(k.as_str()),
            Step::Index(i) => v.get_mut(*i),
        })
    }

    /// What each place of a fixture is replaced with: every JSON shape, and some that are
    /// close to right (the value inside an array or object, an object as its values).
    fn odd_values(original: &Value) -> Vec<Value> {
        let mut values = vec![
            json!(null),
            json!(42),
            json!(-1.5),
            json!(1e300),
            json!(u64::MAX),
            json!(true),
            json!("x"),
            json!(""),
            json!("é \u{0} \" \\ 😀"),
            json!([]),
            json!({}),
            json!([original]),
            json!({"id": original}),
        ];
        if let Value::Object(map) = original {
            values.push(Value::Array(map.values().cloned().collect()));
        }
        values
    }

    /// `v` with the value at `path` removed (`mutation` 0) or replaced by one of
    /// [`odd_values`] (`mutation` 1..).
    fn mutated(v: &Value, path: &[Step], mutation: usize) -> Value {
        let mut v = v.clone();
        let Some((last, parent_path)) = path.split_last() else {
            return v;
        };
        let original = get_mut(&mut v, path).map(|x| x.clone()).unwrap_or_default();
        let odd = odd_values(&original);
        let Some(parent) = get_mut(&mut v, parent_path) else {
            return v;
        };
        match (mutation.checked_sub(1), parent, last) {
            (None, Value::Object(map), Step::Key(k)) => {
                map.remove(k);
            }
            (None, Value::Array(items), Step::Index(i)) if *i < items.len() => {
                items.remove(*i);
            }
            (Some(n), parent, _) => {
                if let Some(slot) = get_mut(parent, std::slice::from_ref(last)) {
                    *slot = odd[n % odd.len()].clone();
                }
            }
            _ => {}
        }
        v
    }

    /// JSON text of `v`, each object's keys reversed when `reversed` (serde_json writes them
    /// sorted, which always puts `_meta` before `data`), and with `repeat = (path, earlier)`
    /// the key at `path` written twice: first with `earlier`, then with its own value.
    fn write_json(v: &Value, reversed: bool, repeat: Option<(&[Step], &Value)>) -> String {
        fn write(
            v: &Value,
            reversed: bool,
            at: &mut Vec<String>,
            repeat: Option<(&[String], &Value)>,
            out: &mut String,
        ) {
            match v {
                Value::Object(map) => {
                    out.push('{');
                    let mut entries: Vec<_> = map.iter().collect();
                    if reversed {
                        entries.reverse();
                    }
                    let mut first = true;
                    for (k, v) in entries {
                        at.push(k.clone());
                        let mut pairs = vec![v];
                        if let Some((path, earlier)) = repeat
                            && path == at.as_slice()
                        {
                            pairs.insert(0, earlier);
                        }
                        for v in pairs {
                            if !first {
                                out.push(',');
                            }
                            first = false;
                            out.push_str(&serde_json::to_string(k).unwrap());
                            out.push(':');
                            write(v, reversed, at, repeat, out);
                        }
                        at.pop();
                    }
                    out.push('}');
                }
                Value::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        at.push(i.to_string());
                        write(item, reversed, at, repeat, out);
                        at.pop();
                    }
                    out.push(']');
                }
                scalar => out.push_str(&scalar.to_string()),
            }
        }
        let repeat_path: Option<Vec<String>> = repeat.map(|(path, _)| {
            path.iter()
                .map(|s| match s {
                    Step::Key(k) => k.clone(),
                    Step::Index(i) => i.to_string(),
                })
                .collect()
        });
        let repeat = repeat_path.as_deref().zip(repeat.map(|(_, v)| v));
        let mut out = String::new();
        write(v, reversed, &mut Vec::new(), repeat, &mut out);
        out
    }

    /// Parses `body` both ways, checks they agree, and tells whether the fast path took it.
    fn paths_agree(body: &[u8]) -> bool {
        let lenient = parse_lenient(body);
        let shown = String::from_utf8_lossy(body);
        assert_eq!(parse_webhook_body(body), lenient, "body: {shown}");
        match strict::parse(body) {
            Some(fast) => {
                assert_eq!(Ok(&fast), lenient.as_ref(), "fast path, body: {shown}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn fast_path_takes_well_shaped_bodies() {
        for body in well_shaped_bodies() {
            for reversed in [false, true] {
                let text = write_json(&body, reversed, None);
                assert!(paths_agree(text.as_bytes()), "fast path not taken: {text}");
            }
        }
        // The target message is read once, on the fast path too, in either key order.
        for reversed in [false, true] {
            let text = write_json(&full_inbound(), reversed, None);
            let Some(WebhookBody::Rule(e)) = strict::parse(text.as_bytes()) else {
                panic!("fast path not taken");
            };
            assert_eq!(e.target_message().unwrap().id, "msg_1q15qmtq");
            assert_eq!(e.source_inbox_ids(), vec!["inb_1ix6", "inb_2"]);
            assert!(!e.is_preview());
        }
    }

    #[test]
    fn fast_path_agrees_with_lenient_on_every_single_change() {
        let (mut fast, mut total) = (0, 0);
        let mut agree = |text: String| {
            fast += usize::from(paths_agree(text.as_bytes()));
            total += 1;
        };
        for body in well_shaped_bodies() {
            // The full event is mutated throughout as a rule webhook; as a payload, only the
            // payload itself and its fields are.
            let full_payload = body.get("payload") == Some(&full_inbound());
            for path in paths(&body) {
                if full_payload && path.len() > 2 {
                    continue;
                }
                // Key order matters only where `_meta` and `data` meet.
                let orders: &[bool] = match path.first() {
                    Some(Step::Key(k)) if k == "source" || k == "target" => &[false, true],
                    _ => &[false],
                };
                for mutation in 0..=odd_values(&Value::Null).len() + 1 {
                    let changed = mutated(&body, &path, mutation);
                    for &reversed in orders {
                        agree(write_json(&changed, reversed, None));
                    }
                }
                // The same key twice, an odd value first and then the good one, and the
                // other way round: the lenient parser keeps the last.
                if !matches!(path.last(), Some(Step::Key(_))) {
                    continue;
                }
                let mut changed = body.clone();
                let Some(slot) = get_mut(&mut changed, &path) else {
                    continue;
                };
                let good = slot.clone();
                for odd in [json!(null), json!(7), good.clone()] {
                    agree(write_json(&body, false, Some((&path, &odd))));
                    if let Some(slot) = get_mut(&mut changed, &path) {
                        *slot = odd;
                    }
                    agree(write_json(&changed, false, Some((&path, &good))));
                }
            }
        }
        // Both paths were exercised, in large numbers.
        assert!(fast > total / 5, "{fast} of {total} took the fast path");
        assert!(
            fast < total - total / 5,
            "{fast} of {total} took the fast path"
        );
    }

    #[test]
    fn fast_path_rejects_what_only_looks_like_json_to_a_skipper() {
        // serde skips unknown values checking only their syntax, while the lenient parser
        // reads them: numbers out of range, lone surrogates and invalid UTF-8 make a body not
        // json. Tried as an unknown field of every object of every body.
        let junk_everywhere = |junk: &str| -> Vec<Vec<u8>> {
            let mut bodies = Vec::new();
            for body in well_shaped_bodies() {
                let text = body.to_string();
                for (at, _) in text.match_indices('{') {
                    let comma = if text[at + 1..].starts_with('}') {
                        ""
                    } else {
                        ","
                    };
                    let mut changed = text.clone();
                    changed.insert_str(at + 1, &format!("\"junk\":{junk}{comma}"));
                    bodies.push(changed.into_bytes());
                }
            }
            bodies
        };
        for junk in [
            "1e999",
            "[-1e400]",
            &"9".repeat(400),
            "\"\\ud800\"",
            "{\"a\":\"\\udc00x\"}",
            "\"\\ud800\\u0041\"",
        ] {
            for body in junk_everywhere(junk) {
                assert!(
                    matches!(parse_webhook_body(&body), Err(ParseError::NotJson(_))),
                    "{}",
                    String::from_utf8_lossy(&body)
                );
                assert!(!paths_agree(&body));
            }
        }
        for mut body in junk_everywhere("\"ab\"") {
            let at = body.windows(4).position(|w| w == b"\"ab\"").unwrap();
            body[at + 1] = 0xff;
            assert!(matches!(
                parse_webhook_body(&body),
                Err(ParseError::NotJson(_))
            ));
            assert!(!paths_agree(&body));
        }
        // The same in a key.
        let body = br#"{"id":"evt_1","type":"x","\ud800":1}"#;
        assert!(matches!(
            parse_webhook_body(body),
            Err(ParseError::NotJson(_))
        ));
        // Valid junk is ignored, a surrogate pair included: the fast path takes nearly all
        // (not those where every entry is read, as in `_links.related`).
        let bodies = junk_everywhere("[\"\\ud83d\\ude00\", 1e300, {\"a\": null}]");
        let fast = bodies.iter().filter(|body| paths_agree(body)).count();
        assert!(fast * 10 > bodies.len() * 9, "{fast} of {}", bodies.len());
    }

    #[test]
    fn repeated_keys_read_as_the_lenient_parser_reads_them() {
        // The lenient parser's `Value` keeps the last of repeated keys.
        for body in [
            r#"{"id":"evt_0","id":"evt_1","type":"x"}"#,
            r#"{"id":"evt_1","type":"x","conversation":{"id":"cnv_1","status":null,"status":"open"}}"#,
            r#"{"id":"evt_1","type":"x","_links":{"related":{"a":"https://x/a","a":null}}}"#,
            // `data` read as a message, then `_meta` says inboxes.
            r#"{"id":"evt_1","type":"x","target":{"_meta":{"type":"message"},"data":{"id":"msg_1"},"_meta":{"type":"inboxes"}}}"#,
            r#"{"id":"evt_1","type":"x","target":{"data":{"id":"inb_1"},"_meta":{"type":"inboxes"},"data":{"id":"msg_1"}}}"#,
            r#"{"type":"x","payload":null,"payload":{"id":"evt_1","type":"x"}}"#,
        ] {
            paths_agree(body.as_bytes());
        }
    }

    #[test]
    fn fast_path_leaves_arrays_for_objects_to_the_lenient_parser() {
        // serde reads a struct from an array of its fields in order; the lenient types would
        // read such an array by their own field order.
        for body in [
            r#"["evt_1","inbound"]"#,
            r#"{"id":"evt_1","type":"x","conversation":["cnv_1","subject","assigned"]}"#,
            r#"{"id":"evt_1","type":"x","_links":["https://x/self"]}"#,
            r#"{"id":"evt_1","type":"x","target":[{"type":"message"},{"id":"msg_1"}]}"#,
            r#"{"id":"evt_1","type":"x","target":{"_meta":["message"],"data":{"id":"msg_1"}}}"#,
            r#"{"id":"evt_1","type":"inbound","target":{"_meta":{"type":"message"},"data":["msg_1"]}}"#,
            r#"{"type":"x","payload":["evt_1","x"]}"#,
        ] {
            assert!(!paths_agree(body.as_bytes()), "{body}");
        }
    }

    mod fast_path_properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig {
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// Several changes at once, anywhere: the two paths still agree.
            #[test]
            fn fast_path_agrees_with_lenient(
                fixture in any::<prop::sample::Index>(),
                changes in prop::collection::vec((any::<prop::sample::Index>(), 0..20usize), 1..5),
                reversed in any::<bool>(),
            ) {
                let mut bodies = well_shaped_bodies();
                let mut body = bodies.swap_remove(fixture.index(bodies.len()));
                for (place, mutation) in changes {
                    let paths = paths(&body);
                    if paths.is_empty() {
                        break;
                    }
                    body = mutated(&body, &paths[place.index(paths.len())], mutation);
                }
                paths_agree(write_json(&body, reversed, None).as_bytes());
            }
        }
    }

    #[test]
    fn the_fast_path_borrows_strings_from_the_body_unless_they_hold_escapes() {
        let mut v = full_inbound();
        v["conversation"]["subject"] = json!("Re: \"pranks\"\nagain");
        let text = v.to_string();
        let e = match parse_webhook_body(text.as_bytes()).unwrap() {
            WebhookBody::Rule(e) => e,
            other => panic!("expected a rule webhook, got {other:?}"),
        };
        let borrowed = |s: &Cow<'_, str>| matches!(s, Cow::Borrowed(_));
        let c = e.conversation.as_ref().unwrap();
        let m = e.target_message().unwrap();
        // The lists checked below are not empty, so `all` cannot pass vacuously.
        assert!(!c.tags.is_empty() && !m.recipients.is_empty() && !c.links.related.is_empty());
        assert!(borrowed(&e.id) && borrowed(&e.type_) && borrowed(&c.id));
        assert!(c.status.as_ref().is_some_and(borrowed));
        assert!(m.text.as_ref().is_some_and(borrowed));
        assert!(c.tags.iter().all(|t| borrowed(&t.name)));
        assert!(
            c.assignee
                .as_ref()
                .and_then(|a| a.email.as_ref())
                .is_some_and(borrowed)
        );
        assert!(
            m.recipients
                .iter()
                .all(|r| r.handle.as_ref().is_some_and(borrowed))
        );
        assert!(
            c.links
                .related
                .iter()
                .all(|(name, url)| borrowed(name) && borrowed(url))
        );
        // A string with escapes is copied, unescaped.
        let subject = c.subject.as_ref().unwrap();
        assert!(!borrowed(subject));
        assert_eq!(subject, "Re: \"pranks\"\nagain");
        // What the lenient parser reads owns its strings.
        let lenient = parse_lenient(text.as_bytes()).unwrap();
        let WebhookBody::Rule(l) = &lenient else {
            panic!("expected a rule webhook");
        };
        assert!(!borrowed(&l.id));
        assert_eq!(l, &e);
    }

    #[test]
    fn stored_events_read_back_equal() {
        // Previews are stored with `serde_json::to_vec(&event)` and read back later.
        for body in well_shaped_bodies() {
            let body = body.to_string();
            let event = match parse_webhook_body(body.as_bytes()).unwrap() {
                WebhookBody::Rule(e) | WebhookBody::App { event: Some(e), .. } => e,
                WebhookBody::App { event: None, .. } => continue,
            };
            let back: Event = serde_json::from_slice(&serde_json::to_vec(&event).unwrap()).unwrap();
            assert_eq!(back, event);
        }
        // Inboxes are stored as their ids, which is all that is read of them.
        let e = parse_rule(&preview_inbound());
        assert_eq!(
            serde_json::to_value(&e).unwrap()["source"],
            json!({"_meta": {"type": "inboxes"}, "data": [{"id": "inb_55c8c149"}]})
        );
        // `data: null` stays null, and a message target that is no message stays as it was.
        let e = parse_rule(&json!({"id": "evt_1", "type": "inbound",
            "target": {"_meta": {"type": "message"}, "data": {"no": "id"}}}));
        assert!(e.target_message().is_none());
        assert_eq!(
            serde_json::to_value(&e).unwrap()["target"],
            json!({"_meta": {"type": "message"}, "data": {"no": "id"}})
        );
        let e = parse_rule(&json!({"id": "evt_1", "type": "x", "source": {"data": null}}));
        assert_eq!(
            serde_json::to_value(&e).unwrap()["source"],
            json!({"_meta": null, "data": null})
        );
    }
}
