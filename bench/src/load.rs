//! The load: pre-built, pre-signed rule webhooks sent over `C` keep-alive HTTP/1
//! connections, closed-loop or paced open-loop, plus the JSONL tail that times each
//! Highlight line back to its webhook.
//!
//! The load generator shares the machine's 2 CPUs with the server it measures, so it does
//! as little as it can, like `wrk`: every request is built whole (head and body, one
//! buffer) before the clock starts and written with one `write`, and each answer is read
//! with `httparse` into a buffer the connection keeps. A hyper client did the same work
//! with a request and header map built per request, for about a fifth more CPU per
//! request, which the server then lacked (BENCHMARKS.md).

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use memchr::memmem;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Not yet sent / not yet seen.
pub const NONE: u64 = u64::MAX;

/// Request bodies and their signatures, built before any timing starts.
pub struct Payloads {
    pub bodies: Vec<Vec<u8>>,
    pub signatures: Vec<String>,
}

impl Payloads {
    /// `n` distinct rule webhooks: event ids `evt_{tag}{i}`, conversation ids `cnv_{tag}{i}`.
    pub fn build(tag: &str, n: usize, secret: &[u8]) -> Payloads {
        let mut bodies = Vec::with_capacity(n);
        let mut signatures = Vec::with_capacity(n);
        for i in 0..n {
            let body = event_body(&format!("evt_{tag}{i}"), &format!("cnv_{tag}{i}"), i);
            signatures.push(frontsync::webhook::verify::sign_rule(secret, &body));
            bodies.push(body);
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
        self.bodies.iter().map(Vec::len).sum::<usize>() / self.bodies.len().max(1)
    }

    /// Every webhook as the whole HTTP/1 request to `http://{addr}{path}`, head and body in
    /// one buffer.
    pub fn requests(&self, addr: SocketAddr, path: &str) -> Arc<Vec<Vec<u8>>> {
        let requests = self
            .bodies
            .iter()
            .zip(&self.signatures)
            .map(|(body, signature)| {
                let mut r = format!(
                    "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
                     x-front-signature: {signature}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(body);
                r
            })
            .collect();
        Arc::new(requests)
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

/// One keep-alive HTTP/1 connection and the buffer its answers are read into.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Why an exchange failed: the connection cannot carry another request.
#[derive(Debug)]
struct Broken;

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Writes `request` and reads the whole answer: its status, and whether the server
    /// will close the connection after it.
    async fn exchange(&mut self, request: &[u8]) -> Result<(u16, bool), Broken> {
        self.stream.write_all(request).await.map_err(|_| Broken)?;
        self.buf.clear();
        loop {
            self.fill().await?;
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut head = httparse::Response::new(&mut headers);
            let head_len = match head.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => continue,
                Err(_) => return Err(Broken),
            };
            let status = head.code.ok_or(Broken)?;
            let header = |name: &str| {
                head.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value)
            };
            // Both servers answer with a length; anything else is not read here.
            let body_len: usize = header("content-length")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse().ok())
                .ok_or(Broken)?;
            let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
            while self.buf.len() < head_len + body_len {
                self.fill().await?;
            }
            return Ok((status, close));
        }
    }

    /// Reads what the socket has into `buf`; the end of the stream is an error.
    async fn fill(&mut self) -> Result<(), Broken> {
        self.buf.reserve(4096);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => Err(Broken),
            Ok(_) => Ok(()),
        }
    }
}

/// Opens `n` connections (done before a run, so the run's clock and CPU window exclude it).
pub async fn connect_all(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        conns.push(Conn::open(addr).await?);
    }
    Ok(conns)
}

/// Sends every request once to `addr` over `conns` (one worker each); returns when all are
/// answered.
pub async fn run(
    addr: SocketAddr,
    conns: Vec<Conn>,
    requests: Arc<Vec<Vec<u8>>>,
    spec: LoadSpec,
    base: Instant,
) -> anyhow::Result<LoadResult> {
    let n = requests.len();
    let sent_ns: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(NONE)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let start_ns = start.duration_since(base).as_nanos() as u64;
    let mut tasks = Vec::with_capacity(conns.len());
    for conn in conns {
        let (requests, sent_ns, next) = (requests.clone(), sent_ns.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            worker(conn, addr, requests, sent_ns, next, spec, start, base).await
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
    conn: Conn,
    addr: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    sent_ns: Arc<Vec<AtomicU64>>,
    next: Arc<AtomicUsize>,
    spec: LoadSpec,
    start: Instant,
    base: Instant,
) -> WorkerOut {
    let mut out = WorkerOut {
        ok: 0,
        non_200: 0,
        errors: 0,
        latencies: Vec::with_capacity(requests.len() / spec.concurrency.max(1) + 1),
        lag: Vec::new(),
        last_ns: 0,
    };
    let since_base = |t: Instant| t.duration_since(base).as_nanos() as u64;
    let mut conn = Some(conn);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= requests.len() {
            break;
        }
        let due = spec
            .rate
            .map(|r| start + Duration::from_secs_f64(i as f64 / r));
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        // The server closed the last connection: open a new one and carry on.
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(addr).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    out.errors += 1;
                    continue;
                }
            },
        };
        let t = Instant::now();
        if let Some(due) = due {
            out.lag
                .push(t.saturating_duration_since(due).as_nanos() as u64);
        }
        sent_ns[i].store(since_base(t), Ordering::Relaxed);
        let answer = c.exchange(&requests[i]).await;
        let done = Instant::now();
        out.last_ns = out.last_ns.max(since_base(done));
        match answer {
            Ok((status, close)) => {
                if status == 200 {
                    out.ok += 1;
                    out.latencies.push(done.duration_since(t).as_nanos() as u64);
                } else {
                    out.non_200 += 1;
                }
                if close {
                    conn = None;
                }
            }
            Err(Broken) => {
                out.errors += 1;
                conn = None;
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
    let mut changes = Changes::new(path, Duration::from_millis(20));
    while !stop.load(Ordering::Relaxed) {
        if file.is_none() {
            file = std::fs::File::open(path).ok();
        }
        let Some(f) = file.as_mut() else {
            changes.wait();
            continue;
        };
        f.seek(SeekFrom::Start(pos))?;
        let got = f.read(&mut chunk)?;
        if got == 0 {
            changes.wait();
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

/// Wakes the tail when something is written in the JSONL file's directory (inotify).
///
/// Polling the file every 250 us (up to 4,000 wake-ups a second) cost the load generator a
/// fifth of its CPU at saturation, taken from the 2 CPUs the daemon runs on, while the
/// baseline run has no tail at all. Where inotify cannot be set up (the
/// directory does not exist yet), it falls back to that polling until it can.
struct Changes {
    dir: PathBuf,
    /// The longest one wait blocks, so that the caller sees its stop flag.
    idle: Duration,
    /// The inotify descriptor, -1 if it could not be created.
    fd: libc::c_int,
    watching: bool,
}

impl Changes {
    fn new(file: &Path, idle: Duration) -> Changes {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // SAFETY: no pointers; the descriptor is owned by this value and closed on drop.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        Changes {
            dir,
            idle,
            fd,
            watching: false,
        }
    }

    /// Returns once the directory changed since the last call (or after `idle`), or after
    /// 250 us while there is no watch. The call that sets the watch up returns at once.
    fn wait(&mut self) {
        if !self.watching {
            self.watching = self.fd >= 0 && self.add_watch();
            if !self.watching {
                std::thread::sleep(Duration::from_micros(250));
            }
            // A write between the caller's last read and the watch would go unnoticed:
            // the caller reads once more before waiting on it.
            return;
        }
        let mut pollfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let timeout = self.idle.as_millis().min(i32::MAX as u128) as i32;
        unsafe { libc::poll(&mut pollfd, 1, timeout) };
        // Drain the queued events: only "something changed" matters.
        let mut events = [0u8; 4096];
        loop {
            // SAFETY: reads at most `events.len()` bytes into `events`.
            let n = unsafe { libc::read(self.fd, events.as_mut_ptr().cast(), events.len()) };
            if n <= 0 {
                break;
            }
        }
    }

    fn add_watch(&self) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let Ok(dir) = std::ffi::CString::new(self.dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: `dir` is a NUL-terminated path that outlives the call.
        let wd = unsafe {
            libc::inotify_add_watch(
                self.fd,
                dir.as_ptr(),
                libc::IN_MODIFY | libc::IN_CREATE | libc::IN_MOVED_TO,
            )
        };
        wd >= 0
    }
}

impl Drop for Changes {
    fn drop(&mut self) {
        if self.fd >= 0 {
            // SAFETY: the descriptor is this value's own and not used after this.
            unsafe { libc::close(self.fd) };
        }
    }
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
    fn the_tail_times_lines_written_after_it_started_into_a_file_not_yet_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("highlights.jsonl");
        let base = Instant::now();
        let tail = Tail::start(path.clone(), "t", 3, base);
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            std::thread::sleep(Duration::from_millis(30));
            let mut f = std::fs::File::create(&path).unwrap();
            // When each line became whole, by index.
            let mut whole = [0u64; 3];
            for i in [2, 0, 1] {
                // Half a line, then the rest: only whole lines count.
                let line = format!("{{\"source\":{{\"event_id\":\"evt_t{i}\"}}}}\n");
                let (a, b) = line.as_bytes().split_at(10);
                f.write_all(a).unwrap();
                std::thread::sleep(Duration::from_millis(15));
                whole[i] = base.elapsed().as_nanos() as u64;
                f.write_all(b).unwrap();
                std::thread::sleep(Duration::from_millis(15));
            }
            whole
        });
        let whole = writer.join().unwrap();
        let seen = tail.finish(3, Duration::from_secs(10)).unwrap();
        let times: Vec<u64> = seen.iter().map(|t| t.load(Ordering::Relaxed)).collect();
        for (i, (&t, &w)) in times.iter().zip(&whole).enumerate() {
            // Timed when whole, not when its first half arrived 15 ms earlier.
            assert!(t != NONE && t >= w, "line {i}: seen {t}, whole at {w}");
        }
        // Written in the order 2, 0, 1, 30 ms apart: seen in that order.
        assert!(times[2] < times[0] && times[0] < times[1], "{times:?}");
    }

    #[test]
    fn a_write_in_the_folder_ends_the_wait_long_before_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("highlights.jsonl");
        let idle = Duration::from_secs(30);
        let mut changes = Changes::new(&path, idle);
        changes.wait(); // sets the watch up and returns at once
        assert!(
            changes.watching,
            "inotify watch on {}",
            dir.path().display()
        );
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            std::fs::write(&path, b"x\n").unwrap();
        });
        let started = Instant::now();
        changes.wait();
        let waited = started.elapsed();
        writer.join().unwrap();
        // Without the wake-up this waits the whole 30 s.
        assert!(waited < idle / 3, "waited {waited:?}");
    }

    #[test]
    fn bodies_are_distinct_signed_and_about_2kb() {
        let p = Payloads::build("b", 3, b"k");
        assert_ne!(p.bodies[0], p.bodies[1]);
        let size = p.mean_body_bytes();
        assert!((1500..3000).contains(&size), "{size}");
        let sig = &p.signatures[2];
        assert!(frontsync::webhook::verify::verify_rule(b"k", &p.bodies[2], Some(sig)).is_ok());
        assert!(frontsync::front::model::parse_webhook_body(&p.bodies[0]).is_ok());
    }

    /// Reads one whole request (head and body) from `stream`.
    async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed mid-request");
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = req.parse(&buf) {
                let len: usize = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .unwrap();
                if buf.len() >= head + len {
                    return buf;
                }
            }
        }
    }

    #[tokio::test]
    async fn a_request_goes_whole_and_answers_are_read_whatever_their_pieces() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let payloads = Payloads::build("t", 3, b"k");
        let requests = payloads.requests(addr, "/webhooks/front/acme");
        let expected = requests.clone();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // The first answer in three pieces, split inside the head and the body.
            assert_eq!(read_request(&mut s).await, expected[0]);
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
            for piece in [&answer[..10], &answer[10..40], &answer[40..]] {
                s.write_all(piece).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(read_request(&mut s).await, expected[1]);
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            // Closes: the next exchange on this connection fails.
        });
        let mut conn = Conn::open(addr).await.unwrap();
        assert_eq!(conn.exchange(&requests[0]).await.unwrap(), (200, false));
        assert_eq!(conn.exchange(&requests[1]).await.unwrap(), (503, true));
        server.await.unwrap();
        assert!(conn.exchange(&requests[2]).await.is_err());
        // The request is the body after a head naming its length and signature.
        let text = String::from_utf8_lossy(&requests[2]).into_owned();
        assert!(text.starts_with("POST /webhooks/front/acme HTTP/1.1\r\n"));
        assert!(text.contains(&format!(
            "x-front-signature: {}\r\n",
            payloads.signatures[2]
        )));
        assert!(text.contains(&format!("content-length: {}\r\n", payloads.bodies[2].len())));
        assert!(requests[2].ends_with(&payloads.bodies[2]));
    }

    #[tokio::test]
    async fn an_answer_without_a_length_is_a_broken_exchange() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
                .await
                .unwrap();
        });
        let requests = Payloads::build("t", 1, b"k").requests(addr, "/x");
        let mut conn = Conn::open(addr).await.unwrap();
        assert!(conn.exchange(&requests[0]).await.is_err());
        server.await.unwrap();
    }
}
