//! Integration tests: each spawns the real `orproxy` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod clients;
mod generate;
mod keys;
mod lifecycle;
mod openrouter;
mod pty;
mod serve;
mod stream;
