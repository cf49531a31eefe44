//! `orproxy keys list --watch`: the key table redrawn every second, like
//! `watch`, for a terminal pane next to `orproxy serve`.
//!
//! On a terminal it draws on the alternate screen with the cursor hidden,
//! and puts both back however it ends (Ctrl-C, SIGTERM, a closed terminal,
//! an error). Piped, it prints one plain frame per second.

use crate::store::Backend;
use chrono::{Local, Utc};
use crossterm::{cursor, queue, terminal};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

/// Redraw until interrupted.
pub(super) fn run(store: &Backend) -> anyhow::Result<ExitCode> {
    let tty = std::io::stdout().is_terminal();
    let color = super::use_color(tty);
    let system = actix_web::rt::System::new();
    let mut screen = Screen::enter(tty)?;
    let result = system.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => screen.draw(&frame(store, color, tty))?,
                _ = int.recv() => return Ok(()),
                _ = term.recv() => return Ok(()),
                _ = hup.recv() => return Ok(()),
            }
        }
    });
    drop(screen);
    result.map(|()| ExitCode::SUCCESS)
}

/// One frame: a header line, then the table (or why there is none).
fn frame(store: &Backend, color: bool, tty: bool) -> String {
    let header = format!(
        "Every 1s: orproxy keys list | {} | {} | Ctrl-C quits",
        store.describe(),
        Local::now().format("%H:%M:%S")
    );
    let body = match store.load() {
        Ok(file) if file.keys.is_empty() => format!(
            "No keys in {}. Add one with `orproxy keys add`.",
            store.describe()
        ),
        Ok(file) => super::table::table(&file, Utc::now(), color, tty).to_string(),
        Err(e) => format!(
            "error: {}",
            crate::escape::visible(&crate::secret::redact(&e.to_string()))
        ),
    };
    format!("{header}\n\n{body}")
}

/// The terminal while watching; restored on drop.
struct Screen {
    tty: bool,
    out: std::io::Stdout,
}

impl Screen {
    fn enter(tty: bool) -> std::io::Result<Self> {
        let mut out = std::io::stdout();
        if tty {
            queue!(out, terminal::EnterAlternateScreen, cursor::Hide)?;
            out.flush()?;
        }
        Ok(Self { tty, out })
    }

    fn draw(&mut self, frame: &str) -> std::io::Result<()> {
        if !self.tty {
            writeln!(self.out, "{frame}\n")?;
            return self.out.flush();
        }
        // Overwrite in place (no flicker), and never draw past the last
        // row: a scrolling alternate screen would smear the frames.
        let rows = match terminal::size() {
            Ok((_, rows)) if rows > 0 => usize::from(rows),
            // Size unknown (some pseudo-terminals say 0): draw it all.
            _ => usize::MAX,
        };
        queue!(self.out, cursor::MoveTo(0, 0))?;
        for (i, line) in frame.lines().take(rows).enumerate() {
            if i > 0 {
                write!(self.out, "\r\n")?;
            }
            write!(self.out, "{line}")?;
            queue!(self.out, terminal::Clear(terminal::ClearType::UntilNewLine))?;
        }
        queue!(
            self.out,
            terminal::Clear(terminal::ClearType::FromCursorDown)
        )?;
        self.out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.tty {
            let _ = queue!(self.out, cursor::Show, terminal::LeaveAlternateScreen);
            let _ = self.out.flush();
        }
    }
}
