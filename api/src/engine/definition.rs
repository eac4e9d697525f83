//! A step as a run sees it: the template step copied into the execution
//! step's `definition` when the run started.

use std::time::Duration;

use entity::workflow_step;
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
