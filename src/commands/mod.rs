//! One module per subcommand.

pub(crate) mod generate;
pub(crate) mod keys;
pub(crate) mod serve;
pub(crate) mod usage;
