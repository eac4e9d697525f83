//! The retention sweep (docs/statistics.md, "Retention"): with
//! `RETENTION_DAYS` set, finished executions (COMPLETED, FAILED, CANCELLED)
//! whose last change (`updatedAt`: for a finished run, when it finished) is
//! older than that are deleted with their step records, in bounded batches.
//! On PostgreSQL a transaction-scoped advisory lock lets one instance delete
//! at a time. Template statistics stay: the roll-ups are never deleted, and
//! of the rows finished runs left in `workflow_execution_stats` only those
//! already folded into them whose run started as long ago are (what makes
//! `stats(since:)` exact to the instant within the retention period).

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::Metrics;

/// Executions deleted per transaction.
pub const BATCH: u64 = 500;
/// Statistics rows (one per finished run and step) deleted per transaction.
const STATS_BATCH: u64 = 5000;
/// `pg_try_advisory_xact_lock` key of the sweep ("wfretain").
const LOCK_KEY: i64 = 0x7766_7265_7461_696e;

/// Finished executions whose last change is older than the cutoff, oldest
/// first (their step records go with them: ON DELETE CASCADE).
const EXECUTIONS: &str = r#"DELETE FROM workflow_executions WHERE id IN (
    SELECT id FROM workflow_executions
    WHERE "status" IN ('completed', 'failed', 'cancelled') AND "updatedAt" < $1
    ORDER BY "updatedAt" LIMIT $2 {lock})"#;

/// Statistics rows already added to the roll-ups whose run started before
/// the cutoff. Rows not yet folded are never deleted: they are all that
/// counts their run until the fold adds them to its hour.
const FOLDED_STATS: &str = r#"DELETE FROM workflow_execution_stats WHERE id IN (
    SELECT id FROM workflow_execution_stats
    WHERE "folded" AND "startedAt" < $1
    ORDER BY "startedAt" LIMIT $2 {lock})"#;

pub struct Retention {
    db: DatabaseConnection,
    /// Finished runs older than this are deleted; `None` keeps everything.
    max_age: Option<chrono::Duration>,
    every: Duration,
    metrics: Arc<Metrics>,
    /// What "older than" is measured on, and the wait between sweeps.
    clock: Clock,
}

impl Retention {
    pub fn new(db: DatabaseConnection, days: u32, every: Duration, metrics: Arc<Metrics>, clock: Clock) -> Self {
        Self {
            db,
            max_age: (days > 0).then(|| chrono::Duration::days(i64::from(days))),
            every: every.max(Duration::from_secs(1)),
            metrics,
            clock,
        }
    }

    /// Deletes every finished execution past the retention age now, batch
    /// after batch; returns how many. Nothing when retention is off, or when
    /// another instance is sweeping (PostgreSQL).
    pub async fn sweep_now(&self) -> Result<u64, DbErr> {
        let Some(age) = self.max_age else {
            return Ok(0);
        };
        let cutoff = self.clock.now() - age;
        let mut total = 0;
        loop {
            let Some(n) = self.delete_batch(EXECUTIONS, cutoff, BATCH).await? else {
                break;
            };
            total += n;
            self.metrics.retention_deleted(n);
            if n < BATCH {
                break;
            }
        }
        if total > 0 {
            tracing::info!(deleted = total, "retention: deleted finished executions");
        }
        let mut rows = 0;
        while let Some(n) = self.delete_batch(FOLDED_STATS, cutoff, STATS_BATCH).await? {
            rows += n;
            if n < STATS_BATCH {
                break;
            }
        }
        if rows > 0 {
            tracing::debug!(deleted = rows, "retention: deleted folded statistics rows");
        }
        Ok(total)
    }

    /// One transaction: up to `limit` rows `what` picks (`$1`: the
    /// cutoff, `$2`: the limit, `{lock}`: where PostgreSQL skips rows others
    /// hold); `None` when another instance holds the sweep's lock.
    async fn delete_batch(&self, what: &str, cutoff: chrono::NaiveDateTime, limit: u64) -> Result<Option<u64>, DbErr> {
        let backend = self.db.get_database_backend();
        let txn = self.db.begin().await?;
        let sql = match backend {
            DbBackend::Postgres => {
                if !crate::db::try_advisory_xact_lock(&txn, LOCK_KEY).await? {
                    txn.rollback().await?;
                    return Ok(None);
                }
                what.replace("{lock}", "FOR UPDATE SKIP LOCKED")
            }
            _ => what.replace("{lock}", "").replace("$1", "?").replace("$2", "?"),
        };
        let res = txn
            .execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [cutoff.into(), (limit as i64).into()],
            ))
            .await?;
        txn.commit().await?;
        Ok(Some(res.rows_affected()))
    }

    /// Sweeps every `RETENTION_SWEEP_SECONDS` until `stop` (only when
    /// retention is on).
    pub fn spawn(self: Arc<Self>, stop: CancellationToken) {
        if self.max_age.is_none() {
            return;
        }
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.sweep_now().await {
                    tracing::warn!(error = %e, "retention sweep failed");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.clock.sleep(self.every) => {}
                }
            }
        });
    }
}
