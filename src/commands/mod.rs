//! One module per subcommand.

pub mod generate;
pub mod keys;
pub mod serve;
