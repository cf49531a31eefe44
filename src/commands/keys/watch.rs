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

/// One frame: a header line, then the table (or why there is none). On a
/// terminal every line fits its width (the table narrows itself).
fn frame(store: &Backend, color: bool, tty: bool) -> String {
    let width = if tty {
        terminal::size()
            .ok()
            .map(|(cols, _)| usize::from(cols))
            .filter(|w| *w > 0)
    } else {
        None
    };
    let time = Local::now().format("%H:%M:%S").to_string();
    let shown = store.describe();
    let fixed = format!("Every 1s: orproxy keys list |  | {time} | Ctrl-C quits");
    let room = width.map_or(usize::MAX, |w| w.saturating_sub(fixed.chars().count()));
    let header = fit(
        &format!(
            "Every 1s: orproxy keys list | {} | {time} | Ctrl-C quits",
            clip_left(&shown, room.max(12))
        ),
        width,
    );
    let body = match store.load() {
        Ok(file) if file.keys.is_empty() => format!(
            "No keys in {}. Add one with `orproxy keys add`.",
            store.describe()
        ),
        Ok(file) => super::table::table(&file, Utc::now(), color, tty).to_string(),
        Err(e) => fit(
            &format!(
                "error: {}",
                crate::escape::visible(&crate::secret::redact(&e.to_string()))
            ),
            width,
        ),
    };
    format!("{header}\n\n{body}")
}

/// `text` cut to `width` characters (with `…`), when there is a width.
fn fit(text: &str, width: Option<usize>) -> String {
    match width {
        Some(w) if text.chars().count() > w => {
            let kept: String = text.chars().take(w.saturating_sub(1)).collect();
            format!("{kept}…")
        }
        _ => text.to_owned(),
    }
}

/// `text` cut to its last `max` characters, starting with `…` when cut (a
/// path keeps its file name).
fn clip_left(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().skip(n + 1 - max).collect();
    format!("…{kept}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_to_the_width_and_paths_keep_their_end() {
        assert_eq!(fit("abcdef", Some(4)), "abc…");
        assert_eq!(fit("abc", Some(4)), "abc");
        assert_eq!(fit("abcdef", None), "abcdef");
        assert_eq!(clip_left("/tmp/a/data/keys.json", 10), "…keys.json");
        assert_eq!(clip_left("/k.json", 10), "/k.json");
    }
}
