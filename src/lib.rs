//! frontsync: keeps Front conversations flowing into NEXT AI as Highlights, and into any
//! tool that reads JSON lines.
//!
//! # Layout
//! - [`config`]: the TOML configuration; `load()` reads and validates with no network I/O.
//! - [`secret`]: `{ env | file | credential }` secrets, never printed.
//! - [`front`]: Front's API types (and, later, its client and rate limiter).
//! - [`normalize`]: Front event/conversation/message -> Highlight; pure functions.

pub mod config;
pub mod secret;
pub mod front;
pub mod normalize;
pub mod store;
