//! The `http` and `next` sinks against a fake NEXT AI receiver: a small hyper server on
//! 127.0.0.1 that records every request (method, path, headers, body) and answers from a
//! script, so the requests on the wire and the classification of each answer are checked
//! end to end.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use frontsync_sinks::http::{HttpSink, HttpSinkConfig};
use frontsync_sinks::next::{NextSink, NextSinkConfig};
use frontsync_sinks::{Delivery, Sink, SinkError, SinkErrorKind};

const TOKEN: &str = "tok_live_5ecret_4f9a2c";
const SIGNING_SECRET: &str = "whsec_s1gning_7d3e";
const HEADER_SECRET: &str = "apikey_h3ader_91bb";

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the receiver answers to the next request.
enum Reply {
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Never answers.
    Hang,
}

fn status(code: u16) -> Reply {
    Reply::Answer {
        status: code,
        headers: Vec::new(),
        body: String::new(),
    }
}

fn answer(code: u16, headers: Vec<(&'static str, String)>, body: &str) -> Reply {
    Reply::Answer {
        status: code,
        headers,
        body: body.to_owned(),
    }
}

/// The fake receiver; answers `200` once the script is used up.
struct FakeNext {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    accept: JoinHandle<()>,
}

impl FakeNext {
    async fn start(script: Vec<Reply>) -> FakeNext {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let recorded = Arc::clone(&requests);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorded = Arc::clone(&recorded);
                let script = Arc::clone(&script);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        handle(req, Arc::clone(&recorded), Arc::clone(&script))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeNext {
            addr,
            requests,
            accept,
        }
    }

    /// The base URL a `next` sink is configured with.
    fn base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for FakeNext {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn handle(
    req: hyper::Request<Incoming>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req.into_body().collect().await?.to_bytes().to_vec();
    recorded.lock().expect("lock").push(Recorded {
        method,
        path,
        headers,
        body,
    });
    let reply = script.lock().expect("lock").pop_front();
    match reply.unwrap_or_else(|| status(200)) {
        Reply::Hang => std::future::pending().await,
        Reply::Answer {
            status,
            headers,
            body,
        } => {
            let mut response = hyper::Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            Ok(response
                .body(Full::new(Bytes::from(body)))
                .expect("response"))
        }
    }
}

fn item(n: u64, revision: u64) -> Delivery {
    let id = format!("support:cnv_{n}");
    let json = format!(
        r#"{{"schema":"frontsync.highlight.v1","id":"{id}","revision":{revision},"change":"created","title":"Refund for order {n}","text":"ünïcode — ok"}}"#
    );
    Delivery {
        seq: n,
        id,
        revision,
        json: json.into_bytes(),
    }
}

fn items(n: u64) -> Vec<Delivery> {
    (1..=n).map(|i| item(i, 1)).collect()
}

fn next_config(server: &FakeNext, batch_size: usize) -> NextSinkConfig {
    NextSinkConfig {
        batch_size,
        ..NextSinkConfig::new(server.base(), "ts_1", TOKEN)
    }
}

fn next_sink(server: &FakeNext, batch_size: usize) -> NextSink {
    NextSink::new(next_config(server, batch_size)).expect("valid config")
}

/// The error is retryable, with nothing secret in it; returns its `retry_after`.
fn assert_retryable(err: &SinkError, delivered: usize) -> Option<Duration> {
    assert_clean(err);
    assert_eq!(err.delivered, delivered, "{err}");
    match &err.kind {
        SinkErrorKind::Retryable { retry_after, .. } => *retry_after,
        SinkErrorKind::Rejected { .. } => panic!("expected retryable, got {err:?}"),
    }
}

/// The error is a rejection, with nothing secret in it; returns its status and excerpt.
fn assert_rejected(err: &SinkError, delivered: usize) -> (Option<u16>, String) {
    assert_clean(err);
    assert_eq!(err.delivered, delivered, "{err}");
    match &err.kind {
        SinkErrorKind::Rejected {
            status,
            body_excerpt,
            ..
        } => (*status, body_excerpt.clone().unwrap_or_default()),
        SinkErrorKind::Retryable { .. } => panic!("expected rejected, got {err:?}"),
    }
}

fn assert_clean(err: &SinkError) {
    let shown = format!("{err} {err:?}");
    for secret in [TOKEN, SIGNING_SECRET, HEADER_SECRET] {
        assert!(!shown.contains(secret), "a secret leaked: {shown}");
    }
    let message = err.to_string();
    assert!(!message.contains('\n'), "{message}");
    assert_eq!(message, message.to_lowercase(), "{message}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An IMF-fixdate, written independently of the sink's parser.
fn imf_fixdate(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let days = i64::try_from(secs / 86_400).expect("days");
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[usize::try_from(days % 7).expect("weekday")],
        MONTHS[usize::try_from(month - 1).expect("month")],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn the_test_date_formatter_is_right() {
    assert_eq!(
        imf_fixdate(UNIX_EPOCH + Duration::from_secs(784_111_777)),
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
}

#[tokio::test]
async fn single_delivery_posts_the_highlight_as_is() {
    let server = FakeNext::start(vec![status(201)]).await;
    let mut sink = next_sink(&server, 1);
    assert_eq!(sink.kind(), "next");
    assert_eq!(sink.max_batch(), 1);
    let one = item(1, 1);
    sink.deliver(std::slice::from_ref(&one))
        .await
        .expect("delivered");

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v1/teamspaces/ts_1/highlights");
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("idempotency-key"), Some("support:cnv_1:1"));
    assert!(
        req.header("user-agent")
            .is_some_and(|ua| ua.starts_with("frontsync/")),
        "{req:?}"
    );
    assert_eq!(req.header("x-frontsync-signature"), None);
    assert_eq!(req.body, one.json);
}

#[tokio::test]
async fn conflict_counts_as_delivered() {
    let server = FakeNext::start(vec![status(409), status(200), status(202)]).await;
    let mut sink = next_sink(&server, 1);
    sink.deliver(&items(3)).await.expect("all delivered");
    let keys: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        keys,
        ["support:cnv_1:1", "support:cnv_2:1", "support:cnv_3:1"]
    );
}

#[tokio::test]
async fn server_error_is_retryable_and_stops_the_batch() {
    let server = FakeNext::start(vec![status(500)]).await;
    let mut sink = next_sink(&server, 1);
    let err = sink.deliver(&items(1)).await.expect_err("500");
    assert_eq!(assert_retryable(&err, 0), None);
    assert!(err.to_string().contains("500"), "{err}");

    // Given several items anyway, it stops at the first failure and counts the ones before.
    let server = FakeNext::start(vec![status(201), status(502)]).await;
    let mut sink = next_sink(&server, 1);
    let err = sink.deliver(&items(3)).await.expect_err("502");
    assert_retryable(&err, 1);
    assert_eq!(server.requests().len(), 2, "nothing sent after the failure");
}

#[tokio::test]
async fn retry_after_is_passed_on() {
    let in_30s = imf_fixdate(SystemTime::now() + Duration::from_secs(30));
    let server = FakeNext::start(vec![
        answer(429, vec![("retry-after", "7".into())], ""),
        answer(503, vec![("retry-after", in_30s)], ""),
        answer(429, vec![("retry-after", "999999".into())], ""),
        answer(429, vec![("retry-after", "soon".into())], ""),
        status(408),
        answer(503, vec![("retry-after", "0".into())], ""),
    ])
    .await;
    let mut sink = next_sink(&server, 1);
    let batch = items(1);

    let err = sink.deliver(&batch).await.expect_err("429");
    assert_eq!(assert_retryable(&err, 0), Some(Duration::from_secs(7)));
    assert!(err.to_string().contains("429 too many requests"), "{err}");

    let err = sink.deliver(&batch).await.expect_err("503");
    let delay = assert_retryable(&err, 0).expect("a delay from the date");
    assert!(
        delay > Duration::from_secs(27) && delay <= Duration::from_secs(30),
        "{delay:?}"
    );

    let err = sink.deliver(&batch).await.expect_err("429");
    assert_eq!(
        assert_retryable(&err, 0),
        Some(Duration::from_secs(3600)),
        "capped at one hour"
    );

    let err = sink.deliver(&batch).await.expect_err("429");
    assert_eq!(assert_retryable(&err, 0), None, "unparsable: own backoff");

    let err = sink.deliver(&batch).await.expect_err("408");
    assert_eq!(assert_retryable(&err, 0), None);

    let err = sink.deliver(&batch).await.expect_err("503");
    assert_eq!(assert_retryable(&err, 0), None, "zero: own backoff");
}

#[tokio::test]
async fn client_error_is_rejected_with_a_bounded_excerpt() {
    let long = "é".repeat(3000);
    let echo = format!("{{\"error\":\"bad token Bearer {TOKEN}\"}}");
    let server = FakeNext::start(vec![
        answer(400, Vec::new(), r#"{"error":"title is required"}"#),
        answer(422, Vec::new(), &long),
        answer(404, Vec::new(), &echo),
        answer(401, Vec::new(), &echo),
    ])
    .await;
    let mut sink = next_sink(&server, 1);
    let batch = items(1);

    let err = sink.deliver(&batch).await.expect_err("400");
    let (status, excerpt) = assert_rejected(&err, 0);
    assert_eq!(status, Some(400));
    assert_eq!(excerpt, r#"{"error":"title is required"}"#);
    assert_eq!(
        err.to_string(),
        "next rejected highlight support:cnv_1:1: 400 bad request"
    );

    let err = sink.deliver(&batch).await.expect_err("422");
    let (status, excerpt) = assert_rejected(&err, 0);
    assert_eq!(status, Some(422));
    assert!(excerpt.len() <= 1024, "{}", excerpt.len());
    assert!(excerpt.len() >= 1022, "{}", excerpt.len());
    assert!(long.starts_with(&excerpt), "a prefix, no character cut");

    // A receiver echoing the token back does not get it into the dead letters.
    let err = sink.deliver(&batch).await.expect_err("404");
    let (status, excerpt) = assert_rejected(&err, 0);
    assert_eq!(status, Some(404));
    assert!(!excerpt.contains(TOKEN), "{excerpt}");
    assert!(excerpt.contains("***"), "{excerpt}");

    // 401/403 are the token's fault, not the record's: retried, never dead-lettered, so a
    // revoked token cannot empty the outbox into dead letters.
    let err = sink.deliver(&batch).await.expect_err("401");
    assert_eq!(assert_retryable(&err, 0), None);
    assert!(err.to_string().contains("token was rejected"), "{err}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = FakeNext::start(vec![answer(
        302,
        vec![("location", "/elsewhere".into())],
        "",
    )])
    .await;
    let mut sink = next_sink(&server, 1);
    let err = sink.deliver(&items(1)).await.expect_err("302");
    assert_retryable(&err, 0);
    assert!(
        err.to_string().contains("redirects are not followed"),
        "{err}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn timeout_is_retryable() {
    let server = FakeNext::start(vec![Reply::Hang]).await;
    let mut sink = NextSink::new(NextSinkConfig {
        timeout: Duration::from_millis(200),
        ..next_config(&server, 1)
    })
    .expect("valid");
    let started = Instant::now();
    let err = sink.deliver(&items(1)).await.expect_err("timeout");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded wait");
    assert_eq!(assert_retryable(&err, 0), None);
    assert!(err.to_string().contains("no answer"), "{err}");
    assert!(err.to_string().contains("200ms"), "{err}");
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let mut sink = NextSink::new(NextSinkConfig::new(
        format!("http://127.0.0.1:{port}/v1"),
        "ts_1",
        TOKEN,
    ))
    .expect("valid");
    let err = sink.deliver(&items(2)).await.expect_err("refused");
    assert_retryable(&err, 0);
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn batch_mode_posts_one_json_document() {
    let server = FakeNext::start(vec![status(503), status(200)]).await;
    let mut sink = next_sink(&server, 3);
    assert_eq!(sink.max_batch(), 3);
    let batch = items(3);

    let err = sink.deliver(&batch).await.expect_err("503");
    assert_retryable(&err, 0);
    sink.deliver(&batch).await.expect("delivered");

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let req = &requests[1];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v1/teamspaces/ts_1/highlights:batch");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // Valid JSON, the items in order, and their bytes untouched.
    let doc: serde_json::Value = serde_json::from_slice(&req.body).expect("valid json");
    let sent = doc["highlights"].as_array().expect("an array");
    let expected: Vec<serde_json::Value> = batch
        .iter()
        .map(|d| serde_json::from_slice(&d.json).expect("json"))
        .collect();
    assert_eq!(sent, &expected);
    let mut raw = b"{\"highlights\":[".to_vec();
    raw.extend_from_slice(&batch[0].json);
    raw.push(b',');
    raw.extend_from_slice(&batch[1].json);
    raw.push(b',');
    raw.extend_from_slice(&batch[2].json);
    raw.extend_from_slice(b"]}");
    assert_eq!(req.body, raw);

    // The key: hex SHA-256 of the item keys joined by newlines; the same on the retry.
    let key = hex(&Sha256::digest(
        b"support:cnv_1:1\nsupport:cnv_2:1\nsupport:cnv_3:1",
    ));
    assert_eq!(req.header("idempotency-key"), Some(key.as_str()));
    assert_eq!(requests[0].header("idempotency-key"), Some(key.as_str()));
    assert_eq!(requests[0].body, req.body);
}

#[tokio::test]
async fn more_items_than_a_batch_go_in_several_requests() {
    let server = FakeNext::start(vec![status(200), status(500)]).await;
    let mut sink = next_sink(&server, 3);
    let err = sink
        .deliver(&items(7))
        .await
        .expect_err("second batch fails");
    assert_retryable(&err, 3);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let doc: serde_json::Value = serde_json::from_slice(&requests[1].body).expect("json");
    let ids: Vec<_> = doc["highlights"]
        .as_array()
        .expect("array")
        .iter()
        .map(|h| h["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, ["support:cnv_4", "support:cnv_5", "support:cnv_6"]);
}

#[tokio::test]
async fn refused_batch_falls_back_to_singles_and_rejects_only_the_bad_item() {
    let server = FakeNext::start(vec![
        answer(400, Vec::new(), r#"{"error":"item 2 invalid"}"#),
        status(201),
        status(409),
        answer(422, Vec::new(), r#"{"error":"title too long"}"#),
    ])
    .await;
    let mut sink = next_sink(&server, 4);
    let batch = items(4);
    let err = sink.deliver(&batch).await.expect_err("one bad item");
    let (status, excerpt) = assert_rejected(&err, 2);
    assert_eq!(status, Some(422));
    assert_eq!(excerpt, r#"{"error":"title too long"}"#);
    assert_eq!(
        err.to_string(),
        "next rejected highlight support:cnv_3:1: 422 unprocessable entity"
    );

    let requests = server.requests();
    assert_eq!(
        requests.len(),
        4,
        "the batch, then singles up to the bad one"
    );
    assert_eq!(requests[0].path, "/v1/teamspaces/ts_1/highlights:batch");
    for (req, d) in requests[1..].iter().zip(&batch) {
        assert_eq!(req.path, "/v1/teamspaces/ts_1/highlights");
        assert_eq!(req.header("idempotency-key"), Some(d.key().as_str()));
        assert_eq!(req.body, d.json);
    }

    // The daemon dead-letters item 2 and hands over the rest: the batch goes through.
    sink.deliver(&batch[3..]).await.expect("the rest");
}

#[tokio::test]
async fn fallback_stops_at_a_retryable_single() {
    let server = FakeNext::start(vec![
        status(413),
        status(201),
        answer(503, vec![("retry-after", "3".into())], ""),
    ])
    .await;
    let mut sink = next_sink(&server, 3);
    let err = sink.deliver(&items(3)).await.expect_err("503");
    assert_eq!(assert_retryable(&err, 1), Some(Duration::from_secs(3)));
    assert_eq!(server.requests().len(), 3);

    // A refused batch whose items all go through singly is delivered, and the next batch is
    // sent as a batch again.
    let server = FakeNext::start(vec![status(404), status(201), status(201), status(201)]).await;
    let mut sink = next_sink(&server, 3);
    sink.deliver(&items(6)).await.expect("all delivered");
    let paths: Vec<_> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/v1/teamspaces/ts_1/highlights:batch",
            "/v1/teamspaces/ts_1/highlights",
            "/v1/teamspaces/ts_1/highlights",
            "/v1/teamspaces/ts_1/highlights",
            "/v1/teamspaces/ts_1/highlights:batch",
        ]
    );
}

fn verify_signature(req: &Recorded) {
    let ts = req.header("x-frontsync-timestamp").expect("timestamp");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let ts_secs: u64 = ts.parse().expect("unix seconds");
    assert!(ts_secs.abs_diff(now) <= 5, "{ts} vs {now}");
    let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).expect("key");
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&req.body);
    let expected = format!("sha256={}", hex(&mac.finalize().into_bytes()));
    assert_eq!(req.header("x-frontsync-signature"), Some(expected.as_str()));
}

#[tokio::test]
async fn signed_requests_verify_independently() {
    let server = FakeNext::start(Vec::new()).await;
    let config = HttpSinkConfig {
        endpoint: format!("http://{}/hook?src=frontsync", server.addr),
        batch_endpoint: Some(format!("http://{}/hook/batch", server.addr)),
        headers: vec![("X-Api-Key".to_owned(), HEADER_SECRET.to_owned())],
        signing_secret: Some(SIGNING_SECRET.to_owned()),
        idempotency_header: false,
        ..HttpSinkConfig::default()
    };
    let mut single = HttpSink::new(config.clone()).expect("valid");
    assert_eq!(single.kind(), "http");
    single.deliver(&items(1)).await.expect("delivered");
    let mut batched = HttpSink::new(HttpSinkConfig {
        batch_size: 2,
        ..config
    })
    .expect("valid");
    batched.deliver(&items(2)).await.expect("delivered");

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/hook?src=frontsync");
    assert_eq!(requests[1].path, "/hook/batch");
    for req in &requests {
        verify_signature(req);
        assert_eq!(req.header("x-api-key"), Some(HEADER_SECRET));
        assert_eq!(req.header("idempotency-key"), None);
        assert_eq!(req.header("authorization"), None);
    }
}

#[tokio::test]
async fn secrets_never_show_in_debug_output() {
    let server = FakeNext::start(Vec::new()).await;
    let next_config = next_config(&server, 2);
    let next = NextSink::new(next_config.clone()).expect("valid");
    let http_config = HttpSinkConfig {
        endpoint: format!("http://{}/hook", server.addr),
        headers: vec![("X-Api-Key".to_owned(), HEADER_SECRET.to_owned())],
        bearer_token: Some(TOKEN.to_owned()),
        signing_secret: Some(SIGNING_SECRET.to_owned()),
        ..HttpSinkConfig::default()
    };
    let http = HttpSink::new(http_config.clone()).expect("valid");
    for shown in [
        format!("{next_config:?}"),
        format!("{next:?}"),
        format!("{http_config:?}"),
        format!("{http:?}"),
        format!("{next_config:#?} {next:#?} {http_config:#?} {http:#?}"),
    ] {
        for secret in [TOKEN, SIGNING_SECRET, HEADER_SECRET] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(!shown.contains("Bearer"), "{shown}");
    }
    assert!(format!("{next:?}").contains("ts_1"), "still useful");

    // Nor in configuration errors.
    for bad in [
        HttpSinkConfig {
            headers: vec![("X-Api-Key".to_owned(), format!("{HEADER_SECRET}\n"))],
            ..http_config.clone()
        },
        HttpSinkConfig {
            bearer_token: Some(format!("{TOKEN}\r\n")),
            ..http_config.clone()
        },
        HttpSinkConfig {
            headers: vec![("Authorization".to_owned(), HEADER_SECRET.to_owned())],
            ..http_config.clone()
        },
        HttpSinkConfig {
            batch_size: 2,
            ..http_config.clone()
        },
        HttpSinkConfig {
            endpoint: format!("http://user:{TOKEN}@{}/hook", server.addr),
            ..http_config.clone()
        },
    ] {
        let err = HttpSink::new(bad).expect_err("invalid");
        for secret in [TOKEN, SIGNING_SECRET, HEADER_SECRET] {
            assert!(!err.contains(secret), "{err}");
        }
    }
    let err = NextSink::new(NextSinkConfig {
        token: format!("{TOKEN}\n"),
        ..next_config
    })
    .expect_err("a newline in the token");
    assert!(!err.contains(TOKEN), "{err}");
}

#[tokio::test]
async fn path_template_is_validated_and_applied() {
    let server = FakeNext::start(Vec::new()).await;
    let mut sink = NextSink::new(NextSinkConfig {
        endpoint: format!("{}/", server.base()),
        path: Some("/spaces/{teamspace}/items".to_owned()),
        ..next_config(&server, 2)
    })
    .expect("valid");
    sink.deliver(&items(1)).await.expect("delivered");
    assert_eq!(server.requests()[0].path, "/v1/spaces/ts_1/items:batch");

    for (path, needle) in [
        ("/x/{team}/highlights", "{team}"),
        ("/x/{teamspace", "'{' without"),
        ("x/{teamspace}", "start with '/'"),
        ("/x/{teamspace}?a=b", "'?'"),
    ] {
        let config = NextSinkConfig {
            path: Some(path.to_owned()),
            ..next_config(&server, 1)
        };
        let err = config.validate().expect_err(path);
        assert!(err.contains(needle), "{path}: {err}");
        assert_eq!(NextSink::new(config).expect_err(path), err);
    }
    let fine = NextSinkConfig {
        path: Some("/teamspaces/{teamspace}/notes".to_owned()),
        ..next_config(&server, 1)
    };
    assert_eq!(fine.validate(), Ok(()));
}

#[tokio::test]
async fn health_check_is_an_authenticated_get_that_creates_nothing() {
    let server = FakeNext::start(vec![status(200), status(401), status(404)]).await;
    let sink = next_sink(&server, 1);
    // The daemon may run the check on another task.
    fn assert_send<T: Send>(t: T) -> T {
        t
    }
    assert_send(sink.health_check()).await.expect("healthy");
    let err = sink.health_check().await.expect_err("401");
    assert_clean(&err);
    assert!(err.to_string().contains("token rejected"), "{err}");
    let err = sink.health_check().await.expect_err("404");
    assert_clean(&err);
    assert!(err.to_string().contains("404"), "{err}");

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    for req in &requests {
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/v1/teamspaces/ts_1");
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert!(req.body.is_empty());
    }

    // The generic sink without a health endpoint only asks whether the receiver is there
    // and takes the credentials.
    let server = FakeNext::start(vec![status(405), status(403), status(500)]).await;
    let http =
        HttpSink::new(HttpSinkConfig::new(format!("http://{}/hook", server.addr))).expect("valid");
    http.health_check()
        .await
        .expect("405 still means reachable");
    let err = http.health_check().await.expect_err("403");
    assert!(err.to_string().contains("token rejected"), "{err}");
    let err = http.health_check().await.expect_err("500");
    assert!(err.is_retryable(), "{err}");
    assert!(server.requests().iter().all(|r| r.method == "HEAD"));

    drop(server);
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let sink = NextSink::new(NextSinkConfig::new(
        format!("http://127.0.0.1:{port}/v1"),
        "ts_1",
        TOKEN,
    ))
    .expect("valid");
    let err = sink.health_check().await.expect_err("refused");
    assert_clean(&err);
    assert!(err.to_string().contains("cannot connect"), "{err}");
}
