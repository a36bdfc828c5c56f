//! Wiring and lifecycle: open the state, start the writer and one task per sink, bind the
//! listeners, report ready, and on shutdown stop in the order that loses nothing:
//!
//! 1. stop intake: webhooks answer 503, listeners close once in-flight requests finish;
//! 2. let each sink deliver what its outbox holds (bounded by [`GRACE_PERIOD`]);
//! 3. drop the last writer handle so the writer commits what is queued, and join it.
//!
//! Anything not delivered by then stays in the outbox for the next start.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use frontsync_sinks::Sink;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::AdminState;
use crate::config::{Config, SinkConfig};
use crate::front::client::FrontClient;
use crate::front::poller::{Connection, PollStatus, run_enricher};
use crate::front::ratelimit::RateLimiter;
use crate::http::ServeOptions;
use crate::ingest::{InboxNames, SinkBell, spawn_writer};
use crate::outbox::{SinkCtx, SinkStats, SinkTask};
use crate::store::Store;
use crate::webhook::{ConnectionSecrets, WebhookState};

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

/// Runs the daemon until `shutdown` is cancelled. `on_ready` is called once listeners are
/// bound and the state is open.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
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
    let routing = Arc::new(RwLock::new(Arc::new(names.routing(&config.subscriptions))));
    let bell = Arc::new(SinkBell::default());
    let (writer, writer_thread) = spawn_writer(store.clone(), routing.clone(), bell.clone())
        .context("cannot start the state writer")?;

    // Sinks: one task each.
    let drain = CancellationToken::new();
    let stop_sinks = CancellationToken::new();
    let sink_tracker = TaskTracker::new();
    let mut stats = BTreeMap::new();
    for (name, sink_config) in &config.sinks {
        let sink =
            build_sink(name, sink_config).with_context(|| format!("cannot start sink {name:?}"))?;
        let s = Arc::new(SinkStats::default());
        stats.insert(name.clone(), s.clone());
        let task = SinkTask {
            sink,
            ctx: SinkCtx {
                name: name.clone(),
                store: store.clone(),
                writer: writer.clone(),
                bell: bell.clone(),
                stats: s,
                drain: drain.clone(),
                stop: stop_sinks.clone(),
            },
        };
        sink_tracker.spawn(task.run());
    }
    sink_tracker.close();

    // Front connections with a token: pollers and preview enrichers.
    let intake_stop = CancellationToken::new();
    let poll_status = Arc::new(PollStatus::default());
    let front_tracker = TaskTracker::new();
    let all_subscriptions = Arc::new(config.subscriptions.clone());
    for (name, front) in &config.front {
        let Some(token) = &front.token else { continue };
        let token = token
            .resolve()
            .map_err(|e| RunError::Config(format!("[front.{name}] token: {e}")))?;
        let limiter = RateLimiter::new(front.rate_limit_rpm);
        let client = FrontClient::new(name, &front.api_base, token, limiter)
            .map_err(|e| RunError::Config(format!("[front.{name}]: {e}")))?;
        let subscriptions: Vec<_> = config
            .subscriptions
            .iter()
            .filter(|s| &s.front == name)
            .cloned()
            .collect();
        front_tracker.spawn(run_enricher(
            name.clone(),
            client.clone(),
            store.clone(),
            writer.clone(),
            bell.clone(),
            intake_stop.clone(),
        ));
        if subscriptions.is_empty() {
            continue;
        }
        let connection = Connection {
            name: name.clone(),
            client,
            subscriptions,
            all_subscriptions: all_subscriptions.clone(),
            names: names.clone(),
            routing: routing.clone(),
            store: store.clone(),
            writer: writer.clone(),
            status: poll_status.clone(),
            stop: intake_stop.clone(),
        };
        front_tracker.spawn(connection.run());
    }
    front_tracker.close();

    // Listeners.
    let conn_tracker = TaskTracker::new();
    let mut bound_webhook = None;
    let mut webhook_state = None;
    let mut listener_tasks = Vec::new();
    if let Some(wh) = &config.webhook {
        let listener = TcpListener::bind(wh.listen)
            .await
            .with_context(|| format!("cannot listen for webhooks on {}", wh.listen))?;
        let addr = listener.local_addr().context("webhook listener address")?;
        bound_webhook = Some(addr);
        let state = Arc::new(WebhookState {
            connections: RwLock::new(Arc::new(connection_secrets(&config)?)),
            writer: writer.clone(),
            max_body_bytes: wh.max_body_bytes,
            draining: intake_stop.clone(),
            outcomes: Mutex::new(BTreeMap::new()),
            preview_warned: Mutex::new(Default::default()),
        });
        webhook_state = Some(state.clone());
        let opts = ServeOptions {
            header_timeout: wh.header_timeout,
            max_connections: wh.max_connections,
        };
        let handler = Arc::new(move |req, peer| crate::webhook::handle(state.clone(), req, peer));
        listener_tasks.push(tokio::spawn(crate::http::serve(
            listener,
            "webhook",
            opts,
            handler,
            intake_stop.clone(),
            conn_tracker.clone(),
        )));
        tracing::info!(listener = "webhook", %addr, "listening");
    }
    let admin_listener = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen for admin requests on {}",
                config.admin.listen
            )
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .context("admin listener address")?;
    let admin = Arc::new(AdminState {
        store: store.clone(),
        ready: Default::default(),
        sinks: RwLock::new(stats),
        subscriptions: RwLock::new(
            config
                .subscriptions
                .iter()
                .map(|s| s.name.clone())
                .collect(),
        ),
        webhook: webhook_state,
        polls: poll_status.clone(),
        started: std::time::Instant::now(),
    });
    let admin_stop = CancellationToken::new();
    let admin_tracker = TaskTracker::new();
    {
        let admin = admin.clone();
        let handler = Arc::new(move |req, peer| crate::admin::handle(admin.clone(), req, peer));
        let opts = ServeOptions {
            header_timeout: Duration::from_secs(10),
            max_connections: 64,
        };
        tokio::spawn(crate::http::serve(
            admin_listener,
            "admin",
            opts,
            handler,
            admin_stop.clone(),
            admin_tracker.clone(),
        ));
    }
    tracing::info!(listener = "admin", addr = %admin_addr, "listening");

    admin.ready.store(true, Ordering::Release);
    tracing::info!(
        subscriptions = config.subscriptions.len(),
        sinks = config.sinks.len(),
        "ready"
    );
    on_ready(Bound {
        webhook: bound_webhook,
        admin: admin_addr,
    });
    let summary = format!(
        "serving {} subscriptions, {} sinks",
        config.subscriptions.len(),
        config.sinks.len()
    );
    if let Err(e) = crate::notify::ready(Some(&summary)) {
        tracing::warn!(error = %e, "cannot notify systemd of readiness");
    }
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

    shutdown.cancelled().await;
    if let Err(e) = crate::notify::stopping() {
        tracing::warn!(error = %e, "cannot notify systemd of stopping");
    }
    drop(watchdog);
    tracing::info!("shutting down: intake stopped, delivering what is queued");
    let deadline = tokio::time::Instant::now() + GRACE_PERIOD;

    // 1. Intake.
    intake_stop.cancel();
    for t in listener_tasks {
        let _ = t.await;
    }
    conn_tracker.close();
    if tokio::time::timeout_at(deadline, conn_tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("webhook requests still open at the end of the grace period");
    }
    // 2. Sinks drain what is committed.
    drain.cancel();
    if tokio::time::timeout_at(deadline, sink_tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "sinks did not finish within the grace period; the rest stays queued for the next start"
        );
        stop_sinks.cancel();
        sink_tracker.wait().await;
    }
    // 3. Writer: every handle is gone once the tasks above ended.
    drop(writer);
    drop(admin);
    admin_stop.cancel();
    admin_tracker.close();
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
    Ok(())
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
                can_enrich: front.token.is_some(),
            },
        );
    }
    Ok(out)
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
