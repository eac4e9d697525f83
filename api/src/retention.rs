//! The retention sweep (API.md "Analytics and retention"): with
//! `RETENTION_DAYS` set, finished executions (COMPLETED, FAILED, CANCELLED)
//! whose last change (`updatedAt`: for a finished run, when it finished) is
//! older than that are deleted with their step records, in bounded batches.
//! On PostgreSQL a transaction-scoped advisory lock lets one instance delete
//! at a time. Template statistics are roll-ups and are not touched.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::Metrics;

/// Executions deleted per transaction.
pub const BATCH: u64 = 500;
/// `pg_try_advisory_xact_lock` key of the sweep ("wfretain").
const LOCK_KEY: i64 = 0x7766_7265_7461_696e;

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
            let Some(n) = self.delete_batch(cutoff).await? else {
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
        Ok(total)
    }

    /// One transaction: up to `BATCH` executions; `None` when another
    /// instance holds the sweep's lock.
    async fn delete_batch(&self, cutoff: chrono::NaiveDateTime) -> Result<Option<u64>, DbErr> {
        let backend = self.db.get_database_backend();
        let txn = self.db.begin().await?;
        let sql = match backend {
            DbBackend::Postgres => {
                let got = txn
                    .query_one_raw(Statement::from_sql_and_values(
                        backend,
                        "SELECT pg_try_advisory_xact_lock($1) AS got",
                        [LOCK_KEY.into()],
                    ))
                    .await?
                    .map(|r| r.try_get::<bool>("", "got"))
                    .transpose()?
                    .unwrap_or(false);
                if !got {
                    txn.rollback().await?;
                    return Ok(None);
                }
                r#"DELETE FROM workflow_executions WHERE id IN (
                     SELECT id FROM workflow_executions
                     WHERE "status" IN ('completed', 'failed', 'cancelled') AND "updatedAt" < $1
                     ORDER BY "updatedAt" LIMIT $2 FOR UPDATE SKIP LOCKED)"#
            }
            _ => {
                r#"DELETE FROM workflow_executions WHERE id IN (
                     SELECT id FROM workflow_executions
                     WHERE "status" IN ('completed', 'failed', 'cancelled') AND "updatedAt" < ?
                     ORDER BY "updatedAt" LIMIT ?)"#
            }
        };
        let res = txn
            .execute_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [cutoff.into(), (BATCH as i64).into()],
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
