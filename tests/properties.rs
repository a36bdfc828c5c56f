//! Property tests (proptest) of the pure core: normalization and configuration.
//!
//! - Normalization never panics on events built from random parts (subjects, text and HTML
//!   with any unicode, control chars, huge strings, missing and null fields, odd
//!   timestamps), and whatever it emits is a valid `frontsync.highlight.v1` record: every
//!   field present, RFC 3339 UTC timestamps with milliseconds, `id` = `sub:cnv`, title at
//!   most 200 chars on one line, text at most 10,000 chars (the same checks as the
//!   `webhook_body` fuzz target, from `fuzz/src/checks.rs`).
//! - `content_hash` ignores tag order and repeats, and sees a changed tag set.
//! - Any generated valid configuration parses back to what was written.
//!
//! Case counts keep the whole file to a few seconds; `PROPTEST_CASES=10000 cargo test
//! --test properties` runs a longer campaign.

#[path = "../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use frontsync::config::{SinkConfig, parse};
use frontsync::normalize::{MAX_TITLE_CHARS, Snapshot, format_ms, title};
use frontsync::secret::Secret;
use frontsync_sinks::Status;
use proptest::prelude::*;
use proptest::test_runner::Config as PtConfig;
use serde_json::{Map, Value, json};

/// Cases per property unless `PROPTEST_CASES` says otherwise.
fn cases(n: u32) -> PtConfig {
    let from_env = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    PtConfig {
        cases: from_env.unwrap_or(n),
        // Failures are minimized and reported; no files written beside the sources.
        failure_persistence: None,
        ..PtConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies: Front-shaped JSON with random content.
// ---------------------------------------------------------------------------------------------

/// Text as people and mail clients produce it, and worse.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[ -~]{0,60}",
        // Unicode that trips byte/char confusions: multibyte, combining, RTL, emoji, BOM,
        // line/paragraph separators, no-break spaces, controls.
        3 => prop::collection::vec(
            prop::sample::select(vec![
                "é", "日本", "😀", "👩‍👩‍👧", "e\u{301}", "שלום", "\u{feff}", "\u{2028}", "\u{2029}",
                "\u{a0}", "\u{0}", "\u{1}", "\u{7f}", "\u{85}", "\r\n", "\n", "\t", " ", "  ", "x",
                "Refund", "\r",
            ]),
            0..40,
        )
        .prop_map(|parts| parts.concat()),
        // Long runs around the bounds (200 title chars, 10,000 text chars), multibyte.
        1 => (
            prop::sample::select(vec!['a', 'é', '日', '😀', ' ', '\n']),
            prop::sample::select(vec![199usize, 200, 201, 9_999, 10_000, 10_001, 12_345]),
        )
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
    .boxed()
}

/// HTML bodies: real-ish markup, broken markup, entities, deep nesting.
fn html() -> BoxedStrategy<String> {
    let piece = prop_oneof![
        text(),
        prop::sample::select(vec![
            "<p>",
            "</p>",
            "<div>",
            "</div>",
            "<br>",
            "<br/>",
            "<b>",
            "</b>",
            "<a href=\"x\">",
            "</a>",
            "<ul><li>",
            "</li></ul>",
            "<table><tr><td>",
            "</td></tr></table>",
            "<script>alert(1)</script>",
            "<style>p{}</style>",
            "<!-- c -->",
            "<!--",
            "&amp;",
            "&nbsp;",
            "&#x1F600;",
            "&#0;",
            "&#xD800;",
            "&#99999999;",
            "&bogus;",
            "<",
            ">",
            "</",
            "<img src=x>",
            "<blockquote>",
            "<pre>  x  </pre>",
            "<head><title>t</title></head>",
        ])
        .prop_map(str::to_owned),
    ];
    prop_oneof![
        8 => prop::collection::vec(piece, 0..30).prop_map(|p| p.concat()),
        1 => (1usize..700).prop_map(|n| format!("{}deep{}", "<div>".repeat(n), "</div>".repeat(n))),
    ]
    .boxed()
}

/// A JSON value that is usually a string of `s`, sometimes null, a number or an object.
fn stringish(s: impl Strategy<Value = String>) -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => s.prop_map(Value::String),
        1 => Just(Value::Null),
        1 => any::<i32>().prop_map(|n| json!(n)),
        1 => Just(json!({"nested": true})),
    ]
}

/// Unix seconds as Front sends them, and values no clock has.
fn seconds() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => (0u64..4_102_444_800_000).prop_map(|ms| json!(ms as f64 / 1000.0)),
        1 => prop::sample::select(vec![
            json!(0), json!(-1.5), json!(1e300), json!(253_402_300_799.999),
            json!(253_402_300_800.0), json!("1763716443.012"), json!(null), json!(true),
        ]),
        1 => any::<f64>()
            .prop_filter("json has no nan or infinity", |f| f.is_finite())
            .prop_map(|f| json!(f)),
    ]
    .boxed()
}

/// Inserts `value` under `key` when present (an absent field is the common preview case).
fn put(obj: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        obj.insert(key.to_owned(), v);
    }
}

fn conversation_id() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "cnv_[a-z0-9]{1,10}",
        1 => Just(String::new()),
        1 => Just("  ".to_owned()),
        1 => " cnv_[a-z0-9]{1,4} ",
        1 => any::<String>(),
    ]
    .boxed()
}

fn teammate() -> BoxedStrategy<Value> {
    (
        stringish("tea_[a-z0-9]{1,6}|".prop_map(|s: String| s)),
        proptest::option::of(stringish(text())),
        proptest::option::of(stringish(text())),
        proptest::option::of(stringish(text())),
        proptest::option::of(stringish(text())),
    )
        .prop_map(|(id, first, last, user, email)| {
            let mut o = Map::new();
            o.insert("id".into(), id);
            put(&mut o, "first_name", first);
            put(&mut o, "last_name", last);
            put(&mut o, "username", user);
            put(&mut o, "email", email);
            Value::Object(o)
        })
        .boxed()
}

fn recipient() -> BoxedStrategy<Value> {
    (
        proptest::option::of(stringish(text())),
        proptest::option::of(stringish(text())),
        proptest::option::of(stringish(
            prop::sample::select(vec!["from", "to", "cc"]).prop_map(str::to_owned),
        )),
    )
        .prop_map(|(name, handle, role)| {
            let mut o = Map::new();
            put(&mut o, "name", name);
            put(&mut o, "handle", handle);
            put(&mut o, "role", role);
            Value::Object(o)
        })
        .boxed()
}

fn tag_name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(vec!["bug", "vip", "billing", "spam", "Bug", " bug ", ""])
            .prop_map(str::to_owned),
        1 => text(),
    ]
    .boxed()
}

fn conversation() -> BoxedStrategy<Value> {
    (
        conversation_id(),
        proptest::option::of(stringish(text())),
        proptest::option::of(stringish(
            prop::sample::select(vec![
                "assigned",
                "unassigned",
                "archived",
                "deleted",
                "spam",
                "ARCHIVED ",
                "snoozed",
                "",
            ])
            .prop_map(str::to_owned),
        )),
        proptest::option::of(prop_oneof![teammate(), Just(Value::Null)]),
        proptest::option::of(prop_oneof![recipient(), Just(Value::Null)]),
        proptest::option::of(prop::collection::vec(
            prop_oneof![
                6 => tag_name().prop_map(|n| json!({"id": "tag_1", "name": n})),
                1 => Just(json!({"id": "tag_no_name"})),
                1 => Just(json!("junk")),
            ],
            0..6,
        )),
        proptest::option::of(seconds()),
        proptest::option::of(seconds()),
    )
        .prop_map(
            |(id, subject, status, assignee, recipient, tags, created, updated)| {
                let mut o = Map::new();
                o.insert("id".into(), json!(id));
                put(&mut o, "subject", subject);
                put(&mut o, "status", status);
                put(&mut o, "assignee", assignee);
                put(&mut o, "recipient", recipient);
                put(&mut o, "tags", tags.map(Value::Array));
                put(&mut o, "created_at", created);
                put(&mut o, "updated_at", updated);
                Value::Object(o)
            },
        )
        .boxed()
}

fn message() -> BoxedStrategy<Value> {
    (
        prop_oneof![6 => "msg_[a-z0-9]{1,8}", 1 => Just(" ".to_owned())],
        proptest::option::of(any::<bool>()),
        proptest::option::of(stringish(text())),
        proptest::option::of(stringish(text())),
        proptest::option::of(stringish(html())),
        proptest::option::of(stringish(text())),
        proptest::option::of(seconds()),
        prop::collection::vec(recipient(), 0..3),
        proptest::option::of(conversation_id()),
    )
        .prop_map(
            |(id, inbound, subject, text, body, blurb, created, recipients, link)| {
                let mut o = Map::new();
                o.insert("id".into(), json!(id));
                put(&mut o, "is_inbound", inbound.map(Value::Bool));
                put(&mut o, "subject", subject);
                put(&mut o, "text", text);
                put(&mut o, "body", body);
                put(&mut o, "blurb", blurb);
                put(&mut o, "created_at", created);
                o.insert("recipients".into(), Value::Array(recipients));
                if let Some(cnv) = link {
                    let url = format!("https://x.api.frontapp.com/conversations/{cnv}");
                    o.insert("_links".into(), json!({"related": {"conversation": url}}));
                }
                Value::Object(o)
            },
        )
        .boxed()
}

/// A Front event (rule webhook body) with random parts, any of which may be missing.
fn event() -> BoxedStrategy<Value> {
    (
        "evt_[a-z0-9]{1,10}",
        prop::sample::select(vec![
            "inbound",
            "outbound",
            "out_reply",
            "tag",
            "untag",
            "archive",
            "trash",
            "assign",
            "move",
            "comment",
            "forward",
            "reopen",
        ]),
        proptest::option::of(seconds()),
        proptest::option::of(prop_oneof![conversation(), Just(Value::Null)]),
        proptest::option::of(message()),
        proptest::option::of(teammate()),
        proptest::option::of(prop::collection::vec("inb_[a-z0-9]{1,4}", 0..4)),
    )
        .prop_map(
            |(id, type_, emitted, conversation, message, teammate, inboxes)| {
                let mut o = Map::new();
                o.insert("id".into(), json!(id));
                o.insert("type".into(), json!(type_));
                put(&mut o, "emitted_at", emitted);
                put(&mut o, "conversation", conversation);
                let target = match (message, teammate) {
                    (Some(m), _) => Some(json!({"_meta": {"type": "message"}, "data": m})),
                    (None, Some(t)) => Some(json!({"_meta": {"type": "teammate"}, "data": t})),
                    (None, None) => None,
                };
                put(&mut o, "target", target);
                if let Some(ids) = inboxes {
                    let data: Vec<Value> = ids.into_iter().map(|id| json!({"id": id})).collect();
                    o.insert(
                        "source".into(),
                        json!({"_meta": {"type": "inboxes"}, "data": data}),
                    );
                }
                Value::Object(o)
            },
        )
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// Normalization properties.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(384))]

    /// Any event, as a rule webhook or inside an app webhook envelope: parsing accepts it,
    /// normalization never panics, and each Highlight made is a valid v1 record (see
    /// `checks::check_highlight_json`).
    #[test]
    fn normalization_never_panics_and_emits_valid_records(ev in event(), app in any::<bool>()) {
        let body = if app {
            json!({"type": "inbound_received", "authorization": {"id": "cmp_1"}, "payload": ev})
        } else {
            ev.clone()
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        prop_assert!(frontsync::front::model::parse_webhook_body(&bytes).is_ok());
        checks::webhook_body(&bytes);

        // The id is `sub:cnv` with the conversation id as Front wrote it, trimmed.
        let event: frontsync::front::model::Event = serde_json::from_value(ev.clone()).unwrap();
        if let Ok(snap) = frontsync::normalize::snapshot_from_event(&event) {
            let h = frontsync::normalize::highlight(checks::subscription(), &snap, 1, frontsync_sinks::Change::Created);
            if let Some(cnv) = ev["conversation"]["id"].as_str().map(str::trim).filter(|c| !c.is_empty()) {
                prop_assert_eq!(h.id, format!("support:{cnv}"));
            }
        } else {
            // Only an event that names no conversation anywhere is refused.
            let named = ev["conversation"]["id"].as_str().is_some_and(|c| !c.trim().is_empty());
            prop_assert!(!named);
        }
    }

    /// The title is the subject's first 200 chars (not bytes) when the subject is one plain
    /// line; never more than 200 chars whatever the input.
    #[test]
    fn title_is_bounded_in_chars(subject in "[a-zé日😀]{0,450}", other in text(), body in text()) {
        let t = title(Some(&subject), None);
        let expected: String = subject.chars().take(MAX_TITLE_CHARS).collect();
        prop_assert_eq!(t, expected);
        let t = title(Some(&other), Some(&body));
        prop_assert!(t.chars().count() <= MAX_TITLE_CHARS);
        prop_assert!(!t.chars().any(char::is_control), "{:?}", t);
        prop_assert_eq!(t.trim(), t.as_str());
    }

    /// Every millisecond timestamp formats as RFC 3339 UTC with milliseconds and a `Z`.
    #[test]
    fn timestamps_are_rfc3339_millis(ms in any::<i64>(), real in 0i64..=frontsync::front::model::MAX_TIMESTAMP_MS) {
        prop_assert!(checks::is_rfc3339_millis_utc(&format_ms(ms)));
        let s = format_ms(real);
        prop_assert!(checks::is_rfc3339_millis_utc(&s), "{}", s);
        // And it says the same instant.
        let parsed = humantime::parse_rfc3339(&s).unwrap();
        let back = parsed.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        prop_assert_eq!(back, real as u128);
    }

    /// `content_hash` sees the tag set, not its order or repeats.
    #[test]
    fn content_hash_ignores_tag_order(
        (tags, shuffled) in prop::collection::vec(tag_name(), 0..8)
            .prop_flat_map(|t| (Just(t.clone()), Just(t).prop_shuffle())),
        status in proptest::option::of("[a-z]{1,10}"),
        message_id in proptest::option::of("msg_[a-z0-9]{1,6}"),
        extra in "[a-z]{1,6}",
    ) {
        let snap = |tags: Vec<String>| Snapshot {
            conversation_id: "cnv_1".into(),
            front_status: status.clone(),
            message_id: message_id.clone(),
            tags: Some(tags),
            ..Snapshot::default()
        };
        let a = snap(tags.clone()).content_hash();
        prop_assert_eq!(a, snap(shuffled.clone()).content_hash());
        let mut doubled = shuffled.clone();
        doubled.extend(tags.iter().cloned());
        prop_assert_eq!(a, snap(doubled).content_hash());
        let set: BTreeSet<&String> = tags.iter().collect();
        let added = format!("{extra}-new");
        if !set.contains(&added) {
            let mut more = tags.clone();
            more.push(added);
            prop_assert_ne!(a, snap(more).content_hash());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration round trip.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum SecretModel {
    Env(String),
    File(String),
    Credential(String),
}

impl SecretModel {
    fn toml(&self) -> String {
        match self {
            SecretModel::Env(v) => format!("{{ env = {} }}", q(v)),
            SecretModel::File(v) => format!("{{ file = {} }}", q(v)),
            SecretModel::Credential(v) => format!("{{ credential = {} }}", q(v)),
        }
    }

    fn matches(&self, secret: &Secret, base: &Path) -> bool {
        match (self, secret) {
            (SecretModel::Env(a), Secret::Env(b)) => a == b,
            (SecretModel::File(a), Secret::File(b)) => base.join(a) == *b,
            (SecretModel::Credential(a), Secret::Credential(b)) => a == b,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct FrontModel {
    name: String,
    api_base: Option<String>,
    token: Option<SecretModel>,
    rpm: Option<u32>,
    rule: Option<SecretModel>,
    app: Option<SecretModel>,
}

#[derive(Debug, Clone)]
enum SinkModel {
    Jsonl(String),
    Stdout,
    Next {
        endpoint: String,
        teamspace: String,
        token: SecretModel,
        batch: Option<usize>,
    },
}

#[derive(Debug, Clone)]
struct SubModel {
    name: String,
    front: usize,
    inboxes: Vec<String>,
    statuses: Vec<Status>,
    tags_any: Vec<String>,
    tags_none: Vec<String>,
    /// (amount, unit) written as e.g. "7d"; only with a token.
    backfill: Option<(u64, &'static str)>,
    poll: Option<(u64, &'static str)>,
    emit: (bool, bool),
    sinks: Vec<usize>,
    labels: Vec<(Vec<String>, Vec<Status>, Vec<String>)>,
}

#[derive(Debug, Clone)]
struct ConfigModel {
    webhook: Option<(usize, u64, usize)>,
    fronts: Vec<FrontModel>,
    sinks: Vec<(String, SinkModel)>,
    subs: Vec<SubModel>,
}

/// A TOML basic string, escaped by toml itself.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn status_list(items: &[Status]) -> String {
    list(
        &items
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect::<Vec<_>>(),
    )
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,12}"
}

/// Names that are valid as config values: any unicode, but not blank (tags and labels are
/// trimmed and must not be empty).
fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9 _-]{0,10}[a-z0-9]",
        any::<String>().prop_filter("not blank", |s| !s.trim().is_empty()),
        Just("日本 😀 \"quoted\" \\ back".to_owned()),
    ]
    .prop_map(|s| s.trim().to_owned())
}

fn secret_model() -> impl Strategy<Value = SecretModel> {
    prop_oneof![
        "[A-Z][A-Z0-9_]{0,12}".prop_map(SecretModel::Env),
        "[a-z0-9_-]{1,8}/[a-z0-9_-]{1,8}".prop_map(SecretModel::File),
        "[a-z0-9_-]{1,12}".prop_map(SecretModel::Credential),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    prop::sample::select(Status::ALL.to_vec())
}

fn unique_statuses() -> impl Strategy<Value = Vec<Status>> {
    prop::sample::subsequence(Status::ALL.to_vec(), 0..=4)
}

fn duration() -> impl Strategy<Value = (u64, &'static str)> {
    (
        1u64..1000,
        prop::sample::select(vec!["ms", "s", "m", "h", "d"]),
    )
}

fn config_model() -> impl Strategy<Value = ConfigModel> {
    let fronts = prop::collection::btree_set(name(), 1..4).prop_flat_map(|names| {
        let n = names.len();
        (
            Just(names.into_iter().collect::<Vec<_>>()),
            prop::collection::vec(
                (
                    proptest::option::of(prop_oneof![
                        "https://[a-z]{1,8}\\.example/?",
                        "http://127\\.0\\.0\\.1:[0-9]{1,4}",
                    ]),
                    proptest::option::of(secret_model()),
                    proptest::option::of(1u32..=10_000),
                    proptest::option::of(secret_model()),
                    proptest::option::of(secret_model()),
                ),
                n,
            ),
        )
            .prop_map(|(names, parts)| {
                names
                    .into_iter()
                    .zip(parts)
                    .map(|(name, (api_base, token, rpm, rule, app))| FrontModel {
                        name,
                        api_base,
                        token,
                        rpm,
                        rule,
                        app,
                    })
                    .collect::<Vec<_>>()
            })
    });
    let sinks = prop::collection::btree_set(name(), 1..4).prop_flat_map(|names| {
        let n = names.len();
        (
            Just(names.into_iter().collect::<Vec<_>>()),
            prop::collection::vec(
                prop_oneof![
                    Just(0u8).prop_map(|_| SinkModel::Stdout),
                    Just(0u8).prop_map(|_| SinkModel::Jsonl(String::new())),
                    (
                        "https://[a-z]{1,8}\\.example(/v1)?",
                        "ts_[a-z0-9]{1,6}",
                        secret_model(),
                        proptest::option::of(1usize..=512),
                    )
                        .prop_map(|(endpoint, teamspace, token, batch)| {
                            SinkModel::Next {
                                endpoint,
                                teamspace,
                                token,
                                batch,
                            }
                        }),
                ],
                n,
            ),
        )
            .prop_map(|(names, kinds)| {
                names
                    .into_iter()
                    .zip(kinds)
                    .map(|(name, kind)| {
                        // Distinct files: two JSONL sinks never share a path.
                        let kind = match kind {
                            SinkModel::Jsonl(_) => SinkModel::Jsonl(format!("out/{name}.jsonl")),
                            other => other,
                        };
                        (name, kind)
                    })
                    .collect::<Vec<_>>()
            })
    });
    (
        proptest::option::of((1024usize..=67_108_864, 1u64..120, 1usize..5000)),
        fronts,
        sinks,
    )
        .prop_flat_map(|(webhook, fronts, sinks)| {
            let nf = fronts.len();
            let ns = sinks.len();
            let sub = (
                0..nf,
                prop::collection::vec(prop_oneof!["inb_[a-z0-9]{1,6}", value_text()], 0..3),
                unique_statuses(),
                prop::collection::vec(value_text(), 0..3),
                prop::collection::vec(value_text(), 0..3),
                proptest::option::of(duration()),
                proptest::option::of(duration()),
                prop::sample::select(vec![(true, false), (false, true), (true, true)]),
                prop::sample::subsequence((0..ns).collect::<Vec<_>>(), 1..=ns).prop_shuffle(),
                prop::collection::vec(
                    (
                        prop::collection::vec(value_text(), 0..3),
                        prop::collection::vec(status(), 0..2),
                        prop::collection::vec(value_text(), 1..3),
                    ),
                    0..3,
                ),
            )
                .prop_map(
                    |(
                        front,
                        inboxes,
                        statuses,
                        tags_any,
                        tags_none,
                        backfill,
                        poll,
                        emit,
                        sinks,
                        labels,
                    )| {
                        SubModel {
                            name: String::new(),
                            front,
                            inboxes,
                            statuses,
                            tags_any,
                            tags_none,
                            backfill,
                            poll,
                            emit,
                            sinks,
                            labels,
                        }
                    },
                );
            (
                Just(webhook),
                Just(fronts),
                Just(sinks),
                prop::collection::btree_set(name(), 1..4),
                prop::collection::vec(sub, 4),
            )
        })
        .prop_map(|(webhook, fronts, sinks, sub_names, subs)| {
            let subs = sub_names
                .into_iter()
                .zip(subs)
                .map(|(name, mut s)| {
                    s.name = name;
                    // What needs the API needs a token: drop it otherwise.
                    if fronts[s.front].token.is_none() {
                        s.inboxes.retain(|i| i.starts_with("inb_"));
                        s.backfill = None;
                        s.poll = None;
                    }
                    s
                })
                .collect();
            ConfigModel {
                webhook,
                fronts,
                sinks,
                subs,
            }
        })
}

fn render(m: &ConfigModel) -> String {
    let mut t = String::from("[state]\npath = \"state/db.redb\"\n\n");
    if let Some((max_body, timeout, conns)) = m.webhook {
        t += &format!(
            "[webhook]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = {max_body}\nheader_timeout = \"{timeout}s\"\nmax_connections = {conns}\n\n"
        );
    }
    t += "[admin]\nlisten = \"127.0.0.1:0\"\n\n";
    for f in &m.fronts {
        t += &format!("[front.{}]\n", f.name);
        if let Some(a) = &f.api_base {
            t += &format!("api_base = {}\n", q(a));
        }
        if let Some(s) = &f.token {
            t += &format!("token = {}\n", s.toml());
        }
        if let Some(n) = f.rpm {
            t += &format!("rate_limit_rpm = {n}\n");
        }
        if let Some(s) = &f.rule {
            t += &format!("rule_webhook_secret = {}\n", s.toml());
        }
        if let Some(s) = &f.app {
            t += &format!("app_webhook_secret = {}\n", s.toml());
        }
        t += "\n";
    }
    for (name, s) in &m.sinks {
        t += &format!("[sinks.{name}]\n");
        match s {
            SinkModel::Stdout => t += "type = \"stdout\"\n",
            SinkModel::Jsonl(p) => t += &format!("type = \"jsonl\"\npath = {}\n", q(p)),
            SinkModel::Next {
                endpoint,
                teamspace,
                token,
                batch,
            } => {
                t += &format!(
                    "type = \"next\"\nendpoint = {}\nteamspace = {}\ntoken = {}\n",
                    q(endpoint),
                    q(teamspace),
                    token.toml()
                );
                if let Some(b) = batch {
                    t += &format!("batch_size = {b}\n");
                }
            }
        }
        t += "\n";
    }
    for s in &m.subs {
        t += &format!(
            "[[subscription]]\nname = {}\nfront = {}\n",
            q(&s.name),
            q(&m.fronts[s.front].name)
        );
        t += &format!("inboxes = {}\n", list(&s.inboxes));
        t += &format!("statuses = {}\n", status_list(&s.statuses));
        t += &format!(
            "tags_any = {}\ntags_none = {}\n",
            list(&s.tags_any),
            list(&s.tags_none)
        );
        if let Some((n, u)) = s.backfill {
            t += &format!("backfill = \"{n}{u}\"\n");
        }
        if let Some((n, u)) = s.poll {
            t += &format!("poll_interval = \"{n}{u}\"\n");
        }
        let mut emit = Vec::new();
        if s.emit.0 {
            emit.push("created".to_owned());
        }
        if s.emit.1 {
            emit.push("updated".to_owned());
        }
        t += &format!("emit = {}\n", list(&emit));
        let sinks: Vec<String> = s.sinks.iter().map(|i| m.sinks[*i].0.clone()).collect();
        t += &format!("sinks = {}\n", list(&sinks));
        for (tags, statuses, add) in &s.labels {
            t += &format!(
                "\n[[subscription.label]]\ntags_any = {}\nstatuses = {}\nadd = {}\n",
                list(tags),
                status_list(statuses),
                list(add)
            );
        }
        t += "\n";
    }
    t
}

fn dur((n, unit): (u64, &str)) -> Duration {
    match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => Duration::from_secs(n * 86_400),
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// A generated valid configuration parses, and every value reads back as written
    /// (defaults where nothing was written, relative paths against the config's folder).
    #[test]
    fn valid_configs_round_trip(m in config_model()) {
        let text = render(&m);
        let dir = Path::new("/etc/frontsync-proptest");
        let path = dir.join("config.toml");
        let c = match parse(&text, &path) {
            Ok(c) => c,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n--- config ---\n{text}"))),
        };
        checks::config_str(&text);
        prop_assert_eq!(c.state.path, dir.join("state/db.redb"));
        match (m.webhook, &c.webhook) {
            (None, None) => {}
            (Some((max_body, timeout, conns)), Some(w)) => {
                prop_assert_eq!(w.max_body_bytes, max_body);
                prop_assert_eq!(w.header_timeout, Duration::from_secs(timeout));
                prop_assert_eq!(w.max_connections, conns);
            }
            (a, b) => prop_assert!(false, "webhook {:?} read as {:?}", a, b),
        }
        prop_assert_eq!(c.front.len(), m.fronts.len());
        for f in &m.fronts {
            let got = &c.front[&f.name];
            let api_base = f.api_base.as_deref().map(|a| a.trim_end_matches('/')).unwrap_or("https://api2.frontapp.com");
            prop_assert_eq!(&got.api_base, api_base);
            prop_assert_eq!(got.rate_limit_rpm, f.rpm.unwrap_or(50));
            for (model, secret) in [(&f.token, &got.token), (&f.rule, &got.rule_webhook_secret), (&f.app, &got.app_webhook_secret)] {
                match (model, secret) {
                    (None, None) => {}
                    (Some(m), Some(s)) => prop_assert!(m.matches(s, dir), "{:?} vs {:?}", m, s),
                    (a, b) => prop_assert!(false, "{:?} read as {:?}", a, b),
                }
            }
        }
        prop_assert_eq!(c.sinks.len(), m.sinks.len());
        for (name, s) in &m.sinks {
            match (s, &c.sinks[name]) {
                (SinkModel::Stdout, SinkConfig::Stdout) => {}
                (SinkModel::Jsonl(p), SinkConfig::Jsonl(j)) => prop_assert_eq!(&j.path, &dir.join(p)),
                (SinkModel::Next { endpoint, teamspace, token, batch }, SinkConfig::Next(n)) => {
                    prop_assert_eq!(&n.endpoint, endpoint);
                    prop_assert_eq!(&n.teamspace, teamspace);
                    prop_assert!(token.matches(&n.token, dir));
                    prop_assert_eq!(n.batch_size, batch.unwrap_or(1));
                }
                (a, b) => prop_assert!(false, "{:?} read as {:?}", a, b),
            }
        }
        prop_assert_eq!(c.subscriptions.len(), m.subs.len());
        for (s, got) in m.subs.iter().zip(&c.subscriptions) {
            let front = &m.fronts[s.front];
            prop_assert_eq!(&got.name, &s.name);
            prop_assert_eq!(&got.front, &front.name);
            prop_assert_eq!(&got.inboxes, &s.inboxes);
            prop_assert_eq!(&got.statuses, &s.statuses);
            prop_assert_eq!(&got.tags_any, &s.tags_any);
            prop_assert_eq!(&got.tags_none, &s.tags_none);
            prop_assert_eq!(got.backfill, s.backfill.map(dur).unwrap_or_default());
            let default_poll = if front.token.is_some() { Duration::from_secs(60) } else { Duration::ZERO };
            prop_assert_eq!(got.poll_interval, s.poll.map(dur).unwrap_or(default_poll));
            prop_assert_eq!((got.emit_created, got.emit_updated), s.emit);
            let sinks: Vec<String> = s.sinks.iter().map(|i| m.sinks[*i].0.clone()).collect();
            prop_assert_eq!(&got.sinks, &sinks);
            prop_assert_eq!(got.labels.len(), s.labels.len());
            for ((tags, statuses, add), l) in s.labels.iter().zip(&got.labels) {
                prop_assert_eq!(&l.tags_any, tags);
                let mut unique = Vec::new();
                for st in statuses {
                    if !unique.contains(st) {
                        unique.push(*st);
                    }
                }
                prop_assert_eq!(&l.statuses, &unique);
                prop_assert_eq!(&l.add, add);
            }
        }
    }
}
