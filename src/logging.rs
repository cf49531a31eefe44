//! Logging setup (flexi_logger): the console, and the daily log files of
//! `orproxy serve`.
//!
//! - Console (stderr): one readable line per event, at the level `RUST_LOG`
//!   asks for (default `info`).
//! - `requests-YYYY-MM-DD.log`: one JSON line per request, written through the
//!   `{requests}` writer (see [`crate::server::request_log`]).
//! - `errors-YYYY-MM-DD.log`: every warning and error, with where it happened.
//! - `keys-YYYY-MM-DD.log`: every key event (target `orproxy::keys`).
//!
//! The files use the local date, switch at local midnight, and files of these
//! three kinds older than the retention are deleted at start and at every
//! switch. flexi_logger's own file writer names rotated files its own way, so
//! the files are written by [`DailyFile`], a small [`LogWriter`]. The file
//! writes do not depend on `RUST_LOG`: quietening the console never loses a
//! warning or a key event from the files. Every line, everywhere, passes
//! through [`redact`], so no `sk-or-…` key is ever written in full, and
//! through [`crate::escape`], so no text from outside (a model name, an
//! upstream message, a path) reaches the console or a file with a control
//! character, a terminal escape sequence or a line break of its own; a
//! message is also cut at [`MAX_MESSAGE`] characters.

use crate::escape;
use crate::secret::{may_hold_key, redact, redacted};
use chrono::{DateTime, Local, NaiveDate, TimeDelta};
use flexi_logger::writers::LogWriter;
use flexi_logger::{DeferredNow, LogSpecBuilder, LogSpecification, Logger, WriteMode};
use log::{Level, LevelFilter, Record};
use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The flexi_logger writer target of the request log: `log::info!(target:
/// REQUESTS_TARGET, ...)` writes one line to `requests-YYYY-MM-DD.log` only.
pub(crate) const REQUESTS_TARGET: &str = "{requests}";
/// The log target of key events: console and `keys-YYYY-MM-DD.log`.
pub(crate) const KEYS_TARGET: &str = "orproxy::keys";
/// The kinds of daily files, which are also their name prefixes.
pub(crate) const KINDS: [&str; 3] = ["requests", "errors", "keys"];
/// The longest message a console or file line holds, in characters: one
/// event adds at most a few KiB to the logs, whatever text it quotes.
pub(crate) const MAX_MESSAGE: usize = 4000;
/// The console's level when `RUST_LOG` is not set.
const DEFAULT_SPEC: &str = "info, actix_server=warn";

/// Where and how long the log files are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogFiles {
    /// The directory holding the daily files.
    pub(crate) dir: PathBuf,
    /// Files older than this many days are deleted; 0 keeps them forever.
    pub(crate) retention_days: u32,
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    /// The log directory could not be created or used.
    #[error(
        "cannot use the log directory {path}: {source} (choose another with --log-dir or ORPROXY_LOG_DIR)"
    )]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// flexi_logger refused to start.
    #[error("cannot start logging: {0}")]
    Start(#[from] flexi_logger::FlexiLoggerError),
}

/// Loose permissions found on an existing log directory or log file at
/// start (see [`tighten`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LoosePermissions {
    /// A log file other users could read or change; it is 0600 now.
    #[error("the log file {path} was open to other users (mode {mode:04o}); it is 0600 now")]
    FileTightened {
        /// The log file.
        path: PathBuf,
        /// Its mode before.
        mode: u32,
    },
    /// A log file other users can read or change that could not be made 0600.
    #[error(
        "the log file {path} is open to other users (mode {mode:04o}) and cannot be made 0600: {error}"
    )]
    FileLoose {
        /// The log file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
        /// Why chmod failed.
        error: String,
    },
    /// The log directory is open to other users. orproxy leaves a
    /// directory it did not create as it is (it may be shared on purpose,
    /// like /var/log), and says so.
    #[error(
        "the log directory {path} is open to other users (mode {mode:04o}); \
         `chmod 700 {path}` makes it private"
    )]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

/// The date the daily files are named after. Injected so that tests can
/// move through midnight.
pub(crate) trait Clock: Send + Sync {
    /// Today, in the local time zone.
    fn today(&self) -> NaiveDate;
}

/// The system clock in the local time zone.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LocalClock;

impl Clock for LocalClock {
    fn today(&self) -> NaiveDate {
        // Asked for every log line: the date is worked out once a second.
        thread_local! {
            static TODAY: Cell<(u64, Option<NaiveDate>)> = const { Cell::new((u64::MAX, None)) };
        }
        let now = std::time::SystemTime::now();
        let Ok(secs) = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
        else {
            return DateTime::<Local>::from(now).date_naive();
        };
        TODAY.with(|cell| match cell.get() {
            (second, Some(date)) if second == secs => date,
            _ => {
                let date = DateTime::<Local>::from(now).date_naive();
                cell.set((secs, Some(date)));
                date
            }
        })
    }
}

static STARTED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set while this thread is inside one of our writers, so that a panic
    /// there is not logged through the same (locked) writer again.
    static IN_WRITER: Cell<bool> = const { Cell::new(false) };
}

/// Start logging for `orproxy serve`: the console plus the three daily files
/// in `files.dir` (created 0700; files are 0600). Old files are cleaned up
/// before the first line is written.
pub(crate) fn init_server(files: &LogFiles) -> Result<(), LogError> {
    // The directory must take new files: said at once, not at the first
    // line that cannot be written.
    create_private_dir(&files.dir)
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix(".orproxy-probe-")
                .tempfile_in(&files.dir)
                .map(drop)
        })
        .map_err(|source| LogError::Dir {
            path: files.dir.clone(),
            source,
        })?;
    let clock: Arc<dyn Clock> = Arc::new(LocalClock);
    let removed = cleanup(&files.dir, clock.today(), files.retention_days);
    let loose = tighten(&files.dir);
    let daily = |kind| {
        Arc::new(DailyFile::new(
            &files.dir,
            kind,
            files.retention_days,
            clock.clone(),
        ))
    };
    let console = console_spec();
    let buffers = Buffers {
        console: Arc::new(Mutex::new(Vec::new())),
        errors: daily("errors"),
        keys: daily("keys"),
        requests: daily("requests"),
    };
    let router = Router {
        console: console.clone(),
        buffers: buffers.clone(),
    };
    let handle = Logger::with(file_spec(&console))
        .log_to_writer(Box::new(router))
        .add_writer(
            "requests",
            Box::new(RequestsWriter(buffers.requests.clone())),
        )
        .write_mode(WriteMode::Direct)
        .start()?;
    // Keep the logger alive for the life of the process.
    std::mem::forget(handle);
    // Lines are buffered (a write per request line costs a system call on
    // the request path) and flushed every FLUSH_EVERY, at once for warnings
    // and errors, and at shutdown (`flush`).
    let _ = BUFFERS.set(buffers.clone());
    let _ = std::thread::Builder::new()
        .name("log-flush".into())
        .spawn(move || {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                buffers.flush();
            }
        });
    STARTED.store(true, Ordering::SeqCst);
    for path in removed {
        log::info!("removed the old log file {}", path.display());
    }
    for found in loose {
        log::warn!("{found}");
    }
    Ok(())
}

/// The console's specification: `RUST_LOG`, else `info`.
fn console_spec() -> LogSpecification {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| LogSpecification::parse(s).ok())
        .or_else(|| LogSpecification::parse(DEFAULT_SPEC).ok())
        .unwrap_or_else(LogSpecification::info)
}

/// What the logger lets through: the console's specification, widened so
/// that warnings and errors (for the errors file) and key events (for the
/// keys file) are never filtered out before they reach the files.
fn file_spec(console: &LogSpecification) -> LogSpecification {
    let mut builder = LogSpecBuilder::from_module_filters(console.module_filters());
    let mut has_default = false;
    for filter in console.module_filters() {
        let level = filter.level_filter.max(LevelFilter::Warn);
        match &filter.module_name {
            Some(name) => builder.module(name, level),
            None => {
                has_default = true;
                builder.default(level)
            }
        };
    }
    if !has_default {
        builder.default(LevelFilter::Warn);
    }
    let keys_level = [Level::Trace, Level::Debug, Level::Info]
        .into_iter()
        .find(|l| console.enabled(*l, KEYS_TARGET))
        .map_or(LevelFilter::Info, |l| l.to_level_filter());
    builder.module(KEYS_TARGET, keys_level);
    builder.build()
}

/// Log a panic (its message redacted) instead of letting the default hook
/// print it: a panic message may quote a key. Installed for every command.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        let thread = std::thread::current();
        let message = redact(&format!(
            "thread '{}' panicked{location}: {payload}",
            thread.name().unwrap_or("<unnamed>")
        ));
        if STARTED.load(Ordering::SeqCst) && !IN_WRITER.with(Cell::get) {
            log::error!(target: "orproxy::panic", "{message}");
            flush();
        } else {
            eprintln!("orproxy: {}", escape::field(&message, MAX_MESSAGE));
        }
    }));
}

/// How often buffered log lines are written out.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// The buffered outputs, shared by the writers and the flusher.
#[derive(Clone)]
struct Buffers {
    console: Arc<Mutex<Vec<u8>>>,
    errors: Arc<DailyFile>,
    keys: Arc<DailyFile>,
    requests: Arc<DailyFile>,
}

static BUFFERS: std::sync::OnceLock<Buffers> = std::sync::OnceLock::new();

impl Buffers {
    fn flush_console(&self) {
        let pending =
            std::mem::take(&mut *self.console.lock().unwrap_or_else(PoisonError::into_inner));
        if !pending.is_empty() {
            let _ = io::stderr().lock().write_all(&pending);
        }
    }

    fn flush(&self) {
        self.flush_console();
        for file in [&self.errors, &self.keys, &self.requests] {
            let _ = file.flush();
        }
    }
}

/// Write out every buffered log line (at shutdown; also every 200 ms).
pub(crate) fn flush() {
    if let Some(buffers) = BUFFERS.get() {
        buffers.flush();
    }
}

/// The primary writer: the console (filtered by `RUST_LOG`), warnings and
/// errors into the errors file, key events into the keys file.
struct Router {
    console: LogSpecification,
    buffers: Buffers,
}

impl LogWriter for Router {
    fn write(&self, _now: &mut DeferredNow, record: &Record<'_>) -> io::Result<()> {
        let _guard = WriterGuard::enter();
        // A message without arguments needs no formatting.
        let formatted;
        let raw = match record.args().as_str() {
            Some(s) => s,
            None => {
                formatted = record.args().to_string();
                &formatted
            }
        };
        let message = line_text(raw);
        let time = rfc3339_now();
        let short = short_target(record.target());
        let urgent = record.level() <= Level::Warn;
        if self.console.enabled(record.level(), record.target()) {
            {
                let mut console = self
                    .buffers
                    .console
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                writeln!(console, "{time} {:<5} {short:<8} {message}", record.level())?;
            }
            if urgent {
                self.buffers.flush_console();
            }
        }
        if urgent {
            let line = format!("{time} {:<5} {short}: {message}", record.level());
            self.buffers.errors.write_line(&line)?;
            self.buffers.errors.flush()?;
        }
        if record.target() == KEYS_TARGET {
            let line = format!("{time} {:<5} {message}", record.level());
            self.buffers.keys.write_line(&line)?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.buffers.flush();
        Ok(())
    }
}

/// A message as it goes into a line: keys masked, outside text escaped
/// (one line, nothing a terminal acts on), at most [`MAX_MESSAGE`]
/// characters.
fn line_text(raw: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let mut text = redacted(raw);
    if let Cow::Owned(escaped) = escape::visible(&text) {
        text = Cow::Owned(escaped);
    }
    if let Cow::Owned(clipped) = escape::clip(&text, MAX_MESSAGE) {
        text = Cow::Owned(clipped);
    }
    text
}

/// `orproxy::server::state` → `server::state`, `orproxy::keys` → `keys`.
fn short_target(target: &str) -> &str {
    target.strip_prefix("orproxy::").unwrap_or(target)
}

/// The `{requests}` writer: each record is one JSON line.
struct RequestsWriter(Arc<DailyFile>);

impl LogWriter for RequestsWriter {
    fn write(&self, _now: &mut DeferredNow, record: &Record<'_>) -> io::Result<()> {
        let _guard = WriterGuard::enter();
        self.0
            .write_line(&escape::json_visible(&redact(&record.args().to_string())))
    }

    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }

    fn max_log_level(&self) -> LevelFilter {
        LevelFilter::Info
    }
}

/// Write one line to the request log (`requests-YYYY-MM-DD.log`), masked
/// like every other line and with the characters JSON leaves raw escaped
/// ([`escape::json_visible`]). The same as `log::info!(target: REQUESTS_TARGET,
/// ...)`, which the server's own lines skip: that path formats and copies
/// each line twice more.
pub(crate) fn request_line(line: &[u8]) {
    let Some(buffers) = BUFFERS.get() else {
        log::info!(target: REQUESTS_TARGET, "{}", String::from_utf8_lossy(line));
        return;
    };
    let _guard = WriterGuard::enter();
    let _ = if may_hold_key(line) || line.iter().any(|&b| b >= 0x7f) {
        let text = String::from_utf8_lossy(line);
        buffers
            .requests
            .write_line(&escape::json_visible(&redacted(&text)))
    } else {
        // Printable ASCII with nothing to mask (serde_json escaped the C0
        // controls): the bytes go in as they are.
        buffers.requests.write_bytes_line(line)
    };
}

struct WriterGuard(bool);

impl WriterGuard {
    fn enter() -> Self {
        Self(IN_WRITER.with(|w| w.replace(true)))
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        IN_WRITER.with(|w| w.set(self.0));
    }
}

/// One kind of daily file: `<dir>/<kind>-YYYY-MM-DD.log`, switched when the
/// clock's date changes; each switch also deletes old files.
pub(crate) struct DailyFile {
    dir: PathBuf,
    kind: &'static str,
    retention_days: u32,
    clock: Arc<dyn Clock>,
    open: Mutex<Option<(NaiveDate, io::BufWriter<File>)>>,
}

impl DailyFile {
    /// A daily file of `kind` in `dir`; nothing is opened until the first line.
    pub(crate) fn new(
        dir: &Path,
        kind: &'static str,
        retention_days: u32,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            dir: dir.to_path_buf(),
            kind,
            retention_days,
            clock,
            open: Mutex::new(None),
        }
    }

    /// Append one line (a newline is added) to today's file.
    pub(crate) fn write_line(&self, line: &str) -> io::Result<()> {
        self.write_bytes_line(line.as_bytes())
    }

    /// [`Self::write_line`] for text that is already bytes.
    pub(crate) fn write_bytes_line(&self, line: &[u8]) -> io::Result<()> {
        let today = self.clock.today();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.as_ref().is_none_or(|(date, _)| *date != today) {
            // A new day (or the first line): the old file is closed, and
            // files that are now too old go.
            let switching = open.is_some();
            *open = None;
            if switching {
                cleanup(&self.dir, today, self.retention_days);
            }
            let path = daily_path(&self.dir, self.kind, today);
            let file = match open_append(&path) {
                // The directory was removed while running: make it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    create_private_dir(&self.dir)?;
                    open_append(&path)?
                }
                other => other?,
            };
            *open = Some((today, io::BufWriter::with_capacity(64 * 1024, file)));
        }
        match open.as_mut() {
            // Whole lines into the buffer, which goes out in whole lines on
            // an O_APPEND file: lines never interleave.
            Some((_, file)) => {
                if file.capacity() - file.buffer().len() <= line.len() {
                    file.flush()?;
                }
                file.write_all(line)?;
                file.write_all(b"\n")
            }
            None => Ok(()),
        }
    }

    /// Write out what is buffered.
    pub(crate) fn flush(&self) -> io::Result<()> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        match open.as_mut() {
            Some((_, file)) => file.flush(),
            None => Ok(()),
        }
    }
}

/// `<dir>/<kind>-YYYY-MM-DD.log`.
pub(crate) fn daily_path(dir: &Path, kind: &str, date: NaiveDate) -> PathBuf {
    dir.join(format!("{kind}-{}.log", date.format("%Y-%m-%d")))
}

/// The kind and date of a daily file name, if it is one of ours.
fn parse_daily_name(name: &str) -> Option<(&'static str, NaiveDate)> {
    let stem = name.strip_suffix(".log")?;
    KINDS.into_iter().find_map(|kind| {
        let date = stem.strip_prefix(kind)?.strip_prefix('-')?;
        (date.len() == 10)
            .then(|| NaiveDate::parse_from_str(date, "%Y-%m-%d").ok())
            .flatten()
            .map(|d| (kind, d))
    })
}

/// Delete the daily files in `dir` dated more than `retention_days` days
/// before `today` (none when `retention_days` is 0). Other files are never
/// touched. Returns the deleted paths.
pub(crate) fn cleanup(dir: &Path, today: NaiveDate, retention_days: u32) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    if retention_days == 0 {
        return removed;
    }
    let Some(oldest_kept) = today.checked_sub_signed(TimeDelta::days(i64::from(retention_days)))
    else {
        return removed;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((_, date)) = name.to_str().and_then(parse_daily_name) else {
            continue;
        };
        if date < oldest_kept && entry.file_type().is_ok_and(|t| t.is_file()) {
            let path = entry.path();
            if fs::remove_file(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    removed.sort();
    removed
}

/// Open a log file for appending, created 0600; one that exists with
/// looser permissions is made 0600.
fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    if file
        .metadata()
        .is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    {
        // Best effort: `tighten` reported what it could not fix at start.
        let _ = file.set_permissions(fs::Permissions::from_mode(0o600));
    }
    Ok(file)
}

/// Make the daily files in `dir` that other users may read or change 0600,
/// and report them, and the directory itself when other users may use it.
/// Other files are left alone.
fn tighten(dir: &Path) -> Vec<LoosePermissions> {
    let loose = |meta: &fs::Metadata| {
        let mode = meta.permissions().mode() & 0o7777;
        (mode & 0o077 != 0).then_some(mode)
    };
    let mut found = Vec::new();
    if let Some(mode) = fs::metadata(dir).ok().as_ref().and_then(loose) {
        found.push(LoosePermissions::Directory {
            path: dir.to_path_buf(),
            mode,
        });
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    let mut files: Vec<(PathBuf, u32)> = entries
        .flatten()
        .filter(|e| e.file_name().to_str().and_then(parse_daily_name).is_some())
        // Regular files only: a link may lead outside the directory.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| Some((e.path(), e.metadata().ok().as_ref().and_then(loose)?)))
        .collect();
    files.sort();
    for (path, mode) in files {
        found.push(
            match fs::set_permissions(&path, fs::Permissions::from_mode(0o600)) {
                Ok(()) => LoosePermissions::FileTightened { path, mode },
                Err(e) => LoosePermissions::FileLoose {
                    path,
                    mode,
                    error: e.to_string(),
                },
            },
        );
    }
    found
}

/// Create `dir` (and parents) with mode 0700 when it does not exist yet.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

thread_local! {
    /// The last second [`rfc3339_now`] formatted: its Unix time, the text
    /// before the fraction (`2026-11-27T07:06:59`) and the offset (`+01:00`).
    static SECOND: std::cell::RefCell<(u64, String, String)> =
        const { std::cell::RefCell::new((u64::MAX, String::new(), String::new())) };
}

/// Now as RFC 3339 in the local time zone, with milliseconds:
/// `2026-11-27T07:06:59.203+01:00` (what chrono's `to_rfc3339_opts(Millis,
/// false)` writes). The date, time and offset are worked out once a second
/// and reused: only the milliseconds change between lines.
pub(crate) fn rfc3339_now() -> String {
    rfc3339_at(std::time::SystemTime::now())
}

fn rfc3339_at(at: std::time::SystemTime) -> String {
    use std::fmt::Write as _;
    let Ok(since) = at.duration_since(std::time::UNIX_EPOCH) else {
        return DateTime::<Local>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    };
    let (secs, millis) = (since.as_secs(), since.subsec_millis());
    SECOND.with(|cell| {
        let mut second = cell.borrow_mut();
        if second.0 != secs {
            let whole = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let text =
                DateTime::<Local>::from(whole).to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
            // The offset is the last 6 characters (`+hh:mm`, `-hh:mm`).
            let split = text.len().saturating_sub(6);
            *second = (secs, text[..split].to_owned(), text[split..].to_owned());
        }
        let mut out = String::with_capacity(second.1.len() + 4 + second.2.len());
        out.push_str(&second.1);
        let _ = write!(out, ".{millis:03}");
        out.push_str(&second.2);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeClock(Mutex<NaiveDate>);

    impl FakeClock {
        fn set(&self, d: NaiveDate) {
            *self.0.lock().unwrap() = d;
        }
    }

    impl Clock for FakeClock {
        fn today(&self) -> NaiveDate {
            *self.0.lock().unwrap()
        }
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn cached_timestamps_are_what_chrono_writes() {
        use std::time::{Duration, SystemTime, UNIX_EPOCH};
        let now = SystemTime::now();
        let mut times = vec![
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::from_millis(1_795_000_000_999),
            now,
            now + Duration::from_millis(1),
            now + Duration::from_millis(999),
            now + Duration::from_secs(86_400 * 180),
        ];
        // Steps within one second and across seconds, in both directions.
        for ms in [0, 5, 999, 1000, 1001, 7, 250_000, 3] {
            times.push(now + Duration::from_millis(ms));
        }
        for at in times {
            assert_eq!(
                rfc3339_at(at),
                DateTime::<Local>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
                "{at:?}"
            );
        }
        assert_eq!(rfc3339_now().len(), "2026-11-27T07:06:59.203+01:00".len());
    }

    #[test]
    fn names_are_kind_dash_local_date() {
        assert_eq!(
            daily_path(Path::new("/x"), "requests", date("2026-03-07")),
            Path::new("/x/requests-2026-03-07.log")
        );
        assert_eq!(
            parse_daily_name("errors-2026-03-07.log"),
            Some(("errors", date("2026-03-07")))
        );
        assert_eq!(parse_daily_name("errors-2026-3-7.log"), None);
        assert_eq!(parse_daily_name("other-2026-03-07.log"), None);
        assert_eq!(parse_daily_name("keys-2026-03-07.log.gz"), None);
        assert_eq!(parse_daily_name("requests2026-03-07.log"), None);
    }

    #[test]
    fn switches_file_at_midnight_and_cleans_up_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FakeClock(Mutex::new(date("2026-03-14"))));
        for old in [
            "requests-2026-02-28.log", // 15 days before the 15th: goes at the switch
            "errors-2026-03-01.log",   // 14 days before the 15th: kept
            "keys-2020-01-01.log",
            "notes-2020-01-01.log", // not ours
            "requests-latest.log",  // not ours
        ] {
            fs::write(dir.path().join(old), "old\n").unwrap();
        }
        let file = DailyFile::new(dir.path(), "requests", 14, clock.clone());
        file.write_line("one").unwrap();
        file.write_line("two").unwrap();
        file.flush().unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("requests-2026-03-14.log")).unwrap(),
            "one\ntwo\n"
        );
        // Nothing is cleaned before the first switch (the server cleans at start).
        assert!(dir.path().join("keys-2020-01-01.log").exists());

        clock.set(date("2026-03-15"));
        file.write_line("three").unwrap();
        file.flush().unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("requests-2026-03-15.log")).unwrap(),
            "three\n"
        );
        assert_eq!(
            names(dir.path()),
            [
                "errors-2026-03-01.log",
                "notes-2020-01-01.log",
                "requests-2026-03-14.log",
                "requests-2026-03-15.log",
                "requests-latest.log",
            ]
        );
        let mode = fs::metadata(dir.path().join("requests-2026-03-15.log"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_removed_directory_is_made_again_at_the_next_file() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let clock = Arc::new(FakeClock(Mutex::new(date("2026-03-14"))));
        let file = DailyFile::new(&logs, "keys", 14, clock.clone());
        file.write_line("first").unwrap();
        fs::remove_dir_all(&logs).unwrap();
        clock.set(date("2026-03-15"));
        file.write_line("second").unwrap();
        file.flush().unwrap();
        assert_eq!(
            fs::read_to_string(logs.join("keys-2026-03-15.log")).unwrap(),
            "second\n"
        );
    }

    #[test]
    fn loose_log_files_are_made_private_and_a_loose_directory_reported() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        fs::create_dir(&logs).unwrap();
        fs::set_permissions(&logs, fs::Permissions::from_mode(0o700)).unwrap();
        let mode_of = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for (name, mode) in [
            ("requests-2026-03-14.log", 0o644),
            ("errors-2026-03-14.log", 0o600),
            ("notes.log", 0o644), // not ours
        ] {
            fs::write(logs.join(name), "").unwrap();
            fs::set_permissions(logs.join(name), fs::Permissions::from_mode(mode)).unwrap();
        }
        assert_eq!(
            tighten(&logs),
            [LoosePermissions::FileTightened {
                path: logs.join("requests-2026-03-14.log"),
                mode: 0o644
            }]
        );
        assert_eq!(mode_of(&logs.join("requests-2026-03-14.log")), 0o600);
        assert_eq!(mode_of(&logs.join("notes.log")), 0o644, "not ours");
        assert_eq!(tighten(&logs), [], "nothing left to say");

        fs::set_permissions(&logs, fs::Permissions::from_mode(0o755)).unwrap();
        let found = tighten(&logs);
        assert_eq!(
            found,
            [LoosePermissions::Directory {
                path: logs.clone(),
                mode: 0o755
            }]
        );
        assert!(found[0].to_string().contains("chmod 700"), "{}", found[0]);
        assert_eq!(mode_of(&logs), 0o755, "a directory is left as it is");

        // A file that turns loose while the server runs is made private
        // when it is next opened (at the day's first line).
        let clock = Arc::new(FakeClock(Mutex::new(date("2026-03-15"))));
        let today = logs.join("keys-2026-03-15.log");
        fs::write(&today, "").unwrap();
        fs::set_permissions(&today, fs::Permissions::from_mode(0o666)).unwrap();
        DailyFile::new(&logs, "keys", 14, clock)
            .write_line("x")
            .unwrap();
        assert_eq!(mode_of(&today), 0o600);
    }

    #[test]
    fn zero_retention_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("keys-2000-01-01.log"), "").unwrap();
        assert!(cleanup(dir.path(), date("2026-01-01"), 0).is_empty());
        let removed = cleanup(dir.path(), date("2026-01-01"), 1);
        assert_eq!(removed, [dir.path().join("keys-2000-01-01.log")]);
    }

    #[test]
    fn a_line_is_masked_escaped_and_capped() {
        let key = format!("sk-or-v1-{}", "ab".repeat(32));
        let raw = format!("model=x\u{1b}[2J\r\nFORGED {key}");
        let text = line_text(&raw);
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(
            text.starts_with("model=x\\x1b[2J\\r\\nFORGED sk-or-v1-…"),
            "{text}"
        );
        assert!(!text.contains(&key));
        assert!(matches!(
            line_text("plain"),
            std::borrow::Cow::Borrowed("plain")
        ));
        let raw = "\u{202e}".repeat(MAX_MESSAGE);
        let long = line_text(&raw);
        assert_eq!(
            long.chars().count(),
            MAX_MESSAGE + 1,
            "cut at MAX_MESSAGE, then …"
        );
    }

    #[test]
    fn file_spec_never_hides_warnings_or_key_events() {
        let console = LogSpecification::parse("error, actix_server=off").unwrap();
        let spec = file_spec(&console);
        assert!(spec.enabled(Level::Warn, "orproxy::server::state"));
        assert!(spec.enabled(Level::Warn, "actix_server::worker"));
        assert!(spec.enabled(Level::Info, KEYS_TARGET));
        assert!(!spec.enabled(Level::Info, "orproxy::requests"));
        let verbose = file_spec(&LogSpecification::parse("debug").unwrap());
        assert!(verbose.enabled(Level::Debug, "orproxy::requests"));
        assert!(verbose.enabled(Level::Debug, KEYS_TARGET));
    }
}
