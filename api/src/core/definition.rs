//! A step as a run sees it: the template step copied into the execution
//! step's `definition` when the run started.

use std::time::Duration;

use entity::{DriveRole, workflow_step};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A field this version does not know (written by a newer one, or by hand)
/// makes the definition unreadable: the engine never obeys part of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
    /// Set when the template step this was copied from held a setting the
    /// engine cannot read (a rule written by hand, or by a newer version):
    /// the step then stops the run instead of running without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// Who may decide on a step that needs approval, and how many must approve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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
    /// A stored rule; `Err` says why it cannot be read (never "no rule").
    pub fn parse(v: &Value) -> Result<Self, String> {
        let rule: Self = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        if rule.required < 1 {
            return Err("required: must be at least 1".into());
        }
        Ok(rule)
    }

    /// What is stored: the rule's own serialization.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a rule serializes")
    }
}

impl From<&workflow_step::Model> for StepDefinition {
    /// A template step as a run will see it. A setting the engine cannot read
    /// is kept as `unreadable`, so the run stops at this step.
    fn from(s: &workflow_step::Model) -> Self {
        let approval = s.approval.as_ref().map(ApprovalRule::parse).transpose();
        let attempts = Attempts::parse(s.metadata.as_ref());
        let condition = s.condition.as_ref().map(crate::core::condition::check).transpose();
        let unreadable = match (&approval, attempts, condition) {
            (Err(e), _, _) => Some(format!("approval rule cannot be read ({e})")),
            (_, Err(e), _) => Some(format!("metadata cannot be read ({e})")),
            (_, _, Err(e)) => Some(format!("condition cannot be read ({e})")),
            _ => None,
        };
        Self {
            agent_id: s.agent_id.clone(),
            prompt_template: s.prompt_template.clone(),
            requires_user_input: s.requires_user_input,
            input_schema: s.input_schema.clone(),
            metadata: s.metadata.clone(),
            condition: s.condition.clone(),
            parallel_group: s.parallel_group.clone(),
            approval: approval.ok().flatten(),
            unreadable,
        }
    }
}

impl StepDefinition {
    /// A step record's stored definition, as the engine obeys it: `Err` names
    /// what cannot be read, and the step must not run.
    pub fn read(v: &Value) -> Result<Self, String> {
        let def: Self = serde_json::from_value(v.clone()).map_err(|e| format!("definition cannot be read ({e})"))?;
        if let Some(why) = &def.unreadable {
            return Err(why.clone());
        }
        def.attempts().map_err(|e| format!("metadata cannot be read ({e})"))?;
        if let Some(rule) = &def.approval
            && rule.required < 1
        {
            return Err("approval rule cannot be read (required: must be at least 1)".into());
        }
        Ok(def)
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
    /// The retry and timeout policy of `metadata`.
    pub fn attempts(&self) -> Result<Attempts, String> {
        Attempts::parse(self.metadata.as_ref())
    }
}

impl Attempts {
    /// Reads `metadata.timeoutMs` and `metadata.retry` strictly: a value the
    /// engine cannot read is an error naming the key, never a default. Other
    /// keys of `metadata` are the user's own.
    pub fn parse(metadata: Option<&Value>) -> Result<Self, String> {
        let mut attempts = Attempts {
            max_attempts: 1,
            backoff: Duration::ZERO,
            timeout: None,
        };
        let Some(meta) = metadata.filter(|m| !m.is_null()) else {
            return Ok(attempts);
        };
        let Some(map) = meta.as_object() else {
            return Err("must be a JSON object".into());
        };
        if let Some(t) = map.get("timeoutMs") {
            let ms = t
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or("timeoutMs: must be a positive integer (milliseconds)")?;
            attempts.timeout = Some(Duration::from_millis(ms));
        }
        if let Some(r) = map.get("retry") {
            let r = r
                .as_object()
                .ok_or("retry: must be an object { \"maxAttempts\": n, \"backoffMs\": m }")?;
            if let Some(n) = r.get("maxAttempts") {
                let n = n
                    .as_u64()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or("retry.maxAttempts: must be an integer from 1 to 100")?;
                attempts.max_attempts = n as u32;
            }
            if let Some(b) = r.get("backoffMs") {
                let ms = b.as_u64().ok_or("retry.backoffMs: must be a non-negative integer")?;
                attempts.backoff = Duration::from_millis(ms.min(3_600_000));
            }
        }
        Ok(attempts)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn metadata_the_engine_cannot_read_is_an_error_not_a_default() {
        assert_eq!(Attempts::parse(None).unwrap().max_attempts, 1);
        let a = Attempts::parse(Some(
            &json!({"retry": {"maxAttempts": 3, "backoffMs": 5}, "timeoutMs": 9, "mine": 1}),
        ))
        .unwrap();
        assert_eq!(
            a,
            Attempts {
                max_attempts: 3,
                backoff: Duration::from_millis(5),
                timeout: Some(Duration::from_millis(9)),
            }
        );
        for bad in [
            json!([]),
            json!({"timeoutMs": "soon"}),
            json!({"timeoutMs": 0}),
            json!({"retry": 3}),
            json!({"retry": {"maxAttempts": 0}}),
            json!({"retry": {"maxAttempts": 1000}}),
            json!({"retry": {"backoffMs": -1}}),
        ] {
            assert!(Attempts::parse(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rule_the_engine_cannot_read_is_an_error_not_no_rule() {
        assert!(ApprovalRule::parse(&json!({"required": 1})).is_ok());
        for bad in [
            json!({"required": "two"}),
            json!({"minRole": "ADMIN"}),
            json!({"required": 0}),
            json!({"required": 1, "quorum": "all"}),
            json!("yes"),
        ] {
            assert!(ApprovalRule::parse(&bad).is_err(), "{bad}");
        }
        let def = json!({"agentId": "echo", "promptTemplate": "x", "approval": {"required": "two"}});
        assert!(
            StepDefinition::read(&def)
                .unwrap_err()
                .contains("definition cannot be read")
        );
        let def = json!({"agentId": "echo", "promptTemplate": "x", "unreadable": "approval rule cannot be read (x)"});
        assert_eq!(
            StepDefinition::read(&def).unwrap_err(),
            "approval rule cannot be read (x)"
        );
        let def = json!({"agentId": "echo", "promptTemplate": "x", "metadata": {"retry": "often"}});
        assert!(
            StepDefinition::read(&def)
                .unwrap_err()
                .contains("metadata cannot be read")
        );
    }
}
