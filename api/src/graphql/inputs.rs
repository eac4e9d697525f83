//! GraphQL input types, and their conversion into validated domain values.

use crate::core::definition::ApprovalRule;
use async_graphql::{ID, InputObject, Json, MaybeUndefined};
use serde_json::Value;

use super::types::ExecutionStatusGql;
use crate::core::limits::DataLimits;
use crate::domain::steps::{NewStep, StepChanges};
use crate::domain::validation as v;
use crate::engine::agents::AgentRegistry;
use crate::error::{ApiError, ApiResult};

pub const MAX_DESCRIPTION_CHARS: usize = 10_000;
pub const MAX_CATEGORY_CHARS: usize = 200;

#[derive(InputObject)]
pub struct WorkflowTemplateFilter {
    pub category: Option<String>,
    /// A template matches when it has every listed tag.
    pub tags: Option<Vec<String>>,
    pub is_public: Option<bool>,
    /// Case-insensitive substring of name or description.
    pub search: Option<String>,
    pub created_by: Option<ID>,
}

#[derive(InputObject)]
pub struct WorkflowExecutionFilter {
    pub drive_id: Option<ID>,
    pub template_id: Option<ID>,
    pub status: Option<Vec<ExecutionStatusGql>>,
    pub mine: Option<bool>,
}

#[derive(InputObject)]
pub struct CreateDriveInput {
    pub name: String,
}

#[derive(InputObject)]
pub struct CreateWorkflowTemplateInput {
    pub drive_id: ID,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub tags: Option<Vec<String>>,
    #[graphql(default_with = "Some(false)")]
    pub is_public: Option<bool>,
    pub steps: Option<Vec<WorkflowStepInput>>,
}

#[derive(InputObject)]
pub struct UpdateWorkflowTemplateInput {
    pub name: Option<String>,
    pub description: MaybeUndefined<String>,
    pub category: MaybeUndefined<String>,
    pub tags: Option<Vec<String>>,
    pub is_public: Option<bool>,
}

#[derive(InputObject)]
pub struct WorkflowStepInput {
    pub agent_id: String,
    pub prompt_template: String,
    #[graphql(default_with = "Some(false)")]
    pub requires_user_input: Option<bool>,
    pub input_schema: Option<Json<Value>>,
    pub metadata: Option<Json<Value>>,
    pub condition: Option<Json<Value>>,
    /// Adjacent steps sharing a group run side by side.
    pub parallel_group: Option<String>,
    /// Who must approve the step before it runs.
    pub approval: Option<WorkflowApprovalRuleInput>,
}

/// Who may decide on a step, and how many approvals it needs.
#[derive(InputObject)]
pub struct WorkflowApprovalRuleInput {
    /// At least 1.
    pub required: i32,
    /// Drive members of at least this role decide (default MEMBER)…
    pub min_role: Option<super::types::DriveRoleGql>,
    /// …or only these users (each a member of the drive).
    pub user_ids: Option<Vec<ID>>,
    /// Whether the user who started the run may decide.
    #[graphql(default = false)]
    pub allow_starter: bool,
}

impl WorkflowApprovalRuleInput {
    fn validate(self, field: &str) -> ApiResult<ApprovalRule> {
        if self.required < 1 {
            return Err(ApiError::bad_input(format!("{field}.required: must be at least 1")));
        }
        let user_ids = self.user_ids.map(|ids| {
            let mut ids: Vec<String> = ids.into_iter().map(|i| i.0).collect();
            ids.dedup();
            ids
        });
        if user_ids.as_ref().is_some_and(Vec::is_empty) {
            return Err(ApiError::bad_input(format!(
                "{field}.userIds: name at least one user, or leave it out to let roles decide"
            )));
        }
        if let Some(ids) = &user_ids
            && (self.required as usize) > ids.len()
        {
            return Err(ApiError::bad_input(format!(
                "{field}.required: {} approvals can never come from {} listed users",
                self.required,
                ids.len()
            )));
        }
        Ok(ApprovalRule {
            required: self.required as u32,
            min_role: self.min_role.map(Into::into),
            user_ids,
            allow_starter: self.allow_starter,
        })
    }
}

/// A group name: trimmed, non-empty, at most 100 characters; blank is none.
fn parallel_group(field: &str, raw: Option<String>) -> ApiResult<Option<String>> {
    v::optional_text(field, raw, 100)
}

#[derive(InputObject)]
pub struct UpdateWorkflowStepInput {
    pub agent_id: Option<String>,
    pub prompt_template: Option<String>,
    pub requires_user_input: Option<bool>,
    pub input_schema: MaybeUndefined<Json<Value>>,
    pub metadata: MaybeUndefined<Json<Value>>,
    pub condition: MaybeUndefined<Json<Value>>,
    pub parallel_group: MaybeUndefined<String>,
    pub approval: MaybeUndefined<WorkflowApprovalRuleInput>,
}

/// JSON `null` given for a JSON field means "none".
fn some_json(v: Option<Json<Value>>) -> Option<Value> {
    v.map(|j| j.0).filter(|v| !v.is_null())
}

fn maybe_json(v: MaybeUndefined<Json<Value>>) -> Option<Option<Value>> {
    match v {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(j) if j.0.is_null() => Some(None),
        MaybeUndefined::Value(j) => Some(Some(j.0)),
    }
}

impl WorkflowStepInput {
    /// Validates one step; `field` prefixes messages (e.g. `steps[2]` or `input`).
    pub fn validate(self, field: &str, agents: &AgentRegistry, limits: &DataLimits) -> ApiResult<NewStep> {
        v::agent_id(&format!("{field}.agentId"), &self.agent_id, agents.ids())?;
        v::prompt_template(&format!("{field}.promptTemplate"), &self.prompt_template)?;
        limits.prompt(&format!("{field}.promptTemplate"), &self.prompt_template)?;
        let input_schema = some_json(self.input_schema);
        if let Some(s) = &input_schema {
            v::input_schema(&format!("{field}.inputSchema"), s)?;
        }
        let metadata = some_json(self.metadata);
        if let Some(m) = &metadata {
            v::metadata(&format!("{field}.metadata"), m)?;
        }
        let condition = some_json(self.condition);
        if let Some(c) = &condition {
            v::condition(&format!("{field}.condition"), c)?;
        }
        Ok(NewStep {
            agent_id: self.agent_id,
            prompt_template: self.prompt_template,
            requires_user_input: self.requires_user_input.unwrap_or(false),
            input_schema,
            metadata,
            condition,
            parallel_group: parallel_group(&format!("{field}.parallelGroup"), self.parallel_group)?,
            approval: self
                .approval
                .map(|a| a.validate(&format!("{field}.approval")))
                .transpose()?,
        })
    }
}

impl UpdateWorkflowStepInput {
    pub fn validate(self, agents: &AgentRegistry, limits: &DataLimits) -> ApiResult<StepChanges> {
        if let Some(a) = &self.agent_id {
            v::agent_id("input.agentId", a, agents.ids())?;
        }
        if let Some(p) = &self.prompt_template {
            v::prompt_template("input.promptTemplate", p)?;
            limits.prompt("input.promptTemplate", p)?;
        }
        let input_schema = maybe_json(self.input_schema);
        if let Some(Some(s)) = &input_schema {
            v::input_schema("input.inputSchema", s)?;
        }
        let metadata = maybe_json(self.metadata);
        if let Some(Some(m)) = &metadata {
            v::metadata("input.metadata", m)?;
        }
        let condition = maybe_json(self.condition);
        if let Some(Some(c)) = &condition {
            v::condition("input.condition", c)?;
        }
        let group = match self.parallel_group {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(g) => Some(parallel_group("input.parallelGroup", Some(g))?),
        };
        let approval = match self.approval {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(a) => Some(Some(a.validate("input.approval")?)),
        };
        Ok(StepChanges {
            agent_id: self.agent_id,
            prompt_template: self.prompt_template,
            requires_user_input: self.requires_user_input,
            input_schema,
            metadata,
            condition,
            parallel_group: group,
            approval,
        })
    }
}

pub fn description(field: &str, raw: Option<String>) -> ApiResult<Option<String>> {
    v::optional_text(field, raw, MAX_DESCRIPTION_CHARS)
}

pub fn category(field: &str, raw: Option<String>) -> ApiResult<Option<String>> {
    v::optional_text(field, raw, MAX_CATEGORY_CHARS)
}

/// A drive name follows the rules of a template name.
pub fn drive_name(raw: &str) -> ApiResult<String> {
    v::template_name("input.name", raw)
}

/// The starting context: a JSON object within `MAX_CONTEXT_BYTES`.
pub fn context_object(ctx: Option<Json<Value>>, limits: &DataLimits) -> ApiResult<Value> {
    match ctx.map(|j| j.0) {
        None | Some(Value::Null) => Ok(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) => {
            limits.context("context", &v)?;
            Ok(v)
        }
        Some(_) => Err(ApiError::bad_input("context: must be a JSON object")),
    }
}

#[derive(InputObject)]
pub struct CreateWorkflowScheduleInput {
    pub template_id: ID,
    /// 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first.
    pub cron: String,
    /// An IANA time zone name; `UTC` when left out.
    pub timezone: Option<String>,
    /// The context every run starts with (a JSON object; `{}` when left out).
    pub context: Option<Json<Value>>,
    #[graphql(default_with = "Some(true)")]
    pub enabled: Option<bool>,
}

/// Fields left out stay as they are; `timezone: null` means `UTC`,
/// `context: null` means `{}`.
#[derive(InputObject)]
pub struct UpdateWorkflowScheduleInput {
    pub cron: Option<String>,
    pub timezone: MaybeUndefined<String>,
    pub context: MaybeUndefined<Json<Value>>,
    pub enabled: Option<bool>,
}
