//! Front Core API: serde models, the HTTP client and the per-company rate limiter.

pub mod client;
pub mod model;
pub mod oauth;
pub mod poller;
pub mod ratelimit;
