//! A rehearsal's report, kept next to its plan (`<plan>.rehearsal.json`)
//! and sealed with the plan's digest, so `replay apply` can show what the
//! rehearsal found and `--require-rehearsal` can tell a rehearsal of this
//! plan, on this data, from a missing, edited or outdated one.
//!
//! The file is two lines, like a plan's tail:
//!
//! ```text
//! {"rehearsal": {...}}          plan id and digest, when, by whom, the data seen, the summary, the report
//! {"seal": "<sha-256 of the plan's digest, a newline, and the line above>"}
//! ```
//!
//! Invariant: like the rest of `plan`, this reads and writes files and knows
//! nothing of the database. The fingerprint of the data it carries is
//! computed by its callers (`replay::apply::data_fingerprint`), and compared
//! by them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{PlanId, SealedPlan};

/// What production's data was when it was rehearsed: enough to tell whether
/// it has changed since, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    /// SHA-256 over the plan's rows' row versions, in plan order.
    pub rows: String,
    /// Per domain table, a digest of its rows and its row count.
    pub tables: BTreeMap<String, TableFingerprint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFingerprint {
    pub rows: i64,
    pub digest: String,
}

impl DataFingerprint {
    /// Where `now` differs from `self`, in words ("contributions (3 → 5
    /// rows)", "the plan's rows"); empty when the data is the same.
    pub fn differences(&self, now: &DataFingerprint) -> Vec<String> {
        let mut changed = Vec::new();
        if self.rows != now.rows {
            changed.push("the plan's rows".to_string());
        }
        for (table, then) in &self.tables {
            match now.tables.get(table) {
                Some(now) if now == then => {}
                Some(now) if now.rows != then.rows => {
                    changed.push(format!("{table} ({} → {} rows)", then.rows, now.rows))
                }
                Some(_) => changed.push(format!("{table} (rows changed)")),
                None => changed.push(format!("{table} (gone)")),
            }
        }
        changed.extend(now.tables.keys().filter(|t| !self.tables.contains_key(*t)).map(|t| format!("{t} (new)")));
        changed
    }
}

/// A rehearsal as kept next to its plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RehearsalRecord {
    pub plan_id: PlanId,
    pub plan_digest: String,
    pub rehearsed_at: DateTime<Utc>,
    pub operator: String,
    /// Production's data as the rehearsal's snapshot saw it.
    pub data: DataFingerprint,
    /// What `replay apply` shows of it, a line each.
    pub summary: Vec<String>,
    /// The whole report, as `replay rehearse --json` prints it.
    pub report: Value,
}

/// Why a kept rehearsal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read the rehearsal {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write the rehearsal {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not the rehearsal `replay rehearse` wrote for this plan: {problem}. Rehearse it again with `replay rehearse`")]
    Tampered { path: PathBuf, problem: String },
}

#[derive(Serialize, Deserialize)]
struct RecordLine {
    rehearsal: RehearsalRecord,
}

#[derive(Serialize, Deserialize)]
struct SealLine {
    seal: String,
}

/// Where the rehearsal of the plan at `plan_path` is kept: beside it, its
/// `.jsonl` replaced by `.rehearsal.json`.
pub fn path_for(plan_path: &Path) -> PathBuf {
    let stem = plan_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    plan_path.with_file_name(format!("{stem}.rehearsal.json"))
}

fn seal(plan_digest: &str, line: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(plan_digest.as_bytes());
    hasher.update(b"\n");
    hasher.update(line);
    hex::encode(hasher.finalize())
}

/// Keeps `record` beside `plan`, replacing an earlier rehearsal; written to
/// a temporary file and renamed, so a reader never sees half of one.
pub fn write(plan: &SealedPlan, record: &RehearsalRecord) -> Result<PathBuf, RecordError> {
    let path = path_for(&plan.path);
    let fail = |source| RecordError::Write { path: path.clone(), source };
    let line = serde_json::to_vec(&RecordLine { rehearsal: record.clone() }).map_err(|e| fail(e.into()))?;
    let sealed = serde_json::to_vec(&SealLine { seal: seal(&plan.digest, &line) }).map_err(|e| fail(e.into()))?;
    let partial = path.with_extension("json.partial");
    let written = std::fs::File::create(&partial).and_then(|mut file| {
        file.write_all(&line)?;
        file.write_all(b"\n")?;
        file.write_all(&sealed)?;
        file.write_all(b"\n")?;
        file.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&partial, &path)) {
        Ok(()) => Ok(path),
        Err(source) => {
            let _ = std::fs::remove_file(&partial);
            Err(fail(source))
        }
    }
}

/// The rehearsal kept beside `plan`, if there is one, checked: its seal
/// matches its contents and the plan's digest, and it names this plan.
pub fn open(plan: &SealedPlan) -> Result<Option<RehearsalRecord>, RecordError> {
    let path = path_for(&plan.path);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RecordError::Read { path, source }),
    };
    let tampered = |problem: &str| RecordError::Tampered { path: path.clone(), problem: problem.to_string() };
    let mut lines = text.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let (Some(line), Some(sealed), None) = (lines.next(), lines.next(), lines.next()) else {
        return Err(tampered("it is not two lines (the rehearsal and its seal)"));
    };
    let sealed: SealLine = serde_json::from_slice(sealed).map_err(|_| tampered("its second line is not its seal"))?;
    if sealed.seal != seal(&plan.digest, line) {
        return Err(tampered(
            "its seal does not match its contents and this plan's digest (edited, or made for another plan)",
        ));
    }
    let record: RecordLine = serde_json::from_slice(line).map_err(|_| tampered("its first line is not a rehearsal"))?;
    let record = record.rehearsal;
    if record.plan_id != plan.header.plan_id || record.plan_digest != plan.digest {
        return Err(tampered("it names another plan"));
    }
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(rows: &str, tables: &[(&str, i64, &str)]) -> DataFingerprint {
        DataFingerprint {
            rows: rows.to_string(),
            tables: tables
                .iter()
                .map(|(t, n, d)| (t.to_string(), TableFingerprint { rows: *n, digest: d.to_string() }))
                .collect(),
        }
    }

    #[test]
    fn differences_name_what_changed() {
        let then = fingerprint("r1", &[("allocations", 3, "a"), ("contributions", 3, "c")]);
        assert!(then.differences(&then.clone()).is_empty());
        let now = fingerprint("r2", &[("allocations", 3, "b"), ("contributions", 5, "d")]);
        assert_eq!(
            then.differences(&now),
            vec!["the plan's rows", "allocations (rows changed)", "contributions (3 → 5 rows)"]
        );
    }

    #[test]
    fn the_record_sits_beside_its_plan() {
        assert_eq!(
            path_for(Path::new("replay-plans/20261203T120000Z-abc.jsonl")),
            Path::new("replay-plans/20261203T120000Z-abc.rehearsal.json")
        );
    }
}
