//! What a change adds to the template roll-ups (`workflow_template_stats`):
//! the run once, on the write that makes it COMPLETED, FAILED or CANCELLED;
//! a step once, on the write that makes it COMPLETED, FAILED or SKIPPED.
//! The runner adds the upsert to that same write, which is fenced (it applies
//! once, on one instance), so the numbers are exact across instances.

use chrono::{NaiveDate, NaiveDateTime};
use entity::{ExecutionStatus, StepStatus};
use sea_orm::{DbBackend, Value};
use serde_json::{Value as Json, json};

use super::state::{ExecPatch, RunState, StepPatch};
use crate::domain::new_id;
use crate::domain::stats::{RUN_SCOPE, bucket};

/// One roll-up row's increments.
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

/// The increments of one change, all on the run's template and start day.
#[derive(Debug, PartialEq)]
pub struct Rollup {
    pub template_id: String,
    pub day: NaiveDate,
    /// Which of the roll-up's rows this run adds to (see the migration).
    pub shard: i32,
    pub rows: Vec<Increment>,
}

/// Roll-up rows per (template, day, step): concurrent runs of one template
/// spread their upserts over them instead of queueing on one row.
pub const SHARDS: u32 = 64;

/// A run's shard, the same on every instance.
fn shard_of(execution_id: &str) -> i32 {
    let h = execution_id
        .bytes()
        .fold(2_166_136_261_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16_777_619));
    (h % SHARDS) as i32
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
            day: e.started_at.unwrap_or(e.created_at).date(),
            shard: shard_of(&e.id),
            rows,
        })
    }

    /// The upsert adding these increments, its placeholders numbered from
    /// `first` (PostgreSQL). `only_if`: a condition the insert is made on
    /// (PostgreSQL: that the fenced update of the same statement matched).
    pub fn upsert(&self, backend: DbBackend, first: usize, only_if: Option<&str>) -> (String, Vec<Value>) {
        const COLUMNS: &str = r#""id", "templateId", "day", "stepOrder", "shard", "completed", "failed", "cancelled", "skipped", "attempts", "promptTokens", "completionTokens", "durations", "durationMaxMs", "createdAt", "updatedAt""#;
        const CASTS: [&str; 16] = [
            "text",
            "text",
            "date",
            "integer",
            "integer",
            "bigint",
            "bigint",
            "bigint",
            "bigint",
            "bigint",
            "bigint",
            "bigint",
            "jsonb",
            "bigint",
            "timestamp",
            "timestamp",
        ];
        let at = crate::domain::now();
        let mut values: Vec<Value> = Vec::new();
        let mut tuples = Vec::new();
        for r in &self.rows {
            let durations = match r.duration_ms {
                Some(ms) => json!({ bucket(ms).to_string(): 1 }),
                None => json!({}),
            };
            let row: [Value; 16] = [
                new_id().into(),
                self.template_id.clone().into(),
                self.day.into(),
                r.step_order.into(),
                self.shard.into(),
                r.completed.into(),
                r.failed.into(),
                r.cancelled.into(),
                r.skipped.into(),
                r.attempts.into(),
                r.prompt_tokens.into(),
                r.completion_tokens.into(),
                durations.into(),
                r.duration_ms.into(),
                at.into(),
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
        let t = "workflow_template_stats";
        let add = |c: &str| format!(r#""{c}" = {t}."{c}" + excluded."{c}""#);
        let (max, durations) = match backend {
            DbBackend::Postgres => (
                format!(r#"GREATEST({t}."durationMaxMs", excluded."durationMaxMs")"#),
                format!(
                    r#"{t}."durations" || COALESCE((SELECT jsonb_object_agg(d.key, COALESCE(({t}."durations" ->> d.key)::bigint, 0) + d.value::bigint)
                         FROM jsonb_each_text(excluded."durations") d), '{{}}'::jsonb)"#
                ),
            ),
            _ => (
                format!(
                    r#"max(COALESCE({t}."durationMaxMs", excluded."durationMaxMs"), COALESCE(excluded."durationMaxMs", {t}."durationMaxMs"))"#
                ),
                format!(
                    r#"json_patch({t}."durations", (SELECT json_group_object(d.key, COALESCE(json_extract({t}."durations", '$."' || d.key || '"'), 0) + d.value)
                         FROM json_each(excluded."durations") d))"#
                ),
            ),
        };
        let sets = [
            "completed",
            "failed",
            "cancelled",
            "skipped",
            "attempts",
            "promptTokens",
            "completionTokens",
        ]
        .map(add)
        .join(", ");
        let source = match only_if {
            Some(cond) => format!("SELECT * FROM (VALUES {}) v WHERE {cond}", tuples.join(", ")),
            None => format!("VALUES {}", tuples.join(", ")),
        };
        let sql = format!(
            r#"INSERT INTO {t} ({COLUMNS}) {source}
               ON CONFLICT ("templateId", "day", "stepOrder", "shard") DO UPDATE SET {sets},
                 "durations" = {durations}, "durationMaxMs" = {max}, "updatedAt" = excluded."updatedAt""#
        );
        (sql, values)
    }
}
