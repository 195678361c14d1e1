//! `replay emergency-stop`: what to restore, a confirmation, the stop, and
//! what to do next (and, with `--notify`, to a webhook).

use std::process::ExitCode;

use crate::cli::EmergencyStopArgs;
use crate::config::Endpoints;
use crate::control::emergency::{self, Request, Restore};
use crate::control::notify::{Notification, Notifier};
use crate::exit::UsageError;
use crate::replay::plan::SealedPlan;
use crate::store::database;

pub async fn run(endpoints: &Endpoints, args: EmergencyStopArgs) -> anyhow::Result<ExitCode> {
    if args.reason.trim().is_empty() {
        return Err(UsageError("--reason is empty: say why the replay is stopped".into()).into());
    }
    let pool = database::connect(&endpoints.database_url, 4).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    crate::store::partitioning::check(&pool, endpoints.partitions).await?;
    let restore = match (&args.plan, &args.backup) {
        (Some(path), _) => {
            let plan = SealedPlan::open(path)?;
            let plan_id = plan.header.plan_id;
            Restore::of_plan(&pool, plan_id).await?.ok_or_else(|| UsageError(Restore::never_applied(plan_id)))?
        }
        (None, Some(path)) => Restore::Backup(path.clone()),
        (None, None) => Restore::Nothing,
    };
    if !args.yes {
        confirm(&restore)?;
    }
    let request = Request {
        operator: args.operator.clone().unwrap_or_else(super::os_user),
        reason: args.reason.clone(),
        restore,
        wait: args.wait,
        report_dir: args.report_dir.clone(),
    };
    let report = emergency::stop(&pool, endpoints, &request).await;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for step in &report.steps {
            println!("{step}");
        }
        if let Some(path) = &report.report_path {
            println!("incident report: {}", path.display());
        }
    }
    let failed = report.failed();
    let next = if failed.is_empty() {
        "workers stay paused. next: check the state, then `replay resume --reason ...`".to_string()
    } else {
        format!(
            "emergency stop incomplete: {} failed (see above). The pause stays in force; fix the cause and run the same command again to continue",
            failed.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        )
    };
    let notifier = Notifier::new(args.notify.clone());
    notifier.send(Notification::emergency_stopped(&report, next.clone()));
    notifier.close().await;
    if !failed.is_empty() {
        anyhow::bail!(next)
    }
    if !args.json {
        println!("{next}");
    }
    Ok(ExitCode::SUCCESS)
}

fn confirm(restore: &Restore) -> anyhow::Result<()> {
    let what = match restore {
        Restore::Plan { backup, .. } | Restore::Backup(backup) => format!("and restore {}", backup.display()),
        Restore::Nothing => "without restoring".to_string(),
        Restore::Destination { destination, .. } => {
            format!("without restoring (a destination replay took no backup; its messages in {destination} are NOT removed)")
        }
    };
    super::confirm(&format!("pause every worker, purge the replay's messages {what}?"), "pass --yes to stop")
}
