//! Logging setup (flexi_logger). The level comes from `RUST_LOG` (default
//! `info`); every line passes through key redaction.

use flexi_logger::{DeferredNow, Logger, WriteMode};
use log::Record;

/// Console logging on stderr, one line per event.
pub fn init_console() {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info, actix_server=warn".to_owned());
    let logger = Logger::try_with_str(&spec)
        .or_else(|_| Logger::try_with_str("info"))
        .map(|l| l.format(line).write_mode(WriteMode::Direct).log_to_stderr());
    if let Ok(logger) = logger
        && let Ok(handle) = logger.start()
    {
        // Keep the logger alive for the life of the process.
        std::mem::forget(handle);
    }
}

fn line(
    w: &mut dyn std::io::Write,
    now: &mut DeferredNow,
    record: &Record<'_>,
) -> std::io::Result<()> {
    let target = record
        .target()
        .strip_prefix("orproxy::")
        .unwrap_or(record.target());
    write!(
        w,
        "{} {:<5} {:<8} {}",
        now.format("%Y-%m-%dT%H:%M:%S%.3f%:z"),
        record.level(),
        target,
        crate::secret::redact(&record.args().to_string())
    )
}
