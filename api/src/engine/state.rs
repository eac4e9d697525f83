//! A run's rows as this process knows them, and the changes events make to
//! them. The runner applies a change to its copy after writing it; other
//! instances apply the same change, carried by the relay's note, to theirs,
//! so every event shows the state after it on every instance.

use std::sync::Arc;

use chrono::NaiveDateTime;
use entity::{ExecutionStatus, StepStatus};
use entity::{workflow_execution as execution, workflow_execution_step as exec_step};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A run's rows as last written.
#[derive(Clone)]
pub struct RunState {
    pub exec: Arc<execution::Model>,
    pub steps: Arc<Vec<exec_step::Model>>,
    /// The compact JSON size of `exec.accumulated_context`, once measured:
    /// kept up to date as keys are added, so checking a step's output
    /// against MAX_CONTEXT_BYTES does not serialize the whole context again.
    pub context_bytes: Option<usize>,
    /// Agent calls this process made for each step (by index) while running
    /// it: what the roll-up counts as the step's attempts when it ends.
    pub attempts: std::collections::HashMap<usize, u32>,
}

/// Changes to the execution row; `None` leaves a column as it is.
#[derive(Default, Serialize, Deserialize)]
pub struct ExecPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ExecutionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub current_step_order: Option<Option<i32>>,
    /// One key added to `accumulatedContext` (`step_N_output` / `step_N_input`).
    /// Only the new value is sent: the database merges it in, so a step's
    /// cost does not grow with the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_add: Option<(String, Value)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<NaiveDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<NaiveDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<NaiveDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// `Some(Some(until))`: this instance holds the lease until then;
    /// `Some(None)`: nobody does (paused, finished, or handed back).
    /// Not sent to other instances: subscribers never see leases.
    #[serde(skip)]
    pub lease: Option<Option<NaiveDateTime>>,
}

/// Changes to one execution step row.
#[derive(Default, Serialize, Deserialize)]
pub struct StepPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StepStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<NaiveDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<NaiveDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// A field that is present is `Some`, even when it is `null`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl RunState {
    pub fn new(exec: Arc<execution::Model>, steps: Arc<Vec<exec_step::Model>>) -> Self {
        Self {
            exec,
            steps,
            context_bytes: None,
            attempts: Default::default(),
        }
    }

    pub fn context_bytes(&mut self) -> usize {
        *self
            .context_bytes
            .get_or_insert_with(|| crate::core::limits::json_bytes(&self.exec.accumulated_context))
    }

    /// The rows after a change stored as event `sequence` at `at`; the step
    /// records it changed, as they now are. `owner` is the instance that
    /// holds the lease when the patch takes it.
    pub fn apply(
        &mut self,
        p: &ExecPatch,
        steps: &[(usize, &StepPatch)],
        sequence: i64,
        at: NaiveDateTime,
        owner: &str,
    ) -> Vec<exec_step::Model> {
        let e = Arc::make_mut(&mut self.exec);
        if let Some(s) = p.status {
            e.status = s;
        }
        if let Some(o) = p.current_step_order {
            e.current_step_order = o;
        }
        if let Some((key, value)) = &p.context_add {
            self.context_bytes = self
                .context_bytes
                .map(|base| crate::core::limits::context_size_after(&e.accumulated_context, base, key, value));
            if let Some(map) = e.accumulated_context.as_object_mut() {
                map.insert(key.clone(), value.clone());
            }
        }
        if p.paused_at.is_some() {
            e.paused_at = p.paused_at;
        }
        if p.completed_at.is_some() {
            e.completed_at = p.completed_at;
        }
        if p.failed_at.is_some() {
            e.failed_at = p.failed_at;
        }
        if p.error_message.is_some() {
            e.error_message = p.error_message.clone();
        }
        if let Some(l) = p.lease {
            e.lease_owner = l.map(|_| owner.to_owned());
            e.lease_expires_at = l;
        }
        e.sequence = sequence;
        e.sequence_reserved = sequence;
        e.updated_at = at;
        let mut changed = Vec::with_capacity(steps.len());
        for (idx, sp) in steps {
            changed.push(apply_step(&mut Arc::make_mut(&mut self.steps)[*idx], sp, at));
        }
        changed
    }

    /// The rows as they were when the run was created (its first event),
    /// from the rows as they are now: nothing a step of this run did is left
    /// (steps a retry reused were copied as they ended, and stay so).
    pub fn as_started(exec: &execution::Model, steps: &[exec_step::Model]) -> Self {
        let mut e = exec.clone();
        e.status = ExecutionStatus::Running;
        e.current_step_order = steps.iter().find(|s| !s.reused).map(|s| s.step_order);
        // The starting context plus what the reused steps added; no step of
        // this run has added anything yet.
        let reused = |key: &str| {
            steps.iter().any(|s| {
                s.reused
                    && (key == format!("step_{}_input", s.step_order) || key == format!("step_{}_output", s.step_order))
            })
        };
        let mut context = e.initial_context.clone();
        if let (Some(map), Some(now)) = (context.as_object_mut(), e.accumulated_context.as_object()) {
            for (k, v) in now {
                if reused(k) {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
        e.accumulated_context = context;
        e.paused_at = None;
        e.completed_at = None;
        e.failed_at = None;
        e.error_message = None;
        e.sequence = 1;
        e.updated_at = e.created_at;
        let steps = steps
            .iter()
            .map(|s| {
                if s.reused {
                    s.clone()
                } else {
                    exec_step::Model {
                        status: StepStatus::Pending,
                        agent_input: None,
                        agent_output: None,
                        user_input: None,
                        started_at: None,
                        completed_at: None,
                        error_message: None,
                        updated_at: s.created_at,
                        ..s.clone()
                    }
                }
            })
            .collect();
        Self::new(Arc::new(e), Arc::new(steps))
    }
}

/// One step record after a change to it.
fn apply_step(s: &mut exec_step::Model, sp: &StepPatch, at: NaiveDateTime) -> exec_step::Model {
    if let Some(v) = sp.status {
        s.status = v;
    }
    if sp.agent_input.is_some() {
        s.agent_input = sp.agent_input.clone();
    }
    if sp.agent_output.is_some() {
        s.agent_output = sp.agent_output.clone();
    }
    if sp.user_input.is_some() {
        s.user_input = sp.user_input.clone();
    }
    if sp.started_at.is_some() {
        s.started_at = sp.started_at;
    }
    if sp.completed_at.is_some() {
        s.completed_at = sp.completed_at;
    }
    if sp.error_message.is_some() {
        s.error_message = sp.error_message.clone();
    }
    s.updated_at = at;
    s.clone()
}
