//! frontsync: keeps Front conversations flowing into NEXT AI as Highlights, and into any
//! tool that reads JSON lines.
//!
//! # Layout
//! - [`config`]: the TOML configuration; `load()` reads and validates with no network I/O.
//! - [`secret`]: `{ env | file | credential }` secrets, never printed.
//! - [`front`]: Front's API: serde models, the HTTP client and rate limiter, OAuth token
//!   refresh, and the poller (event stream, backfill, preview completion).
//! - [`normalize`]: Front event/conversation/message -> Highlight; pure functions.
//! - [`store`]: the redb state database behind a typed facade (only module touching redb).
//! - [`ingest`]: the single writer thread: dedupe, route, outbox append, group commit.
//! - [`outbox`]: one task per sink draining its durable outbox, with backoff and dead letters.
//! - [`outbox_admin`]: `frontsync outbox` and the admin routes to list, retry, drop dead letters.
//! - [`webhook`]: the hyper webhook listener and Front signature checks.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/status`; [`metrics`]: counters and
//!   histograms behind `/metrics`.
//! - [`auth`]: `frontsync auth front NAME`: the OAuth authorization of a connection.
//! - [`http`]: the small hyper server loop both listeners share.
//! - [`daemon`]: wiring, reload and the shutdown order; [`signals`]: SIGTERM/SIGINT/SIGHUP;
//!   [`notify`]: sd_notify (READY, RELOADING, STOPPING, WATCHDOG).
//! - [`cli`], [`commands`], [`logging`], [`completions`]: the command line, each
//!   subcommand, log setup, shell completions and man pages.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod completions;
pub mod config;
pub mod daemon;
pub mod front;
pub mod http;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod normalize;
pub mod notify;
pub mod outbox;
pub mod outbox_admin;
pub mod secret;
pub mod signals;
pub mod store;
pub mod webhook;
