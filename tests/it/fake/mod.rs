//! In-process fakes of the services the daemon talks to, for scenario tests.
//!
//! - [`front`]: Front's Core API (`/me`, `/inboxes`, `/events`, conversations, messages),
//!   with pagination, rate limiting, previews, merged conversations and injectable faults.
//! - [`next`]: NEXT AI's Highlights API, with outages, 429s and rejections on demand.
//! - [`oauth`]: Front's OAuth endpoints (authorize, token) with refresh-token rotation.
//! - [`server`]: the HTTP server loop the three share.
//!
//! A fake's API is used piecemeal by the scenario tests, so unused items are expected.
#![allow(dead_code)]

pub mod front;
pub mod next;
pub mod oauth;
pub mod server;

// Re-exported for scenario tests; not every one is used yet.
#[allow(unused_imports)]
pub use front::{FakeFront, Fault, Recorded};
