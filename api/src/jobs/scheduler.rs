//! The scheduler: every `SCHEDULE_POLL_MS` it looks for enabled schedules
//! whose `nextRunAt` has come and fires each due time once, however many
//! instances look at the same moment.
//!
//! A fire is one transaction: the conditional claim (move `nextRunAt` on
//! from the value seen, while still enabled) and the run's rows, written by
//! the engine exactly as `startWorkflowExecution` writes them. The instance
//! whose claim matches starts the run; the others match no row and write
//! nothing. A due time missed while no instance ran is fired once, and the
//! schedule moves on to its next time after now. A creator who can no
//! longer start the template gets no run: the due time is claimed with
//! `lastError` set, and the schedule stays enabled.

use std::sync::Arc;
use std::time::Duration;

use entity::workflow_schedule as schedule;
use sea_orm::{DbErr, TransactionTrait};

use crate::core::cron::Schedule;
use crate::domain::access::Access;
use crate::domain::schedules::{self, Fire};
use crate::domain::{executions, templates, users};
use crate::engine::runner::{Engine, Launch};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Due schedules fired per look; the rest wait for the next one.
const BATCH: u64 = 100;

pub struct Scheduler {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    poll: Duration,
}

impl Scheduler {
    pub fn new(engine: Arc<Engine>, metrics: Arc<Metrics>, poll: Duration) -> Arc<Self> {
        Arc::new(Self { engine, metrics, poll })
    }

    /// Starts looking for due schedules in the background, until the engine
    /// stops; not at all when the interval is zero.
    pub fn start(self: &Arc<Self>) {
        if self.poll.is_zero() {
            tracing::info!("scheduler off (SCHEDULE_POLL_MS=0): this instance fires no schedules");
            return;
        }
        let scheduler = self.clone();
        tokio::spawn(async move {
            let stopping = scheduler.engine.stopping().clone();
            loop {
                tokio::select! {
                    _ = stopping.cancelled() => return,
                    _ = scheduler.engine.clock().sleep(scheduler.poll) => {}
                }
                if let Err(e) = scheduler.tick().await {
                    tracing::warn!(error = %e, "firing due schedules failed; trying again at the next look");
                }
            }
        });
    }

    /// Fires every schedule due now (up to a batch); returns how many due
    /// times this instance claimed. Errs only when the due ones cannot be read.
    pub async fn tick(&self) -> Result<usize, DbErr> {
        let due = schedules::due(self.engine.db(), self.engine.clock().now(), BATCH).await?;
        let mut claimed = 0;
        for s in due {
            if self.engine.stopping().is_cancelled() {
                break;
            }
            // One schedule's failure does not hold up the others; its due
            // time stays as it was and is tried again at the next look.
            let id = s.id.clone();
            match self.fire(s).await {
                Ok(true) => claimed += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(schedule = %id, error = %e, "firing a due schedule failed"),
            }
        }
        Ok(claimed)
    }

    /// Fires the due time `s.nextRunAt` of `s`; false when another instance
    /// (or a change to the schedule) got there first.
    async fn fire(&self, s: schedule::Model) -> Result<bool, DbErr> {
        let Some(due_at) = s.next_run_at else {
            return Ok(false);
        };
        let db = self.engine.db();
        let spec = match Schedule::parse("", &s.cron, &s.timezone) {
            Ok(spec) => spec,
            // Stored values were checked when saved; a time zone could
            // still vanish from a newer tz database.
            Err(e) => return self.skip(&s, due_at, None, "invalid", e.message()).await,
        };
        // After now, not after the due time: a schedule that was due many
        // times while no instance ran fires once, then moves on.
        let next = spec.next_after(self.engine.clock().now().max(due_at));
        let Some(template) = templates::find(db, &s.template_id).await? else {
            return Ok(false); // Deleted since: its schedules went with it.
        };
        let access = Access::new(s.created_by.clone(), users::memberships(db, &s.created_by).await?);
        if access.check_start_execution(&template).is_err() {
            let reason = "skipped: the schedule's creator can no longer start this template \
                          (not a member of its drive, or the template is private)";
            return self.skip(&s, due_at, next, "forbidden", reason.into()).await;
        }
        let launch = executions::launch(db, &template, &s.created_by, s.context.clone(), None)
            .await
            .map(|l| Launch {
                schedule: Some((s.id.clone(), due_at)),
                ..l
            });
        let run = match launch.and_then(|l| self.engine.prepare(l)) {
            Ok(run) => run,
            Err(ApiError::Database(e)) => return Err(e),
            Err(e) => {
                return self
                    .skip(&s, due_at, next, "invalid", format!("skipped: {}", e.message()))
                    .await;
            }
        };
        let txn = db.begin().await?;
        if !schedules::claim(&txn, &s.id, due_at, next, &Fire::Started).await? {
            txn.rollback().await?;
            return Ok(false);
        }
        self.engine.insert_run(&txn, &run).await?;
        schedules::set_last_execution(&txn, &s.id, &run.execution().id).await?;
        txn.commit().await?;
        let exec = self.engine.run_inserted(run).await;
        self.metrics.schedule_fire_started();
        tracing::info!(schedule = %s.id, execution = %exec.id, due_at = %due_at, "schedule fired");
        Ok(true)
    }

    async fn skip(
        &self,
        s: &schedule::Model,
        due_at: chrono::NaiveDateTime,
        next: Option<chrono::NaiveDateTime>,
        label: &str,
        reason: String,
    ) -> Result<bool, DbErr> {
        let claimed = schedules::claim(self.engine.db(), &s.id, due_at, next, &Fire::Skipped(reason.clone())).await?;
        if claimed {
            self.metrics.schedule_fire_skipped(label);
            tracing::info!(schedule = %s.id, due_at = %due_at, reason = %reason, "schedule fire skipped");
        }
        Ok(claimed)
    }
}
