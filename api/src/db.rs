//! Connecting to SQLite or PostgreSQL, running migrations, and counting the
//! SQL statements the server issues (for `/metrics` and the tests that hold
//! nested queries to a constant number of statements).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};

/// Statements sent to the database since start, shared with the metric callback.
#[derive(Debug, Default)]
pub struct StatementCounter(AtomicU64);

impl StatementCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub async fn connect(url: &str, max_connections: u32) -> Result<(DatabaseConnection, Arc<StatementCounter>), DbErr> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        // sqlx pings a pooled connection on every checkout by default: one
        // more round trip per statement. Ping only connections idle long
        // enough to have been dropped by the server or a proxy.
        .test_before_acquire_if_idle_for(Duration::from_secs(30))
        .sqlx_logging(false);
    // SQLite: WAL lets readers run beside the writer, and the busy timeout
    // makes concurrent writers wait for the lock instead of failing at once.
    opts.map_sqlx_sqlite_opts(|o| {
        o.journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
    });
    let mut db = Database::connect(opts).await?;
    let counter = Arc::new(StatementCounter::default());
    let c = counter.clone();
    db.set_metric_callback(move |_info| {
        c.0.fetch_add(1, Ordering::Relaxed);
    });
    Ok((db, counter))
}

/// Applies pending migrations. On PostgreSQL an advisory lock makes instances
/// that start together apply them once.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() == DbBackend::Postgres {
        // Held by one pooled connection for the duration; sea-orm runs the
        // migrations on the pool, so the lock is taken on a transaction that
        // stays open while they run elsewhere.
        let lock = sea_orm::TransactionTrait::begin(db).await?;
        lock.execute_unprepared("SELECT pg_advisory_xact_lock(774411001)")
            .await?;
        let result = Migrator::up(db, None).await;
        lock.commit().await?;
        result
    } else {
        Migrator::up(db, None).await
    }
}

/// True when the database answers a trivial query.
pub async fn ping(db: &DatabaseConnection) -> bool {
    db.ping().await.is_ok()
}

/// Takes the transaction-scoped advisory lock `key` (PostgreSQL) unless
/// another session holds it: whether this transaction got it. Background
/// jobs use it so that one instance at a time does a batch. SQLite has one
/// process per file and nothing to lock: always true.
pub async fn try_advisory_xact_lock(txn: &impl ConnectionTrait, key: i64) -> Result<bool, DbErr> {
    let backend = txn.get_database_backend();
    if backend != DbBackend::Postgres {
        return Ok(true);
    }
    Ok(txn
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            "SELECT pg_try_advisory_xact_lock($1) AS got",
            [key.into()],
        ))
        .await?
        .map(|r| r.try_get::<bool>("", "got"))
        .transpose()?
        .unwrap_or(false))
}
