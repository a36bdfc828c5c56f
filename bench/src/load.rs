//! The load: pre-built, pre-signed rule webhooks sent over `C` keep-alive HTTP/1
//! connections (hyper's connection-level client, no pool, no per-request allocation beyond
//! the request head), closed-loop or paced open-loop, plus the JSONL tail that times each
//! Highlight line back to its webhook.

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use memchr::memmem;
use serde_json::json;

/// Not yet sent / not yet seen.
pub const NONE: u64 = u64::MAX;

/// Request bodies and their signatures, built before any timing starts.
pub struct Payloads {
    pub bodies: Vec<Bytes>,
    pub signatures: Vec<HeaderValue>,
}

impl Payloads {
    /// `n` distinct rule webhooks: event ids `evt_{tag}{i}`, conversation ids `cnv_{tag}{i}`.
    pub fn build(tag: &str, n: usize, secret: &[u8]) -> Payloads {
        let mut bodies = Vec::with_capacity(n);
        let mut signatures = Vec::with_capacity(n);
        for i in 0..n {
            let body = event_body(&format!("evt_{tag}{i}"), &format!("cnv_{tag}{i}"), i);
            let sig = frontsync::webhook::verify::sign_rule(secret, &body);
            signatures.push(HeaderValue::from_str(&sig).expect("base64 is a valid header"));
            bodies.push(Bytes::from(body));
        }
        Payloads { bodies, signatures }
    }

    pub fn len(&self) -> usize {
        self.bodies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty()
    }

    pub fn mean_body_bytes(&self) -> usize {
        self.bodies.iter().map(Bytes::len).sum::<usize>() / self.bodies.len().max(1)
    }
}

const PROSE: &str = "Hello team, I was charged twice for order 1042 on the 19th and again \
on the 20th. The second charge shows as pending on my card statement but the first one went \
through. Could you please refund the duplicate payment and confirm once it is done? My account email \
is the one I am writing from. Thanks a lot for your \
help, and have a nice weekend.";

/// A full Front `inbound` event of about 2 KB, shaped like Front's rule webhook body.
pub fn event_body(event_id: &str, conversation_id: &str, i: usize) -> Vec<u8> {
    let subject = format!("Refund for order {}", 1000 + i % 9000);
    let html = format!(
        "<div dir=\"ltr\"><p>{}</p><p>Best,<br>Ada</p></div>",
        PROSE.replace(". ", ".</p><p>")
    );
    let value = json!({
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
                "_links": { "self": format!("https://acme.api.frontapp.com/messages/msg_{i}") },
                "id": format!("msg_{event_id}"),
                "type": "email",
                "is_inbound": true,
                "created_at": 1763716443.012,
                "subject": subject,
                "blurb": &PROSE[..120],
                "body": html,
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
            "subject": subject,
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
    serde_json::to_vec(&value).expect("serializable")
}

/// How to send.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    pub concurrency: usize,
    /// Open loop: request `i` is due at `start + i / rate`. `None`: closed loop.
    pub rate: Option<f64>,
}

/// What one load run measured. Times are nanoseconds since `base`.
pub struct LoadResult {
    pub ok: usize,
    pub non_200: usize,
    pub errors: usize,
    /// First request sent to last answer received.
    pub elapsed: Duration,
    /// Send -> full 200 response, per acknowledged request.
    pub latencies_ns: Vec<u64>,
    /// Open loop only: actual send time minus due time, per request.
    pub lag_ns: Vec<u64>,
    /// When each request was sent (`NONE` if never).
    pub sent_ns: Arc<Vec<AtomicU64>>,
}

struct WorkerOut {
    ok: usize,
    non_200: usize,
    errors: usize,
    latencies: Vec<u64>,
    lag: Vec<u64>,
    last_ns: u64,
}

/// One keep-alive HTTP/1 connection's request handle.
pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens `n` connections (done before a run, so the run's clock and CPU window exclude it).
pub async fn connect_all(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Sender>> {
    let mut senders = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        senders.push(connect(addr).await?);
    }
    Ok(senders)
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends every payload once to `http://{addr}{path}` over `senders` (one worker each);
/// returns when all are answered.
pub async fn run(
    addr: SocketAddr,
    path: &str,
    senders: Vec<Sender>,
    payloads: Arc<Payloads>,
    spec: LoadSpec,
    base: Instant,
) -> anyhow::Result<LoadResult> {
    let n = payloads.len();
    let sent_ns: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(NONE)).collect());
    let host = HeaderValue::from_str(&addr.to_string())?;
    let path: Arc<str> = Arc::from(path);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let start_ns = start.duration_since(base).as_nanos() as u64;
    let mut tasks = Vec::with_capacity(senders.len());
    for sender in senders {
        let (payloads, sent_ns, next, host, path) = (
            payloads.clone(),
            sent_ns.clone(),
            next.clone(),
            host.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            worker(
                sender, addr, payloads, sent_ns, next, host, path, spec, start, base,
            )
            .await
        }));
    }
    let mut result = LoadResult {
        ok: 0,
        non_200: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_ns: Vec::with_capacity(n),
        lag_ns: Vec::new(),
        sent_ns,
        // filled below
    };
    let mut last_ns = start_ns;
    for t in tasks {
        let out = t.await.context("load worker panicked")?;
        result.ok += out.ok;
        result.non_200 += out.non_200;
        result.errors += out.errors;
        result.latencies_ns.extend(out.latencies);
        result.lag_ns.extend(out.lag);
        last_ns = last_ns.max(out.last_ns);
    }
    result.elapsed = Duration::from_nanos(last_ns - start_ns);
    Ok(result)
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    mut sender: Sender,
    addr: SocketAddr,
    payloads: Arc<Payloads>,
    sent_ns: Arc<Vec<AtomicU64>>,
    next: Arc<AtomicUsize>,
    host: HeaderValue,
    path: Arc<str>,
    spec: LoadSpec,
    start: Instant,
    base: Instant,
) -> WorkerOut {
    let mut out = WorkerOut {
        ok: 0,
        non_200: 0,
        errors: 0,
        latencies: Vec::with_capacity(payloads.len() / spec.concurrency.max(1) + 1),
        lag: Vec::new(),
        last_ns: 0,
    };
    let since_base = |t: Instant| t.duration_since(base).as_nanos() as u64;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= payloads.len() {
            break;
        }
        let due = spec
            .rate
            .map(|r| start + Duration::from_secs_f64(i as f64 / r));
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        if sender.ready().await.is_err() {
            // The server closed the connection: open a new one and carry on.
            out.errors += 1;
            match connect(addr).await {
                Ok(s) => sender = s,
                Err(_) => continue,
            }
        }
        let mut req = Request::new(Full::new(payloads.bodies[i].clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = match path.parse() {
            Ok(u) => u,
            Err(_) => break,
        };
        let h = req.headers_mut();
        h.insert(HOST, host.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("x-front-signature", payloads.signatures[i].clone());
        let t = Instant::now();
        if let Some(due) = due {
            out.lag
                .push(t.saturating_duration_since(due).as_nanos() as u64);
        }
        sent_ns[i].store(since_base(t), Ordering::Relaxed);
        match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.into_body().collect().await;
                let done = Instant::now();
                out.last_ns = out.last_ns.max(since_base(done));
                if body.is_err() {
                    out.errors += 1;
                } else if status == hyper::StatusCode::OK {
                    out.ok += 1;
                    out.latencies.push(done.duration_since(t).as_nanos() as u64);
                } else {
                    out.non_200 += 1;
                }
            }
            Err(_) => {
                out.errors += 1;
                out.last_ns = out.last_ns.max(since_base(Instant::now()));
            }
        }
    }
    out
}

/// Follows a JSONL file and records, per event index, when the line whose
/// `source.event_id` is `evt_{tag}{i}` appeared.
pub struct Tail {
    stop: Arc<AtomicBool>,
    seen: Arc<Vec<AtomicU64>>,
    count: Arc<AtomicUsize>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Tail {
    pub fn start(path: PathBuf, tag: &str, n: usize, base: Instant) -> Tail {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(NONE)).collect());
        let count = Arc::new(AtomicUsize::new(0));
        let needle = format!("\"event_id\":\"evt_{tag}");
        let handle = {
            let (stop, seen, count) = (stop.clone(), seen.clone(), count.clone());
            std::thread::Builder::new()
                .name("jsonl-tail".into())
                .spawn(move || follow(&path, &needle, base, &stop, &seen, &count))
                .expect("spawn tail thread")
        };
        Tail {
            stop,
            seen,
            count,
            handle: Some(handle),
        }
    }

    /// Lines matched so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until `want` lines were seen or `limit` passed; returns the per-index times.
    pub fn finish(mut self, want: usize, limit: Duration) -> anyhow::Result<Arc<Vec<AtomicU64>>> {
        let deadline = Instant::now() + limit;
        while self.count() < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join()
                .map_err(|_| anyhow::anyhow!("tail thread panicked"))??;
        }
        Ok(self.seen.clone())
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn follow(
    path: &Path,
    needle: &str,
    base: Instant,
    stop: &AtomicBool,
    seen: &[AtomicU64],
    count: &AtomicUsize,
) -> anyhow::Result<()> {
    let mut file = None;
    let mut pos = 0u64;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 20];
    let needle = memmem::FinderRev::new(needle.as_bytes());
    while !stop.load(Ordering::Relaxed) {
        if file.is_none() {
            file = std::fs::File::open(path).ok();
        }
        let Some(f) = file.as_mut() else {
            std::thread::sleep(Duration::from_micros(250));
            continue;
        };
        f.seek(SeekFrom::Start(pos))?;
        let got = f.read(&mut chunk)?;
        if got == 0 {
            std::thread::sleep(Duration::from_micros(250));
            continue;
        }
        let now = base.elapsed().as_nanos() as u64;
        pos += got as u64;
        buf.extend_from_slice(&chunk[..got]);
        let complete = match memchr::memrchr(b'\n', &buf) {
            Some(p) => p + 1,
            None => continue,
        };
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &buf[..complete]) {
            let line = &buf[start..end];
            start = end + 1;
            if let Some(i) = event_index(line, &needle)
                && let Some(slot) = seen.get(i)
                && slot
                    .compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        buf.drain(..complete);
    }
    Ok(())
}

/// The number right after `needle` in `line`.
fn event_index(line: &[u8], needle: &memmem::FinderRev<'_>) -> Option<usize> {
    // `source` is the last field of a Highlight line: search from the end.
    let at = needle.rfind(line)? + needle.needle().len();
    let digits = &line[at..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_event_index_in_a_highlight_line() {
        let line = br#"{"id":"support:cnv_b12","source":{"system":"front","event_id":"evt_b12","url":"x"}}"#;
        let finder = |n: &'static [u8]| memmem::FinderRev::new(n);
        assert_eq!(
            event_index(line, &finder(br#""event_id":"evt_b"#)),
            Some(12)
        );
        assert_eq!(event_index(line, &finder(br#""event_id":"evt_w"#)), None);
    }

    #[test]
    fn bodies_are_distinct_signed_and_about_2kb() {
        let p = Payloads::build("b", 3, b"k");
        assert_ne!(p.bodies[0], p.bodies[1]);
        let size = p.mean_body_bytes();
        assert!((1500..3000).contains(&size), "{size}");
        let sig = p.signatures[2].to_str().unwrap();
        assert!(frontsync::webhook::verify::verify_rule(b"k", &p.bodies[2], Some(sig)).is_ok());
        assert!(frontsync::front::model::parse_webhook_body(&p.bodies[0]).is_ok());
    }
}
