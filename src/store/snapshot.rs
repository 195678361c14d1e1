//! Whole tables read generically, to compare two states of a database: each
//! table's primary key and columns from `information_schema`, its rows as
//! JSON (`to_jsonb`, every value as the text Postgres prints, so `70.00`
//! stays `70.00`), and the sum of each numeric column. It names no table:
//! its callers pass the table names (`handlers::DOMAIN_TABLES`), never user
//! input, which is why they can be spliced.

use std::collections::BTreeMap;

use sqlx::PgPool;

use super::{failed, StoreError};

/// One table's rows, keyed by primary key, and its numeric columns' sums.
#[derive(Debug, Clone, Default)]
pub struct TableSnapshot {
    pub table: String,
    /// The primary key's columns, in key order.
    pub key: Vec<String>,
    /// Each row's columns and values (`None` for NULL), by its key's values
    /// joined with `,`.
    pub rows: BTreeMap<String, BTreeMap<String, Option<String>>>,
    /// The sum of each numeric column that is not part of the key (`None`
    /// for an empty table).
    pub sums: BTreeMap<String, Option<String>>,
}

const NUMERIC_TYPES: [&str; 6] = ["numeric", "integer", "bigint", "smallint", "real", "double precision"];

/// Reads `tables` (in the `public` schema) whole.
pub async fn take(pool: &PgPool, tables: &[&str]) -> Result<Vec<TableSnapshot>, StoreError> {
    let mut snapshots = Vec::with_capacity(tables.len());
    for table in tables {
        snapshots.push(table_snapshot(pool, table).await?);
    }
    Ok(snapshots)
}

async fn table_snapshot(pool: &PgPool, table: &str) -> Result<TableSnapshot, StoreError> {
    let key: Vec<String> = sqlx::query_scalar(
        "SELECT k.column_name::text
           FROM information_schema.table_constraints c
           JOIN information_schema.key_column_usage k
             ON k.constraint_schema = c.constraint_schema AND k.constraint_name = c.constraint_name
          WHERE c.table_schema = 'public' AND c.table_name = $1 AND c.constraint_type = 'PRIMARY KEY'
          ORDER BY k.ordinal_position",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(failed("read a table's primary key"))?;
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
          WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .map_err(failed("read a table's columns"))?;
    let quoted = quote(table);
    let rows: Vec<sqlx::types::Json<BTreeMap<String, Option<String>>>> = sqlx::query_scalar(sqlx::AssertSqlSafe(
        format!("SELECT (SELECT jsonb_object_agg(key, value #>> '{{}}') FROM jsonb_each(to_jsonb(t))) FROM {quoted} t"),
    ))
    .fetch_all(pool)
    .await
    .map_err(failed("read a table's rows"))?;
    let rows = rows
        .into_iter()
        .map(|sqlx::types::Json(row)| {
            let id =
                key.iter().map(|k| row.get(k).cloned().flatten().unwrap_or_default()).collect::<Vec<_>>().join(",");
            (id, row)
        })
        .collect();
    let mut sums = BTreeMap::new();
    for (column, data_type) in columns {
        if key.contains(&column) || !NUMERIC_TYPES.contains(&data_type.as_str()) {
            continue;
        }
        let sum: Option<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT sum({})::text FROM {quoted}", quote(&column))))
                .fetch_one(pool)
                .await
                .map_err(failed("sum a numeric column"))?;
        sums.insert(column, sum);
    }
    Ok(TableSnapshot { table: table.to_string(), key, rows, sums })
}

/// Each of `tables`' row count and a digest of its rows (md5 over every
/// row's text, in text order): equal digests mean equal contents, for
/// telling whether a table changed since, not for security.
pub async fn fingerprints(pool: &PgPool, tables: &[&str]) -> Result<Vec<(String, i64, String)>, StoreError> {
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        let (rows, digest): (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM {} t",
            quote(table)
        )))
        .fetch_one(pool)
        .await
        .map_err(failed("fingerprint a table"))?;
        out.push((table.to_string(), rows, digest));
    }
    Ok(out)
}

/// A quoted identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
