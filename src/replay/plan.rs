//! A replay plan: exactly which ledger rows to replay (and, for a workflow,
//! which domain rows to reset and which events to trigger), why, by whom,
//! against which database, sealed with a digest, so `replay apply` can refuse
//! a plan that was edited, made elsewhere, or has gone stale.
//!
//! The file is JSON Lines, written and read as a stream so a plan over a
//! million rows costs no more memory than one over ten:
//!
//! ```text
//! {"header": {...}}                         plan id, reason, selector, workflow, database
//! [id, "event_id", "event_type", "status", "version"]   one line per planned row
//! {"summary": {...}}                        counts, samples, warnings
//! {"digest": "<sha-256 of every byte above>"}
//! ```
//!
//! A row's `version` is its Postgres row version (`xmin`) at planning time:
//! any change to the row, by a worker, an operator's UPDATE or a restore,
//! gives it a new one, which is how `apply` knows a plan is stale.
//!
//! Architecture invariant: this module reads and writes plan files and knows
//! nothing of the database; the commands bring the rows. (Its `id` submodule
//! only says how a [`PlanId`] maps to a uuid column: a type, no I/O; its
//! `rehearsal` submodule keeps a rehearsal's report beside its plan, a
//! file too.)

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::handlers::Registry;
use crate::replay::selector::Selector;

pub mod id;
pub mod rehearsal;
pub use crate::store::database::DatabaseIdentity;
pub use id::PlanId;

/// Plan files this version writes and reads.
pub const FORMAT_VERSION: u32 = 2;

/// What the columns of a row line are.
pub const ROW_FIELDS: [&str; 5] = ["id", "event_id", "event_type", "status", "version"];

/// Why a plan file cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read the plan {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write the plan {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    /// The file is not what `replay plan` wrote: edited, truncated, or not a plan.
    #[error("{path} is not the plan `replay plan` wrote: {problem}. Make a new plan with `replay plan`")]
    Tampered { path: PathBuf, problem: String },
}

/// One planned row, with its row version at planning time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RowLine", into = "RowLine")]
pub struct PlannedRow {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub version: String,
}

/// A row as one compact JSON array, in [`ROW_FIELDS`] order.
type RowLine = (i64, String, String, String, String);

/// A row to write, borrowed from wherever it was read, in [`ROW_FIELDS`]
/// order: serialized exactly as [`PlannedRow`] is.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RowRef<'a>(pub i64, pub &'a str, pub &'a str, pub &'a str, pub &'a str);

impl<'a> From<&'a PlannedRow> for RowRef<'a> {
    fn from(row: &'a PlannedRow) -> Self {
        Self(row.id, &row.event_id, &row.event_type, &row.status, &row.version)
    }
}

impl From<RowLine> for PlannedRow {
    fn from((id, event_id, event_type, status, version): RowLine) -> Self {
        Self { id, event_id, event_type, status, version }
    }
}

impl From<PlannedRow> for RowLine {
    fn from(row: PlannedRow) -> Self {
        (row.id, row.event_id, row.event_type, row.status, row.version)
    }
}

/// An event a workflow publishes as new (e.g. `period.close`): it enters the
/// ledger when the plan is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: Value,
}

/// What a workflow will do, as planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowPlan {
    pub name: String,
    /// Its parameters, resolved (`latest-closed` became a period id).
    pub params: BTreeMap<String, String>,
    /// The steps, in words, in order.
    pub steps: Vec<String>,
    /// Domain rows the workflow resets, by table.
    pub domain_rows: BTreeMap<String, i64>,
    /// A digest of the domain rows it reads and resets: apply refuses if it changed.
    pub fingerprint: String,
    pub triggers: Vec<Trigger>,
}

/// The plan's first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    pub plan_id: PlanId,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub reason: String,
    /// Rows are treated as new: idempotency is skipped. Dangerous.
    pub force: bool,
    /// The ledger rows' selector, if the plan selects any.
    pub selector: Option<Selector>,
    pub workflow: Option<WorkflowPlan>,
    pub database: DatabaseIdentity,
    pub row_fields: Vec<String>,
    /// Where `apply` publishes the events instead of our workers' exchange
    /// (`--destination queue:NAME`); absent in plans for our own workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
}

/// Where a plan's events go when not to our own workers: one subscriber's
/// queue, reached through the default exchange. Written `queue:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Destination {
    Queue(String),
}

/// What `--destination` takes, said when it is given something else.
pub const DESTINATION_USAGE: &str = "--destination takes queue:NAME";

impl std::str::FromStr for Destination {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            // AMQP queue names are at most 255 bytes; `amq.` ones are the broker's.
            Some(("queue", name))
                if !name.trim().is_empty() && name.len() <= 255 && !name.chars().any(char::is_control) =>
            {
                Ok(Self::Queue(name.to_string()))
            }
            _ => Err(DESTINATION_USAGE.to_string()),
        }
    }
}

impl TryFrom<String> for Destination {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Destination> for String {
    fn from(destination: Destination) -> Self {
        destination.to_string()
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Queue(name) => write!(f, "queue:{name}"),
        }
    }
}

impl Header {
    pub fn new(
        created_by: String,
        reason: String,
        force: bool,
        selector: Option<Selector>,
        database: DatabaseIdentity,
    ) -> Self {
        Self {
            version: FORMAT_VERSION,
            plan_id: PlanId::random(),
            created_at: Utc::now(),
            created_by,
            reason,
            force,
            selector,
            workflow: None,
            database,
            row_fields: ROW_FIELDS.iter().map(|f| f.to_string()).collect(),
            destination: None,
        }
    }

    /// Id of a workflow's `n`th trigger event: derived from the plan, so a
    /// resumed apply publishes the same event, and the ledger dedupes it.
    pub fn trigger_id(&self, n: usize, event_type: &str) -> String {
        Uuid::new_v5(&self.plan_id.as_uuid(), format!("{n}:{event_type}").as_bytes()).to_string()
    }

    /// Where the plan is written: `DIR/<created>-<plan id>.jsonl`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}-{}.jsonl", self.created_at.format("%Y%m%dT%H%M%SZ"), self.plan_id))
    }
}

/// What a person reads in five seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub rows: usize,
    pub by_type: BTreeMap<String, usize>,
    pub by_status: BTreeMap<String, usize>,
    pub by_day: BTreeMap<String, usize>,
    pub first_occurred_at: Option<DateTime<Utc>>,
    pub last_occurred_at: Option<DateTime<Utc>>,
    pub samples: Vec<Value>,
    pub warnings: Vec<String>,
    /// Event types among the rows and triggers whose handlers reach outside the database.
    pub external_effects: Vec<String>,
}

impl Summary {
    fn add(&mut self, event_type: &str, status: &str, occurred_at: DateTime<Utc>) {
        self.rows += 1;
        count(&mut self.by_type, event_type);
        count(&mut self.by_status, status);
        self.first_occurred_at = Some(self.first_occurred_at.map_or(occurred_at, |t| t.min(occurred_at)));
        self.last_occurred_at = Some(self.last_occurred_at.map_or(occurred_at, |t| t.max(occurred_at)));
    }

    /// Warnings follow from what was planned: external effects and `--force`.
    fn warn(&mut self, header: &Header, registry: &Registry) {
        let triggered: Vec<&str> =
            header.workflow.iter().flat_map(|w| &w.triggers).map(|t| t.event_type.as_str()).collect();
        self.external_effects = registry
            .external_effect_types()
            .into_iter()
            .filter(|t| self.by_type.contains_key(*t) || triggered.contains(t))
            .map(str::to_string)
            .collect();
        for event_type in &self.external_effects {
            self.warnings.push(format!(
                "{event_type} has effects outside the database (restoring a backup does not undo them): applying this plan requires --allow-external-effects"
            ));
        }
        if header.force {
            self.warnings.push(
                "--force: rows are treated as new and idempotency is skipped; effects may apply twice".to_string(),
            );
        }
    }

    /// Events `apply` publishes: the rows, then the workflow's triggers.
    pub fn events(&self, header: &Header) -> usize {
        self.rows + header.workflow.as_ref().map_or(0, |w| w.triggers.len())
    }
}

/// Adds one to `key`'s count without allocating a key that is already there
/// (a plan over a million rows has a handful of distinct ones).
fn count(map: &mut BTreeMap<String, usize>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

#[derive(Serialize, Deserialize)]
struct HeaderLine {
    header: Header,
}

#[derive(Serialize, Deserialize)]
struct SummaryLine {
    summary: Summary,
}

#[derive(Serialize, Deserialize)]
struct DigestLine {
    digest: String,
}

/// Writes a plan as its rows stream in; the file appears under its final
/// name only once sealed, so an interrupted plan leaves nothing to apply.
pub struct PlanWriter {
    header: Header,
    summary: Summary,
    /// Rows by day, kept as dates while streaming: no string per row.
    days: BTreeMap<chrono::NaiveDate, usize>,
    partial: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    hasher: Sha256,
    /// One line's bytes, reused.
    buffer: Vec<u8>,
}

impl PlanWriter {
    pub fn create(dir: &Path, header: Header) -> Result<Self, PlanError> {
        let path = header.path_in(dir);
        let partial = path.with_extension("jsonl.partial");
        let write_error = |source| PlanError::Write { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(write_error)?;
        let file = File::create(&partial).map_err(write_error)?;
        let mut writer = Self {
            summary: Summary::default(),
            days: BTreeMap::new(),
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            buffer: Vec::with_capacity(256),
            partial,
            path,
            header,
        };
        let line = HeaderLine { header: writer.header.clone() };
        writer.line(&line)?;
        Ok(writer)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn rows(&self) -> usize {
        self.summary.rows
    }

    /// Adds a row; `occurred_at` feeds the summary only.
    pub fn push(&mut self, row: RowRef<'_>, occurred_at: DateTime<Utc>) -> Result<(), PlanError> {
        self.count(row.2, row.3, occurred_at);
        self.line(&row)
    }

    fn count(&mut self, event_type: &str, status: &str, occurred_at: DateTime<Utc>) {
        self.summary.add(event_type, status, occurred_at);
        *self.days.entry(occurred_at.date_naive()).or_default() += 1;
    }

    fn line(&mut self, value: &impl Serialize) -> Result<(), PlanError> {
        self.buffer.clear();
        if let Err(e) = serde_json::to_writer(&mut self.buffer, value) {
            return Err(self.write_error(e.into()));
        }
        self.buffer.push(b'\n');
        self.flush_line()
    }

    fn flush_line(&mut self) -> Result<(), PlanError> {
        self.hasher.update(&self.buffer);
        self.out.write_all(&self.buffer).map_err(|e| PlanError::Write { path: self.path.clone(), source: e })
    }

    fn write_error(&self, source: std::io::Error) -> PlanError {
        PlanError::Write { path: self.path.clone(), source }
    }

    /// Writes the summary and the digest, and moves the file into place.
    pub fn seal(mut self, samples: Vec<Value>, registry: &Registry) -> Result<SealedPlan, PlanError> {
        self.summary.samples = samples;
        self.summary.by_day = self.days.iter().map(|(day, n)| (day.to_string(), *n)).collect();
        self.summary.warn(&self.header, registry);
        let line = SummaryLine { summary: self.summary.clone() };
        self.line(&line)?;
        let digest = hex::encode(self.hasher.clone().finalize());
        let mut bytes =
            serde_json::to_vec(&DigestLine { digest: digest.clone() }).map_err(|e| self.write_error(e.into()))?;
        bytes.push(b'\n');
        self.out.write_all(&bytes).map_err(|e| self.write_error(e))?;
        let file =
            self.out.into_inner().map_err(|e| PlanError::Write { path: self.path.clone(), source: e.into_error() })?;
        file.sync_all().map_err(|source| PlanError::Write { path: self.path.clone(), source })?;
        std::fs::rename(&self.partial, &self.path)
            .map_err(|source| PlanError::Write { path: self.path.clone(), source })?;
        Ok(SealedPlan { path: self.path, header: self.header, summary: self.summary, digest })
    }

    /// Drops the unfinished file.
    pub fn abandon(self) {
        drop(self.out);
        let _ = std::fs::remove_file(&self.partial);
    }
}

/// A plan file whose digest matched: its header and summary; the rows are
/// read again, in chunks, by [`SealedPlan::rows`].
#[derive(Debug, Clone)]
pub struct SealedPlan {
    pub path: PathBuf,
    pub header: Header,
    pub summary: Summary,
    pub digest: String,
}

impl SealedPlan {
    /// Reads a plan file whole, checking its digest, its format and that its
    /// row count matches its summary.
    pub fn open(path: &Path) -> Result<Self, PlanError> {
        let tampered = |problem: String| PlanError::Tampered { path: path.to_path_buf(), problem };
        let file = File::open(path).map_err(|source| PlanError::Read { path: path.to_path_buf(), source })?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut hasher = Sha256::new();
        let mut line = Vec::new();
        let mut header: Option<Header> = None;
        let mut summary: Option<Summary> = None;
        let mut digest: Option<String> = None;
        let mut rows = 0usize;
        let mut number = 0usize;
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|source| PlanError::Read { path: path.to_path_buf(), source })?;
            if read == 0 {
                break;
            }
            number += 1;
            if digest.is_some() {
                return Err(tampered(format!("line {number} follows the digest")));
            }
            let bad = |what: &str, e: serde_json::Error| format!("line {number} is not {what} ({e})");
            if number == 1 {
                let parsed: HeaderLine = serde_json::from_slice(&line).map_err(|e| tampered(bad("its header", e)))?;
                if parsed.header.version != FORMAT_VERSION {
                    return Err(tampered(format!(
                        "it has format version {}, this replay reads version {FORMAT_VERSION}",
                        parsed.header.version
                    )));
                }
                header = Some(parsed.header);
            } else if line.first() == Some(&b'[') && summary.is_none() {
                serde_json::from_slice::<PlannedRow>(&line).map_err(|e| tampered(bad("a row", e)))?;
                rows += 1;
            } else if summary.is_none() {
                let parsed: SummaryLine = serde_json::from_slice(&line).map_err(|e| tampered(bad("the summary", e)))?;
                summary = Some(parsed.summary);
            } else {
                let parsed: DigestLine = serde_json::from_slice(&line).map_err(|e| tampered(bad("the digest", e)))?;
                digest = Some(parsed.digest);
                continue;
            }
            hasher.update(&line);
        }
        let (Some(header), Some(summary), Some(digest)) = (header, summary, digest) else {
            return Err(tampered("it is incomplete (no header, summary or digest line)".into()));
        };
        if hex::encode(hasher.finalize()) != digest {
            return Err(tampered("its digest does not match its contents: it was edited after planning".into()));
        }
        if rows != summary.rows {
            return Err(tampered(format!("it holds {rows} rows but its summary says {}", summary.rows)));
        }
        Ok(Self { path: path.to_path_buf(), header, summary, digest })
    }

    /// The planned rows, in plan order, `chunk` at a time.
    pub fn rows(&self, chunk: usize) -> Result<RowChunks, PlanError> {
        let file = File::open(&self.path).map_err(|source| PlanError::Read { path: self.path.clone(), source })?;
        Ok(RowChunks {
            path: self.path.clone(),
            lines: BufReader::with_capacity(1 << 20, file),
            chunk,
            line: Vec::new(),
        })
    }

    /// Events `apply` publishes: the rows, then the workflow's triggers.
    pub fn events(&self) -> usize {
        self.summary.events(&self.header)
    }

    pub fn triggers(&self) -> &[Trigger] {
        self.header.workflow.as_ref().map_or(&[], |w| w.triggers.as_slice())
    }

    /// The ids of the events `apply` publishes, in plan order (the rows,
    /// then the triggers), `batch` at a time.
    pub fn event_ids(&self, batch: usize) -> Result<EventIds<'_>, PlanError> {
        Ok(EventIds {
            plan: self,
            rows: self.rows(batch)?,
            buffered: VecDeque::new(),
            triggers_from: None,
            batch: batch.max(1),
        })
    }
}

/// The ids of a plan's events in the order `apply` publishes them, read from
/// the file a batch at a time: the rows, then the workflow's triggers.
pub struct EventIds<'a> {
    plan: &'a SealedPlan,
    rows: RowChunks,
    buffered: VecDeque<String>,
    /// Once the rows are read: the next trigger's index.
    triggers_from: Option<usize>,
    batch: usize,
}

impl EventIds<'_> {
    fn next_id(&mut self) -> Result<Option<String>, PlanError> {
        loop {
            if let Some(id) = self.buffered.pop_front() {
                return Ok(Some(id));
            }
            match self.triggers_from {
                Some(n) => {
                    self.triggers_from = Some(n + 1);
                    return Ok(self.plan.triggers().get(n).map(|t| t.event_id.clone()));
                }
                None => match self.rows.next() {
                    Some(chunk) => self.buffered.extend(chunk?.into_iter().map(|r| r.event_id)),
                    None => self.triggers_from = Some(0),
                },
            }
        }
    }

    /// Skips the first `n` events (those a resumed apply already published).
    pub fn skip_events(&mut self, n: u64) -> Result<(), PlanError> {
        for _ in 0..n {
            if self.next_id()?.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// The next batch of ids, `None` once every event was read.
    pub fn next_batch(&mut self) -> Result<Option<Vec<String>>, PlanError> {
        let mut ids = Vec::with_capacity(self.batch);
        while ids.len() < self.batch {
            match self.next_id()? {
                Some(id) => ids.push(id),
                None => break,
            }
        }
        Ok((!ids.is_empty()).then_some(ids))
    }
}

/// Reads a plan's rows a chunk at a time.
pub struct RowChunks {
    path: PathBuf,
    lines: BufReader<File>,
    chunk: usize,
    line: Vec<u8>,
}

impl Iterator for RowChunks {
    type Item = Result<Vec<PlannedRow>, PlanError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut rows = Vec::with_capacity(self.chunk);
        while rows.len() < self.chunk.max(1) {
            self.line.clear();
            match self.lines.read_until(b'\n', &mut self.line) {
                Ok(0) => break,
                Ok(_) if self.line.first() == Some(&b'[') => match serde_json::from_slice(&self.line) {
                    Ok(row) => rows.push(row),
                    Err(e) => {
                        return Some(Err(PlanError::Tampered { path: self.path.clone(), problem: e.to_string() }))
                    }
                },
                Ok(_) => {}
                Err(source) => return Some(Err(PlanError::Read { path: self.path.clone(), source })),
            }
        }
        (!rows.is_empty()).then_some(Ok(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(force: bool) -> Header {
        Header::new(
            "ops".into(),
            "fix".into(),
            force,
            Some(Selector::default()),
            DatabaseIdentity { system_identifier: Some("1".into()), database: "db".into() },
        )
    }

    fn row(id: i64, event_type: &str, status: &str) -> PlannedRow {
        PlannedRow {
            id,
            event_id: format!("e{id}"),
            event_type: event_type.into(),
            status: status.into(),
            version: "7".into(),
        }
    }

    fn write(dir: &Path, force: bool, rows: &[PlannedRow]) -> SealedPlan {
        let mut writer = PlanWriter::create(dir, header(force)).unwrap();
        for r in rows {
            writer.push(r.into(), "2026-01-02T03:04:05Z".parse().unwrap()).unwrap();
        }
        writer.seal(vec![], &Registry::reference()).unwrap()
    }

    #[test]
    fn event_ids_are_the_rows_then_the_triggers_in_batches_and_skip_what_was_published() {
        let dir = tempfile::tempdir().unwrap();
        let mut header = header(false);
        let trigger = |n: usize| Trigger {
            event_id: format!("t{n}"),
            event_type: "period.close".into(),
            occurred_at: "2026-01-02T03:04:05Z".parse().unwrap(),
            payload: Value::Null,
        };
        header.workflow = Some(WorkflowPlan {
            name: "period-close".into(),
            params: BTreeMap::new(),
            steps: vec![],
            domain_rows: BTreeMap::new(),
            fingerprint: "f".into(),
            triggers: vec![trigger(1), trigger(2)],
        });
        let mut writer = PlanWriter::create(dir.path(), header).unwrap();
        for r in [row(1, "period.opened", "processed"), row(2, "period.opened", "processed"), row(3, "x", "error")] {
            writer.push((&r).into(), "2026-01-02T03:04:05Z".parse().unwrap()).unwrap();
        }
        let plan = writer.seal(vec![], &Registry::reference()).unwrap();
        assert_eq!(plan.events(), 5);
        let batches = |mut ids: EventIds<'_>| {
            let mut all = Vec::new();
            while let Some(batch) = ids.next_batch().unwrap() {
                all.push(batch);
            }
            all
        };
        assert_eq!(batches(plan.event_ids(2).unwrap()), [vec!["e1", "e2"], vec!["e3", "t1"], vec!["t2"]]);
        let mut resumed = plan.event_ids(2).unwrap();
        resumed.skip_events(3).unwrap();
        assert_eq!(batches(resumed), [vec!["t1", "t2"]]);
        let mut past_the_end = plan.event_ids(10).unwrap();
        past_the_end.skip_events(9).unwrap();
        assert!(past_the_end.next_batch().unwrap().is_none());
    }

    #[test]
    fn a_sealed_plan_reads_back_and_detects_any_edit() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [row(1, "payment.initiated", "processed"), row(2, "period.opened", "error")];
        let sealed = write(dir.path(), false, &rows);
        let opened = SealedPlan::open(&sealed.path).unwrap();
        assert_eq!(opened.header, sealed.header);
        assert_eq!(opened.summary.by_status.get("error"), Some(&1));
        assert_eq!(opened.summary.external_effects, ["payment.initiated"]);
        assert!(opened.summary.warnings[0].contains("--allow-external-effects"));
        let read: Vec<PlannedRow> = opened.rows(1).unwrap().flat_map(Result::unwrap).collect();
        assert_eq!(read, rows);

        let text = std::fs::read_to_string(&sealed.path).unwrap();
        let edited = text.replacen("\"e2\"", "\"e9\"", 1);
        std::fs::write(&sealed.path, edited).unwrap();
        let err = SealedPlan::open(&sealed.path).unwrap_err().to_string();
        assert!(err.contains("edited after planning"), "{err}");
        let dropped: String = text.lines().filter(|l| !l.contains("\"e2\"")).map(|l| format!("{l}\n")).collect();
        std::fs::write(&sealed.path, dropped).unwrap();
        assert!(SealedPlan::open(&sealed.path).is_err(), "removing a row breaks the digest");

        let forced = write(dir.path(), true, &rows);
        assert!(forced.summary.warnings.iter().any(|w| w.starts_with("--force")));
    }

    #[test]
    fn a_destination_is_sealed_with_the_header_and_older_headers_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut header = header(false);
        header.destination = Some("queue:billing.history".parse().unwrap());
        let mut writer = PlanWriter::create(dir.path(), header).unwrap();
        writer.push((&row(1, "period.opened", "processed")).into(), "2026-01-02T03:04:05Z".parse().unwrap()).unwrap();
        let sealed = writer.seal(vec![], &Registry::reference()).unwrap();
        let opened = SealedPlan::open(&sealed.path).unwrap();
        assert_eq!(opened.header.destination, Some(Destination::Queue("billing.history".into())));
        let text = std::fs::read_to_string(&sealed.path).unwrap();
        assert!(text.lines().next().unwrap().contains("\"destination\":\"queue:billing.history\""), "{text}");
        std::fs::write(&sealed.path, text.replacen("queue:billing.history", "queue:billing.other", 1)).unwrap();
        assert!(SealedPlan::open(&sealed.path).is_err(), "the destination is part of the digest");

        // A plan for our own workers writes no destination, as plans did before it existed.
        let plain = write(dir.path(), false, &[row(1, "period.opened", "processed")]);
        let text = std::fs::read_to_string(&plain.path).unwrap();
        assert!(!text.contains("destination"), "{text}");
        assert_eq!(SealedPlan::open(&plain.path).unwrap().header.destination, None);
    }

    #[test]
    fn a_destination_is_queue_colon_name_and_nothing_else() {
        assert_eq!("queue:a.b".parse::<Destination>(), Ok(Destination::Queue("a.b".into())));
        assert_eq!(Destination::Queue("a.b".into()).to_string(), "queue:a.b");
        for bad in ["nonsense", "queue:", "queue: ", "exchange:x", ":x", "queue:a\nb"] {
            assert_eq!(bad.parse::<Destination>(), Err(DESTINATION_USAGE.to_string()), "{bad}");
        }
    }
}
