//! Front event -> [`Snapshot`] -> [`Highlight`]. Pure functions.
//!
//! The ingest step turns each Front event into a [`Snapshot`] ([`snapshot_from_event`]),
//! completes it with what was known before about the same conversation
//! ([`Snapshot::merge_older`]), decides per subscription whether to emit ([`matches`],
//! [`Snapshot::content_hash`]), and builds the record ([`highlight`]). Nothing here does I/O;
//! the one impure spot is the last-resort clock reading in [`highlight`] when no timestamp
//! at all is known.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use frontsync_sinks::{Assignee, Change, Highlight, Requester, SCHEMA_V1, Source, Status};
use sha2::{Digest, Sha256};

use crate::config::{LabelRule, Subscription};
use crate::front::model::{self, Event, MAX_TIMESTAMP_MS, Message, secs_to_ms};

/// The most chars a Highlight `title` holds.
pub const MAX_TITLE_CHARS: usize = 200;
/// The most chars a Highlight `text` holds.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// The most bytes of a message's HTML (or text) that are ever converted: far more than
/// [`MAX_TEXT_CHARS`] needs, and it keeps a pathological message from stalling ingest.
pub const MAX_HTML_BYTES: usize = 1 << 20;
/// HTML is first converted from a prefix this long; most messages yield the full
/// [`MAX_TEXT_CHARS`] from it, which keeps big newsletters cheap.
const HTML_FIRST_PASS_BYTES: usize = 64 << 10;
/// Render width for html2text: wider than any Highlight text, so no line is ever re-wrapped.
const HTML_RENDER_WIDTH: usize = 20_000;
/// html2text's cost grows with tags x nesting depth. Past these bounds (only reached by
/// pathological or hostile markup), a linear tag stripper is used instead.
const MAX_HTML_DEPTH: u64 = 512;
const MAX_HTML_NESTING_COST: u64 = 4_000_000;

/// Link back to the conversation in Front's web app.
const APP_URL_PREFIX: &str = "https://app.frontapp.com/open/";

/// What frontsync knows about one conversation at one moment, from one event merged with
/// what was known before.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
// Snapshots are stored, as arrays of their fields in this order (see
// `store::tables::CONVERSATIONS`): a field added in a later release goes at the end, and the
// default makes the old, shorter ones readable. Never remove or reorder a field.
#[serde(default)]
pub struct Snapshot {
    pub conversation_id: String,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    /// Plain text, already bounded to [`MAX_TEXT_CHARS`].
    pub message_text: Option<String>,
    pub requester: Option<Requester>,
    pub assignee: Option<Assignee>,
    /// Front's own value; `None` when unknown (preview).
    pub front_status: Option<String>,
    /// Tag names; `None` when unknown (preview). `Some` exactly when the event carried the
    /// full conversation, which is also how [`Snapshot::merge_older`] tells a known
    /// "unassigned" from an unknown assignee.
    pub tags: Option<Vec<String>>,
    /// Sorted, no duplicates.
    pub inbox_ids: Vec<String>,
    pub created_at_ms: Option<i64>,
    pub updated_at_ms: Option<i64>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub event_at_ms: Option<i64>,
}

/// Why an event cannot become a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// Neither the conversation nor the target message names a conversation.
    #[error("event {event_id} names no conversation")]
    NoConversation { event_id: String },
}

/// Reads what one event says about its conversation.
///
/// A full event gives everything. A preview gives ids and links: the snapshot then leaves
/// status, tags and assignee unknown (`None`), except what the event type itself proves
/// (`archive` -> `archived`, `trash` -> `deleted`, `assign` -> the target teammate), and
/// [`Snapshot::merge_older`] fills the rest. Fails only when no conversation id can be found.
pub fn snapshot_from_event(event: &Event<'_>) -> Result<Snapshot, NormalizeError> {
    let conversation = event.conversation.as_ref();
    // Only message events carry "the latest message"; a `forward` or `sending_error` target
    // is a message too, but not one the customer conversation moved on with.
    let message = event
        .target_message()
        .filter(|m| event.is_message_event() && !m.id.trim().is_empty());
    let target_message_link = || {
        event
            .target_message()
            .and_then(|m| m.links.related_id("conversation", "cnv_"))
    };
    let conversation_id = conversation
        .map(|c| c.id.trim())
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .or_else(target_message_link)
        .ok_or_else(|| NormalizeError::NoConversation {
            event_id: event.id.to_string(),
        })?;

    // A full conversation always has a status; its absence marks a preview.
    let full = conversation.filter(|c| c.status.is_some());

    let front_status = full
        .and_then(|c| c.status.as_deref())
        .or_else(|| inferred_status(&event.type_))
        .map(str::to_owned);
    let tags = full.map(|c| tag_names(&c.tags));
    let assignee = match full {
        Some(c) => c.assignee.as_ref().and_then(assignee_from),
        None if event.type_ == "assign" => event.target_teammate().as_ref().and_then(assignee_from),
        None => None,
    };

    let message_inbound = message.is_some_and(|m| m.is_inbound.unwrap_or(event.type_ == "inbound"));
    let requester = conversation
        .and_then(|c| c.recipient.as_ref())
        .and_then(requester_from)
        .or_else(|| {
            message.filter(|_| message_inbound).and_then(|m| {
                m.recipients
                    .iter()
                    .filter(|r| r.role.as_deref() == Some("from"))
                    .find_map(requester_from)
            })
        });

    let subject = conversation
        .and_then(|c| c.subject.as_deref())
        .or_else(|| message.and_then(|m| m.subject.as_deref()))
        .map(str::to_owned);

    let mut inbox_ids = event.source_inbox_ids();
    inbox_ids.extend(event.target_inbox_ids());
    inbox_ids.sort();
    inbox_ids.dedup();

    let event_at_ms = event.emitted_at.and_then(secs_to_ms);
    let message_at_ms = message.and_then(|m| m.created_at).and_then(secs_to_ms);
    let observed = || [message_at_ms, event_at_ms].into_iter().flatten();
    let created_at_ms = conversation
        .and_then(|c| c.created_at)
        .and_then(secs_to_ms)
        .or_else(|| observed().min());
    let updated_at_ms = conversation
        .and_then(|c| c.updated_at)
        .and_then(secs_to_ms)
        .or_else(|| observed().max());

    Ok(Snapshot {
        conversation_id,
        subject,
        message_id: message.map(|m| m.id.to_string()),
        message_text: message.and_then(message_text),
        requester,
        assignee,
        front_status,
        tags,
        inbox_ids,
        created_at_ms,
        updated_at_ms,
        event_id: Some(event.id.to_string()),
        event_type: Some(event.type_.to_string()),
        event_at_ms,
    })
}

/// The Front status an event type proves on its own, for previews that carry no status.
/// `reopen`, `restore` and `unassign` are left out: the resulting status depends on state
/// the preview does not show.
fn inferred_status(event_type: &str) -> Option<&'static str> {
    match event_type {
        "archive" => Some("archived"),
        "trash" => Some("deleted"),
        _ => None,
    }
}

/// Tag names in Front's order, without blanks or repeats.
fn tag_names(tags: &[model::Tag<'_>]) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        if !tag.name.trim().is_empty() && !names.iter().any(|n| *n == tag.name) {
            names.push(tag.name.to_string());
        }
    }
    names
}

/// Trimmed, when anything is left.
fn trimmed(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// A trimmed, non-empty copy.
fn non_empty(s: Option<&str>) -> Option<String> {
    trimmed(s).map(str::to_owned)
}

fn assignee_from(t: &model::Teammate<'_>) -> Option<Assignee> {
    let id = non_empty(Some(&t.id))?;
    let name = match (
        trimmed(t.first_name.as_deref()),
        trimmed(t.last_name.as_deref()),
    ) {
        (Some(first), Some(last)) => Some(format!("{first} {last}")),
        (Some(one), None) | (None, Some(one)) => Some(one.to_owned()),
        (None, None) => non_empty(t.username.as_deref()),
    };
    Some(Assignee {
        id,
        name,
        email: non_empty(t.email.as_deref()),
    })
}

/// A requester needs a handle: a name alone identifies nobody.
fn requester_from(r: &model::Recipient<'_>) -> Option<Requester> {
    Some(Requester {
        handle: non_empty(r.handle.as_deref())?,
        name: non_empty(r.name.as_deref()),
    })
}

/// The message's plain text: `text`, else the HTML `body` as text, else `blurb`; blank
/// versions are skipped. Bounded to [`MAX_TEXT_CHARS`].
fn message_text(m: &Message<'_>) -> Option<String> {
    let from_plain = |s: &Option<Cow<'_, str>>| {
        s.as_deref()
            .map(|s| clean_text(prefix_bytes(s, MAX_HTML_BYTES)))
            .filter(|s| !s.is_empty())
    };
    from_plain(&m.text)
        .or_else(|| m.body.as_deref().and_then(html_to_text))
        .or_else(|| from_plain(&m.blurb))
        .map(|mut s| {
            // `bound_chars` returns a prefix of `s`: cut in place rather than copy.
            s.truncate(bound_chars(&s, MAX_TEXT_CHARS).len());
            s
        })
}

impl Snapshot {
    /// Fill what this (newer) snapshot lacks from an older one of the same conversation:
    /// message text/id of a tag event, inbox ids, requester, created_at... Present fields of
    /// the newer one win; inbox ids are unioned.
    ///
    /// Details: does nothing when the conversation ids differ. The older message text is
    /// taken only along with its id, never glued to a different message. Assignee, status and
    /// tags are taken only when this snapshot did not see the full conversation, since there a
    /// missing assignee means "unassigned". `created_at` keeps the earliest and `updated_at`
    /// the latest value. The event fields always stay this snapshot's own.
    pub fn merge_older(&mut self, older: &Snapshot) {
        if self.conversation_id != older.conversation_id {
            return;
        }
        let conversation_known = self.tags.is_some();

        fill(&mut self.subject, &older.subject);
        match &self.message_id {
            None => {
                self.message_id.clone_from(&older.message_id);
                self.message_text.clone_from(&older.message_text);
            }
            Some(id) if older.message_id.as_ref() == Some(id) => {
                fill(&mut self.message_text, &older.message_text);
            }
            Some(_) => {}
        }
        fill(&mut self.requester, &older.requester);
        if !conversation_known {
            fill(&mut self.assignee, &older.assignee);
        }
        // An `assign` preview names only the teammate's id; keep the name and email known.
        if let (Some(new), Some(old)) = (&mut self.assignee, &older.assignee)
            && new.id == old.id
        {
            fill(&mut new.name, &old.name);
            fill(&mut new.email, &old.email);
        }
        fill(&mut self.front_status, &older.front_status);
        fill(&mut self.tags, &older.tags);

        self.inbox_ids.extend(older.inbox_ids.iter().cloned());
        self.inbox_ids.sort();
        self.inbox_ids.dedup();

        self.created_at_ms = min_some(self.created_at_ms, older.created_at_ms);
        self.updated_at_ms = max_some(self.updated_at_ms, older.updated_at_ms);
    }

    /// The normalized status; `None` while Front's status is unknown.
    pub fn status(&self) -> Option<Status> {
        self.front_status.as_deref().map(normalize_status)
    }

    /// Stable across releases and platforms (do NOT use std's DefaultHasher): changes when
    /// status, tags (order-insensitive), assignee id or latest message id change, and only
    /// then.
    ///
    /// The status hashed is Front's own value, as shown in `front_status`. Unknown tags hash
    /// like no tags, since both show as `[]`. The value is the first 8 bytes (big-endian) of
    /// a SHA-256 over a length-prefixed encoding, so it cannot be fooled by separators inside
    /// names.
    pub fn content_hash(&self) -> u64 {
        let mut h = Sha256::new();
        h.update(b"frontsync.snapshot.content.v1");
        hash_opt_str(&mut h, self.front_status.as_deref());
        let mut tags: Vec<&str> = self.tags.iter().flatten().map(String::as_str).collect();
        tags.sort_unstable();
        tags.dedup();
        h.update((tags.len() as u64).to_le_bytes());
        for tag in tags {
            hash_str(&mut h, tag);
        }
        hash_opt_str(&mut h, self.assignee.as_ref().map(|a| a.id.as_str()));
        hash_opt_str(&mut h, self.message_id.as_deref());
        let digest = h.finalize();
        let mut first = [0u8; 8];
        for (dst, src) in first.iter_mut().zip(digest.iter()) {
            *dst = *src;
        }
        u64::from_be_bytes(first)
    }
}

fn fill<T: Clone>(newer: &mut Option<T>, older: &Option<T>) {
    if newer.is_none() {
        newer.clone_from(older);
    }
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        _ => a.or(b),
    }
}

fn max_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => a.or(b),
    }
}

fn hash_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

fn hash_opt_str(h: &mut Sha256, s: Option<&str>) {
    match s {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            hash_str(h, s);
        }
    }
}

/// Maps Front's status to the Highlight status: `assigned`/`unassigned` -> open,
/// `archived`, `deleted` (and `trashed`, the filter's spelling) -> trashed, `spam`; anything
/// else (a status Front adds later) -> open. Case and surrounding blanks are ignored.
pub fn normalize_status(front_status: &str) -> Status {
    match front_status.trim().to_ascii_lowercase().as_str() {
        "archived" => Status::Archived,
        "deleted" | "trashed" => Status::Trashed,
        "spam" => Status::Spam,
        _ => Status::Open,
    }
}

/// Does the subscription want this conversation? `inbox_filter` is the subscription's inbox
/// list already resolved to ids (empty = any inbox).
///
/// Each filter that is set must be satisfied by what is known: an inbox filter needs a known
/// inbox in it, a status filter a known status, `tags_any` a known tag in it. `tags_none`
/// only rejects a known tag, so a preview passes it. Tags compare by exact name.
pub fn matches(sub: &Subscription, inbox_filter: &[String], snap: &Snapshot) -> bool {
    if !inbox_filter.is_empty() && !snap.inbox_ids.iter().any(|id| inbox_filter.contains(id)) {
        return false;
    }
    if !sub.statuses.is_empty() && !snap.status().is_some_and(|s| sub.statuses.contains(&s)) {
        return false;
    }
    let tags = snap.tags.as_deref();
    if !sub.tags_any.is_empty() && !tags.is_some_and(|tags| intersects(tags, &sub.tags_any)) {
        return false;
    }
    if tags.is_some_and(|tags| intersects(tags, &sub.tags_none)) {
        return false;
    }
    true
}

fn intersects(a: &[String], b: &[String]) -> bool {
    a.iter().any(|x| b.contains(x))
}

/// The labels the subscription's rules add: the union of `add` of every matching rule, in
/// first-seen order, without duplicates. A rule matches when (its `tags_any` is empty or
/// shares a tag) and (its `statuses` is empty or contains `status`).
pub fn labels(rules: &[LabelRule], status: Status, tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let matching = rules.iter().filter(|rule| {
        (rule.tags_any.is_empty() || intersects(tags, &rule.tags_any))
            && (rule.statuses.is_empty() || rule.statuses.contains(&status))
    });
    for label in matching.flat_map(|rule| &rule.add) {
        if !out.contains(label) {
            out.push(label.clone());
        }
    }
    out
}

/// Builds the Highlight record for one subscription.
///
/// Unknown status reads `open` with `front_status` `"unknown"`; unknown tags read `[]`.
/// A missing `created_at` takes `updated_at` and vice versa, then the event time; only when
/// nothing at all is known does it fall back to the current time (never the Unix epoch).
pub fn highlight(sub: &Subscription, snap: &Snapshot, revision: u64, change: Change) -> Highlight {
    let status = snap.status().unwrap_or(Status::Open);
    let tags = snap.tags.clone().unwrap_or_default();
    let text = snap
        .message_text
        .as_deref()
        .map(|t| bound_chars(t, MAX_TEXT_CHARS).to_owned())
        .unwrap_or_default();
    let created = snap
        .created_at_ms
        .or(snap.updated_at_ms)
        .or(snap.event_at_ms);
    let updated = snap
        .updated_at_ms
        .or(snap.created_at_ms)
        .or(snap.event_at_ms);
    let (created, updated) = match (created, updated) {
        (Some(c), Some(u)) => (c, u),
        _ => {
            let now = now_ms();
            (created.unwrap_or(now), updated.unwrap_or(now))
        }
    };
    Highlight {
        schema: SCHEMA_V1.to_owned(),
        id: format!("{}:{}", sub.name, snap.conversation_id),
        revision,
        change,
        subscription: sub.name.clone(),
        title: title(snap.subject.as_deref(), Some(text.as_str())),
        requester: snap.requester.clone(),
        assignee: snap.assignee.clone(),
        status,
        front_status: snap
            .front_status
            .clone()
            .unwrap_or_else(|| "unknown".to_owned()),
        labels: labels(&sub.labels, status, &tags),
        tags,
        inbox_ids: snap.inbox_ids.clone(),
        created_at: format_ms(created),
        updated_at: format_ms(updated),
        source: Source {
            system: "front".to_owned(),
            conversation_id: snap.conversation_id.clone(),
            message_id: snap.message_id.clone(),
            event_id: snap.event_id.clone(),
            url: format!("{APP_URL_PREFIX}{}", snap.conversation_id),
        },
        text,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-21T09:14:03.012Z`. Out-of-range values
/// (only possible from a corrupted stored snapshot) are clamped, because the formatter
/// cannot show years past 9999.
pub fn format_ms(ms: i64) -> String {
    let ms = ms.clamp(0, MAX_TIMESTAMP_MS).unsigned_abs();
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The subject on one line, else the first non-empty line of the text; at most
/// [`MAX_TITLE_CHARS`] chars. Empty when neither is known.
pub fn title(subject: Option<&str>, text: Option<&str>) -> String {
    let from_subject = subject.map(one_line).filter(|s| !s.is_empty());
    let title = from_subject.or_else(|| text?.lines().map(one_line).find(|line| !line.is_empty()));
    title
        .map(|t| bound_chars(&t, MAX_TITLE_CHARS).to_owned())
        .unwrap_or_default()
}

/// Trims, and turns each run of blanks that holds a line break or tab into one space (a
/// folded subject header), dropping other control chars. Other spacing is kept as is.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blanks = String::new();
    let mut blanks_break = false;
    for c in s.trim().chars() {
        if c.is_whitespace() {
            blanks_break |= c.is_control();
            blanks.push(c);
        } else if c.is_control() {
            continue;
        } else {
            if out.is_empty() {
                // Blanks that followed dropped control chars at the start ("\u{1} x") are
                // leading blanks too: a title never starts with a space.
            } else if blanks_break {
                out.push(' ');
            } else {
                out.push_str(&blanks);
            }
            blanks.clear();
            blanks_break = false;
            out.push(c);
        }
    }
    out
}

/// At most `max` chars of `s` (never splitting one), without trailing whitespace.
fn bound_chars(s: &str, max: usize) -> &str {
    // At most `max` bytes is at most `max` chars: most texts are far below the bound, and
    // counting their chars was a visible share of the writer's time.
    let cut = if s.len() <= max {
        s
    } else {
        s.char_indices()
            .nth(max)
            .and_then(|(i, _)| s.get(..i))
            .unwrap_or(s)
    };
    cut.trim_end()
}

/// At most `max` bytes of `s`, cut on a char boundary.
fn prefix_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Unix line endings, no trailing blanks on any line, no leading blank lines, no trailing
/// whitespace, and no-break spaces (`&nbsp;` is everywhere in email HTML) as plain spaces, so
/// the text searches like text.
fn clean_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.split('\n') {
        let line = line.trim_end();
        let line: std::borrow::Cow<'_, str> = if line.contains('\u{a0}') {
            line.replace('\u{a0}', " ").into()
        } else {
            line.into()
        };
        if out.is_empty() && line.trim_start().is_empty() {
            continue;
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out
}

/// HTML to plain text, bounded to [`MAX_HTML_BYTES`] of input. `None` when it yields no
/// text (an image-only body, say).
fn html_to_text(html: &str) -> Option<String> {
    let bounded = prefix_bytes(html, MAX_HTML_BYTES);
    let first = prefix_bytes(bounded, HTML_FIRST_PASS_BYTES);
    if first.len() < bounded.len() {
        // Enough text from the prefix: the rest could not change the first MAX_TEXT_CHARS
        // chars, except near the cut, which the margin keeps out of reach.
        if let Some(text) = convert_html(first)
            && text.chars().nth(MAX_TEXT_CHARS + 1_000).is_some()
        {
            return Some(text);
        }
    }
    convert_html(bounded)
}

fn convert_html(html: &str) -> Option<String> {
    let raw = if nesting_within_bounds(html) {
        html2text::config::with_decorator(PlainText)
            .allow_width_overflow()
            .string_from_read(html.as_bytes(), HTML_RENDER_WIDTH)
            .ok()?
    } else {
        strip_tags(html)
    };
    Some(clean_text(&raw)).filter(|t| !t.is_empty())
}

/// html2text decorations for a Highlight: no markdown, no link brackets or footnotes, no
/// image placeholders; list bullets and quote marks stay since they carry meaning.
#[derive(Debug, Clone, Copy)]
struct PlainText;

impl html2text::render::TextDecorator for PlainText {
    type Annotation = ();

    fn decorate_link_start(&mut self, _url: &str) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_link_end(&mut self) -> String {
        String::new()
    }
    fn decorate_em_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_em_end(&self) -> String {
        String::new()
    }
    fn decorate_strong_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strong_end(&self) -> String {
        String::new()
    }
    fn decorate_strikeout_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strikeout_end(&self) -> String {
        String::new()
    }
    fn decorate_code_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_code_end(&self) -> String {
        String::new()
    }
    fn decorate_preformat_first(&self) {}
    fn decorate_preformat_cont(&self) {}
    fn decorate_image(&mut self, _src: &str, _title: &str) -> (String, ()) {
        (String::new(), ())
    }
    fn header_prefix(&self, _level: usize) -> String {
        String::new()
    }
    fn quote_prefix(&self) -> String {
        "> ".to_owned()
    }
    fn unordered_item_prefix(&self) -> String {
        "- ".to_owned()
    }
    fn ordered_item_prefix(&self, i: i64) -> String {
        format!("{i}. ")
    }
    fn make_subblock_decorator(&self) -> Self {
        *self
    }
    fn decorate_superscript_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_superscript_end(&self) -> String {
        String::new()
    }
    fn finalise(&mut self, _urls: Vec<String>) -> Vec<html2text::render::TaggedLine<()>> {
        Vec::new()
    }
}

/// Elements that never nest (void) or close themselves when a sibling opens; counting them
/// would overstate depth for sloppy but harmless markup.
const NON_NESTING: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr", "p", "li", "td", "th", "tr", "dt", "dd", "option",
];

/// Whether the markup is shallow and cheap enough for html2text, whose work grows with
/// tags x depth: a one-pass scan estimating the nesting depth at each start tag.
fn nesting_within_bounds(html: &str) -> bool {
    let mut depth: u64 = 0;
    let mut cost: u64 = 0;
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        let after = rest.get(lt + 1..).unwrap_or_default();
        let (closing, name_start) = match after.strip_prefix('/') {
            Some(n) => (true, n),
            None => (false, after),
        };
        let name_len = name_start
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(name_start.len());
        let name = name_start.get(..name_len).unwrap_or_default();
        let tag_end = after.find('>').map_or(after.len(), |i| i + 1);
        let tag = after.get(..tag_end).unwrap_or_default();
        rest = after.get(tag_end..).unwrap_or_default();
        if name.is_empty() || NON_NESTING.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            continue;
        }
        if closing {
            depth = depth.saturating_sub(1);
        } else if !tag.ends_with("/>") {
            depth += 1;
            cost += depth;
            if depth > MAX_HTML_DEPTH || cost > MAX_HTML_NESTING_COST {
                return false;
            }
        }
    }
    true
}

/// Block-level elements: a line break in the text.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "tr",
    "ul",
];

/// Linear-time HTML to text for markup too deep for html2text: drops tags, comments,
/// `<script>`/`<style>`/`<head>` content; breaks lines at block elements and rows; decodes
/// common entities; collapses whitespace as a browser would.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            push_html_text(&mut out, rest);
            break;
        };
        push_html_text(&mut out, rest.get(..lt).unwrap_or_default());
        let after = rest.get(lt + 1..).unwrap_or_default();
        if let Some(comment) = after.strip_prefix("!--") {
            rest = comment
                .find("-->")
                .and_then(|i| comment.get(i + 3..))
                .unwrap_or_default();
            continue;
        }
        let Some(gt) = after.find('>') else {
            break; // an unterminated tag: the rest is not text
        };
        let tag = after.get(..gt).unwrap_or_default();
        rest = after.get(gt + 1..).unwrap_or_default();
        let (closing, body) = match tag.strip_prefix('/') {
            Some(b) => (true, b),
            None => (false, tag),
        };
        let name: String = body
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        if !closing && matches!(name.as_str(), "script" | "style" | "head" | "title") {
            let close = format!("</{name}");
            rest = find_ascii_ci(rest, &close)
                .and_then(|i| rest.get(i..))
                .and_then(|r| r.find('>').and_then(|gt| r.get(gt + 1..)))
                .unwrap_or_default();
            continue;
        }
        if name == "li" {
            // One line per item: the opening tag starts it, the closing one adds nothing.
            if !closing {
                out.push_str("\n- ");
            }
        } else if BLOCKS.contains(&name.as_str()) {
            out.push('\n');
        } else if matches!(name.as_str(), "td" | "th") && !closing {
            out.push(' ');
        }
    }
    // Browser-like spacing: trim each line, at most one blank line in a row.
    let mut text = String::with_capacity(out.len());
    let mut blank_run = 0;
    for line in out.split('\n').map(str::trim) {
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// The byte offset of `needle` (ASCII) in `haystack`, ignoring ASCII case.
fn find_ascii_ci(haystack: &str, needle: &str) -> Option<usize> {
    let needle = needle.as_bytes();
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// Appends a run of HTML text: whitespace collapsed to single spaces, entities decoded.
fn push_html_text(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        push_collapsed(out, rest.get(..amp).unwrap_or_default());
        let after = rest.get(amp + 1..).unwrap_or_default();
        let entity = after
            .char_indices()
            .take(12)
            .find(|&(_, c)| c == ';')
            .and_then(|(semi, _)| Some((semi, decode_entity(after.get(..semi)?)?)));
        match entity {
            Some((semi, c)) => {
                push_collapsed(out, c.encode_utf8(&mut [0u8; 4]));
                rest = after.get(semi + 1..).unwrap_or_default();
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    push_collapsed(out, rest);
}

fn push_collapsed(out: &mut String, s: &str) {
    for c in s.chars() {
        if c.is_whitespace() && c != '\u{a0}' {
            if !out.ends_with([' ', '\n']) {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
}

fn decode_entity(name: &str) -> Option<char> {
    let numeric = |digits: &str, radix: u32| {
        u32::from_str_radix(digits, radix)
            .ok()
            .and_then(char::from_u32)
    };
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some('\u{a0}'),
        "copy" => Some('©'),
        "reg" => Some('®'),
        "euro" => Some('€'),
        "hellip" => Some('…'),
        "mdash" => Some('—'),
        "ndash" => Some('–'),
        "lsquo" => Some('‘'),
        "rsquo" => Some('’'),
        "ldquo" => Some('“'),
        "rdquo" => Some('”'),
        "eacute" => Some('é'),
        "egrave" => Some('è'),
        "agrave" => Some('à'),
        "ccedil" => Some('ç'),
        "auml" => Some('ä'),
        "ouml" => Some('ö'),
        "uuml" => Some('ü'),
        "szlig" => Some('ß'),
        _ => {
            let num = name.strip_prefix('#')?;
            match num.strip_prefix(['x', 'X']) {
                Some(hex) => numeric(hex, 16),
                None => numeric(num, 10),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::front::model::Event;
    use serde_json::{Value, json};

    fn event(v: Value) -> Event<'static> {
        serde_json::from_value(v).unwrap()
    }

    fn sub() -> Subscription {
        Subscription {
            name: "support".into(),
            front: "acme".into(),
            inboxes: Vec::new(),
            statuses: Vec::new(),
            tags_any: Vec::new(),
            tags_none: Vec::new(),
            backfill: Duration::from_secs(7 * 86_400),
            poll_interval: Duration::from_secs(60),
            emit_created: true,
            emit_updated: false,
            sinks: vec!["console".into()],
            labels: Vec::new(),
        }
    }

    fn rule(tags_any: &[&str], statuses: &[Status], add: &[&str]) -> LabelRule {
        LabelRule {
            tags_any: tags_any.iter().map(|s| s.to_string()).collect(),
            statuses: statuses.to_vec(),
            add: add.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// A full `inbound` event, modeled on the contract's example Highlight.
    fn full_inbound() -> Value {
        json!({
            "_links": {"self": "https://acme.api.frontapp.com/events/evt_4ckcra8e"},
            "id": "evt_4ckcra8e",
            "type": "inbound",
            "emitted_at": 1795252811.5,
            "source": {"_meta": {"type": "inboxes"}, "data": [{"id": "inb_123", "name": "Support"}]},
            "target": {"_meta": {"type": "message"}, "data": {
                "id": "msg_1q15qmtq",
                "type": "email",
                "is_inbound": true,
                "created_at": 1795252800.25,
                "subject": "Re: Refund for order 1042",
                "blurb": "Hi, I was charged twice",
                "body": "<p>Hi, I was charged twice for order 1042 ...</p>",
                "text": "Hi, I was charged twice for order 1042 ...",
                "author": null,
                "recipients": [
                    {"name": "Ada Lovelace", "handle": "ada@example.com", "role": "from"},
                    {"name": null, "handle": "support@acme.test", "role": "to"}
                ]
            }},
            "conversation": {
                "id": "cnv_55c8c149",
                "subject": "Refund for order 1042",
                "status": "assigned",
                "assignee": {"id": "tea_2ab4", "email": "grace@acme.test", "username": "grace",
                             "first_name": "Grace", "last_name": "Hopper"},
                "recipient": {"name": "Ada Lovelace", "handle": "ada@example.com", "role": "from"},
                "tags": [{"id": "tag_1", "name": "billing"}, {"id": "tag_2", "name": "vip"}],
                "created_at": 1795252443.012,
                "updated_at": 1795252811.5,
                "is_private": false
            }
        })
    }

    fn full_snapshot() -> Snapshot {
        snapshot_from_event(&event(full_inbound())).unwrap()
    }

    fn message_event(message: Value) -> Snapshot {
        let mut v = full_inbound();
        v["target"]["data"] = message;
        snapshot_from_event(&event(v)).unwrap()
    }

    fn text_of(message: Value) -> Option<String> {
        message_event(message).message_text
    }

    #[test]
    fn full_event_snapshot() {
        let s = full_snapshot();
        assert_eq!(s.conversation_id, "cnv_55c8c149");
        assert_eq!(s.subject.as_deref(), Some("Refund for order 1042"));
        assert_eq!(s.message_id.as_deref(), Some("msg_1q15qmtq"));
        assert_eq!(
            s.message_text.as_deref(),
            Some("Hi, I was charged twice for order 1042 ...")
        );
        assert_eq!(
            s.requester,
            Some(Requester {
                name: Some("Ada Lovelace".into()),
                handle: "ada@example.com".into()
            })
        );
        assert_eq!(
            s.assignee,
            Some(Assignee {
                id: "tea_2ab4".into(),
                name: Some("Grace Hopper".into()),
                email: Some("grace@acme.test".into())
            })
        );
        assert_eq!(s.front_status.as_deref(), Some("assigned"));
        assert_eq!(s.status(), Some(Status::Open));
        assert_eq!(s.tags, Some(strings(&["billing", "vip"])));
        assert_eq!(s.inbox_ids, strings(&["inb_123"]));
        assert_eq!(s.created_at_ms, Some(1_795_252_443_012));
        assert_eq!(s.updated_at_ms, Some(1_795_252_811_500));
        assert_eq!(s.event_id.as_deref(), Some("evt_4ckcra8e"));
        assert_eq!(s.event_type.as_deref(), Some("inbound"));
        assert_eq!(s.event_at_ms, Some(1_795_252_811_500));
    }

    #[test]
    fn full_event_highlight_matches_the_contract_example() {
        let mut sub = sub();
        sub.labels = vec![rule(&["billing"], &[], &["bug-report"])];
        let h = highlight(&sub, &full_snapshot(), 1, Change::Created);
        let expected = json!({
            "schema": "frontsync.highlight.v1",
            "id": "support:cnv_55c8c149",
            "revision": 1,
            "change": "created",
            "subscription": "support",
            "title": "Refund for order 1042",
            "text": "Hi, I was charged twice for order 1042 ...",
            "requester": {"name": "Ada Lovelace", "handle": "ada@example.com"},
            "assignee": {"id": "tea_2ab4", "name": "Grace Hopper", "email": "grace@acme.test"},
            "status": "open",
            "front_status": "assigned",
            "tags": ["billing", "vip"],
            "labels": ["bug-report"],
            "inbox_ids": ["inb_123"],
            "created_at": "2026-11-21T09:14:03.012Z",
            "updated_at": "2026-11-21T09:20:11.500Z",
            "source": {
                "system": "front",
                "conversation_id": "cnv_55c8c149",
                "message_id": "msg_1q15qmtq",
                "event_id": "evt_4ckcra8e",
                "url": "https://app.frontapp.com/open/cnv_55c8c149"
            }
        });
        assert_eq!(serde_json::to_value(&h).unwrap(), expected);
        assert_eq!(h.delivery_key(), "support:cnv_55c8c149:1");
    }

    /// A preview `inbound`: only ids, links and types.
    fn preview_inbound() -> Value {
        json!({
            "_links": {"self": "https://api2.frontapp.com/events/evt_2"},
            "id": "evt_2",
            "type": "inbound",
            "emitted_at": 1795253000.0,
            "source": {"_meta": {"type": "inboxes"}, "data": {"id": "inb_9"}},
            "target": {"_meta": {"type": "message"},
                       "data": {"_links": {"self": "https://api2.frontapp.com/messages/msg_2"}, "id": "msg_2"}},
            "conversation": {"_links": {"self": "https://api2.frontapp.com/conversations/cnv_55c8c149"},
                             "id": "cnv_55c8c149"}
        })
    }

    #[test]
    fn preview_snapshot_leaves_unknowns_unknown() {
        let s = snapshot_from_event(&event(preview_inbound())).unwrap();
        assert_eq!(s.conversation_id, "cnv_55c8c149");
        assert_eq!(s.message_id.as_deref(), Some("msg_2"));
        assert_eq!(s.message_text, None);
        assert_eq!(s.subject, None);
        assert_eq!(s.front_status, None);
        assert_eq!(s.status(), None);
        assert_eq!(s.tags, None);
        assert_eq!(s.assignee, None);
        assert_eq!(s.requester, None);
        assert_eq!(s.inbox_ids, strings(&["inb_9"]));
        // Only the event time is known.
        assert_eq!(s.created_at_ms, Some(1_795_253_000_000));
        assert_eq!(s.updated_at_ms, Some(1_795_253_000_000));

        let h = highlight(&sub(), &s, 1, Change::Created);
        assert_eq!(h.title, "");
        assert_eq!(h.text, "");
        assert_eq!(h.status, Status::Open);
        assert_eq!(h.front_status, "unknown");
        assert!(h.tags.is_empty() && h.labels.is_empty());
        assert_eq!(h.created_at, "2026-11-21T09:23:20.000Z");
        assert_eq!(h.updated_at, h.created_at);
    }

    #[test]
    fn conversation_id_from_the_message_link_else_an_error() {
        let v = json!({
            "id": "evt_3", "type": "outbound",
            "target": {"_meta": {"type": "message"}, "data": {
                "id": "msg_3",
                "_links": {"related": {"conversation": "https://acme.api.frontapp.com/conversations/cnv_77"}}
            }}
        });
        assert_eq!(
            snapshot_from_event(&event(v)).unwrap().conversation_id,
            "cnv_77"
        );

        let err =
            snapshot_from_event(&event(json!({"id": "evt_4", "type": "reminder"}))).unwrap_err();
        assert_eq!(err.to_string(), "event evt_4 names no conversation");
        let v = json!({"id": "evt_5", "type": "tag", "conversation": {"id": "  "}});
        assert!(snapshot_from_event(&event(v)).is_err());
    }

    #[test]
    fn title_from_subject() {
        assert_eq!(title(Some("  Refund  "), Some("body")), "Refund");
        // A folded subject header becomes one line.
        assert_eq!(
            title(Some("Refund\r\n\tfor order"), None),
            "Refund for order"
        );
        assert_eq!(title(Some("two  spaces kept"), None), "two  spaces kept");
    }

    #[test]
    fn title_from_first_non_empty_line_when_subject_blank() {
        for subject in [None, Some(""), Some("   "), Some("\n\t")] {
            assert_eq!(
                title(subject, Some("\n   \n  First line here  \nsecond")),
                "First line here",
                "{subject:?}"
            );
        }
        assert_eq!(title(None, None), "");
        assert_eq!(title(Some(" "), Some(" \n ")), "");
        // Found by the property tests: blanks after a leading control char used to stay.
        assert_eq!(title(Some("\u{1} x"), None), "x");
        assert_eq!(title(Some("\0\u{2028}é"), None), "é");
        assert_eq!(title(None, Some("\u{7f}\u{a0}Hello")), "Hello");

        // Through the whole pipeline: an empty conversation subject takes the text's line.
        let mut v = full_inbound();
        v["conversation"]["subject"] = json!("");
        let s = snapshot_from_event(&event(v)).unwrap();
        assert_eq!(
            highlight(&sub(), &s, 1, Change::Created).title,
            "Hi, I was charged twice for order 1042 ..."
        );
    }

    #[test]
    fn bound_chars_counts_chars_on_both_sides_of_its_byte_fast_path() {
        assert_eq!(bound_chars("abc  ", 5), "abc");
        assert_eq!(bound_chars("abcdef", 5), "abcde");
        // 10 bytes but 5 chars: fits; 6 chars: cut after the 5th.
        assert_eq!(bound_chars("ééééé", 5), "ééééé");
        assert_eq!(bound_chars("éééééé", 5), "ééééé");
        assert_eq!(bound_chars("", 0), "");
        assert_eq!(bound_chars("a", 0), "");
    }

    #[test]
    fn title_is_bounded_in_chars_not_bytes() {
        let long = "é".repeat(250);
        let t = title(Some(&long), None);
        assert_eq!(t.chars().count(), MAX_TITLE_CHARS);
        assert_eq!(t, "é".repeat(200));

        let emoji = "👩‍👩‍👧".repeat(100); // 5 chars each, multi-byte
        let t = title(Some(&emoji), None);
        assert_eq!(t.chars().count(), 200);
        assert!(emoji.starts_with(&t));

        let exact = "x".repeat(200);
        assert_eq!(title(Some(&exact), None), exact);
        // No trailing blank left by the cut.
        let spaced = format!("{} tail", "a".repeat(199));
        assert_eq!(title(Some(&spaced), None), "a".repeat(199));
    }

    #[test]
    fn text_prefers_text_then_html_then_blurb() {
        assert_eq!(
            text_of(
                json!({"id": "m", "text": "plain\r\nline two  ", "body": "<p>html</p>", "blurb": "b"})
            ),
            Some("plain\nline two".into())
        );
        // Blank text falls through to the body.
        assert_eq!(
            text_of(json!({"id": "m", "text": "  \n ", "body": "<p>html</p>", "blurb": "b"})),
            Some("html".into())
        );
        assert_eq!(
            text_of(json!({"id": "m", "body": "", "blurb": "just the blurb"})),
            Some("just the blurb".into())
        );
        // An image-only body has no text: blurb.
        assert_eq!(
            text_of(json!({"id": "m", "body": "<img src='x.png' alt='logo'>", "blurb": "blurb"})),
            Some("blurb".into())
        );
        assert_eq!(text_of(json!({"id": "m"})), None);
    }

    #[test]
    fn html_body_becomes_plain_text() {
        let body = "<html><head><style>p{color:red}</style><title>t</title></head><body>\
            <p>Hi&nbsp;there,</p><p>Line one<br>Line two<br/>Line three</p>\
            <div>Fish &amp; chips &lt;3 &eacute;t&eacute; &#x1F600; &#233;</div>\
            <p>See <a href=\"https://x.test/p\">the <b>policy</b></a>.</p>\
            <ul><li>one</li><li>two</li></ul>\
            <script>alert(1)</script></body></html>";
        let text = text_of(json!({"id": "m", "body": body})).unwrap();
        let expected = "Hi there,\n\nLine one\nLine two\nLine three\n\n\
            Fish & chips <3 été 😀 é\n\nSee the policy.\n- one\n- two";
        assert_eq!(text, expected);
        // No line was wrapped at 80 columns.
        let long = format!("<p>{}</p>", "word ".repeat(100));
        let text = text_of(json!({"id": "m", "body": long})).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.lines().all(|l| l == l.trim_end()));
    }

    #[test]
    fn text_is_bounded() {
        let long = "ab\n".repeat(6_000);
        let text = text_of(json!({"id": "m", "text": long})).unwrap();
        assert!(text.chars().count() <= MAX_TEXT_CHARS);
        assert!(text.chars().count() >= MAX_TEXT_CHARS - 1);
        let wide = "日".repeat(20_000);
        let text = text_of(json!({"id": "m", "text": wide})).unwrap();
        assert_eq!(text.chars().count(), MAX_TEXT_CHARS);
        let html = format!("<p>{}</p>", "語 ".repeat(20_000));
        let text = text_of(json!({"id": "m", "body": html})).unwrap();
        assert!(text.chars().count() <= MAX_TEXT_CHARS);
        assert!(text.starts_with("語 語"));
    }

    #[test]
    fn huge_html_stays_fast() {
        let para =
            "<p>Hello world, a paragraph with <b>bold</b> and <a href='http://x'>a link</a>.</p>\n";
        let huge = para.repeat(60_000); // about 5 MiB
        let start = Instant::now();
        let text = text_of(json!({"id": "m", "body": huge})).unwrap();
        assert!(text.starts_with("Hello world, a paragraph with bold and a link."));
        assert!(text.chars().count() <= MAX_TEXT_CHARS);
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );

        // Mostly markup, little text: the whole bounded prefix is converted.
        let sparse = format!("{}<p>end</p>", "<span></span>".repeat(400_000));
        let start = Instant::now();
        let _ = text_of(json!({"id": "m", "body": sparse, "blurb": "b"}));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn deeply_nested_html_uses_the_linear_stripper() {
        let block = format!(
            "{}deep text{}",
            "<div>".repeat(5_000),
            "</div>".repeat(5_000)
        );
        assert!(!nesting_within_bounds(&block));
        let html = block.repeat(20); // about 1 MiB
        let start = Instant::now();
        let text = text_of(json!({"id": "m", "body": html})).unwrap();
        assert!(text.starts_with("deep text"));
        // A quadratic walk of 1 MiB would take minutes; 10 s leaves room for a debug build
        // on a busy shared host (3 s was once exceeded there).
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );

        // A multi-byte char right at the 1 MiB cut.
        let html = format!("{}{}", "<b>".repeat(10), "é".repeat(MAX_HTML_BYTES));
        assert!(text_of(json!({"id": "m", "body": html})).is_some());
    }

    #[test]
    fn nesting_estimate() {
        assert!(nesting_within_bounds("<p>a<p>b<br><img src=x>"));
        let unclosed_paragraphs = "<p>x".repeat(10_000);
        assert!(nesting_within_bounds(&unclosed_paragraphs));
        let self_closed = "<span/>".repeat(10_000);
        assert!(nesting_within_bounds(&self_closed));
        let deep = "<blockquote>".repeat(600);
        assert!(!nesting_within_bounds(&deep));
        let ok = format!("{}x{}", "<div>".repeat(400), "</div>".repeat(400));
        assert!(nesting_within_bounds(&ok));
        assert!(nesting_within_bounds("< not a tag > a < b"));
        assert!(nesting_within_bounds("<"));
    }

    #[test]
    fn tag_stripper() {
        let html = "<html><head><title>T</title><STYLE>x{}</STYLE></head><body>\
            <!-- a comment <p> -->Hi&nbsp;there,<p>Line&amp;one<br>Line   two</p>\
            <table><tr><td>a</td><td>b</td></tr></table>\
            <ul><li>one</li><li>two</li></ul><script>if (a<b) {}</script>\
            &unknown; &#x1F600; &#9731; caf&eacute; 日本 &";
        let text = clean_text(&strip_tags(html));
        assert_eq!(
            text,
            "Hi there,\nLine&one\nLine two\n\na b\n\n- one\n- two\n&unknown; 😀 ☃ café 日本 &"
        );
        assert_eq!(strip_tags("unterminated <b"), "unterminated\n");
        assert_eq!(clean_text(&strip_tags("<!-- never closed")), "");
        assert_eq!(
            clean_text(&strip_tags("&#xD800; &#99999999999;")),
            "&#xD800; &#99999999999;"
        );
    }

    #[test]
    fn requester_from_the_conversation_recipient() {
        let mut v = full_inbound();
        v["conversation"]["recipient"] =
            json!({"name": "  ", "handle": " +15551234 ", "role": "from"});
        let s = snapshot_from_event(&event(v)).unwrap();
        assert_eq!(
            s.requester,
            Some(Requester {
                name: None,
                handle: "+15551234".into()
            })
        );
    }

    #[test]
    fn requester_from_the_inbound_message_sender() {
        for recipient in [
            json!(null),
            json!({"name": "No Handle", "handle": "", "role": "from"}),
        ] {
            let mut v = full_inbound();
            v["conversation"]["recipient"] = recipient;
            v["target"]["data"]["recipients"] = json!([
                {"name": "Support", "handle": "support@acme.test", "role": "to"},
                {"name": "Bad", "handle": null, "role": "from"},
                {"name": "Ada", "handle": "ada@example.com", "role": "from"}
            ]);
            let s = snapshot_from_event(&event(v)).unwrap();
            assert_eq!(
                s.requester,
                Some(Requester {
                    name: Some("Ada".into()),
                    handle: "ada@example.com".into()
                })
            );
        }
    }

    #[test]
    fn no_requester_when_unknown() {
        // The sender of an outbound message is a teammate, not the requester.
        let mut v = full_inbound();
        v["type"] = json!("outbound");
        v["conversation"]["recipient"] = json!(null);
        v["target"]["data"]["is_inbound"] = json!(false);
        assert_eq!(snapshot_from_event(&event(v)).unwrap().requester, None);

        let mut v = full_inbound();
        v["conversation"]["recipient"] = json!({"name": "Ada", "role": "from"});
        v["target"]["data"]["recipients"] = json!([]);
        assert_eq!(snapshot_from_event(&event(v)).unwrap().requester, None);

        // `is_inbound` missing: the event type decides.
        let mut v = full_inbound();
        v["conversation"]["recipient"] = json!(null);
        v["target"]["data"]
            .as_object_mut()
            .unwrap()
            .remove("is_inbound");
        assert!(snapshot_from_event(&event(v)).unwrap().requester.is_some());
    }

    #[test]
    fn assignee_name_fallbacks() {
        let cases = [
            (
                json!({"id": "tea_1", "first_name": "Grace", "last_name": "Hopper"}),
                Some("Grace Hopper"),
            ),
            (
                json!({"id": "tea_1", "first_name": " Grace ", "last_name": ""}),
                Some("Grace"),
            ),
            (
                json!({"id": "tea_1", "last_name": "Hopper", "username": "gh"}),
                Some("Hopper"),
            ),
            (
                json!({"id": "tea_1", "first_name": "", "last_name": " ", "username": "gh"}),
                Some("gh"),
            ),
            (json!({"id": "tea_1", "username": ""}), None),
            (json!({"id": "tea_1"}), None),
        ];
        for (teammate, name) in cases {
            let mut v = full_inbound();
            v["conversation"]["assignee"] = teammate.clone();
            let a = snapshot_from_event(&event(v)).unwrap().assignee.unwrap();
            assert_eq!(a.id, "tea_1");
            assert_eq!(a.name.as_deref(), name, "{teammate}");
            assert_eq!(a.email, None);
        }
        let mut v = full_inbound();
        v["conversation"]["assignee"] = json!(null);
        assert_eq!(snapshot_from_event(&event(v)).unwrap().assignee, None);
    }

    #[test]
    fn every_status_mapping() {
        for (front, status) in [
            ("assigned", Status::Open),
            ("unassigned", Status::Open),
            ("archived", Status::Archived),
            ("deleted", Status::Trashed),
            ("trashed", Status::Trashed),
            ("spam", Status::Spam),
            ("ARCHIVED", Status::Archived),
            (" deleted ", Status::Trashed),
            ("waiting", Status::Open),
            ("", Status::Open),
        ] {
            assert_eq!(normalize_status(front), status, "{front:?}");
        }
        let mut s = full_snapshot();
        s.front_status = Some("deleted".into());
        let h = highlight(&sub(), &s, 2, Change::Updated);
        assert_eq!(
            (h.status, h.front_status.as_str()),
            (Status::Trashed, "deleted")
        );
        assert_eq!(h.change, Change::Updated);
        assert_eq!(h.revision, 2);
    }

    #[test]
    fn previews_of_archive_trash_and_assign_carry_what_they_prove() {
        let s = snapshot_from_event(&event(json!({
            "id": "evt_1", "type": "archive", "conversation": {"id": "cnv_1"}
        })))
        .unwrap();
        assert_eq!(s.front_status.as_deref(), Some("archived"));
        assert_eq!(s.tags, None);

        let s = snapshot_from_event(&event(json!({
            "id": "evt_1", "type": "trash", "conversation": {"id": "cnv_1"}
        })))
        .unwrap();
        assert_eq!(s.status(), Some(Status::Trashed));

        let s = snapshot_from_event(&event(json!({
            "id": "evt_1", "type": "assign", "conversation": {"id": "cnv_1"},
            "target": {"_meta": {"type": "teammate"}, "data": {"id": "tea_9"}}
        })))
        .unwrap();
        assert_eq!(s.assignee.as_ref().unwrap().id, "tea_9");
        assert_eq!(s.front_status, None);

        // A full conversation is believed over the event type.
        let s = snapshot_from_event(&event(json!({
            "id": "evt_1", "type": "archive",
            "conversation": {"id": "cnv_1", "subject": "s", "status": "assigned"}
        })))
        .unwrap();
        assert_eq!(s.front_status.as_deref(), Some("assigned"));
    }

    #[test]
    fn labels_union_in_first_seen_order() {
        let rules = [
            rule(&["bug"], &[], &["bug-report", "triage"]),
            rule(&[], &[Status::Open], &["open-work", "triage"]),
            rule(&["vip"], &[Status::Archived], &["never"]),
            rule(
                &["vip", "bug"],
                &[Status::Open, Status::Spam],
                &["bug-report", "hot"],
            ),
            rule(&[], &[], &[]),
        ];
        assert_eq!(
            labels(&rules, Status::Open, &strings(&["bug"])),
            strings(&["bug-report", "triage", "open-work", "hot"])
        );
        assert_eq!(
            labels(&rules, Status::Archived, &strings(&["vip"])),
            strings(&["never"])
        );
        assert!(labels(&rules, Status::Trashed, &[]).is_empty());
        assert!(labels(&[], Status::Open, &strings(&["bug"])).is_empty());
    }

    #[test]
    fn matches_inbox_filter() {
        let s = full_snapshot(); // inb_123
        assert!(matches(&sub(), &[], &s));
        assert!(matches(&sub(), &strings(&["inb_x", "inb_123"]), &s));
        assert!(!matches(&sub(), &strings(&["inb_x"]), &s));
        let mut unknown = s.clone();
        unknown.inbox_ids.clear();
        assert!(!matches(&sub(), &strings(&["inb_123"]), &unknown));
        assert!(matches(&sub(), &[], &unknown));
    }

    #[test]
    fn matches_status_filter() {
        let s = full_snapshot(); // assigned -> open
        let mut sub = sub();
        sub.statuses = vec![Status::Open, Status::Archived];
        assert!(matches(&sub, &[], &s));
        sub.statuses = vec![Status::Archived];
        assert!(!matches(&sub, &[], &s));
        let mut unknown = s.clone();
        unknown.front_status = None;
        assert!(!matches(&sub, &[], &unknown));
        sub.statuses.clear();
        assert!(matches(&sub, &[], &unknown));
    }

    #[test]
    fn matches_tags_any_and_tags_none() {
        let s = full_snapshot(); // billing, vip
        let mut unknown = s.clone();
        unknown.tags = None;
        let mut sub = sub();

        sub.tags_any = strings(&["vip", "other"]);
        assert!(matches(&sub, &[], &s));
        assert!(!matches(&sub, &[], &unknown));
        sub.tags_any = strings(&["VIP"]); // exact names
        assert!(!matches(&sub, &[], &s));
        sub.tags_any.clear();

        sub.tags_none = strings(&["spam-filter"]);
        assert!(matches(&sub, &[], &s));
        assert!(matches(&sub, &[], &unknown));
        sub.tags_none = strings(&["spam-filter", "billing"]);
        assert!(!matches(&sub, &[], &s));
        assert!(matches(&sub, &[], &unknown));
    }

    #[test]
    fn inbox_ids_are_unioned_sorted_and_deduped() {
        let mut v = full_inbound();
        v["source"]["data"] = json!([{"id": "inb_b"}, {"id": "inb_a"}, {"id": "inb_b"}]);
        let mut newer = snapshot_from_event(&event(v)).unwrap();
        assert_eq!(newer.inbox_ids, strings(&["inb_a", "inb_b"]));

        let mut older = full_snapshot();
        older.inbox_ids = strings(&["inb_c", "inb_a"]);
        newer.merge_older(&older);
        assert_eq!(newer.inbox_ids, strings(&["inb_a", "inb_b", "inb_c"]));

        // A move adds the target inboxes.
        let moved = snapshot_from_event(&event(json!({
            "id": "evt_m", "type": "move", "conversation": {"id": "cnv_1"},
            "source": {"_meta": {"type": "teammate"}, "data": {"id": "tea_1"}},
            "target": {"_meta": {"type": "inboxes"}, "data": [{"id": "inb_z"}]}
        })))
        .unwrap();
        assert_eq!(moved.inbox_ids, strings(&["inb_z"]));
    }

    /// A full `tag` event on the same conversation, later than [`full_inbound`].
    fn tag_event() -> Value {
        let mut v = full_inbound();
        v["id"] = json!("evt_tag");
        v["type"] = json!("tag");
        v["emitted_at"] = json!(1795253100.0);
        v["source"] = json!({"_meta": {"type": "teammate"}, "data": {"id": "tea_2ab4"}});
        v["target"] = json!({"_meta": {"type": "tag"}, "data": {"id": "tag_3", "name": "urgent"}});
        v["conversation"]["tags"] =
            json!([{"name": "billing"}, {"name": "vip"}, {"name": "urgent"}]);
        v["conversation"]["updated_at"] = json!(1795253100.0);
        v
    }

    #[test]
    fn merge_keeps_the_old_message_for_a_tag_event() {
        let older = full_snapshot();
        let mut newer = snapshot_from_event(&event(tag_event())).unwrap();
        assert_eq!(newer.message_id, None);
        assert_eq!(newer.inbox_ids, Vec::<String>::new());
        newer.merge_older(&older);
        assert_eq!(newer.message_id, older.message_id);
        assert_eq!(newer.message_text, older.message_text);
        assert_eq!(newer.inbox_ids, older.inbox_ids);
        assert_eq!(newer.tags, Some(strings(&["billing", "vip", "urgent"])));
        assert_eq!(newer.event_id.as_deref(), Some("evt_tag"));
        assert_eq!(newer.event_type.as_deref(), Some("tag"));
        assert_eq!(newer.created_at_ms, older.created_at_ms);
        assert_eq!(newer.updated_at_ms, Some(1_795_253_100_000));
    }

    #[test]
    fn merge_fills_a_preview_from_what_was_known() {
        let older = full_snapshot();
        let mut newer = snapshot_from_event(&event(preview_inbound())).unwrap();
        newer.merge_older(&older);
        assert_eq!(newer.subject, older.subject);
        assert_eq!(newer.front_status, older.front_status);
        assert_eq!(newer.tags, older.tags);
        assert_eq!(newer.assignee, older.assignee);
        assert_eq!(newer.requester, older.requester);
        // A different message: its (unknown) text is not taken from the old one.
        assert_eq!(newer.message_id.as_deref(), Some("msg_2"));
        assert_eq!(newer.message_text, None);
        assert_eq!(newer.inbox_ids, strings(&["inb_123", "inb_9"]));
        // created_at keeps the conversation's; updated_at the latest seen.
        assert_eq!(newer.created_at_ms, Some(1_795_252_443_012));
        assert_eq!(newer.updated_at_ms, Some(1_795_253_000_000));

        // The same message, first seen full: its text is kept.
        let mut same = older.clone();
        same.message_text = None;
        same.merge_older(&older);
        assert_eq!(same.message_text, older.message_text);
    }

    #[test]
    fn merge_respects_what_the_newer_one_knows() {
        let older = full_snapshot();
        // A full conversation that is now unassigned: the old assignee must not come back.
        let mut v = tag_event();
        v["conversation"]["assignee"] = json!(null);
        v["conversation"]["status"] = json!("unassigned");
        v["conversation"]["tags"] = json!([]);
        let mut newer = snapshot_from_event(&event(v)).unwrap();
        newer.merge_older(&older);
        assert_eq!(newer.assignee, None);
        assert_eq!(newer.front_status.as_deref(), Some("unassigned"));
        assert_eq!(newer.tags, Some(Vec::new()));

        // An archive preview keeps the old assignee and tags but its own status.
        let mut archived = snapshot_from_event(&event(json!({
            "id": "evt_a", "type": "archive", "conversation": {"id": "cnv_55c8c149"}
        })))
        .unwrap();
        archived.merge_older(&older);
        assert_eq!(archived.front_status.as_deref(), Some("archived"));
        assert_eq!(archived.assignee, older.assignee);
        assert_eq!(archived.tags, older.tags);

        // An assign preview names only the id: name and email come from before when it is
        // the same teammate.
        let mut assign = snapshot_from_event(&event(json!({
            "id": "evt_b", "type": "assign", "conversation": {"id": "cnv_55c8c149"},
            "target": {"_meta": {"type": "teammate"}, "data": {"id": "tea_2ab4"}}
        })))
        .unwrap();
        assign.merge_older(&older);
        assert_eq!(assign.assignee, older.assignee);

        // Another conversation: nothing is taken.
        let mut other = snapshot_from_event(&event(json!({
            "id": "evt_c", "type": "tag", "conversation": {"id": "cnv_other"}
        })))
        .unwrap();
        let before = other.clone();
        other.merge_older(&older);
        assert_eq!(other, before);
    }

    #[test]
    fn content_hash_is_pinned() {
        // If this fails, the hash algorithm changed: every stored conversation would emit a
        // spurious "updated" Highlight after an upgrade. Don't change it lightly.
        let pinned = Snapshot {
            conversation_id: "cnv_55c8c149".into(),
            front_status: Some("assigned".into()),
            tags: Some(strings(&["vip", "billing"])),
            assignee: Some(Assignee {
                id: "tea_2ab4".into(),
                name: None,
                email: None,
            }),
            message_id: Some("msg_1q15qmtq".into()),
            ..Snapshot::default()
        };
        assert_eq!(pinned.content_hash(), 0xf570_d5ff_b2d8_1e66);
        assert_eq!(full_snapshot().content_hash(), pinned.content_hash());
        assert_eq!(Snapshot::default().content_hash(), 0xdfee_9a54_146e_cca6);
    }

    #[test]
    fn content_hash_changes_exactly_on_status_tags_assignee_and_message() {
        let base = full_snapshot();
        let h = base.content_hash();

        let mut s = base.clone();
        s.front_status = Some("archived".into());
        assert_ne!(s.content_hash(), h);
        s.front_status = None;
        assert_ne!(s.content_hash(), h);

        let mut s = base.clone();
        s.tags = Some(strings(&["billing"]));
        assert_ne!(s.content_hash(), h);
        s.tags = Some(strings(&["vip", "billing"]));
        assert_eq!(s.content_hash(), h, "tag order does not matter");
        s.tags = Some(strings(&["vip", "billing", "vip"]));
        assert_eq!(s.content_hash(), h, "repeats do not matter");
        // Names are length-prefixed: moving a boundary changes the hash.
        s.tags = Some(strings(&["billingvip"]));
        assert_ne!(s.content_hash(), h);
        s.tags = None;
        let mut empty = s.clone();
        empty.tags = Some(Vec::new());
        assert_eq!(s.content_hash(), empty.content_hash());

        let mut s = base.clone();
        s.assignee.as_mut().unwrap().id = "tea_other".into();
        assert_ne!(s.content_hash(), h);
        s.assignee = None;
        assert_ne!(s.content_hash(), h);

        let mut s = base.clone();
        s.message_id = Some("msg_new".into());
        assert_ne!(s.content_hash(), h);

        // Nothing else counts.
        let mut s = base.clone();
        s.subject = Some("other".into());
        s.message_text = Some("edited".into());
        s.requester = None;
        s.assignee.as_mut().unwrap().name = Some("Renamed".into());
        s.inbox_ids = strings(&["inb_other"]);
        s.created_at_ms = Some(1);
        s.updated_at_ms = Some(2);
        s.event_id = Some("evt_other".into());
        s.event_type = Some("tag".into());
        s.event_at_ms = None;
        assert_eq!(s.content_hash(), h);
    }

    #[test]
    fn timestamps_have_milliseconds() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_795_252_443_012), "2026-11-21T09:14:03.012Z");
        assert_eq!(format_ms(1_795_252_811_500), "2026-11-21T09:20:11.500Z");
        assert_eq!(format_ms(MAX_TIMESTAMP_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms(-5), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn timestamp_fallbacks() {
        // No conversation times: earliest and latest of message and event times.
        let mut v = full_inbound();
        let c = v["conversation"].as_object_mut().unwrap();
        c.remove("created_at");
        c.remove("updated_at");
        let s = snapshot_from_event(&event(v)).unwrap();
        assert_eq!(s.created_at_ms, Some(1_795_252_800_250));
        assert_eq!(s.updated_at_ms, Some(1_795_252_811_500));

        // In the Highlight, one missing time takes the other, then the event time.
        let mut s = full_snapshot();
        s.created_at_ms = None;
        let h = highlight(&sub(), &s, 1, Change::Created);
        assert_eq!(h.created_at, "2026-11-21T09:20:11.500Z");
        assert_eq!(h.updated_at, "2026-11-21T09:20:11.500Z");
        s.created_at_ms = Some(1_795_252_443_012);
        s.updated_at_ms = None;
        let h = highlight(&sub(), &s, 1, Change::Created);
        assert_eq!(h.updated_at, "2026-11-21T09:14:03.012Z");
        s.created_at_ms = None;
        s.event_at_ms = Some(1_000);
        let h = highlight(&sub(), &s, 1, Change::Created);
        assert_eq!(h.created_at, "1970-01-01T00:00:01.000Z");

        // Nothing at all: now, never the epoch.
        s.event_at_ms = None;
        let h = highlight(&sub(), &s, 1, Change::Created);
        assert!(h.created_at.as_str() > "2020", "{}", h.created_at);
        assert!(h.created_at.ends_with('Z') && h.created_at.len() == 24);
    }

    #[test]
    fn unicode_is_preserved() {
        let mut v = full_inbound();
        v["conversation"]["subject"] = json!("🎉 Remboursement — שלום עולם — 退款请求");
        v["conversation"]["tags"] = json!([{"name": "紧急"}, {"name": "مهم"}]);
        v["conversation"]["recipient"] = json!({"name": "Zoë 山田", "handle": "zoë@例え.jp"});
        v["target"]["data"]["text"] = json!("مرحبا 👋🏽\nこんにちは\u{200F}");
        let mut sub = sub();
        sub.labels = vec![rule(&["紧急"], &[], &["😀-label"])];
        let h = highlight(
            &sub,
            &snapshot_from_event(&event(v)).unwrap(),
            1,
            Change::Created,
        );
        assert_eq!(h.title, "🎉 Remboursement — שלום עולם — 退款请求");
        assert_eq!(h.text, "مرحبا 👋🏽\nこんにちは\u{200F}");
        assert_eq!(h.tags, strings(&["紧急", "مهم"]));
        assert_eq!(h.labels, strings(&["😀-label"]));
        assert_eq!(h.requester.as_ref().unwrap().handle, "zoë@例え.jp");
        let json = serde_json::to_string(&h).unwrap();
        let back: Highlight = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn snapshots_round_trip_and_tolerate_missing_fields() {
        let s = full_snapshot();
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let partial: Snapshot = serde_json::from_str(r#"{"conversation_id":"cnv_1"}"#).unwrap();
        assert_eq!(partial.conversation_id, "cnv_1");
        assert_eq!(partial.tags, None);
    }

    #[test]
    fn tag_names_drop_blanks_and_repeats() {
        let mut v = full_inbound();
        v["conversation"]["tags"] =
            json!([{"name": "a"}, {"name": ""}, {"name": "b"}, {"name": "a"}, {"name": " "}]);
        assert_eq!(
            snapshot_from_event(&event(v)).unwrap().tags,
            Some(strings(&["a", "b"]))
        );
    }
}
