//! Writing results to stdout. A closed stdout (`orproxy keys list | head`)
//! is not an error worth a panic: the command stops quietly.

use std::fmt;
use std::io::{self, Write};

/// stdout was closed by the reader.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct StdoutClosed;

/// Write one line to stdout.
pub(crate) fn line(args: fmt::Arguments<'_>) -> Result<(), OutputError> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(OutputError::from)
}

/// Why a line could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The reader went away: stop quietly.
    #[error(transparent)]
    Closed(#[from] StdoutClosed),
    /// Any other write error.
    #[error("cannot write to stdout: {0}")]
    Io(io::Error),
}

impl From<io::Error> for OutputError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            OutputError::Closed(StdoutClosed)
        } else {
            OutputError::Io(e)
        }
    }
}

/// `println!` for command output: returns an error instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
