//! `replay token create|list|revoke`: the console's and the API's tokens.

use std::process::ExitCode;

use comfy_table::Table;
use serde_json::json;

use crate::cli::TokenCommand;
use crate::config::Endpoints;
use crate::control::tokens::{self, TokenError};
use crate::exit::{Refused, UsageError};
use crate::store::tokens::Role;
use crate::store::{database, tokens as stored};

pub async fn run(endpoints: &Endpoints, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    match command {
        TokenCommand::Create { name, role, operator, json } => {
            let role = Role::parse(&role)
                .ok_or_else(|| UsageError(format!("'{role}' is not a role: use viewer, operator or admin")))?;
            let operator = operator.unwrap_or_else(super::os_user);
            let made = tokens::create(&pool, &name, role, &operator).await.map_err(classed)?;
            if json {
                println!("{}", json!({"name": made.name, "role": made.role, "token": made.secret.reveal()}));
            } else {
                println!(
                    "token '{}' ({}) created; it is shown this once, only its hash is kept:",
                    made.name, made.role
                );
                println!("{}", made.secret.reveal());
                println!("next: send it as `Authorization: Bearer TOKEN`, or paste it into the console's login page");
            }
        }
        TokenCommand::List { json } => {
            let all = stored::list(&pool).await?;
            if json {
                println!("{}", json!({"tokens": all}));
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new();
            table.set_header(["name", "role", "created by", "created at", "revoked at"]);
            for t in &all {
                table.add_row([
                    t.name.clone(),
                    t.role.to_string(),
                    t.created_by.clone(),
                    t.created_at.to_rfc3339(),
                    t.revoked_at.map_or("-".into(), |r| r.to_rfc3339()),
                ]);
            }
            println!("{table}");
        }
        TokenCommand::Revoke { name, operator } => {
            let operator = operator.unwrap_or_else(super::os_user);
            let revoked = tokens::revoke(&pool, &name, &operator).await.map_err(classed)?;
            println!("token '{}' ({}) revoked: it is refused from now on (audited).", revoked.name, revoked.role);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A bad name is a usage error (2), a taken or unknown one a refusal (3).
fn classed(error: TokenError) -> anyhow::Error {
    match error {
        TokenError::BadName(_) | TokenError::Unknown(_) => UsageError(error.to_string()).into(),
        TokenError::NameTaken(_) => Refused(error.to_string()).into(),
        TokenError::Store(store) => store.into(),
    }
}
