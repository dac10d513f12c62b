//! Reads of thousands of rows (a vehicle's history) on `rusqlite`
//! connections in a blocking thread.
//!
//! sqlx's SQLite driver runs each connection on its own worker thread and
//! hands every row to the async side through a channel, copying each value:
//! measured on a day's track (8,640 rows), that hand-off was most of the
//! time of the query. Here the rows are read and turned into domain values
//! on one blocking thread, and only the finished `Vec` crosses back.
//!
//! Both drivers link the same `libsqlite3-sys`; these connections are
//! read-only and see the committed state of the WAL database, exactly like
//! sqlx's reader pool.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use webhost_storage::{StorageError, StorageResult};

/// Idle connections kept for the next read.
const IDLE: usize = 4;

#[derive(Clone)]
pub(crate) struct BulkReader {
    path: Arc<PathBuf>,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl BulkReader {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path: Arc::new(path),
            idle: Arc::default(),
        }
    }

    fn open(path: &PathBuf) -> rusqlite::Result<Connection> {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(Duration::from_secs(10))?;
        Ok(connection)
    }

    /// Runs `read` on a read-only connection in a blocking thread.
    pub async fn read<T, F>(&self, read: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StorageResult<T> + Send + 'static,
    {
        let reader = self.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = reader.idle.lock().map(|mut idle| idle.pop()).ok().flatten();
            let connection = match pooled {
                Some(connection) => connection,
                None => Self::open(&reader.path).map_err(failed)?,
            };
            let result = read(&connection);
            if let Ok(mut idle) = reader.idle.lock() {
                if idle.len() < IDLE {
                    idle.push(connection);
                }
            }
            result
        })
        .await
        .map_err(|err| StorageError::Unexpected(anyhow::anyhow!("bulk read task: {err}")))?
    }
}

pub(crate) fn failed(err: rusqlite::Error) -> StorageError {
    StorageError::Unexpected(anyhow::Error::new(err))
}
