//! Fresh, empty databases for tests.
//!
//! SQLite runs always: every fixture gets its own temporary directory, kept
//! alive as long as the fixture. PostgreSQL runs when
//! `WEBHOST_TEST_DATABASE_URL` names a server (an admin URL such as
//! `postgres://postgres@127.0.0.1:5432/postgres`): every fixture gets a new
//! database `webhost_test_<16 hex digits>` on it, dropped again (best effort) when the
//! fixture is dropped. Without the variable the PostgreSQL tests print a note
//! and pass, except under `CI=true`, where they fail.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use tempfile::TempDir;
use webhost_storage::{CellStore, ControlStore, JobStore};

/// The environment variable naming the PostgreSQL server to test against.
pub const DATABASE_URL_VAR: &str = "WEBHOST_TEST_DATABASE_URL";

/// Pool size of the PostgreSQL stores opened here: enough for the
/// concurrency stories to hold several transactions at once.
const PG_POOL_SIZE: u32 = 5;

/// A control store on a fresh database, and what keeps that database alive.
pub struct ControlFixture {
    // Declared before `_database` so the store is dropped first.
    store: Box<dyn ControlStore>,
    _database: Database,
}

impl ControlFixture {
    pub fn store(&self) -> &dyn ControlStore {
        self.store.as_ref()
    }
}

/// The job queue of a control store on a fresh database, and what keeps that
/// database alive. Shared (`Arc`) so stories can race callers; a clone must
/// not outlive the fixture.
pub struct JobsFixture {
    store: Arc<dyn JobStore>,
    _database: Database,
}

impl JobsFixture {
    pub fn store(&self) -> Arc<dyn JobStore> {
        Arc::clone(&self.store)
    }
}

/// A cell store on a fresh database, and what keeps that database alive.
///
/// The store is held in an `Arc` so stories can share it between spawned
/// tasks; a clone from [`CellFixture::shared`] must not outlive the fixture
/// (the database goes away with it).
pub struct CellFixture {
    store: Arc<dyn CellStore>,
    _database: Database,
}

impl CellFixture {
    pub fn store(&self) -> &dyn CellStore {
        self.store.as_ref()
    }

    pub fn shared(&self) -> Arc<dyn CellStore> {
        Arc::clone(&self.store)
    }

    /// The database URL, for checks only SQL can make (PostGIS columns);
    /// `None` on SQLite.
    pub fn postgres_url(&self) -> Option<&str> {
        match &self._database {
            Database::Postgres(database) => Some(database.url()),
            Database::Sqlite(_) => None,
        }
    }
}

/// Keeps a test database alive; dropping it removes the database.
pub enum Database {
    Sqlite(TempDir),
    Postgres(PostgresDatabase),
}

/// The SQLite backend: always available.
pub mod sqlite {
    use std::sync::Arc;

    use tempfile::TempDir;
    use webhost_storage_sqlite::{SqliteCellStore, SqliteControlStore};

    use super::{CellFixture, ControlFixture, Database, JobsFixture};

    fn temp_dir() -> (TempDir, String) {
        let dir = tempfile::Builder::new()
            .prefix("webhost-storage-test-")
            .tempdir()
            .expect("creating a temporary directory for the test database");
        let path = dir.path().join("store.db");
        let path = path
            .to_str()
            .expect("the temporary directory has a UTF-8 path")
            .to_string();
        (dir, path)
    }

    /// A control store on a new SQLite file. Always `Some`; the `Option` is
    /// there so both backends have the same shape.
    pub async fn control() -> Option<ControlFixture> {
        let (dir, path) = temp_dir();
        let store = SqliteControlStore::open(&path)
            .await
            .expect("opening a fresh SQLite control store");
        Some(ControlFixture {
            store: Box::new(store),
            _database: Database::Sqlite(dir),
        })
    }

    /// The job queue of a control store on a new SQLite file. Always `Some`.
    pub async fn jobs() -> Option<JobsFixture> {
        let (dir, path) = temp_dir();
        let store = SqliteControlStore::open(&path)
            .await
            .expect("opening a fresh SQLite control store");
        Some(JobsFixture {
            store: Arc::new(store),
            _database: Database::Sqlite(dir),
        })
    }

    /// The job queue of a cell store on a new SQLite file. Always `Some`.
    pub async fn cell_jobs() -> Option<JobsFixture> {
        let (dir, path) = temp_dir();
        let store = SqliteCellStore::open(&path)
            .await
            .expect("opening a fresh SQLite cell store");
        Some(JobsFixture {
            store: Arc::new(store),
            _database: Database::Sqlite(dir),
        })
    }

    /// A cell store on a new SQLite file. Always `Some`.
    pub async fn cell() -> Option<CellFixture> {
        let (dir, path) = temp_dir();
        let store = SqliteCellStore::open(&path)
            .await
            .expect("opening a fresh SQLite cell store");
        Some(CellFixture {
            store: Arc::new(store),
            _database: Database::Sqlite(dir),
        })
    }
}

/// The PostgreSQL backend: available when `WEBHOST_TEST_DATABASE_URL` is set.
pub mod postgres {
    use std::sync::Arc;

    use webhost_storage_postgres::{PgCellStore, PgControlStore};

    use super::{
        postgres_admin_url, CellFixture, ControlFixture, Database, JobsFixture, PostgresDatabase,
        DATABASE_URL_VAR, PG_POOL_SIZE,
    };

    fn admin_url_or_note() -> Option<String> {
        let url = postgres_admin_url();
        if url.is_none() {
            eprintln!(
                "note: {DATABASE_URL_VAR} is not set; skipping this PostgreSQL test \
                 (set it to e.g. postgres://postgres@127.0.0.1:5432/postgres to run it)"
            );
        }
        url
    }

    /// A control store on a new database, or `None` (after a note) when no
    /// server is configured.
    pub async fn control() -> Option<ControlFixture> {
        let admin_url = admin_url_or_note()?;
        let database = PostgresDatabase::create(&admin_url).await;
        let store = PgControlStore::open(database.url(), PG_POOL_SIZE)
            .await
            .expect("opening a PostgreSQL control store on a fresh database");
        Some(ControlFixture {
            store: Box::new(store),
            _database: Database::Postgres(database),
        })
    }

    /// The job queue of a control store on a new database, or `None` (after a
    /// note) when no server is configured.
    pub async fn jobs() -> Option<JobsFixture> {
        let admin_url = admin_url_or_note()?;
        let database = PostgresDatabase::create(&admin_url).await;
        let store = PgControlStore::open(database.url(), PG_POOL_SIZE)
            .await
            .expect("opening a PostgreSQL control store on a fresh database");
        Some(JobsFixture {
            store: Arc::new(store),
            _database: Database::Postgres(database),
        })
    }

    /// The job queue of a cell store on a new database, or `None` (after a
    /// note) when no server is configured.
    pub async fn cell_jobs() -> Option<JobsFixture> {
        let admin_url = admin_url_or_note()?;
        let database = PostgresDatabase::create(&admin_url).await;
        let store = PgCellStore::open(database.url(), PG_POOL_SIZE)
            .await
            .expect("opening a PostgreSQL cell store on a fresh database (PostGIS installed?)");
        Some(JobsFixture {
            store: Arc::new(store),
            _database: Database::Postgres(database),
        })
    }

    /// A cell store on a new database, or `None` (after a note) when no
    /// server is configured.
    pub async fn cell() -> Option<CellFixture> {
        let admin_url = admin_url_or_note()?;
        let database = PostgresDatabase::create(&admin_url).await;
        let store = PgCellStore::open(database.url(), PG_POOL_SIZE)
            .await
            .expect("opening a PostgreSQL cell store on a fresh database (PostGIS installed?)");
        Some(CellFixture {
            store: Arc::new(store),
            _database: Database::Postgres(database),
        })
    }
}

fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The admin URL of the PostgreSQL server to test against, from
/// `WEBHOST_TEST_DATABASE_URL`; `None` when it is not set.
///
/// # Panics
///
/// When the variable is not set and `CI=true`: in CI the PostgreSQL tests
/// must run, so a missing server is a failure, not a skip.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ if running_in_ci() => panic!(
            "{DATABASE_URL_VAR} is not set but CI=true: the PostgreSQL tests must run in CI. \
             Set {DATABASE_URL_VAR} to an admin URL of a PostgreSQL server with PostGIS, \
             e.g. postgres://postgres@127.0.0.1:5432/postgres"
        ),
        _ => None,
    }
}

/// Creates a new, empty database `webhost_test_<16 hex digits>` on the server of
/// `admin_url` (which must be allowed to `CREATE DATABASE`) and returns the
/// URL of the new database: `admin_url` with its database path replaced.
///
/// The database is left in place; [`PostgresDatabase`] drops it as well.
///
/// # Panics
///
/// When the server cannot be reached or refuses to create the database.
pub async fn fresh_postgres_database(admin_url: &str) -> String {
    let name = test_database_name();
    create_database(admin_url, &name).await;
    with_database(admin_url, &name)
}

/// Short: local cells add `_cell_<name>`, and PostgreSQL truncates names
/// past 63 bytes (two cells would share one database).
fn test_database_name() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("webhost_test_{}", &id[..16])
}

async fn create_database(admin_url: &str, name: &str) {
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| {
            panic!("connecting to the PostgreSQL server named by {DATABASE_URL_VAR}: {e}")
        });
    // `name` is generated above (letters, digits, '_'), so quoting is enough.
    let sql = format!("CREATE DATABASE \"{name}\"");
    // Concurrent CREATE DATABASE can fail while another session copies the
    // template; that is transient, so retry a few times.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match sqlx::raw_sql(&sql).execute(&mut conn).await {
            Ok(_) => break,
            Err(e) if attempt < 10 && e.to_string().contains("being accessed by other users") => {
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => panic!("creating test database {name}: {e}"),
        }
    }
    let _ = conn.close().await;
}

/// `url` with its database (the path) replaced by `database`; the query
/// string, if any, is kept.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{database}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A test database on a PostgreSQL server, dropped (best effort, bounded in
/// time) together with the local cells' databases derived from its name
/// (`<name>_cell_<cell>`) when this value is dropped. If the test is panicking the database
/// is kept for inspection and its name printed.
pub struct PostgresDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PostgresDatabase {
    /// Creates a new database; see [`fresh_postgres_database`].
    pub async fn create(admin_url: &str) -> Self {
        let name = test_database_name();
        create_database(admin_url, &name).await;
        Self {
            admin_url: admin_url.to_string(),
            url: with_database(admin_url, &name),
            name,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping test database {} for inspection", self.name);
            return;
        }
        // Drop runs inside the test's runtime, where we may not block on a
        // future; a helper thread with its own runtime does the work, and we
        // wait for it a bounded time only.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let (done, wait) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("drop-test-database".into())
            .spawn(move || {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    runtime.block_on(async {
                        let _ = tokio::time::timeout(Duration::from_secs(10), async {
                            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                                // The database and the local cells' databases
                                // derived from it (`<name>_cell_<cell>`).
                                let names: Vec<String> = sqlx::query_scalar(
                                    "SELECT datname FROM pg_database \
                                     WHERE datname = $1 OR datname LIKE $1 || '\\_cell\\_%'",
                                )
                                .bind(&name)
                                .fetch_all(&mut conn)
                                .await
                                .unwrap_or_default();
                                for database in names {
                                    let sql = format!(
                                        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
                                    );
                                    let _ = sqlx::raw_sql(&sql).execute(&mut conn).await;
                                }
                                let _ = conn.close().await;
                            }
                        })
                        .await;
                    });
                }
                let _ = done.send(());
            });
        if spawned.is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_only_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@db:5432", "t1"),
            "postgres://u:p@db:5432/t1"
        );
        assert_eq!(
            with_database("postgresql://u@db/admin?sslmode=disable&x=1", "t1"),
            "postgresql://u@db/t1?sslmode=disable&x=1"
        );
        assert_eq!(
            with_database("postgres://db:5432/?sslmode=require", "t1"),
            "postgres://db:5432/t1?sslmode=require"
        );
    }
}
