//! Self-tests of [`FakeFront`]: the fake must behave like Front (as far as
//! `shared/front-api/FACTS.md` knows it) before daemon scenarios can rely on it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake::front::{DEFAULT_TOKEN, inbound_event_at};
use crate::fake::{FakeFront, Fault};
use crate::harness;

/// First `emitted_at` of seeded events.
const T0: f64 = 1_763_000_000.0;

/// A blocking-style HTTP client over a small tokio runtime.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Http {
    fn new() -> Http {
        Http::with(reqwest::Client::builder())
    }

    fn with(builder: reqwest::ClientBuilder) -> Http {
        Http {
            rt: harness::runtime(),
            client: builder.build().unwrap(),
        }
    }

    /// GET with the default token.
    fn get(&self, url: &str) -> Resp {
        self.try_get(url, Some(DEFAULT_TOKEN)).unwrap()
    }

    fn try_get(&self, url: &str, token: Option<&str>) -> Result<Resp, reqwest::Error> {
        self.rt.block_on(async {
            let mut req = self.client.get(url);
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.text().await?;
            Ok(Resp {
                status,
                headers,
                body,
            })
        })
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["_results"]
        .as_array()
        .unwrap_or_else(|| panic!("no _results: {page}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

fn next(page: &Value) -> Option<String> {
    page["_pagination"]["next"].as_str().map(str::to_owned)
}

fn seeded(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("evt_seed_{i}")).collect()
}

fn error_status(resp: &Resp) -> i64 {
    resp.json()["_error"]["status"].as_i64().unwrap()
}

/// An event of `type_` in `conversation_id`, with the given source/target.
fn event(
    id: &str,
    type_: &str,
    at: f64,
    conversation_id: &str,
    source: Value,
    target: Value,
) -> Value {
    json!({
        "id": id,
        "type": type_,
        "emitted_at": at,
        "source": source,
        "target": target,
        "conversation": {"id": conversation_id, "subject": "s", "status": "archived"}
    })
}

fn teammate() -> Value {
    json!({"_meta": {"type": "teammate"}, "data": {"id": "tea_1", "email": "grace@acme.test"}})
}

#[test]
fn pagination_asc_walks_40_events_as_15_15_10_via_absolute_next() {
    let fake = FakeFront::start();
    let http = Http::new();
    let all = fake.seed_inbound(40, T0, 1.0);
    assert_eq!(all, seeded(0..40));

    let first = format!(
        "{}/events?q%5Btypes%5D=inbound&sort_by=created_at&sort_order=asc&limit=15",
        fake.base_url()
    );
    let mut url = Some(first);
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    while let Some(u) = url.take() {
        let page = http.get(&u).json();
        sizes.push(ids(&page).len());
        seen.extend(ids(&page));
        url = next(&page);
        if let Some(n) = &url {
            assert!(
                n.starts_with(&format!("{}/events?", fake.base_url())),
                "absolute next: {n}"
            );
            assert!(n.contains("page_token="), "{n}");
            assert!(n.contains("sort_order=asc"), "next keeps the query: {n}");
            assert_eq!(n.matches("page_token=").count(), 1, "{n}");
        }
    }
    assert_eq!(sizes, [15, 15, 10]);
    assert_eq!(seen, all);
    assert_eq!(fake.count("/events"), 3);
    let reqs = fake.requests();
    assert!(reqs.iter().all(|r| r.status == 200 && r.has_authorization));
    assert_eq!(reqs[0].params("q[types]"), ["inbound"]);
    assert_eq!(reqs[0].param("limit").as_deref(), Some("15"));
}

#[test]
fn events_default_to_newest_first_with_15_per_page() {
    let fake = FakeFront::start();
    let http = Http::new();
    fake.seed_inbound(20, T0, 0.5);
    let page = http.get(&format!("{}/events", fake.base_url())).json();
    let mut expected = seeded(5..20);
    expected.reverse();
    assert_eq!(ids(&page), expected);
    let page = http.get(&next(&page).unwrap()).json();
    assert_eq!(
        ids(&page),
        [
            "evt_seed_4",
            "evt_seed_3",
            "evt_seed_2",
            "evt_seed_1",
            "evt_seed_0"
        ]
    );
    assert_eq!(next(&page), None);
    assert!(
        page["_links"]["self"]
            .as_str()
            .unwrap()
            .starts_with(&fake.base_url())
    );
}

#[test]
fn paging_is_stable_when_events_arrive_mid_walk() {
    let fake = FakeFront::start();
    let http = Http::new();
    fake.seed_inbound(20, T0, 1.0);
    let url = format!("{}/events?sort_order=asc&limit=15", fake.base_url());
    let page = http.get(&url).json();
    assert_eq!(ids(&page), seeded(0..15));
    // One event lands before the position (already walked past), one after the end.
    fake.add_event(inbound_event_at(
        "evt_early",
        "cnv_early",
        T0 + 3.5,
        "s",
        "t",
    ));
    fake.add_event(inbound_event_at(
        "evt_late",
        "cnv_late",
        T0 + 100.0,
        "s",
        "t",
    ));
    let page = http.get(&next(&page).unwrap()).json();
    let mut expected = seeded(15..20);
    expected.push("evt_late".to_owned());
    assert_eq!(ids(&page), expected);
    assert_eq!(next(&page), None);

    // Ties on emitted_at are ordered by id and never skipped across pages.
    let fake = FakeFront::start();
    for i in 0..20 {
        fake.add_event(inbound_event_at(
            &format!("evt_{i:02}"),
            "cnv_t",
            T0,
            "s",
            "t",
        ));
    }
    let page = http
        .get(&format!(
            "{}/events?sort_order=asc&limit=15",
            fake.base_url()
        ))
        .json();
    let mut got = ids(&page);
    got.extend(ids(&http.get(&next(&page).unwrap()).json()));
    let expected: Vec<String> = (0..20).map(|i| format!("evt_{i:02}")).collect();
    assert_eq!(got, expected);
}

#[test]
fn after_is_inclusive_by_default_and_can_be_exclusive() {
    let fake = FakeFront::start();
    let http = Http::new();
    fake.seed_inbound(5, T0 + 0.25, 1.0); // T0+0.250, +1.250, ... +4.250
    let after = |q: &str| {
        let resp = http.get(&format!(
            "{}/events?sort_order=asc&q[after]={q}",
            fake.base_url()
        ));
        assert_eq!(resp.status, 200, "{}", resp.body);
        ids(&resp.json())
    };
    let boundary = format!("{:.3}", T0 + 2.25);
    assert_eq!(after(&boundary), seeded(2..5));
    assert_eq!(after(&format!("{}.25", T0 as i64 + 2)), seeded(2..5));
    fake.set_after_inclusive(false);
    assert_eq!(after(&boundary), seeded(3..5));
    assert_eq!(after(&format!("{:.3}", T0 + 2.249)), seeded(2..5));

    // before is exclusive.
    let page = http
        .get(&format!(
            "{}/events?sort_order=asc&q[before]={boundary}",
            fake.base_url()
        ))
        .json();
    assert_eq!(ids(&page), seeded(0..2));

    // More than 3 decimals, or garbage, is a 400.
    for bad in ["1763000002.2500", "abc", "-5", "12."] {
        let resp = http.get(&format!("{}/events?q[after]={bad}", fake.base_url()));
        assert_eq!(resp.status, 400, "{bad}");
        assert_eq!(error_status(&resp), 400);
    }
}

#[test]
fn types_filter_accepts_repeated_and_bracketed_keys() {
    let fake = FakeFront::start();
    let http = Http::new();
    fake.seed_inbound(3, T0, 1.0);
    fake.add_event(event(
        "evt_archive",
        "archive",
        T0 + 10.0,
        "cnv_seed_0",
        teammate(),
        Value::Null,
    ));
    fake.add_event(event(
        "evt_tag",
        "tag",
        T0 + 11.0,
        "cnv_seed_0",
        teammate(),
        json!({"_meta": {"type": "tag"}, "data": {"id": "tag_1", "name": "vip"}}),
    ));
    let list = |q: &str| {
        ids(&http
            .get(&format!("{}/events?sort_order=asc&{q}", fake.base_url()))
            .json())
    };
    assert_eq!(list("q[types]=archive"), ["evt_archive"]);
    assert_eq!(
        list("q[types]=inbound&q[types]=tag"),
        ["evt_seed_0", "evt_seed_1", "evt_seed_2", "evt_tag"]
    );
    assert_eq!(
        list("q%5Btypes%5D%5B%5D=archive&q%5Btypes%5D%5B%5D=tag"),
        ["evt_archive", "evt_tag"]
    );
    assert_eq!(list("").len(), 5);
    let resp = http.get(&format!("{}/events?q[types]=created", fake.base_url()));
    assert_eq!(resp.status, 400);
    let resp = http.get(&format!("{}/events?q[type]=inbound", fake.base_url()));
    assert_eq!(resp.status, 400, "unknown q key");
}

#[test]
fn inboxes_filter_matches_source_target_and_conversation_inboxes() {
    let fake = FakeFront::start();
    let http = Http::new();
    fake.seed_inbound(2, T0, 1.0); // inb_123
    let mut other = inbound_event_at("evt_other", "cnv_other", T0 + 5.0, "s", "t");
    other["source"]["data"] = json!([{"id": "inb_other", "name": "Sales"}]);
    fake.add_event(other);
    // No inbox of its own, but its conversation went through inb_other.
    fake.add_event(event(
        "evt_assign",
        "assign",
        T0 + 6.0,
        "cnv_other",
        teammate(),
        teammate(),
    ));
    // Moved into inb_moved (target inboxes, single-object form).
    fake.add_event(event(
        "evt_move",
        "move",
        T0 + 7.0,
        "cnv_moved",
        teammate(),
        json!({"_meta": {"type": "inboxes"}, "data": {"id": "inb_moved"}}),
    ));
    let list = |q: &str| {
        ids(&http
            .get(&format!("{}/events?sort_order=asc&{q}", fake.base_url()))
            .json())
    };
    assert_eq!(list("q[inboxes]=inb_other"), ["evt_other", "evt_assign"]);
    assert_eq!(list("q[inboxes][]=inb_123"), ["evt_seed_0", "evt_seed_1"]);
    assert_eq!(
        list("q[inboxes]=inb_moved&q[inboxes]=inb_123"),
        ["evt_seed_0", "evt_seed_1", "evt_move"]
    );
    assert!(list("q[inboxes]=inb_none").is_empty());
    assert_eq!(list("q[inboxes]=inb_other&q[types]=inbound"), ["evt_other"]);
}

#[test]
fn limits_and_bad_parameters_are_400() {
    let fake = FakeFront::start();
    let http = Http::new();
    fake.seed_inbound(1, T0, 1.0);
    let base = fake.base_url();
    for (url, why) in [
        (format!("{base}/events?limit=16"), "events limit > 15"),
        (format!("{base}/events?limit=0"), "limit 0"),
        (format!("{base}/events?sort_by=date"), "sort_by"),
        (format!("{base}/events?sort_order=up"), "sort_order"),
        (format!("{base}/events?page_token=zz"), "page token"),
        (
            format!("{base}/conversations/cnv_seed_0/messages?limit=101"),
            "messages limit > 100",
        ),
    ] {
        let resp = http.get(&url);
        assert_eq!(resp.status, 400, "{why}: {}", resp.body);
        assert_eq!(error_status(&resp), 400);
        assert_eq!(resp.json()["_error"]["title"], "Bad request");
    }
    assert_eq!(http.get(&format!("{base}/events?limit=15")).status, 200);
    assert_eq!(
        http.get(&format!(
            "{base}/conversations/cnv_seed_0/messages?limit=100"
        ))
        .status,
        200
    );
}

#[test]
fn missing_or_wrong_token_is_a_401() {
    let fake = FakeFront::start();
    let http = Http::new();
    let url = format!("{}/me", fake.base_url());
    let resp = http.try_get(&url, None).unwrap();
    assert_eq!(resp.status, 401);
    assert_eq!(
        resp.json(),
        json!({"_error": {"status": 401, "title": "Unauthenticated", "message": "Invalid token"}})
    );
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert!(resp.header("x-ratelimit-limit").is_some());
    assert_eq!(http.try_get(&url, Some("nope")).unwrap().status, 401);
    assert_eq!(http.get(&url).status, 200);

    fake.set_token("rotated");
    assert_eq!(http.get(&url).status, 401);
    assert_eq!(http.try_get(&url, Some("rotated")).unwrap().status, 200);

    let reqs = fake.requests();
    let summary: Vec<(bool, u16)> = reqs
        .iter()
        .map(|r| (r.has_authorization, r.status))
        .collect();
    assert_eq!(
        summary,
        [
            (false, 401),
            (true, 401),
            (true, 200),
            (true, 401),
            (true, 200)
        ]
    );
    fake.reset_requests();
    assert!(fake.requests().is_empty());
}

#[test]
fn rate_limit_answers_429_with_retry_after_and_headers() {
    let fake = FakeFront::start();
    let http = Http::new();
    fake.set_rate_limit(5);
    let url = format!("{}/me", fake.base_url());
    for i in 0..5 {
        let resp = http.get(&url);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(
            resp.header("x-ratelimit-remaining"),
            Some((4 - i).to_string().as_str())
        );
        let reset: f64 = resp.header("x-ratelimit-reset").unwrap().parse().unwrap();
        let now = harness::now_ms() as f64 / 1000.0;
        assert!(
            reset > now && reset <= now + 61.0,
            "reset {reset} now {now}"
        );
    }
    let resp = http.get(&url);
    assert_eq!(resp.status, 429);
    let retry: f64 = resp.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0.0 && retry <= 60.0, "{retry}");
    assert_eq!(resp.header("x-ratelimit-remaining"), Some("0"));
    assert!(resp.header("x-ratelimit-reset").is_some());
    assert_eq!(error_status(&resp), 429);
    assert_eq!(resp.json()["_error"]["title"], "Too many requests");
    // A 401 is not throttled... and a fresh limit starts a fresh window.
    assert_eq!(http.try_get(&url, None).unwrap().status, 401);
    fake.set_rate_limit(6);
    assert_eq!(http.get(&url).status, 200);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 401, 200]);
}

#[test]
fn fault_status_is_one_shot_in_order_and_honours_path_prefix() {
    let fake = FakeFront::start();
    let http = Http::new();
    fake.seed_inbound(1, T0, 1.0);
    let base = fake.base_url();
    fake.inject(Fault::Status {
        code: 503,
        retry_after: Some(1.5),
        path_prefix: Some("/messages".into()),
    });
    fake.inject(Fault::Status {
        code: 429,
        retry_after: Some(0.25),
        path_prefix: None,
    });
    fake.inject(Fault::Status {
        code: 403,
        retry_after: None,
        path_prefix: None,
    });
    // /me skips the /messages fault and takes the 429.
    let resp = http.get(&format!("{base}/me"));
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), Some("0.25"));
    assert_eq!(error_status(&resp), 429);
    let resp = http.get(&format!("{base}/messages/msg_seed_0"));
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("retry-after"), Some("1.5"));
    assert_eq!(resp.json()["_error"]["title"], "Service unavailable");
    let resp = http.get(&format!("{base}/events"));
    assert_eq!(resp.status, 403);
    assert_eq!(resp.header("retry-after"), None);
    assert!(resp.header("x-ratelimit-remaining").is_some());
    assert_eq!(fake.pending_faults(), 0);
    assert_eq!(http.get(&format!("{base}/messages/msg_seed_0")).status, 200);
}

#[test]
fn fault_slow_trips_a_client_timeout() {
    let fake = FakeFront::start();
    let http = Http::with(reqwest::Client::builder().timeout(Duration::from_millis(300)));
    let url = format!("{}/me", fake.base_url());
    fake.inject(Fault::Slow {
        delay: Duration::from_secs(3),
        path_prefix: Some("/me".into()),
    });
    let err = http
        .try_get(&url, Some(DEFAULT_TOKEN))
        .err()
        .expect("timeout");
    assert!(err.is_timeout(), "{err:?}");
    let started = std::time::Instant::now();
    assert_eq!(http.get(&url).status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.requests()[0].status, 200, "recorded on arrival");
}

#[test]
fn fault_truncated_json_and_reset_connection() {
    let fake = FakeFront::start();
    let http = Http::new();
    fake.seed_inbound(3, T0, 1.0);
    let url = format!("{}/events", fake.base_url());
    fake.inject(Fault::TruncatedJson {
        path_prefix: Some("/events".into()),
    });
    let resp = http.get(&url);
    assert_eq!(resp.status, 200);
    assert!(!resp.body.is_empty());
    assert!(
        serde_json::from_str::<Value>(&resp.body).is_err(),
        "{}",
        resp.body
    );
    assert_eq!(ids(&http.get(&url).json()).len(), 3);

    fake.inject(Fault::ResetConnection { path_prefix: None });
    let err = http
        .try_get(&url, Some(DEFAULT_TOKEN))
        .err()
        .expect("reset");
    assert!(!err.is_status(), "{err:?}");
    assert_eq!(ids(&http.get(&url).json()).len(), 3);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 0, 200]);
}

#[test]
fn fault_repeat_next_points_next_at_the_same_page_once() {
    let fake = FakeFront::start();
    let http = Http::new();
    fake.seed_inbound(20, T0, 1.0);
    // Not consumed by a non-list request.
    fake.inject(Fault::RepeatNext { path_prefix: None });
    assert_eq!(http.get(&format!("{}/me", fake.base_url())).status, 200);
    assert_eq!(fake.pending_faults(), 1);

    let first = http
        .get(&format!("{}/events?sort_order=asc", fake.base_url()))
        .json();
    assert_eq!(ids(&first), seeded(0..15));
    let next_url = next(&first).unwrap();
    assert_eq!(next_url, first["_links"]["self"].as_str().unwrap());
    let again = http.get(&next_url).json();
    assert_eq!(ids(&again), seeded(0..15));
    let last = http.get(&next(&again).unwrap()).json();
    assert_eq!(ids(&last), seeded(15..20));
    assert_eq!(next(&last), None);
}

#[test]
fn previews_hide_bodies_but_single_event_is_full() {
    let fake = FakeFront::start();
    let http = Http::new();
    fake.seed_inbound(2, T0, 1.0);
    fake.set_previews(true);
    let page = http
        .get(&format!("{}/events?sort_order=asc", fake.base_url()))
        .json();
    let preview = &page["_results"][0];
    assert_eq!(preview["id"], "evt_seed_0");
    assert_eq!(preview["type"], "inbound");
    assert_eq!(preview["emitted_at"], json!(T0));
    assert_eq!(
        preview["conversation"],
        json!({
            "_links": {"self": format!("{}/conversations/cnv_seed_0", fake.base_url())},
            "id": "cnv_seed_0"
        })
    );
    assert_eq!(preview["target"]["_meta"]["type"], "message");
    assert_eq!(
        preview["target"]["data"],
        json!({
            "_links": {"self": format!("{}/messages/msg_seed_0", fake.base_url())},
            "id": "msg_seed_0"
        })
    );
    assert_eq!(preview["source"]["_meta"]["type"], "inboxes");
    assert_eq!(preview["source"]["data"][0]["id"], "inb_123");
    assert!(preview["source"]["data"][0].get("name").is_none());
    assert!(!page.to_string().contains("Seed message"), "{page}");

    let full = http
        .get(&format!("{}/events/evt_seed_0", fake.base_url()))
        .json();
    assert_eq!(full["target"]["data"]["text"], "Seed message 0");
    assert_eq!(full["conversation"]["subject"], "Seed subject 0");
    assert_eq!(
        full["_links"]["self"],
        json!(format!("{}/events/evt_seed_0", fake.base_url()))
    );
    // The links of a preview lead to the full resources.
    let msg = http.get(
        preview["target"]["data"]["_links"]["self"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(msg.json()["body"], "<p>Seed message 0</p>");
    let cnv = http.get(preview["conversation"]["_links"]["self"].as_str().unwrap());
    assert_eq!(cnv.json()["status"], "assigned");

    let missing = http.get(&format!("{}/events/evt_nope", fake.base_url()));
    assert_eq!(missing.status, 404);
    assert_eq!(error_status(&missing), 404);
}

#[test]
fn merged_conversation_answers_301() {
    let fake = FakeFront::start();
    fake.seed_inbound(2, T0, 1.0);
    fake.merge("cnv_seed_0", "cnv_seed_1");
    let base = fake.base_url();
    let no_follow =
        Http::with(reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()));
    let resp = no_follow.get(&format!("{base}/conversations/cnv_seed_0"));
    assert_eq!(resp.status, 301);
    assert_eq!(
        resp.header("location"),
        Some(format!("{base}/conversations/cnv_seed_1").as_str())
    );
    let resp = no_follow.get(&format!("{base}/conversations/cnv_seed_0/messages?limit=5"));
    assert_eq!(resp.status, 301);
    assert_eq!(
        resp.header("location"),
        Some(format!("{base}/conversations/cnv_seed_1/messages?limit=5").as_str())
    );

    let follow = Http::new();
    let cnv = follow
        .get(&format!("{base}/conversations/cnv_seed_0"))
        .json();
    assert_eq!(cnv["id"], "cnv_seed_1");
    let paths: Vec<String> = fake.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths[2..],
        ["/conversations/cnv_seed_0", "/conversations/cnv_seed_1"]
    );
}

#[test]
fn basic_endpoints_me_inboxes_messages_and_404() {
    let fake = FakeFront::start();
    let http = Http::new();
    let base = fake.base_url();
    fake.add_inbox("inb_1", "Support", false);
    fake.add_inbox("inb_2", "Private", true);
    fake.add_inbox("inb_1", "Support desk", false);

    let me = http.get(&format!("{base}/me"));
    assert_eq!(me.header("content-type"), Some("application/json"));
    assert_eq!(me.json()["id"], "cmp_fake");
    assert_eq!(me.json()["name"], "Fake Co");

    let inboxes = http.get(&format!("{base}/inboxes")).json();
    assert!(inboxes.get("_pagination").is_none());
    assert_eq!(inboxes["_results"][0]["name"], "Support desk");
    assert_eq!(inboxes["_results"][1]["is_private"], true);
    assert_eq!(inboxes["_results"].as_array().unwrap().len(), 2);

    fake.add_conversation(json!({"id": "cnv_1", "subject": "Hello", "status": "unassigned"}));
    let cnv = http.get(&format!("{base}/conversations/cnv_1")).json();
    assert_eq!(cnv["subject"], "Hello");
    assert_eq!(
        cnv["_links"]["self"],
        json!(format!("{base}/conversations/cnv_1"))
    );

    for path in [
        "/nope",
        "/conversations/cnv_x",
        "/messages/msg_x",
        "/events/",
        "/conversations/cnv_x/messages",
    ] {
        let resp = http.get(&format!("{base}{path}"));
        assert_eq!(resp.status, 404, "{path}");
        assert_eq!(error_status(&resp), 404);
    }
    let post = http.rt.block_on(async {
        http.client
            .post(format!("{base}/events"))
            .bearer_auth(DEFAULT_TOKEN)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(post, 405);
}

#[test]
fn messages_are_newest_first_and_paginated() {
    let fake = FakeFront::start();
    let http = Http::new();
    let base = fake.base_url();
    fake.add_conversation(json!({"id": "cnv_1", "subject": "Hello", "status": "assigned"}));
    for i in 0..7 {
        fake.add_message(
            "cnv_1",
            json!({"id": format!("msg_{i}"), "created_at": T0 + i as f64, "text": format!("m{i}")}),
        );
    }
    fake.add_message("cnv_2", json!({"id": "msg_other", "created_at": T0}));

    let page = http
        .get(&format!("{base}/conversations/cnv_1/messages?limit=3"))
        .json();
    assert_eq!(ids(&page), ["msg_6", "msg_5", "msg_4"]);
    let n = next(&page).unwrap();
    assert!(
        n.starts_with(&format!(
            "{base}/conversations/cnv_1/messages?limit=3&page_token="
        )),
        "{n}"
    );
    let page = http.get(&n).json();
    assert_eq!(ids(&page), ["msg_3", "msg_2", "msg_1"]);
    let page = http.get(&next(&page).unwrap()).json();
    assert_eq!(ids(&page), ["msg_0"]);
    assert_eq!(next(&page), None);

    let asc = http
        .get(&format!(
            "{base}/conversations/cnv_1/messages?sort_by=created_at&sort_order=asc"
        ))
        .json();
    assert_eq!(
        ids(&asc),
        [
            "msg_0", "msg_1", "msg_2", "msg_3", "msg_4", "msg_5", "msg_6"
        ]
    );
    let msg = http.get(&format!("{base}/messages/msg_other")).json();
    assert_eq!(
        msg["_links"]["related"]["conversation"],
        json!(format!("{base}/conversations/cnv_2"))
    );
    assert_eq!(
        ids(&http
            .get(&format!("{base}/conversations/cnv_2/messages"))
            .json()),
        ["msg_other"]
    );
}

#[test]
fn stops_when_dropped() {
    let fake = FakeFront::start();
    let addr = fake.addr();
    let http = Http::new();
    fake.inject(Fault::Slow {
        delay: Duration::from_secs(30),
        path_prefix: None,
    });
    // A request stuck in a slow answer must not keep the fake alive.
    let url = format!("{}/me", fake.base_url());
    let stuck = std::thread::spawn(move || {
        let http = Http::new();
        http.try_get(&url, Some(DEFAULT_TOKEN)).is_err()
    });
    harness::wait_until(Duration::from_secs(5), "the slow request", || {
        (fake.count("/me") == 1).then_some(())
    });
    let started = std::time::Instant::now();
    drop(fake);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        stuck.join().unwrap(),
        "the stuck request fails once the fake is gone"
    );
    assert!(
        http.try_get(&format!("http://{addr}/me"), Some(DEFAULT_TOKEN))
            .is_err(),
        "nothing listens any more"
    );
}
