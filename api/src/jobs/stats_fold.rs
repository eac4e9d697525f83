//! The fold (docs/statistics.md): adds what finished runs and steps left in
//! `workflow_execution_stats` to the hourly roll-ups of
//! `workflow_template_stats`, so a read sums one row per hour instead of one
//! per run. Until a row is folded, reads count it from the row; the fold
//! changes where it is counted, never what. On PostgreSQL a
//! transaction-scoped advisory lock lets one instance fold at a time.

use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};
use tokio_util::sync::CancellationToken;

use crate::domain::stats;

/// Rows folded per transaction.
pub const BATCH: u64 = 1000;
/// `pg_try_advisory_xact_lock` key of the fold ("wffold").
const LOCK_KEY: i64 = 0x7766_666f_6c64;

pub struct StatsFold {
    db: DatabaseConnection,
    /// `None`: no background fold (`fold_now` still works).
    every: Option<Duration>,
}

impl StatsFold {
    pub fn new(db: DatabaseConnection, every_seconds: u64) -> Self {
        Self {
            db,
            every: (every_seconds > 0).then(|| Duration::from_secs(every_seconds)),
        }
    }

    /// Folds every row not yet folded, batch after batch; returns how many.
    /// Nothing when another instance is folding (PostgreSQL).
    pub async fn fold_now(&self) -> Result<u64, DbErr> {
        let mut total = 0;
        loop {
            let Some(n) = self.fold_batch().await? else {
                break;
            };
            total += n;
            if n < BATCH {
                break;
            }
        }
        if total > 0 {
            tracing::debug!(folded = total, "statistics: folded into the hourly roll-ups");
        }
        Ok(total)
    }

    /// One transaction; `None` when another instance holds the fold's lock.
    async fn fold_batch(&self) -> Result<Option<u64>, DbErr> {
        let txn = self.db.begin().await?;
        if !crate::db::try_advisory_xact_lock(&txn, LOCK_KEY).await? {
            txn.rollback().await?;
            return Ok(None);
        }
        let n = stats::fold_batch(&txn, BATCH).await?;
        txn.commit().await?;
        Ok(Some(n))
    }

    /// Folds every `STATS_FOLD_SECONDS` until `stop` (unless that is 0).
    pub fn spawn(self: std::sync::Arc<Self>, stop: CancellationToken) {
        let Some(every) = self.every else {
            return;
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Err(e) = self.fold_now().await {
                    tracing::warn!(error = %e, "statistics fold failed");
                }
            }
        });
    }
}
