//! One module per subcommand.

pub mod generate;
pub mod keys;
pub mod migrate;
pub mod serve;
pub mod watch;
