//! Serde models of Front API resources.
