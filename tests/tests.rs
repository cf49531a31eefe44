//! Integration tests: each spawns the real `orproxy` binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod faults;
mod generate;
mod keys;
mod lifecycle;
mod pty;
mod serve;
mod stream;
