//! `replay apply PLAN`: checks the plan, asks (or takes `--yes`), then backs
//! up, resets and republishes, with a progress bar on a terminal; with
//! `--notify`, a webhook hears that it started and how it ended.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::cli::ApplyArgs;
use crate::config::Endpoints;
use crate::control::notify::{AppliedPlan, Notifier};
use crate::replay::apply::{self, BackupSource, Progress, Request};
use crate::replay::planning;
use crate::store::database;

pub async fn run(endpoints: &Endpoints, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let request = Request {
        operator: args.operator.clone().unwrap_or_else(super::os_user),
        allow_external_effects: args.allow_external_effects,
        backup: match &args.backup {
            Some(path) => BackupSource::Existing { path: path.clone(), max_age: args.backup_max_age },
            None => BackupSource::Fresh { dir: args.backup_dir.clone() },
        },
        rate: args.rate,
        canary: match args.canary {
            Some(events) => Some(
                apply::Canary::new(events, args.max_failure_rate, args.canary_wait).map_err(crate::exit::UsageError)?,
            ),
            None => None,
        },
        require_rehearsal: args.require_rehearsal,
    };
    let pool = database::connect(&endpoints.database_url, 4).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    crate::store::partitioning::check(&pool, endpoints.partitions).await?;
    let checked = apply::check(&pool, &args.plan, &request).await?;
    let plan = &checked.plan;
    let path = plan.path.display().to_string();

    if checked.is_done() {
        let run = checked.run.as_ref();
        let finished = run.and_then(|r| r.finished_at).map_or("?".to_string(), |t| t.to_rfc3339());
        if args.json {
            println!(
                "{}",
                serde_json::json!({"plan_id": plan.header.plan_id, "already_applied": true, "finished_at": finished})
            );
        } else {
            println!("plan {} was already applied (finished {finished}): nothing to do.", plan.header.plan_id);
            println!("next: `replay status {path}` shows how its events were processed");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.json {
        for line in checked.rehearsal.describe(&plan.path) {
            println!("{line}");
        }
    }
    if args.dry_run {
        let action = action(&checked);
        if args.json {
            println!(
                "{}",
                serde_json::json!({"plan_id": plan.header.plan_id, "dry_run": true, "checks": "passed", "events": plan.events(), "would": action, "rehearsal": checked.rehearsal.describe(&plan.path)})
            );
        } else {
            print!("{}", planning::human(plan, args.rate));
            println!("dry run: every check passed (intact, this database, current, not paused, no other apply); nothing was changed.");
            println!("next: `replay apply {path}` would {action} {} events", plan.events());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes {
        confirm(&planning::human(plan, args.rate), &checked)?;
    }

    let shutdown = CancellationToken::new();
    super::spawn_signal_listener(shutdown.clone())?;
    let mut shown = Shown::new(plan.summary.rows as u64, plan.events() as u64, args.json);
    let (notifier, applied) = (Notifier::new(args.notify.clone()), AppliedPlan::of(plan, &request.operator));
    notifier.send(applied.started());
    let outcome = apply::execute(&pool, endpoints, checked, &request, &shutdown, |p| shown.show(p)).await;
    shown.finish();
    notifier.send(applied.ended(&outcome));
    notifier.close().await;
    let outcome = outcome?;
    if args.json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        let resumed = if outcome.resumed { " (resumed)" } else { "" };
        match &outcome.broker_error {
            None => println!(
                "applied plan {}{resumed}: {} of {} events published and confirmed in {:.1} s",
                outcome.plan_id, outcome.published_now, outcome.events, outcome.seconds
            ),
            Some(error) => {
                println!(
                    "applied plan {}{resumed}, with RabbitMQ failing mid-way ({error}): {} of {} events published and confirmed, {} handed to the outbox in {:.1} s",
                    outcome.plan_id, outcome.published_now, outcome.events, outcome.kept_in_outbox, outcome.seconds
                );
                println!(
                    "  outbox:     the workers publish those {} when RabbitMQ is back (unpaced: --rate does not carry over)",
                    outcome.kept_in_outbox
                );
            }
        }
        if outcome.stale_rows > 0 {
            println!(
                "  left alone: {} planned rows changed after the plan was checked and were not reset (their republished messages are duplicates the workers skip)",
                outcome.stale_rows
            );
        }
        match &outcome.destination {
            None => println!("  backup:     {}", outcome.backup_path),
            Some(destination) => {
                println!("  to:         {destination} only (default exchange); our workers' queue got nothing");
                println!("  no backup:  a destination replay changes nothing in this database (no backup, no ledger row reset)");
            }
        }
        println!("  audit:      entry {}", outcome.audit_id);
        if outcome.destination.is_none() {
            println!("next: `replay status {path} --watch` follows the workers processing them");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks on the terminal; refuses when there is none.
fn confirm(summary: &str, checked: &apply::Checked) -> anyhow::Result<()> {
    let action = action(checked);
    super::confirm(
        &format!("{summary}{action} {} events now?", checked.plan.events()),
        "read the plan, then pass --yes to apply it",
    )
}

/// What applying it now would do, in words.
fn action(checked: &apply::Checked) -> String {
    match (apply::Target::of(&checked.plan), checked.run.is_some()) {
        (apply::Target::Workers, true) => "resume publishing".into(),
        (apply::Target::Workers, false) => "back up, reset and republish".into(),
        (apply::Target::Queue(queue), true) => format!("resume publishing to queue {queue}"),
        (apply::Target::Queue(queue), false) => {
            format!("publish to queue {queue} (no backup, no reset: this database does not change)")
        }
    }
}

/// The apply's progress: on a terminal a spinner for the backup and a bar
/// each for the reset and the republish (side by side); otherwise a plain
/// line every few seconds; nothing with `--json`.
struct Shown {
    bars: Option<(ProgressBar, ProgressBar, ProgressBar)>,
    plain: bool,
    last_line: Option<Instant>,
    reset: (u64, u64),
    published: (u64, u64),
}

impl Shown {
    fn new(rows: u64, events: u64, json: bool) -> Self {
        let terminal = !json && std::io::stderr().is_terminal();
        let bars = terminal.then(|| {
            let multi = MultiProgress::new();
            let bar = |len: u64, template: &str| {
                let bar = multi.add(ProgressBar::new(len));
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style);
                }
                bar
            };
            (
                bar(0, "backup   {spinner} {msg}"),
                bar(rows, "reset    {bar:40} {pos}/{len} rows    {per_sec}"),
                bar(events, "publish  {bar:40} {pos}/{len} events  {per_sec}  eta {eta}"),
            )
        });
        Self { bars, plain: !json && !terminal, last_line: None, reset: (0, rows), published: (0, events) }
    }

    fn show(&mut self, progress: Progress) {
        match progress {
            Progress::Backup { bytes, seconds } => {
                let line = format!("pg_dump has written {:.1} MiB in {seconds:.0} s", bytes as f64 / 1_048_576.0);
                if let Some((backup, _, _)) = &self.bars {
                    backup.set_message(line.clone());
                    backup.tick();
                }
                self.line(|| format!("backup: {line}"), false);
            }
            Progress::Reset { rows, total } => {
                self.reset = (rows, total);
                if let Some((_, reset, _)) = &self.bars {
                    reset.set_position(rows);
                }
                self.phases(rows == total);
            }
            Progress::Publish { published, total } => {
                self.published = (published, total);
                if let Some((_, _, publish)) = &self.bars {
                    publish.set_position(published);
                }
                self.phases(published == total);
            }
        }
    }

    fn phases(&mut self, last: bool) {
        let ((reset, rows), (published, events)) = (self.reset, self.published);
        self.line(|| format!("reset {reset} of {rows} rows, published {published} of {events} events"), last);
    }

    /// A plain line, at most every five seconds (and at the end of a phase).
    fn line(&mut self, text: impl FnOnce() -> String, last: bool) {
        let due = self.last_line.is_none_or(|at| at.elapsed() > Duration::from_secs(5));
        if self.plain && (due || last) {
            eprintln!("{}", text());
            self.last_line = Some(Instant::now());
        }
    }

    fn finish(&self) {
        if let Some((backup, reset, publish)) = &self.bars {
            backup.finish_and_clear();
            reset.finish_and_clear();
            publish.finish_and_clear();
        }
    }
}
