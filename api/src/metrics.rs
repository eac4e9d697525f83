//! Prometheus metrics, one registry per server, served at `GET /metrics`.
//! Counters and histograms move as requests and steps finish; gauges about
//! the database (executions by status, the pool) are read at scrape time,
//! so they agree with the database whatever instance changed it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entity::{ExecutionStatus, StepStatus, workflow_execution as execution, workflow_execution_step as exec_step};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{DatabaseConnection, DbBackend, DbErr, EntityTrait, QuerySelect};

use crate::db::StatementCounter;

/// Operation names are chosen by clients: past this many distinct ones, new
/// names are counted as `other` so a client cannot grow the label set.
const MAX_OPERATION_LABELS: usize = 200;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    step_duration: HistogramVec,
    executions: IntGaugeVec,
    subscriptions: IntGauge,
    ws_connections: IntGauge,
    pool: IntGaugeVec,
    pool_max: IntGauge,
    statements: IntCounter,
    schedule_fires: IntCounter,
    schedule_skips: IntCounterVec,
    retention_deleted: IntCounter,
    operations: Mutex<HashSet<String>>,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    r.expect("metric definitions are valid and registered once")
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let registry = Registry::new_custom(Some("workflows".into()), None).expect("registry");
        let requests = must(IntCounterVec::new(
            Opts::new(
                "graphql_requests_total",
                "GraphQL requests by operation name and outcome (ok, an error code, or timeout)",
            ),
            &["operation", "outcome"],
        ));
        let latency = must(HistogramVec::new(
            HistogramOpts::new(
                "graphql_request_duration_seconds",
                "Time to answer a GraphQL request, by operation name",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["operation"],
        ));
        let step_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "step_duration_seconds",
                "Time from a step starting to it finishing, by agent and outcome (completed or failed)",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ]),
            &["agent", "outcome"],
        ));
        let executions = must(IntGaugeVec::new(
            Opts::new("executions", "Executions in the database by status"),
            &["status"],
        ));
        let subscriptions = must(IntGauge::new("active_subscriptions", "Subscriptions open now"));
        let ws_connections = must(IntGauge::new("websocket_connections", "WebSocket connections open now"));
        let pool = must(IntGaugeVec::new(
            Opts::new(
                "db_pool_connections",
                "Database pool connections by state (idle, in_use)",
            ),
            &["state"],
        ));
        let pool_max = must(IntGauge::new(
            "db_pool_max_connections",
            "Size limit of the database pool",
        ));
        let statements = must(IntCounter::new("db_statements_total", "SQL statements sent"));
        let schedule_fires = must(IntCounter::new(
            "schedule_fires_started_total",
            "Due times of schedules that this instance claimed and started a run for",
        ));
        let schedule_skips = must(IntCounterVec::new(
            Opts::new(
                "schedule_fires_skipped_total",
                "Due times of schedules that this instance claimed and skipped, by reason \
                 (forbidden: the creator can no longer start the template; invalid: the template \
                 or the schedule cannot be started)",
            ),
            &["reason"],
        ));
        let retention_deleted = must(IntCounter::new(
            "retention_deleted_total",
            "Finished executions deleted by the retention sweep (with their step records)",
        ));
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(step_duration.clone()),
            Box::new(executions.clone()),
            Box::new(subscriptions.clone()),
            Box::new(ws_connections.clone()),
            Box::new(pool.clone()),
            Box::new(pool_max.clone()),
            Box::new(statements.clone()),
            Box::new(schedule_fires.clone()),
            Box::new(schedule_skips.clone()),
            Box::new(retention_deleted.clone()),
        ] {
            must(registry.register(c));
        }
        Arc::new(Self {
            registry,
            requests,
            latency,
            step_duration,
            executions,
            subscriptions,
            ws_connections,
            pool,
            pool_max,
            statements,
            schedule_fires,
            schedule_skips,
            retention_deleted,
            operations: Mutex::new(HashSet::new()),
        })
    }

    /// A bounded label for a client-chosen operation name.
    pub fn operation_label(&self, name: Option<&str>) -> String {
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return "anonymous".into();
        };
        let valid = name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return "invalid".into();
        }
        let mut known = self.operations.lock().expect("operations lock");
        if known.contains(name) {
            return name.to_owned();
        }
        if known.len() >= MAX_OPERATION_LABELS {
            return "other".into();
        }
        known.insert(name.to_owned());
        name.to_owned()
    }

    /// One answered GraphQL request.
    pub fn request(&self, operation: &str, outcome: &str, took: Duration) {
        self.requests.with_label_values(&[operation, outcome]).inc();
        self.latency.with_label_values(&[operation]).observe(took.as_secs_f64());
    }

    /// A request refused before it reached the schema (no operation known).
    pub fn refused(&self, outcome: &str, took: Duration) {
        self.request("unknown", outcome, took);
    }

    pub fn subscription_opened(&self) {
        self.subscriptions.inc();
    }

    pub fn subscriptions_closed(&self, n: usize) {
        self.subscriptions.sub(n as i64);
    }

    pub fn connection_opened(&self) {
        self.ws_connections.inc();
    }

    pub fn connection_closed(&self) {
        self.ws_connections.dec();
    }

    /// Records a step that finished (COMPLETED or FAILED), from the runner's
    /// writes on this instance, so each step counts once across instances.
    pub fn step_written(&self, step: &exec_step::Model) {
        let outcome = match step.status {
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            _ => return,
        };
        let (Some(start), Some(end)) = (step.started_at, step.completed_at) else {
            return;
        };
        let agent = step
            .agent_input
            .as_ref()
            .and_then(|i| i.get("agentId"))
            .or_else(|| step.definition.as_ref().and_then(|d| d.get("agentId")))
            .and_then(|a| a.as_str())
            .unwrap_or("unknown");
        let secs = (end - start).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
        self.step_duration.with_label_values(&[agent, outcome]).observe(secs);
    }

    /// A due time this instance claimed and started a run for (so each fire
    /// counts once across instances).
    pub fn schedule_fire_started(&self) {
        self.schedule_fires.inc();
    }

    /// A due time this instance claimed and skipped.
    pub fn schedule_fire_skipped(&self, reason: &str) {
        self.schedule_skips.with_label_values(&[reason]).inc();
    }

    /// Executions the retention sweep deleted on this instance.
    pub fn retention_deleted(&self, n: u64) {
        self.retention_deleted.inc_by(n);
    }

    /// The text exposition, with the scrape-time gauges refreshed.
    pub async fn render(&self, db: &DatabaseConnection, statements: &StatementCounter) -> String {
        if let Err(e) = self.refresh_executions(db).await {
            tracing::warn!(error = %e, "metrics: could not count executions");
        }
        let (size, idle, max) = match db.get_database_backend() {
            DbBackend::Postgres => {
                let p = db.get_postgres_connection_pool();
                (p.size(), p.num_idle(), p.options().get_max_connections())
            }
            DbBackend::Sqlite => {
                let p = db.get_sqlite_connection_pool();
                (p.size(), p.num_idle(), p.options().get_max_connections())
            }
            _ => (0, 0, 0),
        };
        self.pool.with_label_values(&["idle"]).set(idle as i64);
        self.pool
            .with_label_values(&["in_use"])
            .set(i64::from(size).saturating_sub(idle as i64).max(0));
        self.pool_max.set(i64::from(max));
        let sent = statements.get();
        let seen = self.statements.get();
        if sent > seen {
            self.statements.inc_by(sent - seen);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    async fn refresh_executions(&self, db: &DatabaseConnection) -> Result<(), DbErr> {
        let rows: Vec<(ExecutionStatus, i64)> = execution::Entity::find()
            .select_only()
            .column(execution::Column::Status)
            .column_as(Expr::expr(Func::count(Expr::col(execution::Column::Id))), "n")
            .group_by(execution::Column::Status)
            .into_tuple()
            .all(db)
            .await?;
        for status in [
            ExecutionStatus::Running,
            ExecutionStatus::Paused,
            ExecutionStatus::Completed,
            ExecutionStatus::Failed,
            ExecutionStatus::Cancelled,
        ] {
            let n = rows.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
            self.executions.with_label_values(&[status_label(status)]).set(n);
        }
        Ok(())
    }
}

fn status_label(s: ExecutionStatus) -> &'static str {
    match s {
        ExecutionStatus::Running => "RUNNING",
        ExecutionStatus::Paused => "PAUSED",
        ExecutionStatus::Completed => "COMPLETED",
        ExecutionStatus::Failed => "FAILED",
        ExecutionStatus::Cancelled => "CANCELLED",
    }
}
