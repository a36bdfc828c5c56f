//! Wiring and lifecycle: open the state, start the writer, one task per sink, the Front
//! pollers, bind the listeners, report ready; reload on request; and on shutdown stop in
//! the order that loses nothing:
//!
//! 1. stop intake: webhooks answer 503, listeners close once in-flight requests finish,
//!    pollers stop between pages (a page is committed with its cursor or not at all);
//! 2. let each sink deliver what its outbox holds (bounded by [`GRACE_PERIOD`]);
//! 3. drop the last writer handle so the writer commits what is queued, and join it.
//!
//! Anything not delivered by then stays in the outbox for the next start.
//!
//! **Reload** (SIGHUP) reads the config file again. An invalid one is refused, its errors
//! logged, and the running config stays. A valid one is applied without dropping an event:
//! secrets are re-read, routing is swapped between two commits, every sink task finishes its
//! delivery in progress and is replaced (so JSONL files are reopened: logrotate works with a
//! plain HUP), pollers stop between pages and restart (re-resolving inbox names), and a
//! listener whose address changed is re-bound. The state path cannot change on reload.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use frontsync_sinks::Sink;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::AdminState;
use crate::config::{Config, SinkConfig};
use crate::front::client::{ClientOptions, FrontClient};
use crate::front::oauth::{OAuthApp, OAuthSource, Persist};
use crate::front::poller::{Connection, PollStatus, run_enricher};
use crate::front::ratelimit::RateLimiter;
use crate::http::ServeOptions;
use crate::ingest::{InboxNames, SharedRouting, SinkBell, Writer, spawn_writer};
use crate::outbox::{SinkCtx, SinkStats, SinkTask};
use crate::store::Store;
use crate::webhook::{ConnectionSecrets, WebhookState};

/// How long a seen event id is remembered for dedupe. Webhooks are not redelivered after
/// days and the poller's cursor never moves back, so older marks only cost disk.
pub const SEEN_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long sinks may keep delivering after intake stopped, at shutdown.
pub const GRACE_PERIOD: Duration = Duration::from_secs(20);

/// Why `run` failed; decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration (or a secret it names) is unusable: exit 2, do not restart.
    #[error("{0}")]
    Config(String),
    /// Anything else: exit 1.
    #[error(transparent)]
    Failure(#[from] anyhow::Error),
}

impl RunError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(_) => 2,
            RunError::Failure(_) => 1,
        }
    }
}

/// Addresses actually bound (ports may have been 0 in the config).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub webhook: Option<SocketAddr>,
    pub admin: SocketAddr,
}

/// What the daemon is asked to do besides running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Read the config file again and apply it.
    Reload,
}

/// A bound listener and how to stop it.
struct Listener {
    addr: SocketAddr,
    configured: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// One running sink task.
struct RunningSink {
    retire: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

/// The running daemon: everything a reload may replace.
struct Daemon {
    config: Config,
    store: Store,
    writer: Writer,
    bell: Arc<SinkBell>,
    names: Arc<InboxNames>,
    routing: SharedRouting,
    admin: Arc<AdminState>,
    webhook_state: Arc<WebhookState>,
    sinks: BTreeMap<String, RunningSink>,
    sink_stats: BTreeMap<String, Arc<SinkStats>>,
    /// Cancelled once intake stopped at shutdown: sinks deliver what is left, then end.
    drain: CancellationToken,
    /// Cancelled when the grace period ran out: sinks stop even mid-delivery.
    stop_sinks: CancellationToken,
    /// The current generation of pollers and enrichers.
    fronts: (CancellationToken, TaskTracker),
    webhook: Option<Listener>,
    admin_listener: Listener,
    /// Connections of every listener generation, so shutdown waits for all of them.
    conns: TaskTracker,
    /// Cancelled at shutdown: webhooks answer 503.
    intake_stop: CancellationToken,
}

/// Runs the daemon until `shutdown` is cancelled, applying [`Control`] requests as they
/// come. `on_ready` is called once listeners are bound and the state is open.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    mut control: mpsc::UnboundedReceiver<Control>,
    on_ready: impl FnOnce(Bound),
) -> Result<(), RunError> {
    let secret_errors = config.check_secrets();
    if !secret_errors.is_empty() {
        return Err(RunError::Config(secret_errors.join("\n")));
    }
    let store = {
        let path = config.state.path.clone();
        tokio::task::spawn_blocking(move || Store::open(&path))
            .await
            .context("state database task failed")?
            .context("cannot open the state database")?
    };
    tracing::info!(path = %store.path().display(), "state database open");

    let names = Arc::new(InboxNames::default());
    let routing: SharedRouting =
        Arc::new(RwLock::new(Arc::new(names.routing(&config.subscriptions))));
    let bell = Arc::new(SinkBell::default());
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let (writer, writer_thread) = spawn_writer(
        store.clone(),
        routing.clone(),
        bell.clone(),
        metrics.clone(),
    )
    .context("cannot start the state writer")?;

    let intake_stop = CancellationToken::new();
    let webhook_state = Arc::new(WebhookState {
        connections: RwLock::new(Arc::new(connection_secrets(&config)?)),
        writer: writer.clone(),
        max_body_bytes: config
            .webhook
            .as_ref()
            .map(|w| w.max_body_bytes)
            .unwrap_or(1 << 20)
            .into(),
        draining: intake_stop.clone(),
        outcomes: Mutex::new(BTreeMap::new()),
        preview_warned: Mutex::new(Default::default()),
    });
    let admin = Arc::new(AdminState {
        store: store.clone(),
        writer: writer.clone(),
        ready: Default::default(),
        sinks: RwLock::new(BTreeMap::new()),
        subscriptions: RwLock::new(
            config
                .subscriptions
                .iter()
                .map(|s| s.name.clone())
                .collect(),
        ),
        webhook: config.webhook.as_ref().map(|_| webhook_state.clone()),
        polls: Arc::new(PollStatus::default()),
        metrics,
        limiters: RwLock::new(BTreeMap::new()),
        oauth: RwLock::new(BTreeMap::new()),
        started: std::time::Instant::now(),
    });
    let conns = TaskTracker::new();
    let admin_listener = bind_admin(config.admin.listen, &admin, &conns).await?;
    let mut daemon = Daemon {
        store,
        writer,
        bell,
        names,
        routing,
        admin,
        webhook_state,
        sinks: BTreeMap::new(),
        sink_stats: BTreeMap::new(),
        drain: CancellationToken::new(),
        stop_sinks: CancellationToken::new(),
        fronts: (CancellationToken::new(), TaskTracker::new()),
        webhook: None,
        admin_listener,
        conns,
        intake_stop,
        config,
    };
    daemon.start_sinks()?;
    daemon.start_fronts()?;
    daemon.webhook = match &daemon.config.webhook {
        Some(wh) => Some(daemon.bind_webhook(wh.listen, wh).await?),
        None => None,
    };

    daemon.admin.ready.store(true, Ordering::Release);
    tracing::info!(
        subscriptions = daemon.config.subscriptions.len(),
        sinks = daemon.config.sinks.len(),
        "ready"
    );
    on_ready(daemon.bound());
    notify_ready(&daemon.config, "serving");
    let watchdog = crate::notify::watchdog_interval().map(|every| {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => { let _ = crate::notify::watchdog(); }
                    _ = stop.cancelled() => return,
                }
            }
        })
    });

    let pruner = {
        let writer = daemon.writer.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            // Not at start: a pass reads every seen id, and a restart is a busy moment.
            let first = tokio::time::Instant::now() + PRUNE_FIRST_AFTER;
            let mut tick = tokio::time::interval_at(first, PRUNE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => prune_seen(&writer).await,
                    _ = stop.cancelled() => return,
                }
            }
        })
    };

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(request) = control.recv() => match request {
                Control::Reload => daemon.reload().await,
            },
        }
    }

    if let Err(e) = crate::notify::stopping() {
        tracing::warn!(error = %e, "cannot notify systemd of stopping");
    }
    drop(watchdog);
    let _ = pruner.await;
    daemon.shutdown(writer_thread).await;
    Ok(())
}

/// When old seen ids are pruned: a while after start, then hourly.
const PRUNE_FIRST_AFTER: Duration = Duration::from_secs(10 * 60);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Seen ids looked at per prune commit: a few milliseconds of writer time, so intake never
/// waits long behind a prune.
const PRUNE_SCAN_PER_COMMIT: usize = 20_000;

/// Forgets seen event ids older than [`SEEN_RETENTION`]: one pass over all of them, in
/// bounded commits.
async fn prune_seen(writer: &Writer) {
    let cutoff = crate::ingest::now_ms().saturating_sub(SEEN_RETENTION.as_millis() as u64);
    let (mut after, mut total) = (None, 0);
    loop {
        match writer
            .prune_seen(cutoff, after.take(), PRUNE_SCAN_PER_COMMIT)
            .await
        {
            Ok(step) => {
                total += step.removed;
                match step.resume_after {
                    Some(key) => after = Some(key),
                    None => break,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot prune old seen event ids");
                break;
            }
        }
    }
    if total > 0 {
        tracing::info!(pruned = total, "forgot seen event ids older than 30 days");
    }
}

fn notify_ready(config: &Config, what: &str) {
    let summary = format!(
        "{what}: {} subscriptions, {} sinks",
        config.subscriptions.len(),
        config.sinks.len()
    );
    if let Err(e) = crate::notify::ready(Some(&summary)) {
        tracing::warn!(error = %e, "cannot notify systemd of readiness");
    }
}

async fn bind_admin(
    addr: SocketAddr,
    admin: &Arc<AdminState>,
    conns: &TaskTracker,
) -> Result<Listener, RunError> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for admin requests on {addr}"))?;
    let bound = listener.local_addr().context("admin listener address")?;
    let stop = CancellationToken::new();
    let admin = admin.clone();
    let handler = Arc::new(move |req, peer| crate::admin::handle(admin.clone(), req, peer));
    let opts = ServeOptions {
        header_timeout: Duration::from_secs(10),
        max_connections: 64,
    };
    let task = tokio::spawn(crate::http::serve(
        listener,
        "admin",
        opts,
        handler,
        stop.clone(),
        conns.clone(),
    ));
    tracing::info!(listener = "admin", addr = %bound, "listening");
    Ok(Listener {
        addr: bound,
        configured: addr,
        stop,
        task,
    })
}

impl Daemon {
    fn bound(&self) -> Bound {
        Bound {
            webhook: self.webhook.as_ref().map(|l| l.addr),
            admin: self.admin_listener.addr,
        }
    }

    async fn bind_webhook(
        &self,
        addr: SocketAddr,
        wh: &crate::config::WebhookConfig,
    ) -> Result<Listener, RunError> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for webhooks on {addr}"))?;
        let bound = listener.local_addr().context("webhook listener address")?;
        let stop = CancellationToken::new();
        let state = self.webhook_state.clone();
        let handler = Arc::new(move |req, peer| crate::webhook::handle(state.clone(), req, peer));
        let opts = ServeOptions {
            header_timeout: wh.header_timeout,
            max_connections: wh.max_connections,
        };
        let task = tokio::spawn(crate::http::serve(
            listener,
            "webhook",
            opts,
            handler,
            stop.clone(),
            self.conns.clone(),
        ));
        tracing::info!(listener = "webhook", addr = %bound, "listening");
        Ok(Listener {
            addr: bound,
            configured: addr,
            stop,
            task,
        })
    }

    /// Builds and starts one task per configured sink (first, before anything is routed).
    fn start_sinks(&mut self) -> Result<(), RunError> {
        let mut built = Vec::new();
        for (name, sink_config) in &self.config.sinks {
            let sink = build_sink(name, sink_config)
                .with_context(|| format!("cannot start sink {name:?}"))?;
            built.push((name.clone(), sink));
        }
        for (name, sink) in built {
            self.spawn_sink(name, sink);
        }
        self.publish_sink_stats();
        Ok(())
    }

    fn spawn_sink(&mut self, name: String, sink: Box<dyn Sink>) {
        let stats = self.sink_stats.entry(name.clone()).or_default().clone();
        let retire = CancellationToken::new();
        let task = SinkTask {
            sink,
            ctx: SinkCtx {
                name: name.clone(),
                store: self.store.clone(),
                writer: self.writer.clone(),
                bell: self.bell.clone(),
                stats,
                drain: self.drain.clone(),
                stop: self.stop_sinks.clone(),
                retire: retire.clone(),
            },
        };
        let handle = tokio::spawn(task.run());
        self.sinks.insert(name, RunningSink { retire, handle });
    }

    fn publish_sink_stats(&self) {
        let current: BTreeMap<_, _> = self
            .sink_stats
            .iter()
            .filter(|(name, _)| self.sinks.contains_key(*name))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        match self.admin.sinks.write() {
            Ok(mut m) => *m = current,
            Err(p) => *p.into_inner() = current,
        }
    }

    /// Starts a poller and a preview enricher per connection with a token or an OAuth app.
    fn start_fronts(&mut self) -> Result<(), RunError> {
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let all_subscriptions = Arc::new(self.config.subscriptions.clone());
        let mut limiters = BTreeMap::new();
        let previous_sources = match self.admin.oauth.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut sources = BTreeMap::new();
        for (name, front) in &self.config.front {
            let client = if let Some(token) = &front.token {
                let token = token
                    .resolve()
                    .map_err(|e| RunError::Config(format!("[front.{name}] token: {e}")))?;
                let limiter = RateLimiter::new(front.rate_limit_rpm);
                limiters.insert(name.clone(), limiter.clone());
                FrontClient::new(name, &front.api_base, token, limiter)
                    .map_err(|e| RunError::Config(format!("[front.{name}]: {e}")))?
            } else if let Some(oauth) = &front.oauth {
                let source = self.oauth_source(name, oauth, previous_sources.get(name))?;
                sources.insert(name.clone(), source.clone());
                // OAuth apps have their own bucket (120 rpm by default).
                let limiter = RateLimiter::new(front.rate_limit_rpm);
                limiters.insert(name.clone(), limiter.clone());
                FrontClient::with_oauth(
                    name,
                    &front.api_base,
                    source,
                    limiter,
                    ClientOptions::default(),
                )
                .map_err(|e| RunError::Config(format!("[front.{name}]: {e}")))?
            } else {
                continue;
            };
            tracker.spawn(run_enricher(
                name.clone(),
                client.clone(),
                self.store.clone(),
                self.writer.clone(),
                self.bell.clone(),
                stop.clone(),
            ));
            let subscriptions: Vec<_> = self
                .config
                .subscriptions
                .iter()
                .filter(|s| &s.front == name)
                .cloned()
                .collect();
            if subscriptions.is_empty() {
                continue;
            }
            let connection = Connection {
                name: name.clone(),
                client,
                subscriptions,
                all_subscriptions: all_subscriptions.clone(),
                names: self.names.clone(),
                routing: self.routing.clone(),
                store: self.store.clone(),
                writer: self.writer.clone(),
                status: self.admin.polls.clone(),
                stop: stop.clone(),
            };
            tracker.spawn(connection.run());
        }
        tracker.close();
        self.fronts = (stop, tracker);
        match self.admin.limiters.write() {
            Ok(mut l) => *l = limiters,
            Err(p) => *p.into_inner() = limiters,
        }
        match self.admin.oauth.write() {
            Ok(mut o) => *o = sources,
            Err(p) => *p.into_inner() = sources,
        }
        Ok(())
    }

    /// The token source of an OAuth connection. The running one is kept across a reload
    /// when the app is unchanged: it may hold a refreshed grant still being committed, and
    /// a second source would refresh from the same stored grant.
    fn oauth_source(
        &self,
        name: &str,
        oauth: &crate::config::OAuthConfig,
        previous: Option<&Arc<OAuthSource>>,
    ) -> Result<Arc<OAuthSource>, RunError> {
        let app = OAuthApp::from_config(oauth).map_err(|e| {
            RunError::Config(format!("[front.{name}] auth.oauth.client_secret: {e}"))
        })?;
        if let Some(previous) = previous
            && *previous.app() == app
        {
            return Ok(previous.clone());
        }
        OAuthSource::new(
            name,
            &self.config.source_path,
            app,
            self.store.clone(),
            Persist::Writer(self.writer.clone()),
        )
        .map_err(|e| RunError::Config(format!("[front.{name}]: {e}")))
    }

    /// SIGHUP: validate the file again; apply it or keep the running config.
    async fn reload(&mut self) {
        let _ = crate::notify::reloading();
        match self.try_reload().await {
            Ok(()) => {
                tracing::info!(
                    subscriptions = self.config.subscriptions.len(),
                    sinks = self.config.sinks.len(),
                    "configuration reloaded"
                );
                notify_ready(&self.config, "reloaded");
            }
            Err(errors) => {
                for e in errors.lines() {
                    tracing::error!(error = %e, "reload refused; still running on the previous configuration");
                }
                notify_ready(&self.config, "reload refused");
                let _ = crate::notify::status("reload refused: see the log");
            }
        }
    }

    async fn try_reload(&mut self) -> Result<(), String> {
        let path = self.config.source_path.clone();
        let new = tokio::task::spawn_blocking(move || crate::config::load(&path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|errors| errors.to_string())?;
        let secret_errors = new.check_secrets();
        if !secret_errors.is_empty() {
            return Err(secret_errors.join("\n"));
        }
        if new.state.path != self.config.state.path {
            return Err(format!(
                "[state] path cannot change on reload ({} -> {}); restart to move the state",
                self.config.state.path.display(),
                new.state.path.display()
            ));
        }
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        // Everything that can fail without side effects first: secrets and sink settings.
        let secrets = connection_secrets(&new).map_err(|e| e.to_string())?;
        for (name, sink_config) in &new.sinks {
            precheck_sink(name, sink_config)?;
        }
        // Listeners whose address changed are bound before anything is switched over.
        let new_webhook = match (&new.webhook, &self.webhook) {
            (Some(wh), Some(old)) if old.configured == wh.listen => None,
            (Some(wh), _) => Some(
                self.bind_webhook(wh.listen, wh)
                    .await
                    .map_err(|e| format!("{e:#}"))?,
            ),
            (None, _) => None,
        };
        let new_admin = if new.admin.listen != self.admin_listener.configured {
            Some(
                bind_admin(new.admin.listen, &self.admin, &self.conns)
                    .await
                    .map_err(|e| format!("{e:#}"))?,
            )
        } else {
            None
        };

        // Switch over. Webhook intake keeps running throughout.
        match self.webhook_state.connections.write() {
            Ok(mut c) => *c = Arc::new(secrets),
            Err(p) => *p.into_inner() = Arc::new(secrets),
        }
        if let Some(wh) = &new.webhook {
            self.webhook_state
                .max_body_bytes
                .store(wh.max_body_bytes, Ordering::Relaxed);
        }
        if let Some(listener) = new_webhook {
            if let Some(old) = self.webhook.replace(listener) {
                old.stop.cancel();
            }
        } else if new.webhook.is_none()
            && let Some(old) = self.webhook.take()
        {
            old.stop.cancel();
            tracing::info!("webhook listener closed ([webhook] removed)");
        }
        if let Some(listener) = new_admin {
            let old = std::mem::replace(&mut self.admin_listener, listener);
            old.stop.cancel();
        }

        // Pollers stop between pages, then restart on the new config.
        let (stop, tracker) = &self.fronts;
        stop.cancel();
        tracker.wait().await;
        // A refresh outlives its poller: let it commit before a replaced source (a changed
        // app) starts from the stored grant.
        let sources: Vec<_> = match self.admin.oauth.read() {
            Ok(m) => m.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        };
        for source in sources {
            let _ = tokio::time::timeout(Duration::from_secs(30), source.idle()).await;
        }
        self.config = new;
        let routing = Arc::new(self.names.routing(&self.config.subscriptions));
        match self.routing.write() {
            Ok(mut r) => *r = routing,
            Err(p) => *p.into_inner() = routing,
        }
        match self.admin.subscriptions.write() {
            Ok(mut s) => {
                *s = self
                    .config
                    .subscriptions
                    .iter()
                    .map(|s| s.name.clone())
                    .collect()
            }
            Err(p) => {
                *p.into_inner() = self
                    .config
                    .subscriptions
                    .iter()
                    .map(|s| s.name.clone())
                    .collect()
            }
        }

        // Sinks: each finishes its delivery in progress, then its replacement takes over
        // the same outbox (a removed sink's outbox stays on disk, untouched).
        for (name, running) in std::mem::take(&mut self.sinks) {
            running.retire.cancel();
            if running.handle.await.is_err() {
                tracing::warn!(sink = %name, "sink task ended abnormally during reload");
            }
            if !self.config.sinks.contains_key(&name) {
                tracing::info!(sink = %name, "sink removed; its undelivered outbox stays in the state file");
            }
        }
        // Opened only now: a JSONL sink repairs a torn tail on open, which must not race
        // the old task's last write.
        let configs: Vec<_> = self
            .config
            .sinks
            .iter()
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect();
        for (name, sink_config) in configs {
            match build_sink(&name, &sink_config) {
                Ok(sink) => self.spawn_sink(name, sink),
                Err(e) => tracing::error!(
                    sink = %name,
                    error = format!("{e:#}"),
                    "cannot reopen sink after reload; its outbox keeps filling on disk; fix it and reload again"
                ),
            }
        }
        self.publish_sink_stats();
        self.start_fronts().map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn shutdown(self, writer_thread: std::thread::JoinHandle<()>) {
        tracing::info!("shutting down: intake stopped, delivering what is queued");
        let deadline = tokio::time::Instant::now() + GRACE_PERIOD;

        // 1. Intake: webhooks answer 503 while their listener closes; pollers stop.
        self.intake_stop.cancel();
        if let Some(l) = &self.webhook {
            l.stop.cancel();
        }
        self.fronts.0.cancel();
        if let Some(l) = self.webhook {
            let _ = l.task.await;
        }
        if tokio::time::timeout_at(deadline, self.fronts.1.wait())
            .await
            .is_err()
        {
            tracing::warn!("pollers still busy at the end of the grace period");
        }
        // An OAuth refresh outlives its poller (it runs in its own task): let it commit,
        // through the writer that is still running, rather than lose a rotated token.
        let sources: Vec<_> = match self.admin.oauth.read() {
            Ok(m) => m.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        };
        for source in sources {
            if tokio::time::timeout_at(deadline, source.idle())
                .await
                .is_err()
            {
                tracing::warn!(connection = %source.connection(), "an oauth refresh is still under way at the end of the grace period");
            }
        }
        // 2. Sinks drain what is committed.
        self.drain.cancel();
        let mut handles = Vec::new();
        for (_, running) in self.sinks {
            handles.push(running.handle);
        }
        let all = futures_join(handles);
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            tracing::warn!(
                "sinks did not finish within the grace period; the rest stays queued for the next start"
            );
            self.stop_sinks.cancel();
        }
        // 3. Admin last (status stays readable while draining), then the writer.
        self.admin_listener.stop.cancel();
        let _ = self.admin_listener.task.await;
        self.conns.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conns.wait()).await;
        drop(self.writer);
        drop(self.webhook_state);
        drop(self.admin);
        // Bounded: a task stuck past the grace period may still hold a writer handle.
        let joined = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::task::spawn_blocking(move || writer_thread.join()),
        )
        .await;
        if joined.is_err() {
            tracing::warn!(
                "the state writer did not stop in time; exiting anyway (nothing acknowledged is lost)"
            );
        }
        tracing::info!("stopped cleanly");
    }
}

/// Waits for every handle (ignoring panics, which are logged by the runtime).
async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

fn connection_secrets(config: &Config) -> Result<HashMap<String, ConnectionSecrets>, RunError> {
    let mut out = HashMap::new();
    for (name, front) in &config.front {
        let resolve = |s: &Option<crate::secret::Secret>, key: &str| -> Result<_, RunError> {
            s.as_ref()
                .map(|s| s.resolve())
                .transpose()
                .map_err(|e| RunError::Config(format!("[front.{name}] {key}: {e}")))
        };
        out.insert(
            name.clone(),
            ConnectionSecrets {
                rule: resolve(&front.rule_webhook_secret, "rule_webhook_secret")?,
                app: resolve(&front.app_webhook_secret, "app_webhook_secret")?,
                can_enrich: front.has_api_access(),
            },
        );
    }
    Ok(out)
}

/// Checks a sink's settings without opening it (reload validates before switching over).
fn precheck_sink(name: &str, config: &SinkConfig) -> Result<(), String> {
    match config {
        SinkConfig::Stdout => Ok(()),
        SinkConfig::Jsonl(c) => {
            frontsync_sinks::jsonl::check_writable(&c.path).map_err(|e| format!("sink {name}: {e}"))
        }
        SinkConfig::Next(c) => {
            let token = c
                .token
                .resolve()
                .map_err(|e| format!("sink {name}: token: {e}"))?;
            frontsync_sinks::next::NextSink::new(next_config(c, token.expose()))
                .map(|_| ())
                .map_err(|e| format!("sink {name}: {e}"))
        }
    }
}

/// Opens one sink from its configuration.
pub fn build_sink(name: &str, config: &SinkConfig) -> anyhow::Result<Box<dyn Sink>> {
    use frontsync_sinks::jsonl::{JsonlSink, JsonlSinkConfig};
    use frontsync_sinks::next::NextSink;
    use frontsync_sinks::stdout::StdoutSink;
    Ok(match config {
        SinkConfig::Jsonl(c) => Box::new(
            JsonlSink::open(JsonlSinkConfig {
                path: c.path.clone(),
            })
            .with_context(|| format!("sink {name}"))?,
        ),
        SinkConfig::Stdout => Box::new(StdoutSink::new()),
        SinkConfig::Next(c) => {
            let token = c
                .token
                .resolve()
                .with_context(|| format!("sink {name}: token"))?;
            let next = next_config(c, token.expose());
            Box::new(NextSink::new(next).map_err(|e| anyhow::anyhow!("sink {name}: {e}"))?)
        }
    })
}

/// The sinks crate's settings for a `next` sink, with its token resolved.
pub fn next_config(
    c: &crate::config::NextSinkConfig,
    token: &str,
) -> frontsync_sinks::next::NextSinkConfig {
    frontsync_sinks::next::NextSinkConfig {
        path: c.path.clone(),
        batch_size: c.batch_size,
        timeout: c.timeout,
        ..frontsync_sinks::next::NextSinkConfig::new(
            c.endpoint.clone(),
            c.teamspace.clone(),
            token.to_string(),
        )
    }
}
