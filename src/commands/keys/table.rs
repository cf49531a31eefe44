//! The `keys list` table, shared by `keys list` and `keys list --watch`:
//! one row per key, read from the availability model (as the server, the
//! admin API and `--json` read it), its status coloured on a terminal.
//! Labels, reasons (OpenRouter's messages) and accounts come from outside:
//! every cell is escaped ([`crate::escape::visible`]).
//!
//! On a terminal the table fits its width: the least useful columns are
//! dropped, then the account and label abbreviated and dropped, before any
//! cell wraps; IDs, statuses and counts never wrap. Piped, every column is
//! there.

use crate::escape::visible;
use crate::human;
use crate::model::{Availability, FreeCounts, Hold, KeyRecord, KeyStatus, StoreFile};
use chrono::{DateTime, Utc};
use comfy_table::{Cell, Color, ColumnConstraint, ContentArrangement, Table, presets};

/// The columns, in the order shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Id,
    Label,
    Key,
    Status,
    Why,
    Account,
    Today,
    Minute,
    Failures,
    LastUsed,
    Requests,
}

impl Col {
    fn header(self) -> &'static str {
        match self {
            Col::Id => "ID",
            Col::Label => "Label",
            Col::Key => "Key",
            Col::Status => "Status",
            Col::Why => "Until / why",
            Col::Account => "Account",
            Col::Today => ":free\ntoday",
            Col::Minute => ":free\n/min",
            Col::Failures => "Fails",
            Col::LastUsed => "Last used",
            Col::Requests => "Requests",
        }
    }
}

/// How a table too wide for the terminal is narrowed, step by step, before
/// anything wraps.
#[derive(Debug, Clone, Copy)]
enum Narrow {
    Drop(Col),
    Abbreviate(Col, usize),
}

const NARROWING: [Narrow; 9] = [
    Narrow::Drop(Col::Requests),
    Narrow::Drop(Col::LastUsed),
    Narrow::Drop(Col::Failures),
    Narrow::Drop(Col::Key),
    Narrow::Abbreviate(Col::Account, 10),
    Narrow::Abbreviate(Col::Label, 10),
    Narrow::Abbreviate(Col::Why, 24),
    Narrow::Drop(Col::Account),
    Narrow::Drop(Col::Label),
];

/// One column's header and cells (escaped), one cell per key.
struct Column {
    col: Col,
    cells: Vec<String>,
}

impl Column {
    /// Its width: the widest header line or cell.
    fn width(&self) -> usize {
        self.col
            .header()
            .lines()
            .map(str::len)
            .chain(self.cells.iter().map(|c| c.chars().count()))
            .max()
            .unwrap_or(0)
    }
}

/// The width of a table of `columns` (UTF8_FULL_CONDENSED: a border
/// between columns and at both ends, one space of padding each side).
fn total_width(columns: &[Column]) -> usize {
    columns.iter().map(|c| c.width() + 3).sum::<usize>() + 1
}

/// `text` cut to `max` characters, ending with `…` when cut.
fn abbreviate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// What the "Until / why" cell says: the hold the status shows, when it
/// ends and why; for a usable key whether OpenRouter vouched for it.
fn why(record: &KeyRecord, availability: &Availability, now: DateTime<Utc>) -> String {
    let Some(held) = availability.shown() else {
        return if record.info.is_none() {
            "unverified".to_owned()
        } else {
            String::new()
        };
    };
    let reason = match held.hold {
        Hold::MinuteCap => "minute cap".to_owned(),
        Hold::DailyCap => "daily cap".to_owned(),
        Hold::Credits => "no credits".to_owned(),
        Hold::Cooldown | Hold::Disabled => held
            .reason
            .clone()
            .unwrap_or_else(|| held.hold.name().to_owned()),
    };
    match held.until {
        Some(until) if held.hold != Hold::Disabled => {
            format!("{}, {reason}", human::until(until, now))
        }
        _ => reason,
    }
}

fn cell(
    col: Col,
    record: &KeyRecord,
    availability: &Availability,
    free: &FreeCounts,
    now: DateTime<Utc>,
) -> String {
    let text = match col {
        Col::Id => record.id.clone(),
        Col::Label => record.label.clone().unwrap_or_default(),
        Col::Key => record.key.masked(),
        Col::Status => availability.status().label().to_owned(),
        Col::Why => why(record, availability, now),
        Col::Account => record.account().unwrap_or_default().to_owned(),
        Col::Today => match free.daily_limit {
            Some(limit) => format!("{}/{limit}", free.today),
            None => format!("{}/?", free.today),
        },
        Col::Minute => format!("{}/{}", free.this_minute, free.minute_limit),
        Col::Failures => record.state.consecutive_failures.to_string(),
        Col::LastUsed => human::ago(record.state.last_used, now),
        Col::Requests => record.state.requests_total.to_string(),
    };
    visible(&text).into_owned()
}

/// The `keys list` table at `now`, fitted to the terminal when `tty`.
pub(super) fn table(file: &StoreFile, now: DateTime<Utc>, color: bool, tty: bool) -> Table {
    let width = if tty {
        crossterm::terminal::size()
            .ok()
            .map(|(cols, _)| usize::from(cols))
            .filter(|w| *w > 0)
    } else {
        None
    };
    table_at(file, now, color, width)
}

/// The table, fitted to `width` columns when given.
fn table_at(file: &StoreFile, now: DateTime<Utc>, color: bool, width: Option<usize>) -> Table {
    let board = crate::pool::availability::board(file, now);
    let with_account = file.keys.iter().any(|r| r.account().is_some());
    let mut columns: Vec<Column> = [
        Col::Id,
        Col::Label,
        Col::Key,
        Col::Status,
        Col::Why,
        Col::Account,
        Col::Today,
        Col::Minute,
        Col::Failures,
        Col::LastUsed,
        Col::Requests,
    ]
    .into_iter()
    .filter(|col| *col != Col::Account || with_account)
    .map(|col| Column {
        col,
        cells: file
            .keys
            .iter()
            .zip(&board)
            .map(|(record, (availability, free))| cell(col, record, availability, free, now))
            .collect(),
    })
    .collect();
    if let Some(width) = width {
        for step in NARROWING {
            if total_width(&columns) <= width {
                break;
            }
            match step {
                Narrow::Drop(col) => columns.retain(|c| c.col != col),
                Narrow::Abbreviate(col, max) => {
                    for column in columns.iter_mut().filter(|c| c.col == col) {
                        for text in &mut column.cells {
                            *text = abbreviate(text, max);
                        }
                    }
                }
            }
        }
    }
    let statuses: Vec<KeyStatus> = board.iter().map(|(a, _)| a.status()).collect();
    render(&columns, &statuses, color, width)
}

fn render(columns: &[Column], statuses: &[KeyStatus], color: bool, width: Option<usize>) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    if color {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    table.set_header(columns.iter().map(|c| c.col.header()));
    for (row, status) in statuses.iter().enumerate() {
        table.add_row(columns.iter().map(|c| {
            let text = c.cells.get(row).cloned().unwrap_or_default();
            if c.col == Col::Status {
                Cell::new(text).fg(match status {
                    KeyStatus::Active => Color::Green,
                    KeyStatus::FreeHeld => Color::Cyan,
                    KeyStatus::Cooling => Color::Yellow,
                    KeyStatus::Disabled => Color::Red,
                })
            } else {
                Cell::new(text)
            }
        }));
    }
    // Still too wide: only the text columns wrap, at spaces.
    match width.and_then(|w| u16::try_from(w).ok()) {
        Some(w) if total_width(columns) > usize::from(w) => {
            table.set_width(w);
            table.set_content_arrangement(ContentArrangement::Dynamic);
            for (i, c) in columns.iter().enumerate() {
                if !matches!(c.col, Col::Why | Col::Label)
                    && let Some(column) = table.column_mut(i)
                {
                    column.set_constraint(ColumnConstraint::ContentWidth);
                }
            }
        }
        _ => {
            table.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KeyInfo, KeyState};
    use chrono::TimeDelta;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn key(n: u32, label: &str, account: Option<&str>, state: KeyState) -> KeyRecord {
        let key = crate::secret::ApiKey::parse(&format!("sk-or-v1-{n:064x}")).unwrap();
        KeyRecord {
            id: key.short_id(),
            key,
            label: Some(label.into()),
            added_at: t0(),
            generation: 0,
            state,
            info: account.map(|a| KeyInfo {
                creator_user_id: Some(a.into()),
                is_free_tier: Some(true),
                ..KeyInfo::default()
            }),
            extra: Default::default(),
        }
    }

    /// Three keys of two accounts: one free held until midnight, one
    /// cooling, one disabled with a long reason.
    fn store() -> StoreFile {
        StoreFile {
            keys: vec![
                key(
                    1,
                    "laptop of the team lead",
                    Some("user_2abcdefghijklmnopqrstu"),
                    KeyState {
                        free_cooldown_until: Some(t0() + TimeDelta::hours(5)),
                        free_cooldown_reason: Some("free-models-per-day".into()),
                        ..KeyState::default()
                    },
                ),
                key(
                    2,
                    "ci",
                    Some("user_2abcdefghijklmnopqrstu"),
                    KeyState {
                        cooldown_until: Some(t0() + TimeDelta::seconds(42)),
                        cooldown_reason: Some("rate-limited".into()),
                        ..KeyState::default()
                    },
                ),
                key(
                    3,
                    "old",
                    None,
                    KeyState {
                        disabled: true,
                        disabled_reason: Some("401 from OpenRouter: User not found.".into()),
                        ..KeyState::default()
                    },
                ),
            ],
            ..StoreFile::default()
        }
    }

    fn lines(table: &Table) -> Vec<String> {
        table.to_string().lines().map(str::to_owned).collect()
    }

    #[test]
    fn piped_every_column_is_there() {
        let file = store();
        let text = table_at(&file, t0(), false, None).to_string();
        for header in [
            "ID",
            "Label",
            "Key",
            "Status",
            "Until / why",
            "Account",
            "today",
            "/min",
            "Fails",
            "Last used",
            "Requests",
        ] {
            assert!(text.contains(header), "{header} in\n{text}");
        }
        assert!(
            text.contains("free held") && text.contains("in 5h, daily cap"),
            "{text}"
        );
        assert!(text.contains("in 42s, rate-limited"), "{text}");
        assert!(text.contains("0/50") && text.contains("0/20"), "{text}");
        assert!(text.contains("0/?"), "unknown limit: {text}");
    }

    #[test]
    fn at_80_columns_it_fits_without_splitting_an_id() {
        let file = store();
        let table = table_at(&file, t0(), false, Some(80));
        for line in lines(&table) {
            assert!(
                line.chars().count() <= 80,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        let text = table.to_string();
        for record in &file.keys {
            assert!(text.contains(&record.id), "{} whole in\n{text}", record.id);
        }
        assert!(
            text.contains("free held") && text.contains("disabled"),
            "{text}"
        );
        assert!(text.contains("0/50"), "the account's counts stay: {text}");
        assert!(
            !text.contains("Requests") && !text.contains("Last used"),
            "{text}"
        );
    }

    #[test]
    fn at_120_columns_less_is_dropped() {
        let file = store();
        let table = table_at(&file, t0(), false, Some(120));
        let text = table.to_string();
        for line in lines(&table) {
            assert!(line.chars().count() <= 120, "{line}");
        }
        assert!(
            text.contains("Account") && text.contains("user_2ab"),
            "{text}"
        );
    }

    #[test]
    fn abbreviations_keep_a_mark() {
        assert_eq!(abbreviate("user_2abcdefghijklmnop", 10), "user_2abc…");
        assert_eq!(abbreviate("ci", 10), "ci");
    }
}
