//! Two snapshots of one table compared: rows added, removed and changed by
//! primary key, a few changed rows column by column, and each numeric
//! column's sum before and after. No I/O.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::snapshot::TableSnapshot;

/// Changed rows shown per table.
const EXAMPLES: usize = 3;

/// One table's difference.
#[derive(Debug, Clone, Serialize)]
pub struct TableChange {
    #[serde(skip)]
    pub table: String,
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
    /// Up to three changed rows, in key order.
    pub examples: Vec<ChangedRow>,
    /// Each numeric column's sum, before and after.
    pub sums: BTreeMap<String, Sum>,
}

impl TableChange {
    pub fn is_unchanged(&self) -> bool {
        self.added == 0 && self.removed == 0 && self.changed == 0
    }
}

/// A changed row: its key, and each column that changed.
#[derive(Debug, Clone, Serialize)]
pub struct ChangedRow {
    pub key: BTreeMap<String, Option<String>>,
    pub changes: BTreeMap<String, Change>,
}

/// A value before and after (`None`: NULL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub before: Option<String>,
    pub after: Option<String>,
}

/// A numeric column's sum before and after (`None`: no rows).
pub type Sum = Change;

/// Compares two snapshots of one table.
pub fn table(before: &TableSnapshot, after: &TableSnapshot) -> TableChange {
    let mut change = TableChange {
        table: after.table.clone(),
        added: after.rows.keys().filter(|k| !before.rows.contains_key(*k)).count() as u64,
        removed: before.rows.keys().filter(|k| !after.rows.contains_key(*k)).count() as u64,
        changed: 0,
        examples: Vec::new(),
        sums: BTreeMap::new(),
    };
    for (key, old) in &before.rows {
        let Some(new) = after.rows.get(key) else { continue };
        if old == new {
            continue;
        }
        change.changed += 1;
        if change.examples.len() < EXAMPLES {
            let columns = old.keys().chain(new.keys().filter(|c| !old.contains_key(*c)));
            let changes = columns
                .filter_map(|column| {
                    let (b, a) = (old.get(column).cloned().flatten(), new.get(column).cloned().flatten());
                    (b != a).then(|| (column.clone(), Change { before: b, after: a }))
                })
                .collect();
            let key = after.key.iter().map(|k| (k.clone(), new.get(k).cloned().flatten())).collect();
            change.examples.push(ChangedRow { key, changes });
        }
    }
    for (column, after_sum) in &after.sums {
        let before_sum = before.sums.get(column).cloned().flatten();
        change.sums.insert(column.clone(), Change { before: before_sum, after: after_sum.clone() });
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(rows: &[(&str, &str)], sum: &str) -> TableSnapshot {
        TableSnapshot {
            table: "allocations".into(),
            key: vec!["id".into()],
            rows: rows
                .iter()
                .map(|(id, amount)| {
                    let row = [("id", Some(*id)), ("amount", Some(*amount))]
                        .into_iter()
                        .map(|(c, v)| (c.to_string(), v.map(str::to_string)))
                        .collect();
                    (id.to_string(), row)
                })
                .collect(),
            sums: [("amount".to_string(), Some(sum.to_string()))].into_iter().collect(),
        }
    }

    #[test]
    fn rows_are_told_apart_by_key_and_changed_columns_shown() {
        let before = snapshot(&[("a", "0.00"), ("b", "5.00"), ("c", "1.00")], "6.00");
        let after = snapshot(&[("a", "70.00"), ("b", "5.00"), ("d", "2.00")], "77.00");
        let change = table(&before, &after);
        assert_eq!((change.added, change.removed, change.changed), (1, 1, 1));
        assert_eq!(change.examples.len(), 1);
        assert_eq!(
            change.examples[0].changes["amount"],
            Change { before: Some("0.00".into()), after: Some("70.00".into()) }
        );
        assert_eq!(change.sums["amount"], Change { before: Some("6.00".into()), after: Some("77.00".into()) });
        assert!(table(&before, &before).is_unchanged());
    }
}
