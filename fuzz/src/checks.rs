//! The properties the fuzz targets check, as plain functions of the input bytes.
//!
//! Shared verbatim by the libFuzzer targets (`fuzz/fuzz_targets/*.rs`, through the
//! `frontsync-fuzz` library) and by `tests/regressions.rs` (through `#[path]`), which replays
//! the committed inputs under `fuzz/regressions/<target>/` in a plain `cargo test`, with no
//! fuzzer and no nightly toolchain. Each function panics when a property fails, which is how
//! both libFuzzer and the test harness notice.
//!
//! Only `frontsync`, `frontsync_sinks`, `serde_json` and `std` are used here, since the root
//! package's tests have exactly those.

use std::path::Path;

use frontsync::config::Subscription;
use frontsync::front::model::{Event, WebhookBody, parse_webhook_body};
use frontsync::normalize::{
    MAX_TEXT_CHARS, MAX_TITLE_CHARS, Snapshot, highlight, snapshot_from_event,
};
use frontsync::webhook::verify::{self, SignatureError};
use frontsync_sinks::{Change, SCHEMA_V1};

/// The fixed subscription the webhook target normalizes for, read from a config (so this
/// file does not depend on `Subscription`'s fields): a label rule so that label matching runs.
pub fn subscription() -> &'static Subscription {
    static SUB: std::sync::OnceLock<Subscription> = std::sync::OnceLock::new();
    SUB.get_or_init(read_subscription)
}

fn read_subscription() -> Subscription {
    const CONFIG: &str = r#"
[front.acme]
[sinks.archive]
type = "stdout"
[[subscription]]
name = "support"
front = "acme"
sinks = ["archive"]
emit = ["created", "updated"]
[[subscription.label]]
tags_any = ["bug"]
statuses = ["open", "archived"]
add = ["bug-report"]
"#;
    let config = frontsync::config::parse(CONFIG, Path::new("fuzz.toml"))
        .unwrap_or_else(|e| panic!("the fixed subscription config is valid: {e}"));
    config
        .subscriptions
        .into_iter()
        .next()
        .expect("one subscription")
}

// ---------------------------------------------------------------------------------------------
// (a) webhook body -> Event -> Snapshot -> Highlight
// ---------------------------------------------------------------------------------------------

/// `parse_webhook_body`, then for each event `snapshot_from_event` and `highlight`: never
/// panics, and every Highlight made is a valid `frontsync.highlight.v1` record.
pub fn webhook_body(data: &[u8]) {
    let event = match parse_webhook_body(data) {
        Ok(WebhookBody::Rule(event)) => event,
        Ok(WebhookBody::App {
            event: Some(event),
            type_,
            ..
        }) => {
            assert!(!type_.is_empty(), "an app webhook type is never empty");
            event
        }
        Ok(WebhookBody::App { event: None, .. }) => return,
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "one-line parse error: {message:?}");
            return;
        }
    };
    assert!(!event.id.is_empty() && !event.type_.is_empty());
    // Answers the handler computes on every event: must not panic.
    let _ = event.is_preview();
    let _ = event.is_message_event();

    // A preview is stored as JSON before Front gets its 200 and read back later by the
    // enricher: it must survive the round trip, or an acknowledged event would be lost.
    let stored = serde_json::to_vec(&event).expect("an event always serializes");
    let reread: Event = serde_json::from_slice(&stored).expect("a stored event reads back");
    assert_eq!(reread.id, event.id);
    assert_eq!(reread.type_, event.type_);

    let snapshot = match snapshot_from_event(&event) {
        Ok(s) => s,
        Err(e) => {
            assert!(
                snapshot_from_event(&reread).is_err(),
                "the stored event lost no conversation"
            );
            assert!(e.to_string().starts_with("event "));
            return;
        }
    };
    let again = snapshot_from_event(&reread).expect("the stored event normalizes too");
    assert_eq!(again.conversation_id, snapshot.conversation_id);
    assert_eq!(again.content_hash(), snapshot.content_hash());
    check_snapshot(&snapshot);

    let sub = subscription();
    for (revision, change) in [(1, Change::Created), (7, Change::Updated)] {
        check_highlight(sub, &snapshot, revision, change);
    }
    // A snapshot completed from an older one (itself) still makes a valid record, and
    // survives the store's serde round trip.
    let mut merged = snapshot.clone();
    merged.merge_older(&snapshot);
    assert_eq!(merged.content_hash(), snapshot.content_hash());
    let stored = serde_json::to_vec(&merged).expect("a snapshot serializes");
    let back: Snapshot = serde_json::from_slice(&stored).expect("a stored snapshot reads back");
    assert_eq!(back.conversation_id, merged.conversation_id);
    assert_eq!(back.content_hash(), merged.content_hash());
    check_highlight(sub, &back, 2, Change::Updated);
}

fn check_snapshot(s: &Snapshot) {
    assert!(!s.conversation_id.trim().is_empty());
    if let Some(text) = &s.message_text {
        assert!(
            text.chars().count() <= MAX_TEXT_CHARS,
            "stored text bounded"
        );
    }
    let mut sorted = s.inbox_ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, s.inbox_ids, "inbox ids sorted and unique");
}

/// Builds the Highlight and checks it as a sink would receive it: through JSON.
pub fn check_highlight(sub: &Subscription, snap: &Snapshot, revision: u64, change: Change) {
    let h = highlight(sub, snap, revision, change);
    let line = serde_json::to_string(&h).expect("a highlight serializes");
    assert!(!line.contains('\n'), "one JSON line per highlight");
    let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    check_highlight_json(&v, &sub.name, &snap.conversation_id);
    // Sinks read their outbox back with the typed model (deny_unknown_fields).
    let back: frontsync_sinks::Highlight =
        serde_json::from_str(&line).expect("the record reads back as a Highlight");
    assert_eq!(back, h);
    assert_eq!(h.revision, revision);
}

/// Every property of a `frontsync.highlight.v1` JSON object that holds for any input.
pub fn check_highlight_json(v: &serde_json::Value, subscription: &str, conversation_id: &str) {
    let obj = v.as_object().expect("a JSON object");
    const FIELDS: [&str; 17] = [
        "schema",
        "id",
        "revision",
        "change",
        "subscription",
        "title",
        "text",
        "requester",
        "assignee",
        "status",
        "front_status",
        "tags",
        "labels",
        "inbox_ids",
        "created_at",
        "updated_at",
        "source",
    ];
    for f in FIELDS {
        assert!(obj.contains_key(f), "field {f} present");
    }
    assert_eq!(obj.len(), 17, "no other fields: {:?}", obj.keys());
    assert_eq!(v["schema"], SCHEMA_V1);
    assert_eq!(
        v["id"].as_str(),
        Some(format!("{subscription}:{conversation_id}").as_str())
    );
    assert!(v["revision"].as_u64().is_some_and(|r| r >= 1));
    assert!(matches!(v["change"].as_str(), Some("created" | "updated")));
    assert_eq!(v["subscription"], subscription);
    let title = v["title"].as_str().expect("title is a string");
    assert!(
        title.chars().count() <= MAX_TITLE_CHARS,
        "title has {} chars",
        title.chars().count()
    );
    assert!(
        !title.chars().any(char::is_control),
        "title is one line without control chars: {title:?}"
    );
    assert_eq!(title, title.trim(), "title is trimmed");
    let text = v["text"].as_str().expect("text is a string");
    assert!(
        text.chars().count() <= MAX_TEXT_CHARS,
        "text has {} chars",
        text.chars().count()
    );
    assert!(matches!(
        v["status"].as_str(),
        Some("open" | "archived" | "trashed" | "spam")
    ));
    assert!(v["front_status"].is_string());
    for list in ["tags", "labels", "inbox_ids"] {
        let items = v[list].as_array().expect("a list");
        assert!(items.iter().all(serde_json::Value::is_string), "{list}");
    }
    if !v["requester"].is_null() {
        assert!(
            v["requester"]["handle"].is_string(),
            "a requester has a handle"
        );
    }
    if !v["assignee"].is_null() {
        assert!(v["assignee"]["id"].is_string(), "an assignee has an id");
    }
    for ts in ["created_at", "updated_at"] {
        let s = v[ts].as_str().expect("timestamp is a string");
        assert!(is_rfc3339_millis_utc(s), "{ts} = {s:?}");
    }
    let source = &v["source"];
    assert_eq!(source["system"], "front");
    assert_eq!(source["conversation_id"], conversation_id);
    assert_eq!(
        source["url"].as_str(),
        Some(format!("https://app.frontapp.com/open/{conversation_id}").as_str())
    );
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, with a real date and time.
pub fn is_rfc3339_millis_utc(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 24 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(u32::MAX);
    let shape = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z';
    shape
        && (1..=12).contains(&num(5..7))
        && (1..=31).contains(&num(8..10))
        && num(11..13) < 24
        && num(14..16) < 60
        && num(17..19) < 60
}

// ---------------------------------------------------------------------------------------------
// (b) config parsing
// ---------------------------------------------------------------------------------------------

/// The file name config errors are reported under.
pub const CONFIG_FILE: &str = "fuzz-config.toml";

/// `frontsync::config::parse` never panics; every error (and warning) is one line of the
/// form `file:line:col: message`, with the line and column inside the text.
pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    config_str(text);
}

/// [`config_text`] on a string.
pub fn config_str(text: &str) {
    let path = Path::new(CONFIG_FILE);
    match frontsync::config::parse(text, path) {
        Ok(config) => {
            assert!(
                !config.subscriptions.is_empty(),
                "a valid config subscribes"
            );
            for w in &config.warnings {
                check_located_line(text, w);
            }
            // The summary names secrets' sources only; one line each.
            for line in config.summary() {
                assert!(!line.contains('\n'), "summary line: {line:?}");
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "an invalid config has a reason");
            let rendered = errors.to_string();
            assert_eq!(
                rendered.lines().count(),
                errors.len(),
                "one line per error: {rendered:?}"
            );
            for e in &errors {
                assert_eq!(e.file, CONFIG_FILE);
                let line = e.to_string();
                assert_eq!(
                    line,
                    format!("{}:{}:{}: {}", e.file, e.line, e.col, e.message)
                );
                check_located_line(text, &line);
            }
        }
    }
}

/// `file:line:col: message` with `line` and `col` pointing into `text`, the message one
/// non-empty line.
fn check_located_line(text: &str, line: &str) {
    let rest = line
        .strip_prefix(CONFIG_FILE)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{line:?} starts with the file name"));
    let mut parts = rest.splitn(3, ':');
    let (Some(l), Some(c), Some(message)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("{line:?} is not file:line:col: message");
    };
    let l: usize = l.parse().unwrap_or_else(|_| panic!("line in {line:?}"));
    let c: usize = c.parse().unwrap_or_else(|_| panic!("column in {line:?}"));
    let message = message
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("a space after the column in {line:?}"));
    assert!(!message.trim().is_empty(), "empty message in {line:?}");
    assert!(
        !message.contains(['\n', '\r']),
        "the message is one line: {line:?}"
    );
    assert!(
        !message.starts_with(|c: char| c.is_ascii_uppercase()),
        "messages start lowercase: {line:?}"
    );
    // Lines as an editor counts them: split on '\n' (a final newline opens an empty line).
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        (1..=lines.len()).contains(&l),
        "line {l} outside 1..={} in {line:?}",
        lines.len()
    );
    let width = lines[l - 1].chars().filter(|c| *c != '\u{feff}').count();
    assert!(
        (1..=width + 1).contains(&c),
        "column {c} outside 1..={} on line {l} in {line:?}",
        width + 1
    );
}

// ---------------------------------------------------------------------------------------------
// (c) signatures
// ---------------------------------------------------------------------------------------------

/// Splits fuzz input into the parts of a webhook request: secret, body, timestamp header,
/// signature header, and the clock. Fields are separated by `0xFF` bytes (never valid UTF-8,
/// so they never occur inside header values the daemon would accept).
pub struct SignatureCase<'a> {
    pub secret: &'a [u8],
    pub body: &'a [u8],
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub now_ms: i64,
}

impl<'a> SignatureCase<'a> {
    pub fn from_bytes(data: &'a [u8]) -> Self {
        let mut parts = data.split(|b| *b == 0xFF);
        let secret = parts.next().unwrap_or_default();
        let body = parts.next().unwrap_or_default();
        // Headers arrive as `HeaderValue::to_str`: visible ASCII only, else absent.
        let header = |p: Option<&[u8]>| {
            p.filter(|b| b.iter().all(|c| *c == b'\t' || (0x20..0x7f).contains(c)))
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        let timestamp = header(parts.next());
        let signature = header(parts.next());
        let now_ms = parts
            .next()
            .map(|b| {
                let mut n = [0u8; 8];
                for (dst, src) in n.iter_mut().zip(b) {
                    *dst = *src;
                }
                i64::from_le_bytes(n)
            })
            .unwrap_or(1_700_000_000_000);
        SignatureCase {
            secret,
            body,
            timestamp,
            signature,
            now_ms,
        }
    }
}

/// `verify_rule` and `verify_app` on arbitrary headers and bodies: never panic, never accept
/// a signature that is not the HMAC, always accept the one that is, and never put the secret
/// in an error message.
pub fn signature(data: &[u8]) {
    let case = SignatureCase::from_bytes(data);
    // An error must not depend on the secret (so it cannot reveal it): with any other
    // secret, the same request fails the same way, or as a plain mismatch where ours matched.
    let other: Vec<u8> = case.secret.iter().map(|b| b ^ 0x5a).chain([0x01]).collect();
    let same_without_secret = |ours: &Result<(), SignatureError>,
                               theirs: Result<(), SignatureError>| {
        match (ours, theirs) {
            (Ok(()), theirs) => assert_eq!(theirs, Err(SignatureError::Mismatch)),
            (Err(e), Err(t)) => assert_eq!(
                e.to_string(),
                t.to_string(),
                "the error depends on the secret"
            ),
            (Err(e), Ok(())) => panic!("another secret verified a request ours refused ({e})"),
        }
    };

    // Rule webhook, as sent.
    let good_rule = verify::sign_rule(case.secret, case.body);
    let result = verify::verify_rule(case.secret, case.body, case.signature.as_deref());
    same_without_secret(
        &result,
        verify::verify_rule(&other, case.body, case.signature.as_deref()),
    );
    if result.is_ok() {
        assert_eq!(
            decoded(case.signature.as_deref()),
            decoded(Some(&good_rule)),
            "only the right HMAC is accepted"
        );
    }
    // ... and the correct signature always passes, a changed body never does.
    assert_eq!(
        verify::verify_rule(case.secret, case.body, Some(&good_rule)),
        Ok(())
    );
    let mut tampered = case.body.to_vec();
    tampered.push(b'x');
    assert_eq!(
        verify::verify_rule(case.secret, &tampered, Some(&good_rule)),
        Err(SignatureError::Mismatch)
    );

    // Application webhook.
    let ts = case.timestamp.as_deref().unwrap_or("");
    let result = verify::verify_app(
        case.secret,
        case.body,
        ts,
        case.signature.as_deref(),
        case.now_ms,
    );
    let in_window = ts.trim().parse::<i64>().ok().map(|t| {
        let skew = i128::from(case.now_ms) - i128::from(t);
        skew.abs() <= i128::from(verify::MAX_SKEW_MS)
    });
    same_without_secret(
        &result,
        verify::verify_app(
            &other,
            case.body,
            ts,
            case.signature.as_deref(),
            case.now_ms,
        ),
    );
    if result.is_ok() {
        assert_eq!(in_window, Some(true), "accepted only inside the window");
        assert_eq!(
            decoded(case.signature.as_deref()),
            decoded(Some(&verify::sign_app(case.secret, ts, case.body))),
            "only the right HMAC is accepted"
        );
    }
    let good_app = verify::sign_app(case.secret, ts, case.body);
    let expected = match in_window {
        None => Err(SignatureError::BadTimestamp),
        Some(false) => Err(SignatureError::Stale { skew_ms: 0 }),
        Some(true) => Ok(()),
    };
    let got = verify::verify_app(case.secret, case.body, ts, Some(&good_app), case.now_ms);
    match (&expected, &got) {
        (Err(SignatureError::Stale { .. }), Err(SignatureError::Stale { .. })) => {}
        _ => assert_eq!(got, expected, "the right signature for timestamp {ts:?}"),
    }
}

fn decoded(sig: Option<&str>) -> Option<Vec<u8>> {
    use base64_free::decode;
    decode(sig?.trim())
}

/// A tiny standard-alphabet base64 decoder (padding required, as `base64`'s STANDARD
/// engine wants), so this file needs no extra crate; used only to compare signatures.
mod base64_free {
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        let val = |c: u8| -> Option<u32> {
            Some(match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            } as u32)
        };
        let b = s.as_bytes();
        if !b.len().is_multiple_of(4) {
            return None;
        }
        let mut out = Vec::with_capacity(b.len() / 4 * 3);
        for chunk in b.chunks(4) {
            let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
            if pad > 2 {
                return None;
            }
            let mut n = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                let v = if i >= 4 - pad { 0 } else { val(*c)? };
                n = (n << 6) | v;
            }
            let bytes = n.to_be_bytes();
            out.extend_from_slice(&bytes[1..4 - pad]);
        }
        Some(out)
    }
}
