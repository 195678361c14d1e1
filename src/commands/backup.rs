//! `replay backup`: a checked `pg_dump -Fc` into `backups/`.

use std::process::ExitCode;

use crate::cli::BackupArgs;
use crate::config::Endpoints;

pub async fn run(endpoints: &Endpoints, args: BackupArgs) -> anyhow::Result<ExitCode> {
    let backup = crate::store::backup::take(&endpoints.database_url, &args.dir, args.out).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "path": backup.path,
                "bytes": backup.bytes,
                "entries": backup.entries,
                "taken_at": backup.taken_at,
            })
        );
    } else {
        println!(
            "backup written to {} ({} bytes, {} entries, checked with pg_restore --list)",
            backup.path.display(),
            backup.bytes,
            backup.entries
        );
        println!(
            "restore it with: pg_restore --clean --if-exists --single-transaction -d <database> {}",
            backup.path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
