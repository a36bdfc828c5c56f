//! Front Core API: serde models, and (later) the HTTP client, rate limiter and poller.

pub mod model;
