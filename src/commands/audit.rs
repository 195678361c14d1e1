//! `replay audit verify`: checks the audit log's hash chain.

use std::process::ExitCode;

use crate::cli::AuditCommand;
use crate::config::Endpoints;
use crate::exit::REFUSED;
use crate::store::audit::{self, Verdict};
use crate::store::database;

pub async fn run(endpoints: &Endpoints, command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify => {
            let pool = database::connect(&endpoints.database_url, 1).await?;
            database::check_migrated(&pool, &endpoints.database_url).await?;
            match audit::verify(&pool).await? {
                Verdict::Intact { entries } => {
                    println!("audit log intact: {entries} entries, each chained to the one before");
                    Ok(ExitCode::SUCCESS)
                }
                Verdict::Broken { id, problem } => {
                    eprintln!(
                        "audit log broken at entry {id}: {problem}. Entries from {id} on cannot be trusted; \\
                         compare them with a backup and find who had rights to bypass the append-only triggers"
                    );
                    Ok(ExitCode::from(REFUSED))
                }
            }
        }
    }
}
