//! What a change adds to the template statistics: the run once, on the
//! write that makes it COMPLETED, FAILED or CANCELLED; a step once, on the
//! write that makes it COMPLETED, FAILED or SKIPPED. Each is a row of
//! `workflow_execution_stats` carrying the run's exact start, inserted by
//! that same write, which is fenced (it applies once, on one instance), so
//! the numbers are exact across instances. A plain insert: concurrent runs
//! of one template share no row, so none waits on another's lock. The fold
//! (`jobs::stats_fold`) adds the rows into the hourly roll-ups later.

use chrono::NaiveDateTime;
use entity::{ExecutionStatus, StepStatus};
use sea_orm::{DbBackend, Value};
use serde_json::Value as Json;

use super::state::{ExecPatch, RunState, StepPatch};
use crate::domain::new_id;
use crate::domain::stats::{RUN_SCOPE, bucket};

/// One row's increments.
#[derive(Debug, Default, PartialEq)]
pub struct Increment {
    pub step_order: i32,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub skipped: i64,
    pub attempts: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub duration_ms: Option<i64>,
}

/// The increments of one change, all of one run.
#[derive(Debug, PartialEq)]
pub struct Rollup {
    pub template_id: String,
    pub execution_id: String,
    /// When the run started: what `stats(since:)` compares with.
    pub started_at: NaiveDateTime,
    pub rows: Vec<Increment>,
}

fn millis(from: Option<NaiveDateTime>, to: NaiveDateTime) -> Option<i64> {
    from.map(|f| (to - f).num_milliseconds().max(0))
}

/// A token count from an agent's `usage`, bounded so sums cannot overflow.
fn tokens(usage: Option<&Json>, key: &str) -> i64 {
    usage
        .and_then(|u| u.get(key))
        .and_then(Json::as_i64)
        .map_or(0, |n| n.clamp(0, i64::from(i32::MAX)))
}

impl Rollup {
    /// The increments of `exec`/`step` applied at `at` to the rows `state`
    /// holds before the change; `None` when it finishes nothing.
    pub fn of_change(
        state: &RunState,
        exec: &ExecPatch,
        steps: &[(usize, &StepPatch)],
        at: NaiveDateTime,
    ) -> Option<Self> {
        let e = &state.exec;
        let mut rows = Vec::new();
        if let Some(status) = exec.status.filter(|s| s.is_terminal() && !e.status.is_terminal()) {
            let mut run = Increment {
                step_order: RUN_SCOPE,
                duration_ms: millis(e.started_at, exec.completed_at.or(exec.failed_at).unwrap_or(at)),
                ..Default::default()
            };
            match status {
                ExecutionStatus::Completed => run.completed = 1,
                ExecutionStatus::Failed => run.failed = 1,
                _ => run.cancelled = 1,
            }
            rows.push(run);
        }
        for &(idx, sp) in steps {
            let ended = |s: StepStatus| matches!(s, StepStatus::Completed | StepStatus::Failed | StepStatus::Skipped);
            let Some(record) = state.steps.get(idx) else { continue };
            if let Some(status) = sp.status.filter(|s| ended(*s) && !ended(record.status)) {
                let started = sp.started_at.or(record.started_at);
                let calls = i64::from(state.attempts.get(&idx).copied().unwrap_or(0));
                let output = sp.agent_output.as_ref().or(record.agent_output.as_ref());
                let usage = output.and_then(|o| o.get("usage"));
                let mut inc = Increment {
                    step_order: record.step_order,
                    // A step that was RUNNING made at least one call (a run
                    // cancelled from another request does not see the count).
                    attempts: if started.is_some() { calls.max(1) } else { calls },
                    duration_ms: if status == StepStatus::Skipped {
                        None
                    } else {
                        millis(started, sp.completed_at.unwrap_or(at))
                    },
                    ..Default::default()
                };
                match status {
                    StepStatus::Completed => {
                        inc.completed = 1;
                        inc.prompt_tokens = tokens(usage, "prompt_tokens");
                        inc.completion_tokens = tokens(usage, "completion_tokens");
                    }
                    StepStatus::Failed => inc.failed = 1,
                    _ => inc.skipped = 1,
                }
                rows.push(inc);
            }
        }
        if rows.is_empty() {
            return None;
        }
        Some(Self {
            template_id: e.workflow_template_id.clone(),
            execution_id: e.id.clone(),
            started_at: e.started_at.unwrap_or(e.created_at),
            rows,
        })
    }

    /// The insert of these rows, its placeholders numbered from `first`
    /// (PostgreSQL). `only_if`: a condition the insert is made on
    /// (PostgreSQL: that the fenced update of the same statement matched).
    pub fn insert(&self, backend: DbBackend, first: usize, only_if: Option<&str>) -> (String, Vec<Value>) {
        const COLUMNS: &str = r#""id", "templateId", "executionId", "startedAt", "stepOrder", "completed", "failed", "cancelled", "skipped", "attempts", "promptTokens", "completionTokens", "durationMs", "durationBucket", "createdAt""#;
        const CASTS: [&str; 15] = [
            "text",
            "text",
            "text",
            "timestamp",
            "integer",
            "bigint",
            "bigint",
            "bigint",
            "bigint",
            "bigint",
            "bigint",
            "bigint",
            "bigint",
            "integer",
            "timestamp",
        ];
        let at = crate::domain::now();
        let mut values: Vec<Value> = Vec::new();
        let mut tuples = Vec::new();
        for r in &self.rows {
            let row: [Value; 15] = [
                new_id().into(),
                self.template_id.clone().into(),
                self.execution_id.clone().into(),
                self.started_at.into(),
                r.step_order.into(),
                r.completed.into(),
                r.failed.into(),
                r.cancelled.into(),
                r.skipped.into(),
                r.attempts.into(),
                r.prompt_tokens.into(),
                r.completion_tokens.into(),
                r.duration_ms.into(),
                r.duration_ms.map(bucket).into(),
                at.into(),
            ];
            let cells: Vec<String> = CASTS
                .iter()
                .enumerate()
                .map(|(i, cast)| match backend {
                    DbBackend::Postgres => format!("${}::{cast}", first + values.len() + i),
                    _ => "?".to_owned(),
                })
                .collect();
            values.extend(row);
            tuples.push(format!("({})", cells.join(", ")));
        }
        let source = match only_if {
            Some(cond) => format!("SELECT * FROM (VALUES {}) v WHERE {cond}", tuples.join(", ")),
            None => format!("VALUES {}", tuples.join(", ")),
        };
        (
            format!("INSERT INTO workflow_execution_stats ({COLUMNS}) {source}"),
            values,
        )
    }
}
