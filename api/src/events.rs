//! The in-process event bus feeding subscriptions. Every committed change to
//! an execution is published once, as an `Arc`, to every subscriber.

use std::sync::Arc;

use chrono::NaiveDateTime;
use entity::{workflow_execution as execution, workflow_execution_step as exec_step};
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Snapshot,
    ExecutionUpdated,
    StepUpdated,
    StepOutputDelta,
    /// A decision on a step awaiting approval.
    ApprovalDecided,
}

impl EventKind {
    /// Events that carry the step they are about.
    pub fn is_about_a_step(self) -> bool {
        matches!(self, EventKind::StepUpdated | EventKind::ApprovalDecided)
    }
}

/// One change to an execution, with its state after the change.
#[derive(Debug, Clone)]
pub struct ExecutionEvent {
    pub kind: EventKind,
    pub sequence: i64,
    pub at: NaiveDateTime,
    pub execution: Arc<execution::Model>,
    /// The execution's step records after this event, in `stepOrder`.
    pub steps: Arc<Vec<exec_step::Model>>,
    /// The step this event is about (STEP_* kinds).
    pub step: Option<exec_step::Model>,
    pub delta: Option<String>,
}

impl ExecutionEvent {
    pub fn is_terminal(&self) -> bool {
        self.kind == EventKind::ExecutionUpdated && self.execution.status.is_terminal()
    }
}

/// A broadcast channel of events for all executions; subscribers filter.
/// A subscriber that falls more than `capacity` events behind is told it
/// lagged and re-reads a snapshot.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<ExecutionEvent>>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        Self { tx }
    }

    pub fn publish(&self, event: ExecutionEvent) {
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ExecutionEvent>> {
        self.tx.subscribe()
    }

    /// How many subscribers listen now (a test waits for its subscription
    /// to be in place before it starts the run it watches).
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}
