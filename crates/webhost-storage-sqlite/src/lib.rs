//! SQLite backend: the embedded default. One writer connection serialises
//! writes (SQLite allows one writer anyway, and this way read-check-write
//! sequences such as the vehicle limit need no retry loop); a small pool
//! serves reads concurrently under WAL.

mod bulk_read;
mod cell;
mod control;
mod fleet;
mod jobs;
mod positions;
mod retention;
mod transfer;
mod usage;
mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use webhost_storage::{Conflict, StorageError};

pub use cell::SqliteCellStore;
pub use control::SqliteControlStore;

#[derive(Clone)]
struct Pools {
    writer: SqlitePool,
    reader: SqlitePool,
}

/// Accepts `sqlite://path`, `sqlite:path` or a bare file path.
fn connect_options(location: &str) -> anyhow::Result<SqliteConnectOptions> {
    let options = if location.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(location)
            .with_context(|| format!("invalid SQLite URL {location}"))?
    } else {
        SqliteConnectOptions::new().filename(Path::new(location))
    };
    Ok(options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a commit is on disk before it is acknowledged.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10)))
}

async fn open_pools(location: &str, migrator: &sqlx::migrate::Migrator) -> anyhow::Result<Pools> {
    if !location.starts_with("sqlite:") {
        if let Some(parent) = Path::new(location).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
    }
    let options = connect_options(location)?;
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        // Checkpoint every ~40 MB of WAL instead of every 4 MB: ingest
        // commits rewrite the same hot pages (each vehicle's newest leaf), and
        // a checkpoint writes each page once however often it changed.
        .connect_with(options.clone().pragma("wal_autocheckpoint", "10000"))
        .await
        .with_context(|| format!("opening SQLite database {location}"))?;
    migrator
        .run(&writer)
        .await
        .with_context(|| format!("migrating SQLite database {location}"))?;
    let reader = SqlitePoolOptions::new()
        .max_connections(4)
        // Rows cross from sqlx's worker thread in a bounded channel; the
        // default 50 wakes the reading task every few rows of a long history.
        .connect_with(options.read_only(true).row_buffer_size(1024))
        .await
        .with_context(|| format!("opening SQLite database {location} for reading"))?;
    Ok(Pools { writer, reader })
}

/// Maps a database error to a storage error, turning unique violations into
/// the conflict `conflict` picks from the violated column.
fn map_err(err: sqlx::Error, conflict: impl FnOnce(&str) -> Option<Conflict>) -> StorageError {
    if let Some(db) = err.as_database_error() {
        if db.is_unique_violation() {
            if let Some(c) = conflict(db.message()) {
                return StorageError::Conflict(c);
            }
        }
    }
    StorageError::Unexpected(anyhow::Error::new(err))
}

fn unexpected(err: sqlx::Error) -> StorageError {
    StorageError::Unexpected(anyhow::Error::new(err))
}

fn parse_uuid(raw: &str) -> Result<uuid::Uuid, StorageError> {
    uuid::Uuid::parse_str(raw)
        .map_err(|e| StorageError::Unexpected(anyhow::anyhow!("corrupt id {raw:?}: {e}")))
}

fn corrupt(what: &str, raw: &str) -> StorageError {
    StorageError::Unexpected(anyhow::anyhow!("corrupt {what} {raw:?} in storage"))
}
