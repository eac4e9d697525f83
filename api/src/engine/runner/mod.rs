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
//! it works (and by each of its writes); every write of the runner is fenced
//! on owning the lease and on the stored `sequence` being no later than the
//! runner's own, so a runner that lost the lease writes nothing more. A sweep
//! takes over runs whose lease expired, re-running a step that was RUNNING
//! (at least once) and never a COMPLETED or SKIPPED one; a run this instance
//! sweeps back while its own runner is still at work keeps that one runner. Events reach other
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
use super::relay::{self, Note, Relay};
use super::rollup::Rollup;
use super::state::{ExecPatch, RunState, StepPatch};
use crate::clock::Clock;
use crate::core::definition::StepDefinition;
use crate::core::limits::DataLimits;
use crate::core::{condition, prompt};
pub(crate) use crate::domain::executions::status_name;
pub use crate::domain::executions::{Launch, Seed};
use crate::domain::{self, new_id, now, validation};
use crate::error::{ApiError, ApiResult};
use crate::events::{EventBus, EventKind, ExecutionEvent};

mod cluster;
mod control;
pub use control::Decision;
mod group;
mod persist;
mod step;

/// This process's view of one execution that is being worked on.
struct Live {
    /// Held while writing and publishing; the last sequence published here
    /// (ahead of the database while an agent streams).
    seq: tokio::sync::Mutex<Option<i64>>,
    cancel: CancellationToken,
    runner: AtomicBool,
}

/// A run's first rows, made by `Engine::prepare` and not yet written.
pub struct NewRun {
    event: ExecutionEvent,
}

impl NewRun {
    pub fn execution(&self) -> &execution::Model {
        &self.event.execution
    }
}

struct Change {
    /// Applied only while the execution has one of these statuses.
    expect: &'static [ExecutionStatus],
    /// Applied only while this instance holds the lease (the runner's writes).
    owned: bool,
    exec: ExecPatch,
    /// Step records changed, by index (several when a group or cancel ends
    /// steps together).
    steps: Vec<(usize, StepPatch)>,
    /// Events to publish, in order, once committed. The n-th event about a
    /// step (STEP_UPDATED, APPROVAL_DECIDED) carries the n-th changed step.
    events: Vec<EventKind>,
    /// A row written with the change, only when it applies (a decision).
    also: Option<sea_orm::sea_query::InsertStatement>,
}

impl Change {
    fn new(expect: &'static [ExecutionStatus], owned: bool, exec: ExecPatch) -> Self {
        Self {
            expect,
            owned,
            exec,
            steps: Vec::new(),
            events: Vec::new(),
            also: None,
        }
    }

    fn step(mut self, idx: usize, patch: StepPatch) -> Self {
        self.steps.push((idx, patch));
        self
    }

    fn events(mut self, events: &[EventKind]) -> Self {
        self.events.extend_from_slice(events);
        self
    }
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
    /// Steps of one run in flight at once (`MAX_PARALLEL_STEPS`).
    pub max_parallel_steps: usize,
    /// How long a stream's resync SNAPSHOT is retried while the database
    /// fails (`SUBSCRIPTION_RETRY_SECONDS`).
    pub snapshot_retry: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            sweep: Duration::from_secs(5),
            max_parallel_steps: 8,
            snapshot_retry: Duration::from_secs(60),
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
    /// What leases are measured on, and the renewing and sweeping wait on.
    clock: Clock,
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
        clock: Clock,
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
            clock,
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

    /// Cancelled when the instance starts shutting down: start nothing new.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The clock background work acts on (leases here, and the scheduler).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn lease_until(&self) -> NaiveDateTime {
        self.clock.now() + chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::seconds(30))
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

    /// The SNAPSHOT a live stream resyncs with (`who` names the stream in
    /// the log). A failed read is retried with backoff for up to
    /// `SUBSCRIPTION_RETRY_SECONDS`: when PostgreSQL restarts, or its
    /// connections are cut, the stream catches up once it is back instead of
    /// ending mid-run. The last error once that time is up.
    pub async fn snapshot_when_back(&self, id: &str, who: &str) -> Result<Option<ExecutionEvent>, DbErr> {
        let give_up = tokio::time::Instant::now() + self.settings.snapshot_retry;
        let mut wait = Duration::from_millis(100);
        loop {
            match self.snapshot(id).await {
                Ok(snap) => return Ok(snap),
                Err(e) if tokio::time::Instant::now() + wait <= give_up => {
                    tracing::warn!(execution = %id, error = %e, "snapshot for {who} failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(execution = %id, error = %e, "snapshot for {who} failed; giving up");
                    return Err(e);
                }
            }
        }
    }

    /// The step record's definition as the engine obeys it. The inner `Err`
    /// says why it cannot be read (the step must then stop the run, never
    /// run without the setting); the outer one is the database's.
    async fn definition(&self, step: &exec_step::Model) -> Result<Result<StepDefinition, String>, DbErr> {
        let read = match &step.definition {
            Some(d) => StepDefinition::read(d),
            // Rows written before definitions were copied: use the template step.
            None => match &step.workflow_step_id {
                None => Err("definition is missing".to_owned()),
                Some(step_id) => match domain::steps::find(&self.db, step_id).await? {
                    None => Err("definition is missing and its template step is gone".to_owned()),
                    Some(row) => {
                        let def = StepDefinition::from(&row);
                        match &def.unreadable {
                            Some(why) => Err(why.clone()),
                            None => def
                                .attempts()
                                .map(|_| def)
                                .map_err(|e| format!("metadata cannot be read ({e})")),
                        }
                    }
                },
            },
        };
        Ok(read.map_err(|why| format!("its {why}; the step was not run")))
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
