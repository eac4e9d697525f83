//! A step as a run sees it: the template step copied into the execution
//! step's `definition` when the run started.

use std::time::Duration;

use entity::{DriveRole, workflow_step};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepDefinition {
    pub agent_id: String,
    pub prompt_template: String,
    #[serde(default)]
    pub requires_user_input: bool,
    #[serde(default)]
    pub input_schema: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub condition: Option<Value>,
    /// Adjacent steps sharing a group run side by side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_group: Option<String>,
    /// Who must approve the step before it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRule>,
}

/// Who may decide on a step that needs approval, and how many must approve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRule {
    /// Approvals needed (at least 1); one rejection fails the step.
    pub required: u32,
    /// Drive members of at least this role decide (default MEMBER)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_role: Option<DriveRole>,
    /// …or only these users, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<Vec<String>>,
    /// Whether the user who started the run may decide.
    #[serde(default)]
    pub allow_starter: bool,
}

impl ApprovalRule {
    pub fn from_json(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

impl From<&workflow_step::Model> for StepDefinition {
    fn from(s: &workflow_step::Model) -> Self {
        Self {
            agent_id: s.agent_id.clone(),
            prompt_template: s.prompt_template.clone(),
            requires_user_input: s.requires_user_input,
            input_schema: s.input_schema.clone(),
            metadata: s.metadata.clone(),
            condition: s.condition.clone(),
            parallel_group: s.parallel_group.clone(),
            approval: s.approval.as_ref().and_then(ApprovalRule::from_json),
        }
    }
}

/// How often and how long one step's agent may be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    pub max_attempts: u32,
    pub backoff: Duration,
    pub timeout: Option<Duration>,
}

impl StepDefinition {
    pub fn attempts(&self) -> Attempts {
        let meta = self.metadata.as_ref();
        let retry = meta.and_then(|m| m.get("retry"));
        Attempts {
            max_attempts: retry
                .and_then(|r| r.get("maxAttempts"))
                .and_then(Value::as_u64)
                .map(|n| n.clamp(1, 100) as u32)
                .unwrap_or(1),
            backoff: Duration::from_millis(
                retry
                    .and_then(|r| r.get("backoffMs"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .min(3_600_000),
            ),
            timeout: meta
                .and_then(|m| m.get("timeoutMs"))
                .and_then(Value::as_u64)
                .filter(|n| *n > 0)
                .map(Duration::from_millis),
        }
    }
}
