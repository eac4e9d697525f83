//! The runner: executes a run's steps one after another in the background.
//!
//! Every state change is one transaction that is conditional on the
//! execution's status (so a cancel and a step finishing at the same moment
//! end in one consistent state, on both databases), bumps the execution's
//! persisted `sequence`, and only after it commits is published on the bus.
//! Within this process, one lock per execution orders writes, streamed
//! deltas and snapshots, so subscribers see sequences without gaps.
//!
//! Across instances (PostgreSQL), a RUNNING execution is worked on by the
//! instance holding its lease (`leaseOwner`, `leaseExpiresAt`), renewed while
//! it works; every write of the runner is fenced on owning the lease. A sweep
//! takes over runs whose lease expired, re-running a step that was RUNNING
//! (at least once) and never a COMPLETED or SKIPPED one. Events reach other
//! instances through the relay (LISTEN/NOTIFY).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDateTime;
use entity::{ExecutionStatus, StepStatus};
use entity::{workflow_execution as execution, workflow_execution_step as exec_step};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Statement, TransactionTrait,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::agents::{AgentError, AgentRegistry};
use super::definition::StepDefinition;
use super::relay::{self, Note, Relay};
use super::rollup::Rollup;
use super::state::{ExecPatch, RunState, StepPatch};
use super::{condition, prompt};
use crate::domain::{self, new_id, now, validation};
use crate::error::{ApiError, ApiResult};
use crate::events::{EventBus, EventKind, ExecutionEvent};
use crate::limits::DataLimits;

/// This process's view of one execution that is being worked on.
struct Live {
    /// Held while writing and publishing; the last sequence published here
    /// (ahead of the database while an agent streams).
    seq: tokio::sync::Mutex<Option<i64>>,
    cancel: CancellationToken,
    runner: AtomicBool,
}

/// A run about to be created (see `domain::executions` for how one is made).
pub struct Launch {
    pub template_id: String,
    pub drive_id: String,
    /// Who starts it: the run is theirs.
    pub user_id: String,
    /// The template version it executes.
    pub version: i32,
    /// The context it starts with (`initialContext`).
    pub context: Value,
    pub retry_of: Option<String>,
    /// Its step records, in `stepOrder`.
    pub steps: Vec<Seed>,
}

/// One step record of a new run.
pub enum Seed {
    /// A step to run, as its template version defines it.
    Run {
        workflow_step_id: Option<String>,
        step_order: i32,
        definition: StepDefinition,
    },
    /// A step record of the run being retried, copied as it ended and never
    /// run again.
    Reused(exec_step::Model),
}

struct Change {
    /// Applied only while the execution has one of these statuses.
    expect: &'static [ExecutionStatus],
    /// Applied only while this instance holds the lease (the runner's writes).
    owned: bool,
    exec: ExecPatch,
    step: Option<(usize, StepPatch)>,
    /// Events to publish, in order, once committed.
    events: &'static [EventKind],
}

enum AgentOutcome {
    Done(Value),
    Failed(String),
    /// Cancelled, or the instance is stopping: write nothing more.
    Stopped,
}

/// How long leases last and how often they are swept and renewed.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    pub lease: Duration,
    pub sweep: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            sweep: Duration::from_secs(5),
        }
    }
}

pub struct Engine {
    db: DatabaseConnection,
    agents: Arc<AgentRegistry>,
    bus: EventBus,
    live: Mutex<HashMap<String, Arc<Live>>>,
    /// This instance's id, written as `leaseOwner`.
    instance: String,
    settings: EngineSettings,
    /// Set on shutdown: finish the step in flight, start no other.
    stopping: CancellationToken,
    /// Set when the grace period is over: abandon steps in flight.
    abandon: CancellationToken,
    runners: TaskTracker,
    relay: Option<Arc<Relay>>,
    /// Size limits on prompts and contexts; set once at start (`set_limits`).
    limits: std::sync::OnceLock<DataLimits>,
    /// Told of every step record this instance writes (metrics).
    step_observer: std::sync::OnceLock<StepObserver>,
}

/// Called with a step record after this instance committed a change to it.
pub type StepObserver = Box<dyn Fn(&exec_step::Model) + Send + Sync>;

impl Engine {
    pub fn new(
        db: DatabaseConnection,
        agents: Arc<AgentRegistry>,
        bus: EventBus,
        settings: EngineSettings,
    ) -> Arc<Self> {
        let instance = new_id();
        let relay = (db.get_database_backend() == DbBackend::Postgres).then(|| Relay::new(instance.clone()));
        Arc::new(Self {
            db,
            agents,
            bus,
            live: Mutex::new(HashMap::new()),
            instance,
            settings,
            stopping: CancellationToken::new(),
            abandon: CancellationToken::new(),
            runners: TaskTracker::new(),
            relay,
            limits: std::sync::OnceLock::new(),
            step_observer: std::sync::OnceLock::new(),
        })
    }

    /// Sets the data limits (once; later calls are ignored).
    pub fn set_limits(&self, limits: DataLimits) {
        let _ = self.limits.set(limits);
    }

    fn limits(&self) -> DataLimits {
        self.limits.get().copied().unwrap_or_default()
    }

    /// Sets the step observer (once; later calls are ignored).
    pub fn set_step_observer(&self, observer: StepObserver) {
        let _ = self.step_observer.set(observer);
    }

    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn relay(&self) -> Option<&Arc<Relay>> {
        self.relay.as_ref()
    }

    fn lease_until(&self) -> NaiveDateTime {
        now() + chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::seconds(30))
    }

    fn live(&self, id: &str) -> Arc<Live> {
        self.live
            .lock()
            .expect("live lock")
            .entry(id.to_owned())
            .or_insert_with(|| {
                Arc::new(Live {
                    seq: tokio::sync::Mutex::new(None),
                    cancel: CancellationToken::new(),
                    runner: AtomicBool::new(false),
                })
            })
            .clone()
    }

    fn forget(&self, id: &str) {
        self.live.lock().expect("live lock").remove(id);
    }

    async fn load(&self, id: &str) -> Result<Option<RunState>, DbErr> {
        let Some(exec) = execution::Entity::find_by_id(id.to_owned()).one(&self.db).await? else {
            return Ok(None);
        };
        let steps = exec_step::Entity::find()
            .filter(exec_step::Column::WorkflowExecutionId.eq(id))
            .order_by_asc(exec_step::Column::StepOrder)
            .all(&self.db)
            .await?;
        Ok(Some(RunState::new(Arc::new(exec), Arc::new(steps))))
    }

    /// Writes a change in one transaction and publishes its events. Returns
    /// false (and writes nothing) when the execution's status no longer
    /// allows it.
    async fn apply(&self, seq: &mut Option<i64>, state: &mut RunState, change: Change) -> Result<bool, DbErr> {
        // This instance's own count when it has one; otherwise the stored
        // one, above anything a previous owner may have handed out.
        let base = match *seq {
            Some(n) => n.max(state.exec.sequence),
            None => state.exec.sequence.max(state.exec.sequence_reserved),
        };
        let new_seq = base + change.events.len() as i64;
        let at = now();
        let p = &change.exec;
        let exec_row = execution::ActiveModel {
            status: p.status.map_or(NotSet, Set),
            current_step_order: p.current_step_order.map_or(NotSet, Set),
            paused_at: p.paused_at.map_or(NotSet, |t| Set(Some(t))),
            completed_at: p.completed_at.map_or(NotSet, |t| Set(Some(t))),
            failed_at: p.failed_at.map_or(NotSet, |t| Set(Some(t))),
            error_message: p.error_message.clone().map_or(NotSet, |m| Set(Some(m))),
            lease_owner: p.lease.map_or(NotSet, |l| Set(l.map(|_| self.instance.clone()))),
            lease_expires_at: p.lease.map_or(NotSet, Set),
            sequence: Set(new_seq),
            sequence_reserved: Set(new_seq),
            updated_at: Set(at),
            ..Default::default()
        };
        let mut exec_update = execution::Entity::update_many()
            .set(exec_row)
            .filter(execution::Column::Id.eq(state.exec.id.clone()))
            .filter(execution::Column::Status.is_in(change.expect.iter().copied()));
        if change.owned {
            exec_update = exec_update.filter(execution::Column::LeaseOwner.eq(self.instance.clone()));
        }
        if let Some((key, value)) = &p.context_add {
            exec_update = exec_update.col_expr(
                execution::Column::AccumulatedContext,
                merge_into_context(self.db.get_database_backend(), key, value),
            );
        }
        let step_update = change.step.as_ref().map(|(idx, sp)| {
            let step_row = exec_step::ActiveModel {
                status: sp.status.map_or(NotSet, Set),
                agent_input: sp.agent_input.clone().map_or(NotSet, |v| Set(Some(v))),
                agent_output: sp.agent_output.clone().map_or(NotSet, |v| Set(Some(v))),
                user_input: sp.user_input.clone().map_or(NotSet, |v| Set(Some(v))),
                started_at: sp.started_at.map_or(NotSet, |t| Set(Some(t))),
                completed_at: sp.completed_at.map_or(NotSet, |t| Set(Some(t))),
                error_message: sp.error_message.clone().map_or(NotSet, |m| Set(Some(m))),
                updated_at: Set(at),
                ..Default::default()
            };
            exec_step::Entity::update_many()
                .set(step_row)
                .filter(exec_step::Column::Id.eq(state.steps[*idx].id.clone()))
        });
        let notes: Vec<Note> = match &self.relay {
            Some(relay) => change
                .events
                .iter()
                .enumerate()
                .map(|(i, kind)| Note {
                    i: relay.instance.clone(),
                    e: state.exec.id.clone(),
                    d: state.exec.drive_id.clone(),
                    s: base + i as i64 + 1,
                    k: Note::letter(*kind),
                    t: (*kind == EventKind::StepUpdated)
                        .then(|| change.step.as_ref().map(|(idx, _)| state.steps[*idx].id.clone()))
                        .flatten(),
                    x: None,
                    // The change goes with its first event; the state after
                    // the others is the same.
                    p: Some(if i == 0 {
                        let step = change
                            .step
                            .as_ref()
                            .map(|(idx, sp)| (state.steps[*idx].id.as_str(), sp));
                        relay::patch(at, &change.exec, step)
                    } else {
                        relay::unchanged()
                    }),
                })
                .collect(),
            None => Vec::new(),
        };
        // What the change finishes, for the template's statistics: written
        // with the change, so it counts exactly when the change applies.
        let rollup = Rollup::of_change(state, &change.exec, change.step.as_ref().map(|(i, sp)| (*i, sp)), at);
        let applied = if self.db.get_database_backend() == DbBackend::Postgres {
            self.write_in_one_statement(exec_update, step_update, rollup.as_ref(), &notes)
                .await?
        } else {
            let txn = self.db.begin().await?;
            if exec_update.exec(&txn).await?.rows_affected == 0 {
                txn.rollback().await?;
                false
            } else {
                if let Some(u) = step_update {
                    u.exec(&txn).await?;
                }
                if let Some(r) = &rollup {
                    let (sql, values) = r.upsert(DbBackend::Sqlite, 1, None);
                    txn.execute_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values))
                        .await?;
                }
                txn.commit().await?;
                true
            }
        };
        if !applied {
            return Ok(false);
        }

        // The rows as now stored, built from what was just written.
        let changed_step = state.apply(
            &change.exec,
            change.step.as_ref().map(|(idx, sp)| (*idx, sp)),
            new_seq,
            at,
            &self.instance,
        );
        if let (Some(observe), Some(s)) = (self.step_observer.get(), &changed_step) {
            observe(s);
        }
        *seq = Some(new_seq);
        for (i, kind) in change.events.iter().enumerate() {
            let event = ExecutionEvent {
                kind: *kind,
                sequence: base + i as i64 + 1,
                at,
                execution: state.exec.clone(),
                steps: state.steps.clone(),
                step: if *kind == EventKind::StepUpdated {
                    changed_step.clone()
                } else {
                    None
                },
                delta: None,
            };
            self.bus.publish(event);
        }
        if state.exec.status.is_terminal() {
            self.forget(&state.exec.id);
        }
        Ok(true)
    }

    /// PostgreSQL: the execution update, the step update and the NOTIFYs in
    /// one statement (one round trip, atomic): data-modifying CTEs, the step
    /// and the notes applied only when the fenced execution update matched.
    async fn write_in_one_statement(
        &self,
        exec_update: sea_orm::UpdateMany<execution::Entity>,
        step_update: Option<sea_orm::UpdateMany<exec_step::Entity>>,
        rollup: Option<&Rollup>,
        notes: &[Note],
    ) -> Result<bool, DbErr> {
        use sea_orm::QueryTrait;
        use sea_orm::sea_query::{Expr, PostgresQueryBuilder};
        let mut e = exec_update.into_query();
        e.returning_col(execution::Column::Id);
        let (e_sql, values) = e.build(PostgresQueryBuilder);
        let mut values = values.0;
        let mut sql = format!("WITH e AS ({e_sql})");
        if let Some(u) = step_update {
            let mut u = u.into_query();
            u.and_where(Expr::cust("EXISTS (SELECT 1 FROM e)"));
            let (s_sql, s_values) = u.build(PostgresQueryBuilder);
            sql.push_str(&format!(", s AS ({})", shift_placeholders(&s_sql, values.len())));
            values.extend(s_values.0);
        }
        if let Some(r) = rollup {
            let (r_sql, r_values) = r.upsert(DbBackend::Postgres, values.len() + 1, Some("EXISTS (SELECT 1 FROM e)"));
            sql.push_str(&format!(", r AS ({r_sql})"));
            values.extend(r_values);
        }
        let mut columns = vec!["e.id".to_owned()];
        for note in notes {
            values.push(serde_json::to_string(note).expect("note serializes").into());
            columns.push(format!("pg_notify('{}', ${})::text", relay::CHANNEL, values.len()));
        }
        sql.push_str(&format!(" SELECT {} FROM e", columns.join(", ")));
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
            .await?;
        Ok(!rows.is_empty())
    }

    /// Creates the execution (RUNNING) and its step records — a PENDING one
    /// per step to run, carrying a copy of its definition, and those a retry
    /// reuses as they ended — then runs it in the background.
    pub async fn start(self: &Arc<Self>, launch: Launch) -> ApiResult<execution::Model> {
        if launch.steps.is_empty() {
            return Err(ApiError::bad_input("templateId: the template has no steps to run"));
        }
        let at = now();
        let id = new_id();
        // The context as the reused steps left it: the starting context plus
        // their inputs and outputs, in step order.
        let mut context = launch.context.clone();
        if let Some(map) = context.as_object_mut() {
            for seed in &launch.steps {
                if let Seed::Reused(r) = seed {
                    if let Some(input) = &r.user_input {
                        map.insert(format!("step_{}_input", r.step_order), input.clone());
                    }
                    if let (StepStatus::Completed, Some(output)) = (r.status, &r.agent_output) {
                        map.insert(format!("step_{}_output", r.step_order), output.clone());
                    }
                }
            }
        }
        let records: Vec<exec_step::Model> = launch
            .steps
            .into_iter()
            .map(|seed| match seed {
                Seed::Run {
                    workflow_step_id,
                    step_order,
                    definition,
                } => exec_step::Model {
                    id: new_id(),
                    workflow_execution_id: id.clone(),
                    workflow_step_id,
                    step_order,
                    status: StepStatus::Pending,
                    agent_input: None,
                    agent_output: None,
                    user_input: None,
                    started_at: None,
                    completed_at: None,
                    error_message: None,
                    definition: Some(serde_json::to_value(definition).expect("definition serializes")),
                    reused: false,
                    created_at: at,
                    updated_at: at,
                },
                Seed::Reused(r) => exec_step::Model {
                    id: new_id(),
                    workflow_execution_id: id.clone(),
                    reused: true,
                    created_at: at,
                    updated_at: at,
                    ..r
                },
            })
            .collect();
        let exec = execution::Model {
            id,
            workflow_template_id: launch.template_id,
            user_id: launch.user_id,
            drive_id: launch.drive_id,
            status: ExecutionStatus::Running,
            current_step_order: records.iter().find(|r| !r.reused).map(|r| r.step_order),
            initial_context: launch.context,
            accumulated_context: context,
            started_at: Some(at),
            paused_at: None,
            completed_at: None,
            failed_at: None,
            error_message: None,
            sequence: 1,
            sequence_reserved: 0,
            lease_owner: Some(self.instance.clone()),
            lease_expires_at: Some(self.lease_until()),
            template_version: launch.version,
            retry_of_execution_id: launch.retry_of,
            created_at: at,
            updated_at: at,
        };
        let event = ExecutionEvent {
            kind: EventKind::ExecutionUpdated,
            sequence: 1,
            at,
            execution: Arc::new(exec.clone()),
            steps: Arc::new(records),
            step: None,
            delta: None,
        };
        let insert_exec = execution::Entity::insert(execution::ActiveModel::from(exec.clone()));
        let insert_steps =
            exec_step::Entity::insert_many(event.steps.iter().cloned().map(exec_step::ActiveModel::from));
        match &self.relay {
            // PostgreSQL: both inserts and the note in one statement.
            Some(relay) => {
                use sea_orm::QueryTrait;
                use sea_orm::sea_query::PostgresQueryBuilder;
                let mut e = insert_exec.into_query();
                e.returning_col(execution::Column::Id);
                let (e_sql, values) = e.build(PostgresQueryBuilder);
                let mut values = values.0;
                let (s_sql, s_values) = insert_steps.into_query().build(PostgresQueryBuilder);
                let sql_steps = shift_placeholders(&s_sql, values.len());
                values.extend(s_values.0);
                values.push(
                    serde_json::to_string(&Note::of(&relay.instance, &event))
                        .expect("note")
                        .into(),
                );
                let sql = format!(
                    "WITH e AS ({e_sql}), s AS ({sql_steps}) SELECT pg_notify('{}', ${})::text FROM e",
                    relay::CHANNEL,
                    values.len()
                );
                self.db
                    .query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
                    .await?;
            }
            None => {
                let txn = self.db.begin().await?;
                insert_exec.exec_without_returning(&txn).await?;
                insert_steps.exec_without_returning(&txn).await?;
                txn.commit().await?;
            }
        }
        let state = RunState::new(event.execution.clone(), event.steps.clone());
        let live = self.live(&exec.id);
        {
            let mut seq = live.seq.lock().await;
            *seq = Some(1);
            self.bus.publish(event);
        }
        self.spawn(exec.id.clone(), Some(state));
        Ok(exec)
    }

    /// Runs `id` in the background; `state` is its rows when the caller
    /// just wrote them (else they are read).
    fn spawn(self: &Arc<Self>, id: String, state: Option<RunState>) {
        let engine = self.clone();
        self.runners.spawn(async move {
            let live = engine.live(&id);
            if live.runner.swap(true, Ordering::SeqCst) {
                return; // Already being worked on in this process.
            }
            if let Err(e) = engine.run(&live, &id, state).await {
                tracing::error!(execution = %id, error = %e, "run stopped by a database error");
            }
            live.runner.store(false, Ordering::SeqCst);
        });
    }

    /// Validates `input` against the paused step's `inputSchema`, saves it,
    /// and resumes the run. Only one of several concurrent submissions wins.
    pub async fn submit_input(self: &Arc<Self>, id: &str, input: Value) -> ApiResult<execution::Model> {
        let live = self.live(id);
        let mut seq = live.seq.lock().await;
        let mut state = self
            .load(id)
            .await?
            .ok_or_else(|| ApiError::not_found("workflow execution", id))?;
        if state.exec.status != ExecutionStatus::Paused {
            return Err(not_paused(&state.exec));
        }
        let order = state.exec.current_step_order.unwrap_or(0);
        let idx = state
            .steps
            .iter()
            .position(|s| s.step_order == order && s.status == StepStatus::Pending)
            .ok_or_else(|| ApiError::Internal(format!("paused execution {id} has no pending step {order}")))?;
        let def = self.definition(&state.steps[idx]).await?;
        validation::user_input(def.input_schema.as_ref(), &input)?;
        let base = state.context_bytes();
        self.limits().context_with(
            "input",
            &state.exec.accumulated_context,
            base,
            &format!("step_{order}_input"),
            &input,
        )?;
        let applied = self
            .apply(
                &mut seq,
                &mut state,
                Change {
                    expect: &[ExecutionStatus::Paused],
                    owned: false,
                    exec: ExecPatch {
                        status: Some(ExecutionStatus::Running),
                        context_add: Some((format!("step_{order}_input"), input.clone())),
                        lease: Some(Some(self.lease_until())),
                        ..Default::default()
                    },
                    step: Some((
                        idx,
                        StepPatch {
                            user_input: Some(input),
                            ..Default::default()
                        },
                    )),
                    events: &[EventKind::ExecutionUpdated],
                },
            )
            .await?;
        if !applied {
            return Err(ApiError::Conflict("the execution is no longer PAUSED".into()));
        }
        drop(seq);
        let exec = (*state.exec).clone();
        self.spawn(id.to_owned(), Some(state));
        Ok(exec)
    }

    /// Stops a RUNNING or PAUSED execution: CANCELLED, and a step in flight
    /// FAILED "cancelled". The agent call in flight is dropped.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> ApiResult<execution::Model> {
        let live = self.live(id);
        let mut seq = live.seq.lock().await;
        let Some(mut state) = self.load(id).await? else {
            return Err(ApiError::not_found("workflow execution", id));
        };
        if state.exec.status.is_terminal() {
            self.forget(id);
            return Err(ApiError::Conflict(format!(
                "the execution has already finished ({})",
                status_name(state.exec.status)
            )));
        }
        if let (ExecutionStatus::Running, Some(owner), Some(until)) =
            (state.exec.status, &state.exec.lease_owner, state.exec.lease_expires_at)
        {
            if owner != &self.instance && until > now() {
                // Another live instance runs it: it alone numbers its events.
                drop(seq);
                return Box::pin(self.cancel_elsewhere(id)).await;
            }
        }
        let at = now();
        let running = state.steps.iter().position(|s| s.status == StepStatus::Running);
        let change = Change {
            expect: &[ExecutionStatus::Running, ExecutionStatus::Paused],
            owned: false,
            exec: ExecPatch {
                status: Some(ExecutionStatus::Cancelled),
                lease: Some(None),
                ..Default::default()
            },
            step: running.map(|idx| {
                (
                    idx,
                    StepPatch {
                        status: Some(StepStatus::Failed),
                        completed_at: Some(at),
                        error_message: Some("cancelled".into()),
                        ..Default::default()
                    },
                )
            }),
            events: if running.is_some() {
                &[EventKind::StepUpdated, EventKind::ExecutionUpdated]
            } else {
                &[EventKind::ExecutionUpdated]
            },
        };
        if !self.apply(&mut seq, &mut state, change).await? {
            return Err(ApiError::Conflict("the execution has already finished".into()));
        }
        live.cancel.cancel();
        Ok((*state.exec).clone())
    }

    /// The execution and its steps as one consistent SNAPSHOT event.
    pub async fn snapshot(&self, id: &str) -> Result<Option<ExecutionEvent>, DbErr> {
        let live = self.live(id);
        let seq = live.seq.lock().await;
        let state = self.load(id).await?;
        let result = state.map(|s| ExecutionEvent {
            kind: EventKind::Snapshot,
            sequence: seq
                .unwrap_or(0)
                .max(s.exec.sequence)
                .max(self.relay.as_ref().and_then(|r| r.heard(id)).unwrap_or(0)),
            at: now(),
            execution: s.exec,
            steps: s.steps,
            step: None,
            delta: None,
        });
        let terminal_or_gone = result.as_ref().is_none_or(|e| e.execution.status.is_terminal());
        drop(seq);
        if terminal_or_gone {
            self.forget(id);
        }
        Ok(result)
    }

    async fn definition(&self, step: &exec_step::Model) -> ApiResult<StepDefinition> {
        if let Some(d) = &step.definition {
            return serde_json::from_value(d.clone())
                .map_err(|e| ApiError::Internal(format!("step {} has an unreadable definition: {e}", step.id)));
        }
        // Rows written before definitions were copied: use the template step.
        let Some(step_id) = &step.workflow_step_id else {
            return Err(ApiError::Internal(format!(
                "step {} has no definition",
                step.step_order
            )));
        };
        let def = domain::steps::find(&self.db, step_id).await?;
        def.map(|d| StepDefinition::from(&d))
            .ok_or_else(|| ApiError::Internal(format!("step {} has no definition", step.step_order)))
    }

    async fn write(&self, live: &Live, state: &mut RunState, change: Change) -> Result<bool, DbErr> {
        let mut seq = live.seq.lock().await;
        self.apply(&mut seq, state, change).await
    }

    /// Marks step `idx` and the execution FAILED.
    async fn fail(&self, live: &Live, state: &mut RunState, idx: usize, cause: String) -> Result<(), DbErr> {
        let at = now();
        let order = state.steps[idx].step_order;
        let message = format!("step {order} failed: {cause}");
        self.write(
            live,
            state,
            Change {
                expect: &[ExecutionStatus::Running],
                owned: true,
                exec: ExecPatch {
                    status: Some(ExecutionStatus::Failed),
                    lease: Some(None),
                    failed_at: Some(at),
                    error_message: Some(message.clone()),
                    ..Default::default()
                },
                step: Some((
                    idx,
                    StepPatch {
                        status: Some(StepStatus::Failed),
                        completed_at: Some(at),
                        error_message: Some(message),
                        ..Default::default()
                    },
                )),
                events: &[EventKind::StepUpdated, EventKind::ExecutionUpdated],
            },
        )
        .await?;
        Ok(())
    }

    async fn run(&self, live: &Live, id: &str, state: Option<RunState>) -> Result<(), DbErr> {
        let state = match state {
            Some(s) => Some(s),
            None => self.load(id).await?,
        };
        let Some(mut state) = state else {
            return Ok(());
        };
        loop {
            if state.exec.status != ExecutionStatus::Running || live.cancel.is_cancelled() {
                return Ok(());
            }
            if self.stopping.is_cancelled() {
                // Shutting down: the lease is handed back for another instance.
                return Ok(());
            }
            let Some(idx) = state
                .steps
                .iter()
                .position(|s| matches!(s.status, StepStatus::Pending | StepStatus::Running))
            else {
                // Nothing left (e.g. the last steps were skipped): done.
                let at = now();
                self.write(
                    live,
                    &mut state,
                    Change {
                        expect: &[ExecutionStatus::Running],
                        owned: true,
                        exec: ExecPatch {
                            status: Some(ExecutionStatus::Completed),
                            completed_at: Some(at),
                            lease: Some(None),
                            ..Default::default()
                        },
                        step: None,
                        events: &[EventKind::ExecutionUpdated],
                    },
                )
                .await?;
                return Ok(());
            };
            let step = state.steps[idx].clone();
            let order = step.step_order;
            let next_order = state.steps.get(idx + 1).map(|s| s.step_order);
            let is_last = state.steps[idx + 1..]
                .iter()
                .all(|s| !matches!(s.status, StepStatus::Pending | StepStatus::Running));
            let def = match self.definition(&step).await {
                Ok(d) => d,
                Err(e) => {
                    self.fail(live, &mut state, idx, e.message()).await?;
                    return Ok(());
                }
            };

            if let Some(rule) = &def.condition {
                match condition::evaluate(rule, &state.exec.accumulated_context) {
                    Ok(true) => {}
                    Ok(false) => {
                        let at = now();
                        let done = is_last;
                        let applied = self
                            .write(
                                live,
                                &mut state,
                                step_finished(
                                    idx,
                                    next_order,
                                    done,
                                    at,
                                    StepPatch {
                                        status: Some(StepStatus::Skipped),
                                        completed_at: Some(at),
                                        ..Default::default()
                                    },
                                    None,
                                ),
                            )
                            .await?;
                        if !applied {
                            return Ok(());
                        }
                        continue;
                    }
                    Err(e) => {
                        self.fail(
                            live,
                            &mut state,
                            idx,
                            format!("its condition could not be evaluated: {e}"),
                        )
                        .await?;
                        return Ok(());
                    }
                }
            }

            if def.requires_user_input && step.user_input.is_none() {
                self.write(
                    live,
                    &mut state,
                    Change {
                        expect: &[ExecutionStatus::Running],
                        owned: true,
                        exec: ExecPatch {
                            status: Some(ExecutionStatus::Paused),
                            lease: Some(None),
                            paused_at: Some(now()),
                            current_step_order: Some(Some(order)),
                            ..Default::default()
                        },
                        step: None,
                        events: &[EventKind::ExecutionUpdated],
                    },
                )
                .await?;
                return Ok(());
            }

            let rendered = match prompt::render(
                &def.prompt_template,
                &state.exec.accumulated_context,
                step.user_input.as_ref(),
            ) {
                Ok(p) if p.len() > self.limits().max_prompt_bytes => {
                    let why = format!(
                        "its rendered prompt is {} bytes; at most {} are allowed (MAX_PROMPT_BYTES)",
                        p.len(),
                        self.limits().max_prompt_bytes
                    );
                    self.fail(live, &mut state, idx, why).await?;
                    return Ok(());
                }
                Ok(p) => p,
                Err(missing) => {
                    self.fail(
                        live,
                        &mut state,
                        idx,
                        format!("its prompt names a missing variable '{}'", missing.0),
                    )
                    .await?;
                    return Ok(());
                }
            };
            let Some(agent) = self.agents.get(&def.agent_id).map(|a| a.agent.clone()) else {
                self.fail(
                    live,
                    &mut state,
                    idx,
                    format!("agent '{}' is not configured on this server", def.agent_id),
                )
                .await?;
                return Ok(());
            };
            let applied = self
                .write(
                    live,
                    &mut state,
                    Change {
                        expect: &[ExecutionStatus::Running],
                        owned: true,
                        exec: ExecPatch {
                            current_step_order: Some(Some(order)),
                            ..Default::default()
                        },
                        step: Some((
                            idx,
                            StepPatch {
                                status: Some(StepStatus::Running),
                                started_at: Some(now()),
                                agent_input: Some(json!({"prompt": rendered, "agentId": def.agent_id})),
                                ..Default::default()
                            },
                        )),
                        events: &[EventKind::StepUpdated],
                    },
                )
                .await?;
            if !applied {
                return Ok(());
            }

            match self
                .call_agent(live, &mut state, idx, agent.as_ref(), &def, &rendered)
                .await?
            {
                AgentOutcome::Stopped => return Ok(()),
                AgentOutcome::Failed(cause) => {
                    self.fail(live, &mut state, idx, format!("agent '{}': {cause}", def.agent_id))
                        .await?;
                    return Ok(());
                }
                AgentOutcome::Done(output) => {
                    let at = now();
                    let key = format!("step_{order}_output");
                    let base = state.context_bytes();
                    if let Err(why) = self
                        .limits()
                        .output_fits(&output, &state.exec.accumulated_context, base, &key)
                    {
                        self.fail(live, &mut state, idx, why).await?;
                        return Ok(());
                    }
                    let done = is_last;
                    let applied = self
                        .write(
                            live,
                            &mut state,
                            step_finished(
                                idx,
                                next_order,
                                done,
                                at,
                                StepPatch {
                                    status: Some(StepStatus::Completed),
                                    agent_output: Some(output.clone()),
                                    completed_at: Some(at),
                                    ..Default::default()
                                },
                                Some((format!("step_{order}_output"), output)),
                            ),
                        )
                        .await?;
                    if !applied || done {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Calls the agent under the step's timeout and retry policy, publishing
    /// streamed pieces as STEP_OUTPUT_DELTA events; stops at once on cancel.
    async fn call_agent(
        &self,
        live: &Live,
        state: &mut RunState,
        idx: usize,
        agent: &dyn super::agents::Agent,
        def: &StepDefinition,
        rendered: &str,
    ) -> Result<AgentOutcome, DbErr> {
        let policy = def.attempts();
        let mut attempt = 1;
        loop {
            *state.attempts.entry(idx).or_default() += 1;
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            let mut streamed = false;
            let result = {
                let call = agent.call(rendered, Some(&tx));
                tokio::pin!(call);
                let deadline = async {
                    match policy.timeout {
                        Some(t) => tokio::time::sleep(t).await,
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        biased;
                        _ = live.cancel.cancelled() => return Ok(AgentOutcome::Stopped),
                        _ = self.abandon.cancelled() => return Ok(AgentOutcome::Stopped),
                        Some(piece) = rx.recv() => {
                            streamed = true;
                            self.publish_delta(live, state, idx, piece).await?;
                        }
                        r = &mut call => break r,
                        _ = &mut deadline => break Err(AgentError::Retryable {
                            message: format!("timed out after {} ms", policy.timeout.map_or(0, |t| t.as_millis())),
                            retry_after: None,
                        }),
                    }
                }
            };
            // Pieces sent just before the call returned.
            while let Ok(piece) = rx.try_recv() {
                streamed = true;
                self.publish_delta(live, state, idx, piece).await?;
            }
            match result {
                Ok(output) => return Ok(AgentOutcome::Done(output)),
                Err(AgentError::Fatal(m)) => return Ok(AgentOutcome::Failed(m)),
                Err(AgentError::Retryable { message, retry_after }) => {
                    if attempt >= policy.max_attempts {
                        let tries = if attempt > 1 {
                            format!(" (after {attempt} attempts)")
                        } else {
                            String::new()
                        };
                        return Ok(AgentOutcome::Failed(format!("{message}{tries}")));
                    }
                    let wait = retry_after.unwrap_or(policy.backoff).max(policy.backoff);
                    tracing::info!(step = idx, attempt, error = %message, "retrying agent call");
                    tokio::select! {
                        _ = live.cancel.cancelled() => return Ok(AgentOutcome::Stopped),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    if streamed {
                        // A new RUNNING event with a new startedAt tells
                        // subscribers to drop the pieces of the failed attempt.
                        let applied = self
                            .write(
                                live,
                                state,
                                Change {
                                    expect: &[ExecutionStatus::Running],
                                    owned: true,
                                    exec: ExecPatch::default(),
                                    step: Some((
                                        idx,
                                        StepPatch {
                                            started_at: Some(now()),
                                            ..Default::default()
                                        },
                                    )),
                                    events: &[EventKind::StepUpdated],
                                },
                            )
                            .await?;
                        if !applied {
                            return Ok(AgentOutcome::Stopped);
                        }
                    }
                    attempt += 1;
                }
            }
        }
    }

    async fn publish_delta(&self, live: &Live, state: &mut RunState, idx: usize, piece: String) -> Result<(), DbErr> {
        for part in relay::split_delta(piece) {
            let mut seq = live.seq.lock().await;
            let next = seq.unwrap_or(0).max(state.exec.sequence) + 1;
            if next > state.exec.sequence_reserved {
                // Deltas are not stored; reserve their numbers in blocks so an
                // instance taking over never hands out one already seen.
                let reserved = next + 63;
                execution::Entity::update_many()
                    .set(execution::ActiveModel {
                        sequence_reserved: Set(reserved),
                        ..Default::default()
                    })
                    .filter(execution::Column::Id.eq(state.exec.id.clone()))
                    .filter(execution::Column::LeaseOwner.eq(self.instance.clone()))
                    .exec(&self.db)
                    .await?;
                Arc::make_mut(&mut state.exec).sequence_reserved = reserved;
            }
            *seq = Some(next);
            Arc::make_mut(&mut state.exec).sequence = next;
            let event = ExecutionEvent {
                kind: EventKind::StepOutputDelta,
                sequence: next,
                at: now(),
                execution: state.exec.clone(),
                steps: state.steps.clone(),
                step: Some(state.steps[idx].clone()),
                delta: Some(part),
            };
            self.tell_others(&event).await;
            self.bus.publish(event);
        }
        Ok(())
    }

    /// Sends the event to other instances (PostgreSQL only).
    async fn tell_others(&self, event: &ExecutionEvent) {
        if let Some(relay) = &self.relay {
            self.notify(&Note::of(&relay.instance, event)).await;
        }
    }

    async fn notify(&self, note: &Note) {
        let payload = serde_json::to_string(note).expect("note serializes");
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [relay::CHANNEL.into(), payload.into()],
        );
        if let Err(e) = self.db.execute_raw(stmt).await {
            tracing::warn!(error = %e, "could not notify other instances");
        }
    }

    /// Asks the instance running `id` to cancel it and waits for the result;
    /// if that instance is gone (its lease runs out), takes the run over and
    /// cancels it here.
    async fn cancel_elsewhere(self: &Arc<Self>, id: &str) -> ApiResult<execution::Model> {
        if let Some(relay) = &self.relay {
            let note = Note {
                i: relay.instance.clone(),
                e: id.to_owned(),
                d: String::new(),
                s: 0,
                k: 'C',
                t: None,
                x: None,
                p: None,
            };
            self.notify(&note).await;
        }
        let deadline = tokio::time::Instant::now() + self.settings.lease + Duration::from_secs(2);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let Some(exec) = execution::Entity::find_by_id(id.to_owned()).one(&self.db).await? else {
                return Err(ApiError::not_found("workflow execution", id));
            };
            match exec.status {
                ExecutionStatus::Cancelled => return Ok(exec),
                s if s.is_terminal() => {
                    return Err(ApiError::Conflict(format!(
                        "the execution has already finished ({})",
                        status_name(s)
                    )));
                }
                _ => {}
            }
            let expired = exec.lease_expires_at.is_none_or(|t| t <= now());
            if expired || tokio::time::Instant::now() >= deadline {
                // Whoever ran it is gone: take it over, then cancel it here.
                self.claim(id).await?;
                self.forget(id);
                return Box::pin(self.cancel(id)).await;
            }
        }
    }

    /// Takes the lease of a RUNNING execution whose lease expired.
    async fn claim(&self, id: &str) -> Result<bool, DbErr> {
        let res = execution::Entity::update_many()
            .set(execution::ActiveModel {
                lease_owner: Set(Some(self.instance.clone())),
                lease_expires_at: Set(Some(self.lease_until())),
                ..Default::default()
            })
            .filter(execution::Column::Id.eq(id))
            .filter(execution::Column::Status.eq(ExecutionStatus::Running))
            .filter(
                sea_orm::Condition::any()
                    .add(execution::Column::LeaseExpiresAt.is_null())
                    .add(execution::Column::LeaseExpiresAt.lte(now())),
            )
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected > 0)
    }

    /// Starts the background work: renewing this instance's leases, sweeping
    /// for runs nobody works on, and (PostgreSQL) relaying other instances'
    /// events. On SQLite (one process per file) every RUNNING run is taken
    /// over at once, since the process that ran it is gone.
    pub fn start_background(self: &Arc<Self>) {
        let engine = self.clone();
        tokio::spawn(async move {
            let every = engine.settings.lease / 3;
            loop {
                tokio::select! {
                    _ = engine.stopping.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Err(e) = engine.renew().await {
                    tracing::warn!(error = %e, "renewing leases failed");
                }
            }
        });
        let engine = self.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                match engine
                    .sweep(first && engine.db.get_database_backend() == DbBackend::Sqlite)
                    .await
                {
                    Ok(ids) => {
                        for id in ids {
                            tracing::info!(execution = %id, "taking over a run nobody was working on");
                            engine.forget(&id);
                            engine.spawn(id, None);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "sweeping for orphaned runs failed"),
                }
                first = false;
                tokio::select! {
                    _ = engine.stopping.cancelled() => return,
                    _ = tokio::time::sleep(engine.settings.sweep) => {}
                }
            }
        });
        if self.relay.is_some() {
            let engine = self.clone();
            tokio::spawn(async move { engine.listen().await });
        }
    }

    async fn renew(&self) -> Result<(), DbErr> {
        execution::Entity::update_many()
            .set(execution::ActiveModel {
                lease_expires_at: Set(Some(self.lease_until())),
                ..Default::default()
            })
            .filter(execution::Column::LeaseOwner.eq(self.instance.clone()))
            .filter(execution::Column::Status.eq(ExecutionStatus::Running))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Claims up to 100 RUNNING executions whose lease expired (or all
    /// RUNNING ones when `all`); returns their ids.
    async fn sweep(&self, all: bool) -> Result<Vec<String>, DbErr> {
        if self.stopping.is_cancelled() {
            return Ok(Vec::new());
        }
        let backend = self.db.get_database_backend();
        let expired = if all {
            ""
        } else {
            r#"AND ("leaseExpiresAt" IS NULL OR "leaseExpiresAt" < {now})"#
        };
        let (sql, values): (String, Vec<sea_orm::Value>) = match backend {
            DbBackend::Postgres => (
                format!(
                    r#"UPDATE workflow_executions SET "leaseOwner" = $1, "leaseExpiresAt" = $2
                       WHERE id IN (SELECT id FROM workflow_executions WHERE status = 'running' {}
                                    ORDER BY "updatedAt" LIMIT 100 FOR UPDATE SKIP LOCKED)
                       RETURNING id"#,
                    expired.replace("{now}", "$3")
                ),
                vec![self.instance.clone().into(), self.lease_until().into(), now().into()],
            ),
            _ => (
                format!(
                    r#"UPDATE workflow_executions SET "leaseOwner" = ?, "leaseExpiresAt" = ?
                       WHERE id IN (SELECT id FROM workflow_executions WHERE status = 'running' {}
                                    ORDER BY "updatedAt" LIMIT 100)
                       RETURNING id"#,
                    expired.replace("{now}", "?")
                ),
                vec![self.instance.clone().into(), self.lease_until().into(), now().into()],
            ),
        };
        let values = if all { values[..2].to_vec() } else { values };
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        rows.iter().map(|r| r.try_get::<String>("", "id")).collect()
    }

    /// Receives other instances' notes and republishes what local
    /// subscribers follow; carries out cancel requests for runs this
    /// instance owns.
    async fn listen(self: Arc<Self>) {
        let relay = self.relay.clone().expect("listen runs on PostgreSQL");
        let pool = self.db.get_postgres_connection_pool().clone();
        loop {
            let mut listener = match sea_orm::sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "event relay: cannot connect; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(relay::CHANNEL).await {
                tracing::warn!(error = %e, "event relay: LISTEN failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            // Anything sent while not listening is lost: streams resync,
            // and the copies of runs are read afresh.
            relay.missed_some();
            let mut copies: HashMap<String, RunState> = HashMap::new();
            loop {
                let received = tokio::select! {
                    _ = self.stopping.cancelled() => return,
                    r = listener.try_recv() => r,
                };
                match received {
                    Ok(Some(n)) => {
                        if let Ok(note) = serde_json::from_str::<Note>(n.payload()) {
                            if note.i != relay.instance {
                                self.receive(&relay, &mut copies, note).await;
                            }
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("event relay: connection lost; reconnecting");
                        relay.missed_some();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event relay failed; reconnecting");
                        relay.missed_some();
                        break;
                    }
                }
            }
        }
    }

    async fn receive(self: &Arc<Self>, relay: &Arc<Relay>, copies: &mut HashMap<String, RunState>, note: Note) {
        if note.k == 'C' {
            let owned = self
                .live
                .lock()
                .expect("live lock")
                .get(&note.e)
                .is_some_and(|l| l.runner.load(Ordering::SeqCst));
            if owned {
                let engine = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = engine.cancel(&note.e).await {
                        tracing::info!(execution = %note.e, error = ?e, "cancel requested by another instance");
                    }
                });
            }
            return;
        }
        let Some(kind) = note.kind() else { return };
        // A run finished elsewhere while this instance still works on it
        // (it lost its lease): stop here.
        if kind == EventKind::ExecutionUpdated {
            if let Some(live) = self.live.lock().expect("live lock").get(&note.e) {
                if live.runner.load(Ordering::SeqCst) {
                    live.cancel.cancel();
                }
            }
        }
        relay.record(&note.e, note.s);
        if !relay.follows(&note) {
            copies.remove(&note.e);
            return;
        }
        let event = match self.replay(copies, kind, &note).await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "event relay: reading the execution failed");
                copies.remove(&note.e);
                relay.missed_some();
                return;
            }
        };
        if copies.len() > 10_000 {
            // Bounded: forgetting a copy only costs reading the rows again.
            copies.clear();
        }
        if !event.execution.status.is_terminal() {
            copies.insert(
                note.e.clone(),
                RunState::new(event.execution.clone(), event.steps.clone()),
            );
        }
        self.bus.publish(event);
    }

    /// The event another instance's note tells of, with the state after it,
    /// as the writer published it: the note's change applied to this
    /// instance's copy of the run when the copy is at the event before; the
    /// run's first state rebuilt from the rows for its first event; the rows
    /// themselves when they are still at this event. When they have moved
    /// on, that event's state is gone: a SNAPSHOT of the rows stands for it.
    /// `None` for a note already applied.
    async fn replay(
        &self,
        copies: &mut HashMap<String, RunState>,
        kind: EventKind,
        note: &Note,
    ) -> Result<Option<ExecutionEvent>, DbErr> {
        let event = |kind, sequence, at, state: RunState| {
            let step = note
                .t
                .as_ref()
                .and_then(|t| state.steps.iter().find(|s| &s.id == t).cloned());
            ExecutionEvent {
                kind,
                sequence,
                at,
                execution: state.exec,
                steps: state.steps,
                step,
                delta: note.x.clone(),
            }
        };
        let patch = note
            .p
            .as_ref()
            .and_then(|p| serde_json::from_str::<relay::Patch>(p.get()).ok());
        match copies.remove(&note.e) {
            Some(copy) if copy.exec.sequence >= note.s => {
                copies.insert(note.e.clone(), copy);
                return Ok(None);
            }
            Some(mut copy) if copy.exec.sequence + 1 == note.s && patch.is_some() => {
                let mut patch = patch.expect("checked");
                let at = match patch.a {
                    Some(at) => {
                        self.read_left_out(&note.e, &mut patch).await?;
                        let idx = patch
                            .t
                            .as_ref()
                            .and_then(|t| copy.steps.iter().position(|s| &s.id == t));
                        copy.apply(&patch.e, idx.zip(patch.s.as_ref()), note.s, at, "");
                        at
                    }
                    None => {
                        // A delta, or a change's later event: nothing stored changed.
                        Arc::make_mut(&mut copy.exec).sequence = note.s;
                        now()
                    }
                };
                return Ok(Some(event(kind, note.s, at, copy)));
            }
            _ => {}
        }
        let Some(mut rows) = self.load(&note.e).await? else {
            return Ok(None);
        };
        if note.s == 1 {
            let first = RunState::as_started(&rows.exec, &rows.steps);
            let at = first.exec.created_at;
            return Ok(Some(event(kind, 1, at, first)));
        }
        let stored = rows.exec.sequence;
        // Deltas are not stored: rows older than a delta are its state.
        if stored == note.s || (kind == EventKind::StepOutputDelta && stored < note.s) {
            Arc::make_mut(&mut rows.exec).sequence = note.s;
            let at = rows.exec.updated_at;
            return Ok(Some(event(kind, note.s, at, rows)));
        }
        if stored > note.s {
            let mut snap = event(EventKind::Snapshot, stored, now(), rows);
            snap.step = None;
            snap.delta = None;
            return Ok(Some(snap));
        }
        Ok(None)
    }

    /// Fills in the values a note left out for their size, from the rows:
    /// a later change never rewrites them (a step's input, output and
    /// message, a context key, the execution's message).
    async fn read_left_out(&self, id: &str, patch: &mut relay::Patch) -> Result<(), DbErr> {
        use relay::Field;
        let left_out = std::mem::take(&mut patch.r);
        if left_out.contains(&Field::Context) || left_out.contains(&Field::Error) {
            if let Some(row) = execution::Entity::find_by_id(id.to_owned()).one(&self.db).await? {
                if let (true, Some((key, value))) = (left_out.contains(&Field::Context), patch.e.context_add.as_mut()) {
                    *value = row
                        .accumulated_context
                        .get(key.as_str())
                        .cloned()
                        .unwrap_or(Value::Null);
                }
                if left_out.contains(&Field::Error) {
                    patch.e.error_message = row.error_message;
                }
            }
        }
        let step_fields = [
            Field::AgentInput,
            Field::AgentOutput,
            Field::UserInput,
            Field::StepError,
        ];
        let (Some(t), Some(sp)) = (&patch.t, patch.s.as_mut()) else {
            return Ok(());
        };
        if !step_fields.iter().any(|f| left_out.contains(f)) {
            return Ok(());
        }
        let Some(row) = exec_step::Entity::find_by_id(t.clone()).one(&self.db).await? else {
            return Ok(());
        };
        for field in left_out {
            match field {
                Field::AgentInput => sp.agent_input = row.agent_input.clone(),
                Field::AgentOutput => sp.agent_output = row.agent_output.clone(),
                Field::UserInput => sp.user_input = row.user_input.clone(),
                Field::StepError => sp.error_message = row.error_message.clone(),
                Field::Context | Field::Error => {}
            }
        }
        Ok(())
    }

    /// Stops taking new work, lets steps in flight finish for up to `grace`,
    /// then abandons the rest and hands their leases back so another
    /// instance takes them over at once.
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.cancel();
        self.runners.close();
        if tokio::time::timeout(grace, self.runners.wait()).await.is_err() {
            tracing::warn!("steps still running after the grace period are handed to other instances");
            self.abandon.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.runners.wait()).await;
        }
        let released = execution::Entity::update_many()
            .set(execution::ActiveModel {
                lease_owner: Set(None),
                lease_expires_at: Set(None),
                ..Default::default()
            })
            .filter(execution::Column::LeaseOwner.eq(self.instance.clone()))
            .filter(execution::Column::Status.eq(ExecutionStatus::Running))
            .exec(&self.db)
            .await;
        match released {
            Ok(r) if r.rows_affected > 0 => tracing::info!(runs = r.rows_affected, "handed back leases"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not hand back leases"),
        }
    }
}

/// A step that ended well (COMPLETED or SKIPPED): the run moves on to the
/// next step, or is COMPLETED (and its lease let go) when it was the last.
fn step_finished(
    idx: usize,
    next_order: Option<i32>,
    last: bool,
    at: NaiveDateTime,
    step: StepPatch,
    context_add: Option<(String, Value)>,
) -> Change {
    Change {
        expect: &[ExecutionStatus::Running],
        owned: true,
        exec: ExecPatch {
            context_add,
            current_step_order: next_order.map(Some),
            status: last.then_some(ExecutionStatus::Completed),
            lease: last.then_some(None),
            completed_at: last.then_some(at),
            ..Default::default()
        },
        step: Some((idx, step)),
        events: if last {
            &[EventKind::StepUpdated, EventKind::ExecutionUpdated]
        } else {
            &[EventKind::StepUpdated]
        },
    }
}

pub(crate) fn status_name(s: ExecutionStatus) -> &'static str {
    match s {
        ExecutionStatus::Running => "RUNNING",
        ExecutionStatus::Paused => "PAUSED",
        ExecutionStatus::Completed => "COMPLETED",
        ExecutionStatus::Failed => "FAILED",
        ExecutionStatus::Cancelled => "CANCELLED",
    }
}

fn not_paused(e: &execution::Model) -> ApiError {
    ApiError::Conflict(format!(
        "the execution is {}, not PAUSED: there is no step waiting for input",
        status_name(e.status)
    ))
}

/// Renumbers `$n` placeholders by `offset` (values are always bound, so a
/// `$` followed by digits is a placeholder).
fn shift_placeholders(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut n = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(*d);
                chars.next();
            }
            out.push('$');
            out.push_str(&(n.parse::<usize>().unwrap_or(0) + offset).to_string());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn shifts_placeholders() {
        assert_eq!(
            super::shift_placeholders(r#"UPDATE "t" SET "a" = $1, "b" = $12"#, 3),
            r#"UPDATE "t" SET "a" = $4, "b" = $15"#
        );
    }
}

/// `accumulatedContext` with one more key, computed by the database.
fn merge_into_context(backend: DbBackend, key: &str, value: &Value) -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::Expr;
    match backend {
        DbBackend::Postgres => Expr::cust_with_values(
            r#""accumulatedContext" || jsonb_build_object($1::text, $2::jsonb)"#,
            [
                sea_orm::Value::from(key.to_owned()),
                sea_orm::Value::from(value.clone()),
            ],
        ),
        _ => Expr::cust_with_values(
            r#"json_set("accumulatedContext", ?, json(?))"#,
            [
                sea_orm::Value::from(format!("$.\"{key}\"")),
                sea_orm::Value::from(value.to_string()),
            ],
        ),
    }
}
