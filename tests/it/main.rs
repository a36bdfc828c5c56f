//! Integration tests: the real `frontsync` binary against in-process fakes on loopback.
//! One test binary (faster to link); modules group the scenarios.

mod harness;

mod cli;
mod crash;
mod disk;
mod economy;
mod fake;
mod fake_front_selftest;
mod next_sink;
mod oauth;
mod operations;
mod polling;
mod security;
mod webhook;
