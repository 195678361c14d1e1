//! `replay migrate`: applies the embedded migrations.

use std::process::ExitCode;

use crate::config::Endpoints;
use crate::store::database;

pub async fn run(endpoints: &Endpoints) -> anyhow::Result<ExitCode> {
    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::migrate(&pool, &endpoints.database_url).await?;
    println!("migrations applied to {}", endpoints.database_url);
    Ok(ExitCode::SUCCESS)
}
