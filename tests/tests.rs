//! Integration tests: each spawns the real `orproxy` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Test helpers are `pub` for the test modules; nothing here is an API.
#![allow(unreachable_pub)]

mod common;

mod access;
mod admin;
mod availability;
mod blame;
mod clients;
mod faults;
mod generate;
mod http;
mod injection;
mod keys;
mod lifecycle;
mod logs;
mod metrics;
mod openrouter;
mod protocols;
mod pty;
mod secrets;
mod serve;
mod shared;
mod store;
mod stream;
mod usage;
mod watch;
