//! PostgreSQL (+ PostGIS) backend: the production engine.

mod cell;
mod control;
mod fleet;
mod jobs;
mod positions;
mod retention;
mod transfer;
mod usage;
mod webhooks;

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use webhost_storage::{Conflict, StorageError};

pub use cell::PgCellStore;
pub use control::PgControlStore;

async fn open_pool(
    url: &str,
    pool_size: u32,
    migrator: &sqlx::migrate::Migrator,
) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(pool_size.max(1))
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    migrator.run(&pool).await.context("migrating PostgreSQL")?;
    Ok(pool)
}

/// Maps a database error, turning unique violations into the conflict
/// `conflict` picks from the violated constraint's name.
fn map_err(err: sqlx::Error, conflict: impl FnOnce(&str) -> Option<Conflict>) -> StorageError {
    if let Some(db) = err.as_database_error() {
        if db.is_unique_violation() {
            if let Some(c) = conflict(db.constraint().unwrap_or_default()) {
                return StorageError::Conflict(c);
            }
        }
    }
    StorageError::Unexpected(anyhow::Error::new(err))
}

fn unexpected(err: sqlx::Error) -> StorageError {
    StorageError::Unexpected(anyhow::Error::new(err))
}

fn corrupt(what: &str, raw: &str) -> StorageError {
    StorageError::Unexpected(anyhow::anyhow!("corrupt {what} {raw:?} in storage"))
}

/// Creates the database named in `url` if it does not exist yet (through the
/// server's `postgres` maintenance database). Used for local cells, which
/// each get a database of their own.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    use sqlx::postgres::PgConnectOptions;
    use sqlx::ConnectOptions;
    use std::str::FromStr;

    let options = PgConnectOptions::from_str(url).context("invalid PostgreSQL URL")?;
    let name = options
        .get_database()
        .context("the PostgreSQL URL names no database")?
        .to_string();
    let mut admin = options
        .database("postgres")
        .connect()
        .await
        .context("connecting to the postgres maintenance database")?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        let quoted = name.replace('"', "\"\"");
        if let Err(err) = sqlx::query(&format!("CREATE DATABASE \"{quoted}\""))
            .execute(&mut admin)
            .await
        {
            // Another process may have created it in the meantime.
            let raced = err
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "42P04");
            if !raced {
                return Err(err.into());
            }
        }
    }
    Ok(())
}
