//! The `keys list` table, shared by `keys list` and `keys list --watch`:
//! one row per key, its status coloured on a terminal. Labels, reasons
//! (OpenRouter's messages) and accounts come from outside: every cell is
//! escaped ([`crate::escape::visible`]).

use crate::escape::visible;
use crate::human;
use crate::model::{Status, StoreFile};
use chrono::Utc;
use comfy_table::{Cell, Color, ContentArrangement, Table, presets};

/// The `keys list` table.
pub(super) fn table(file: &StoreFile, now: chrono::DateTime<Utc>, color: bool, tty: bool) -> Table {
    let with_account = file.keys.iter().any(|r| r.account().is_some());
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    if !color {
        table.force_no_tty();
    } else {
        table.enforce_styling();
    }
    // Fit the terminal when there is a sensible width to fit.
    let fits = tty && table.width().is_some_and(|w| w >= 60);
    table.set_content_arrangement(if fits {
        ContentArrangement::Dynamic
    } else {
        ContentArrangement::Disabled
    });
    let mut header = vec!["ID", "Label", "Key"];
    if with_account {
        header.push("Account");
    }
    header.extend(["Status", "Until / why", "Failures", "Last used", "Requests"]);
    table.set_header(header);
    for record in &file.keys {
        let status = record.state.status(now);
        let (status_color, detail) = match &status {
            Status::Active => (Color::Green, String::new()),
            Status::Cooling { until, reason } => (
                Color::Yellow,
                match reason {
                    Some(r) => format!("{}, {r}", human::until(*until, now)),
                    None => human::until(*until, now),
                },
            ),
            Status::Disabled { reason } => (
                Color::Red,
                reason.clone().unwrap_or_else(|| "disabled".into()),
            ),
        };
        let mut row = vec![
            Cell::new(visible(&record.id)),
            Cell::new(visible(record.label.as_deref().unwrap_or(""))),
            Cell::new(visible(&record.key.masked())),
        ];
        if with_account {
            row.push(Cell::new(visible(record.account().unwrap_or(""))));
        }
        row.extend([
            Cell::new(status.name()).fg(status_color),
            Cell::new(visible(&detail)),
            Cell::new(record.state.consecutive_failures),
            Cell::new(human::ago(record.state.last_used, now)),
            Cell::new(record.state.requests_total),
        ]);
        table.add_row(row);
    }
    table
}
