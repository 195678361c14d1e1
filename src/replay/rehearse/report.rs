//! A rehearsal shown: for people (a block per domain table, the ledger's
//! outcome, the effects that would have left the database), as JSON
//! (`--json`), and in a few lines (`summary`, what `replay apply` shows of
//! the kept report). No I/O.

use std::fmt::Write;

use serde_json::{json, Map, Value};

use super::{Change, Rehearsal};

/// The rehearsal as `replay rehearse --json` prints it.
pub fn json(rehearsal: &Rehearsal) -> Value {
    let tables: Map<String, Value> =
        rehearsal.tables.iter().map(|t| (t.table.clone(), serde_json::to_value(t).unwrap_or(Value::Null))).collect();
    let ledger = &rehearsal.ledger;
    let count =
        |status: &str| -> i64 { ledger.groups.iter().filter(|g| g.status.as_str() == status).map(|g| g.count).sum() };
    let errors: Vec<Value> = ledger
        .groups
        .iter()
        .filter(|g| g.error.is_some())
        .map(|g| json!({"status": g.status, "error": g.error, "count": g.count}))
        .collect();
    json!({
        "plan_id": rehearsal.plan_id,
        "plan_digest": rehearsal.plan_digest,
        "database": rehearsal.database,
        "kept": rehearsal.kept,
        "tables": tables,
        "ledger": {
            "reset": ledger.reset,
            "stale": ledger.stale,
            "processed": count("processed"),
            "skipped": count("skipped"),
            "failed": count("error"),
            "retrying": ledger.groups.iter().filter(|g| g.status.as_str() == "pending" && g.error.is_some()).map(|g| g.count).sum::<i64>(),
            "errors": errors,
            "batches": ledger.batches,
            "bounded": ledger.bounded,
        },
        "external_effects": rehearsal.external_effects,
        "seconds": rehearsal.seconds,
        "steps": rehearsal.steps,
        "report_path": rehearsal.report_path,
    })
}

/// Error groups named in a summary; the rest are counted.
const SUMMARY_ERRORS: usize = 3;

/// The rehearsal in a few lines: each changed table with its changed sums,
/// the ledger's outcome with its first errors, the effects sandboxed.
pub fn summary(rehearsal: &Rehearsal) -> Vec<String> {
    let mut lines = Vec::new();
    for table in rehearsal.tables.iter().filter(|t| !t.is_unchanged()) {
        let mut line =
            format!("{}: {} added, {} removed, {} changed", table.table, table.added, table.removed, table.changed);
        for (column, sum) in table.sums.iter().filter(|(_, s)| s.before != s.after) {
            let _ = write!(line, "; {column} {}", arrow(sum, true));
        }
        lines.push(line);
    }
    if lines.is_empty() {
        lines.push("every domain table unchanged".to_string());
    }
    let groups = &rehearsal.ledger.groups;
    let count = |status: &str, errored: bool| -> i64 {
        groups.iter().filter(|g| g.status.as_str() == status && g.error.is_some() == errored).map(|g| g.count).sum()
    };
    // A failure the worker would retry ends a rehearsal pending with its
    // error: it counts as failed, and says it would be retried.
    let retrying = count("pending", true);
    let mut line = format!(
        "ledger: {} processed, {} failed",
        count("processed", false),
        count("error", true) + count("error", false) + retrying
    );
    if retrying > 0 {
        let _ = write!(line, " ({retrying} of them would be retried)");
    }
    let _ = write!(line, ", {} skipped", count("skipped", false) + count("skipped", true));
    let untouched = count("pending", false);
    if untouched > 0 {
        let _ = write!(line, ", {untouched} not reached");
    }
    lines.push(line);
    let errors: Vec<_> = groups.iter().filter(|g| g.error.is_some()).collect();
    for group in errors.iter().take(SUMMARY_ERRORS) {
        let how = match group.status.as_str() {
            "pending" => "failed, would be retried",
            "error" => "failed",
            other => other,
        };
        lines.push(format!("  {} {how}: {}", group.count, group.error.as_deref().unwrap_or("")));
    }
    if errors.len() > SUMMARY_ERRORS {
        lines.push(format!("  and {} more error groups (see the report)", errors.len() - SUMMARY_ERRORS));
    }
    if let Some(first) = rehearsal.external_effects.first() {
        lines.push(format!(
            "external effects (sandboxed in the rehearsal): {}, e.g. {} {}: {}",
            rehearsal.external_effects.len(),
            first.event_type,
            first.event_id,
            first.effect
        ));
    }
    lines
}

/// The rehearsal for people.
pub fn human(rehearsal: &Rehearsal) -> String {
    let mut out = String::new();
    let digest = rehearsal.plan_digest.get(..12).unwrap_or(&rehearsal.plan_digest);
    let _ = writeln!(out, "rehearsal of plan {} (digest {digest}…) in {:.1} s", rehearsal.plan_id, rehearsal.seconds);
    let s = &rehearsal.steps;
    let _ = writeln!(
        out,
        "  steps: checks {:.1} s, dump {:.1} s, scratch database {:.1} s, restore {:.1} s, reset {:.1} s, apply {:.1} s, compare {:.1} s",
        s.checks, s.dump, s.scratch, s.restore, s.reset, s.apply, s.compare
    );
    for table in &rehearsal.tables {
        if table.is_unchanged() {
            let _ = writeln!(out, "\n{}: unchanged", table.table);
            continue;
        }
        let _ = writeln!(
            out,
            "\n{}: {} added, {} removed, {} changed",
            table.table, table.added, table.removed, table.changed
        );
        for row in &table.examples {
            let key: Vec<String> =
                row.key.iter().map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("NULL"))).collect();
            let changes: Vec<String> =
                row.changes.iter().map(|(column, change)| format!("{column}: {}", arrow(change, false))).collect();
            let _ = writeln!(out, "  {}: {}", key.join(","), changes.join("; "));
        }
        for (column, sum) in table.sums.iter().filter(|(_, s)| s.before != s.after) {
            let _ = writeln!(out, "  {}.{column}: {}", table.table, arrow(sum, true));
        }
    }
    let ledger = &rehearsal.ledger;
    let _ =
        writeln!(out, "\nledger: {} of the plan's rows reset (or trigger events added), then applied", ledger.reset);
    if ledger.stale > 0 {
        let _ = writeln!(out, "  {} changed in production since planning: left alone, as apply would", ledger.stale);
    }
    for group in &ledger.groups {
        match &group.error {
            Some(error) => {
                let _ = writeln!(out, "  {} {}: {error}", group.count, group.status.as_str());
            }
            None => {
                let _ = writeln!(out, "  {} {}", group.count, group.status.as_str());
            }
        }
    }
    if ledger.bounded {
        let _ = writeln!(out, "  stopped after {} batches with rows still due", ledger.batches);
    }
    if rehearsal.external_effects.is_empty() {
        let _ = writeln!(out, "\nexternal effects: none");
    } else {
        let _ = writeln!(out, "\nexternal effects (sandboxed, not done):");
        for effect in &rehearsal.external_effects {
            let _ = writeln!(out, "  {} {}: {}", effect.event_type, effect.event_id, effect.effect);
        }
    }
    let _ = writeln!(
        out,
        "\nreport kept: {} (`replay apply` shows it; --require-rehearsal accepts it while production's data stays as rehearsed)",
        rehearsal.report_path.display()
    );
    let _ = if rehearsal.kept {
        writeln!(out, "\nscratch database {} kept: drop it when done", rehearsal.database)
    } else {
        writeln!(out, "\nscratch database {} dropped; production untouched", rehearsal.database)
    };
    out
}

fn arrow(change: &Change, numeric: bool) -> String {
    let show = |v: &Option<String>| match v {
        None => "NULL".to_string(),
        Some(v) if numeric => thousands(v),
        Some(v) => v.clone(),
    };
    format!("{} → {}", show(&change.before), show(&change.after))
}

/// `20200.00` as `20,200.00`.
fn thousands(number: &str) -> String {
    let (sign, rest) = number.strip_prefix('-').map_or(("", number), |r| ("-", r));
    let (whole, fraction) = rest.split_once('.').map_or((rest, None), |(w, f)| (w, Some(f)));
    if !whole.chars().all(|c| c.is_ascii_digit()) {
        return number.to_string();
    }
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    match fraction {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn sums_are_grouped_by_thousands() {
        assert_eq!(thousands("20200.00"), "20,200.00");
        assert_eq!(thousands("0.00"), "0.00");
        assert_eq!(thousands("-1234567"), "-1,234,567");
        assert_eq!(thousands("NaN"), "NaN");
    }
}
