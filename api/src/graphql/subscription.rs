//! `Subscription`: live execution events over WebSocket. Each stream starts
//! with a SNAPSHOT, then forwards every change in `sequence` order; a
//! subscriber that lags (or sees a gap) gets a fresh SNAPSHOT instead.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Object, Result, Subscription};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::types::{KnownSteps, WorkflowExecution, WorkflowExecutionStep, utc};
use super::{RequestCtx, SchemaData};
use crate::domain;
use crate::error::ApiError;
use crate::events::{EventKind, ExecutionEvent};

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum WorkflowExecutionEventKind {
    Snapshot,
    ExecutionUpdated,
    StepUpdated,
    StepOutputDelta,
    ApprovalDecided,
}

impl From<EventKind> for WorkflowExecutionEventKind {
    fn from(k: EventKind) -> Self {
        match k {
            EventKind::Snapshot => Self::Snapshot,
            EventKind::ExecutionUpdated => Self::ExecutionUpdated,
            EventKind::StepUpdated => Self::StepUpdated,
            EventKind::StepOutputDelta => Self::StepOutputDelta,
            EventKind::ApprovalDecided => Self::ApprovalDecided,
        }
    }
}

pub struct WorkflowExecutionEvent(pub Arc<ExecutionEvent>);

#[Object]
impl WorkflowExecutionEvent {
    async fn kind(&self) -> WorkflowExecutionEventKind {
        self.0.kind.into()
    }
    /// Per execution, 1, 2, 3 … without gaps.
    async fn sequence(&self) -> i64 {
        self.0.sequence
    }
    async fn at(&self) -> DateTime<Utc> {
        utc(self.0.at)
    }
    /// The execution's state after this event.
    async fn execution(&self) -> WorkflowExecution {
        WorkflowExecution(self.0.execution.clone(), Some(KnownSteps::Event(self.0.steps.clone())))
    }
    /// For STEP_* kinds: the step the event is about.
    async fn step(&self) -> Option<WorkflowExecutionStep> {
        self.0
            .step
            .clone()
            .map(|s| WorkflowExecutionStep::of(Arc::new(s), &self.0.execution))
    }
    /// For STEP_OUTPUT_DELTA: the next piece of streamed output.
    async fn delta(&self) -> Option<&str> {
        self.0.delta.as_deref()
    }
}

/// How `workflowExecutionEvents` runs when `graphql::fanout` renders it for a
/// group of subscribers with the same document, viewer and variables,
/// instead of streaming by itself. Put into the request's data.
pub enum Render {
    /// Yields exactly this event and ends (the group's members were each
    /// checked when they subscribed).
    Event(Arc<ExecutionEvent>),
    /// Checks access, yields the execution's SNAPSHOT, writes what it saw
    /// into the cell, and ends.
    Snapshot(Arc<std::sync::Mutex<Option<Seen>>>),
}

/// What a `Render::Snapshot` run saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub execution_id: String,
    pub sequence: i64,
    pub terminal: bool,
}

/// How a live stream ends when it cannot go on before its run is over (its
/// resync SNAPSHOT could not be read within `SUBSCRIPTION_RETRY_SECONDS`):
/// the transport, which puts one into each subscription's request data,
/// ends the subscription with this error instead of `complete`, so a client
/// never takes a stream cut short for a finished run. Without one the
/// stream yields the error as its last result.
#[derive(Clone, Default)]
pub struct Abort(Arc<std::sync::Mutex<Option<ApiError>>>);

impl Abort {
    pub fn set(&self, error: ApiError) {
        *self.0.lock().expect("abort lock") = Some(error);
    }

    /// The error the stream ended with, if it did not simply finish.
    pub fn take(&self) -> Option<ApiError> {
        self.0.lock().expect("abort lock").take()
    }
}

/// Why a stream following `what` ends early: the database stayed away.
pub fn database_lost(what: &str) -> ApiError {
    ApiError::Unavailable(format!(
        "the server lost its database while following {what} and could not catch up; \
         resubscribe to get the current state"
    ))
}

pub struct Subscription;

#[Subscription]
impl Subscription {
    /// One execution's events: a SNAPSHOT, then every change; completes after
    /// the execution finishes.
    async fn workflow_execution_events(
        &self,
        ctx: &Context<'_>,
        execution_id: ID,
    ) -> Result<BoxStream<'static, Result<WorkflowExecutionEvent>>> {
        let r = ctx.data_unchecked::<RequestCtx>();
        let engine = ctx.data_unchecked::<SchemaData>().engine.clone();
        let id = execution_id.0;
        // Rendering one event for a group of subscribers that each passed
        // the checks below when they subscribed (`graphql::fanout`).
        if let Some(Render::Event(ev)) = ctx.data_opt::<Render>() {
            return Ok(futures::stream::once(std::future::ready(Ok(WorkflowExecutionEvent(ev.clone())))).boxed());
        }
        let exec = domain::executions::find(&r.db, &id).await.map_err(ApiError::from)?;
        let visible = match &exec {
            Some(e) => r.sees_execution(e).await?,
            None => false,
        };
        if !visible {
            return Err(ApiError::not_found("workflow execution", &id).into());
        }
        if let Some(Render::Snapshot(seen)) = ctx.data_opt::<Render>() {
            let snap = engine.snapshot(&id).await.map_err(ApiError::from)?;
            let Some(snap) = snap else {
                return Ok(futures::stream::empty().boxed());
            };
            *seen.lock().expect("snapshot cell") = Some(Seen {
                execution_id: id,
                sequence: snap.sequence,
                terminal: snap.execution.status.is_terminal(),
            });
            return Ok(futures::stream::once(std::future::ready(Ok(WorkflowExecutionEvent(Arc::new(snap))))).boxed());
        }
        let abort = ctx.data_opt::<Abort>().cloned();
        // Follow events from other instances, and subscribe, before reading
        // the snapshot so no change falls between.
        let watch = engine.relay().map(|r| r.watch_execution(&id));
        let mut resyncs = engine.relay().map(|r| r.resyncs());
        let mut rx = engine.bus().subscribe();
        let first = engine.snapshot(&id).await.map_err(ApiError::from)?;
        // The snapshot reads inside the stream are boxed: inlined, their
        // futures would make every idle subscription's state several KiB.
        Ok(async_stream::stream! {
            let _watch = watch;
            let Some(first) = first else { return };
            let mut last = first.sequence;
            let done = first.execution.status.is_terminal();
            yield Ok(WorkflowExecutionEvent(Arc::new(first)));
            if done {
                return;
            }
            loop {
                let received = tokio::select! {
                    r = rx.recv() => Some(r),
                    _ = resynced(&mut resyncs) => None,
                };
                let resync = match received {
                    Some(Ok(ev)) if ev.execution.id != id => continue,
                    Some(Ok(ev)) if ev.sequence <= last => continue,
                    Some(Ok(ev)) if ev.sequence == last + 1 => {
                        last = ev.sequence;
                        let done = ev.is_terminal();
                        yield Ok(WorkflowExecutionEvent(ev));
                        if done {
                            return;
                        }
                        false
                    }
                    Some(Err(RecvError::Closed)) => return,
                    // A gap, a lag, or the relay's word that events from
                    // other instances may have been missed.
                    _ => true,
                };
                if resync {
                    match Box::pin(engine.snapshot_when_back(&id, "a subscriber")).await {
                        // Lagging again before anything new happened: the
                        // subscriber already has this state, so a second
                        // SNAPSHOT with the same sequence is not sent.
                        Ok(Some(snap)) if snap.sequence <= last && !snap.execution.status.is_terminal() => {}
                        Ok(Some(snap)) => {
                            last = snap.sequence;
                            let done = snap.execution.status.is_terminal();
                            yield Ok(WorkflowExecutionEvent(Arc::new(snap)));
                            if done {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(_) => {
                            let error = database_lost(&format!("execution {id}"));
                            match &abort {
                                Some(abort) => abort.set(error),
                                None => yield Err(async_graphql::Error::from(error)),
                            }
                            return;
                        }
                    }
                }
            }
        }
        .boxed())
    }

    /// The changes of every execution in the drive that the viewer may see.
    async fn drive_workflow_execution_events(
        &self,
        ctx: &Context<'_>,
        drive_id: ID,
    ) -> Result<impl Stream<Item = Result<WorkflowExecutionEvent>> + use<>> {
        let r = ctx.data_unchecked::<RequestCtx>();
        let engine = ctx.data_unchecked::<SchemaData>().engine.clone();
        if !r.access().await?.can_see_drive(&drive_id) {
            return Err(ApiError::not_found("drive", &drive_id).into());
        }
        let access = r.access().await?.snapshot();
        let abort = ctx.data_opt::<Abort>().cloned();
        let drive = drive_id.0;
        let watch = engine.relay().map(|r| r.watch_drive(&drive));
        let mut resyncs = engine.relay().map(|r| r.resyncs());
        let mut rx = engine.bus().subscribe();
        Ok(async_stream::stream! {
            let _watch = watch;
            // Last sequence forwarded per execution, to send nothing twice.
            let mut seen: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
            loop {
                let received = tokio::select! {
                    r = rx.recv() => Some(r),
                    _ = resynced(&mut resyncs) => None,
                };
                // What to read a fresh SNAPSHOT of: an execution whose next
                // event went missing, or, when this stream fell behind or
                // events from other instances may have been missed, each
                // execution it was following.
                let ids: Vec<String> = match received {
                    Some(Ok(ev)) => {
                        if ev.execution.drive_id != drive || !access.can_see_execution(&ev.execution) {
                            continue;
                        }
                        let last = seen.get(&ev.execution.id).copied().unwrap_or(0);
                        if ev.sequence <= last {
                            continue;
                        }
                        // The first event of an execution may be any: the
                        // stream started following it then. A SNAPSHOT
                        // stands for what came before it.
                        if last == 0 || ev.sequence == last + 1 || ev.kind == EventKind::Snapshot {
                            if ev.is_terminal() {
                                seen.remove(&ev.execution.id);
                            } else {
                                seen.insert(ev.execution.id.clone(), ev.sequence);
                            }
                            yield Ok(WorkflowExecutionEvent(ev));
                            continue;
                        }
                        vec![ev.execution.id.clone()]
                    }
                    Some(Err(RecvError::Closed)) => return,
                    Some(Err(RecvError::Lagged(_))) | None => seen.keys().cloned().collect(),
                };
                for id in ids {
                    match Box::pin(engine.snapshot_when_back(&id, "a drive subscriber")).await {
                        Ok(Some(snap)) => {
                            let done = snap.execution.status.is_terminal();
                            if seen.get(&id).is_some_and(|l| snap.sequence <= *l) && !done {
                                continue;
                            }
                            if done {
                                seen.remove(&id);
                            } else {
                                seen.insert(id, snap.sequence);
                            }
                            yield Ok(WorkflowExecutionEvent(Arc::new(snap)));
                        }
                        Ok(None) => {
                            seen.remove(&id);
                        }
                        Err(_) => {
                            let error = database_lost(&format!("drive {drive}"));
                            match &abort {
                                Some(abort) => abort.set(error),
                                None => yield Err(async_graphql::Error::from(error)),
                            }
                            return;
                        }
                    }
                }
            }
        })
    }
}

/// Resolves when the relay says events may have been missed; never without a relay.
pub(crate) async fn resynced(resyncs: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match resyncs {
        Some(r) => {
            if r.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}
