//! `orproxy usage`: the requests, errors, tokens and cost of each day, read
//! from the store (the server need not run), as a table or `--json`.

use crate::cli::{UsageArgs, UsageGroup};
use crate::escape::visible;
use crate::model::{UsageBy, UsageRow, first_kept_day};
use crate::store::Backend;
use chrono::Utc;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table, presets};
use std::io::IsTerminal;
use std::process::ExitCode;

pub(crate) fn run(store: &Backend, args: &UsageArgs) -> anyhow::Result<ExitCode> {
    let today = Utc::now().date_naive();
    let since = args
        .since
        .map_or_else(|| first_kept_day(today), |s| s.first_day(today));
    let by = args.by.map(|g| match g {
        UsageGroup::Key => UsageBy::Key,
        UsageGroup::Account => UsageBy::Account,
        UsageGroup::Model => UsageBy::Model,
    });
    let rows = store.usage(since, today)?.rows(by, since);
    if args.json {
        crate::out!(
            "{}",
            crate::escape::json_visible(&serde_json::to_string_pretty(&rows)?)
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        crate::out!(
            "No usage recorded in {} since {since}: requests are counted while `orproxy serve` \
             runs on this store.",
            store.describe()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::out!("{}", table(&rows, by, std::io::stdout().is_terminal()))?;
    Ok(ExitCode::SUCCESS)
}

/// A cost in credits (US dollars), to the millionth.
fn cost(c: f64) -> String {
    format!("{c:.6}")
}

/// The counts of a row, as cells, right-aligned.
fn counts(r: &UsageRow) -> [Cell; 7] {
    [
        Cell::new(r.requests),
        Cell::new(r.errors),
        Cell::new(r.prompt_tokens),
        Cell::new(r.completion_tokens),
        Cell::new(r.cached_tokens),
        Cell::new(r.reasoning_tokens),
        Cell::new(cost(r.cost)),
    ]
    .map(|c| c.set_alignment(CellAlignment::Right))
}

/// One row per day (and key, account or model), and a total when there
/// are several.
fn table(rows: &[UsageRow], by: Option<UsageBy>, tty: bool) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED);
    table.force_no_tty();
    let fits = tty && table.width().is_some_and(|w| w >= 60);
    table.set_content_arrangement(if fits {
        ContentArrangement::Dynamic
    } else {
        ContentArrangement::Disabled
    });
    let mut header = vec!["Day"];
    header.extend(by.map(|b| match b {
        UsageBy::Key => "Key",
        UsageBy::Account => "Account",
        UsageBy::Model => "Model",
    }));
    header.extend([
        "Requests",
        "Errors",
        "Prompt",
        "Completion",
        "Cached",
        "Reasoning",
        "Cost",
    ]);
    table.set_header(header);
    for r in rows {
        let mut row = vec![Cell::new(r.day)];
        if by.is_some() {
            row.push(Cell::new(visible(r.group().unwrap_or(""))));
        }
        row.extend(counts(r));
        table.add_row(row);
    }
    if let [first, rest @ ..] = rows
        && !rest.is_empty()
    {
        let mut total = first.clone();
        for r in rest {
            total.requests = total.requests.saturating_add(r.requests);
            total.errors = total.errors.saturating_add(r.errors);
            total.prompt_tokens = total.prompt_tokens.saturating_add(r.prompt_tokens);
            total.completion_tokens = total.completion_tokens.saturating_add(r.completion_tokens);
            total.cached_tokens = total.cached_tokens.saturating_add(r.cached_tokens);
            total.reasoning_tokens = total.reasoning_tokens.saturating_add(r.reasoning_tokens);
            total.cost += r.cost;
        }
        let mut row = vec![Cell::new("total")];
        if by.is_some() {
            row.push(Cell::new(""));
        }
        row.extend(counts(&total));
        table.add_row(row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn row(d: u32, model: &str, requests: u64, cost: f64) -> UsageRow {
        UsageRow {
            day: NaiveDate::from_ymd_opt(2026, 11, d).unwrap(),
            key: None,
            account: None,
            model: Some(model.to_owned()),
            requests,
            errors: 1,
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 2,
            reasoning_tokens: 1,
            cost,
        }
    }

    #[test]
    fn the_table_has_a_row_per_group_and_a_total() {
        let rows = [row(26, "m1", 2, 0.5), row(27, "bad\x1b[2Jmodel", 3, 0.25)];
        let text = table(&rows, Some(UsageBy::Model), false).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("Day") && lines[1].contains("Model"),
            "{text}"
        );
        assert!(lines[3].contains("2026-11-26") && lines[3].contains("0.500000"));
        assert!(text.contains("bad\\x1b[2Jmodel"), "escaped: {text}");
        let total = lines.iter().find(|l| l.contains("total")).unwrap();
        let cells: Vec<&str> = total
            .split(['│', '┆'])
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells,
            ["total", "5", "2", "20", "10", "4", "2", "0.750000"],
            "{text}"
        );
        // One row: no total.
        let text = table(&rows[..1], None, false).to_string();
        assert!(!text.contains("total"), "{text}");
        assert!(!text.contains("Model"), "{text}");
    }
}
