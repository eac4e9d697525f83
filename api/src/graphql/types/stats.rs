//! A template's runs in numbers: the statistics' object types.

use async_graphql::SimpleObject;

/// A template's runs in numbers (docs/statistics.md).
#[derive(SimpleObject)]
pub struct WorkflowTemplateStats {
    /// Runs that started in the period: finished ones plus `active`.
    pub runs: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// RUNNING or PAUSED now.
    pub active: i64,
    /// completed / (completed + failed + cancelled); null when none finished.
    pub success_rate: Option<f64>,
    /// Finished runs, from `startedAt` to the end (time paused included).
    pub duration_ms: WorkflowDurationStats,
    /// From the `usage` of agent outputs (`openai` agents), over completed steps.
    pub tokens: WorkflowTokenStats,
    /// Each `stepOrder` that has ended in the period, in order.
    pub steps: Vec<WorkflowStepStats>,
}

/// Percentiles from fixed buckets (at most 9.1% above the true value, never
/// below it, never above `max`); `max` is exact. Null when nothing was timed.
#[derive(SimpleObject)]
pub struct WorkflowDurationStats {
    pub p50: Option<i64>,
    pub p95: Option<i64>,
    pub max: Option<i64>,
}

#[derive(SimpleObject)]
pub struct WorkflowTokenStats {
    pub prompt: i64,
    pub completion: i64,
}

/// One step of a template, over the runs in which it ended.
#[derive(SimpleObject)]
pub struct WorkflowStepStats {
    pub step_order: i32,
    /// completed + failed + skipped.
    pub runs: i64,
    pub completed: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Agent calls, retries included.
    pub attempts: i64,
    /// From the step starting to it ending (skipped steps are not timed).
    pub duration_ms: WorkflowDurationStats,
}

impl From<&crate::domain::stats::Totals> for WorkflowDurationStats {
    fn from(t: &crate::domain::stats::Totals) -> Self {
        Self {
            p50: t.percentile(0.5),
            p95: t.percentile(0.95),
            max: t.max_ms,
        }
    }
}

impl From<&crate::domain::stats::TemplateStats> for WorkflowTemplateStats {
    fn from(s: &crate::domain::stats::TemplateStats) -> Self {
        let r = &s.runs;
        let finished = r.completed + r.failed + r.cancelled;
        Self {
            runs: finished + s.active,
            completed: r.completed,
            failed: r.failed,
            cancelled: r.cancelled,
            active: s.active,
            success_rate: (finished > 0).then(|| r.completed as f64 / finished as f64),
            duration_ms: r.into(),
            tokens: WorkflowTokenStats {
                prompt: s.steps.values().map(|t| t.prompt_tokens).sum(),
                completion: s.steps.values().map(|t| t.completion_tokens).sum(),
            },
            steps: s
                .steps
                .iter()
                .map(|(order, t)| WorkflowStepStats {
                    step_order: *order,
                    runs: t.completed + t.failed + t.skipped,
                    completed: t.completed,
                    failed: t.failed,
                    skipped: t.skipped,
                    attempts: t.attempts,
                    duration_ms: t.into(),
                })
                .collect(),
        }
    }
}
