//! Inputs shared by the criterion benches: a realistic ~2 KB Front rule webhook and a
//! subscription parsed from a config, like the daemon gets them.

#![allow(dead_code)] // each bench binary uses a different part

use std::path::Path;

use frontsync::config::Subscription;
use frontsync::front::model::{WebhookBody, parse_webhook_body};
use frontsync::ingest::{InboxNames, IncomingEvent, SinkBell, Writer, spawn_writer};
use frontsync::normalize::{Snapshot, snapshot_from_event};
use serde_json::{Value, json};

pub const PROSE: &str = "Hello team, I was charged twice for order 1042 on the 19th and again \
on the 20th. The second charge shows as pending on my card statement but the first one went \
through. Could you please refund the duplicate payment and confirm once it is done? My account email \
is the one I am writing from. Thanks a lot for your \
help, and have a nice weekend.";

/// The message as HTML, the way mail clients send it.
pub fn html_body() -> String {
    format!(
        "<div dir=\"ltr\"><p>{}</p><p>Best,<br>Ada</p></div>",
        PROSE.replace(". ", ".</p><p>")
    )
}

/// A full Front `inbound` event. `with_text: false` leaves only the HTML body, so
/// normalizing it has to convert HTML to text.
pub fn event(event_id: &str, conversation_id: &str, with_text: bool) -> Value {
    let mut v = json!({
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
                "subject": "Refund for order 1042",
                "blurb": &PROSE[..120],
                "body": html_body(),
                "text": PROSE,
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
            "subject": "Refund for order 1042",
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
    });
    if !with_text {
        v["target"]["data"]["text"] = Value::Null;
    }
    v
}

/// The event's bytes as Front posts them.
pub fn body(event_id: &str, conversation_id: &str) -> Vec<u8> {
    serde_json::to_vec(&event(event_id, conversation_id, true)).unwrap()
}

/// A config with one connection, one jsonl sink and one subscription (with a label rule).
pub const CONFIG: &str = r#"
[front.acme]
rule_webhook_secret = { env = "BENCH_UNUSED_SECRET" }

[sinks.archive]
type = "jsonl"
path = "out/highlights.jsonl"

[[subscription]]
name = "support"
front = "acme"
sinks = ["archive"]
emit = ["created"]

[[subscription.label]]
tags_any = ["vip"]
add = ["priority"]
"#;

pub fn config() -> frontsync::config::Config {
    frontsync::config::parse(CONFIG, Path::new("/nonexistent/bench.toml"))
        .unwrap_or_else(|e| panic!("bench config: {e}"))
}

pub fn subscription() -> Subscription {
    config().subscriptions.remove(0)
}

/// The snapshot of the bench body, as the webhook handler hands it to the writer.
pub fn template() -> Snapshot {
    let body = body("evt_0", "cnv_0");
    let Ok(WebhookBody::Rule(event)) = parse_webhook_body(&body) else {
        panic!("the bench body is a rule webhook")
    };
    snapshot_from_event(&event).expect("the bench body normalizes")
}

/// A new event `evt_{i}` about a new conversation `cnv_{i}`, otherwise the template.
pub fn incoming(template: &Snapshot, i: u64) -> IncomingEvent {
    let mut s = template.clone();
    s.conversation_id = format!("cnv_{i}");
    s.event_id = Some(format!("evt_{i}"));
    IncomingEvent::new("acme", &format!("evt_{i}"), s)
}

/// The daemon's state writer on a fresh store in a temp dir (kept alive by the returned
/// guard), routing with [`config`]'s subscription.
pub fn writer() -> (tempfile::TempDir, Writer, std::thread::JoinHandle<()>) {
    let parts = writer_parts();
    (parts.dir, parts.writer, parts.thread)
}

/// [`writer`], with what a bench reads beside it: its store, as the sinks read the outbox,
/// and its metrics.
pub struct WriterParts {
    pub dir: tempfile::TempDir,
    pub store: frontsync::store::Store,
    pub writer: Writer,
    pub thread: std::thread::JoinHandle<()>,
    pub metrics: std::sync::Arc<frontsync::metrics::Metrics>,
}

pub fn writer_parts() -> WriterParts {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = frontsync::store::Store::open(&dir.path().join("state.redb")).expect("open store");
    let routing = std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(
        InboxNames::default().routing(&config().subscriptions),
    )));
    let metrics = std::sync::Arc::new(frontsync::metrics::Metrics::default());
    let (writer, thread) = spawn_writer(
        store.clone(),
        routing,
        std::sync::Arc::new(SinkBell::default()),
        metrics.clone(),
    )
    .expect("spawn writer");
    WriterParts {
        dir,
        store,
        writer,
        thread,
        metrics,
    }
}
