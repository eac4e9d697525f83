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

/// How `workflowExecutionEvents` runs when `crate::fanout` renders it for a
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

pub struct Subscription;

#[Subscription]
impl Subscription {
    /// One execution's events: a SNAPSHOT, then every change; completes after
    /// the execution finishes.
    async fn workflow_execution_events(
        &self,
        ctx: &Context<'_>,
        execution_id: ID,
    ) -> Result<BoxStream<'static, WorkflowExecutionEvent>> {
        let r = ctx.data_unchecked::<RequestCtx>();
        let engine = ctx.data_unchecked::<SchemaData>().engine.clone();
        let id = execution_id.0;
        // Rendering one event for a group of subscribers that each passed
        // the checks below when they subscribed (`crate::fanout`).
        if let Some(Render::Event(ev)) = ctx.data_opt::<Render>() {
            return Ok(futures::stream::once(std::future::ready(WorkflowExecutionEvent(ev.clone()))).boxed());
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
            return Ok(futures::stream::once(std::future::ready(WorkflowExecutionEvent(Arc::new(snap)))).boxed());
        }
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
            yield WorkflowExecutionEvent(Arc::new(first));
            if done {
                return;
            }
            loop {
                let received = tokio::select! {
                    r = rx.recv() => Some(r),
                    _ = resynced(&mut resyncs) => None,
                };
                let Some(received) = received else {
                    // Events from other instances may have been missed.
                    match Box::pin(engine.snapshot(&id)).await {
                        Ok(Some(snap)) => {
                            last = snap.sequence;
                            let done = snap.execution.status.is_terminal();
                            yield WorkflowExecutionEvent(Arc::new(snap));
                            if done {
                                return;
                            }
                        }
                        _ => return,
                    }
                    continue;
                };
                let resync = match received {
                    Ok(ev) if ev.execution.id != id => continue,
                    Ok(ev) if ev.sequence <= last => continue,
                    Ok(ev) if ev.sequence == last + 1 => {
                        last = ev.sequence;
                        let done = ev.is_terminal();
                        yield WorkflowExecutionEvent(ev);
                        if done {
                            return;
                        }
                        false
                    }
                    Ok(_) => true,
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                };
                if resync {
                    match Box::pin(engine.snapshot(&id)).await {
                        // Lagging again before anything new happened: the
                        // subscriber already has this state, so a second
                        // SNAPSHOT with the same sequence is not sent.
                        Ok(Some(snap)) if snap.sequence <= last && !snap.execution.status.is_terminal() => {}
                        Ok(Some(snap)) => {
                            last = snap.sequence;
                            let done = snap.execution.status.is_terminal();
                            yield WorkflowExecutionEvent(Arc::new(snap));
                            if done {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => {
                            tracing::error!(error = %e, "snapshot for a lagging subscriber failed");
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
    ) -> Result<impl Stream<Item = WorkflowExecutionEvent> + use<>> {
        let r = ctx.data_unchecked::<RequestCtx>();
        let engine = ctx.data_unchecked::<SchemaData>().engine.clone();
        if !r.access().await?.can_see_drive(&drive_id) {
            return Err(ApiError::not_found("drive", &drive_id).into());
        }
        let access = r.access().await?.snapshot();
        let drive = drive_id.0;
        let watch = engine.relay().map(|r| r.watch_drive(&drive));
        let mut rx = engine.bus().subscribe();
        Ok(async_stream::stream! {
            let _watch = watch;
            // Last sequence forwarded per execution, to send nothing twice.
            let mut seen: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if ev.execution.drive_id != drive || !access.can_see_execution(&ev.execution) {
                            continue;
                        }
                        let last = seen.entry(ev.execution.id.clone()).or_insert(0);
                        if ev.sequence <= *last {
                            continue;
                        }
                        *last = ev.sequence;
                        if ev.is_terminal() {
                            seen.remove(&ev.execution.id);
                        }
                        yield WorkflowExecutionEvent(ev);
                    }
                    Err(RecvError::Lagged(_)) => {
                        // Fell behind: a fresh SNAPSHOT of each execution this
                        // stream was following replaces what was missed.
                        let ids: Vec<String> = seen.keys().cloned().collect();
                        for id in ids {
                            if let Ok(Some(snap)) = Box::pin(engine.snapshot(&id)).await {
                                seen.insert(id.clone(), snap.sequence);
                                if snap.execution.status.is_terminal() {
                                    seen.remove(&id);
                                }
                                yield WorkflowExecutionEvent(Arc::new(snap));
                            }
                        }
                    }
                    Err(RecvError::Closed) => return,
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
