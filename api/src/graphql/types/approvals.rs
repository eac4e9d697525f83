//! Approval rules of steps, and the decisions people made on them.

use async_graphql::{Context, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::enums::DriveRoleGql;
use super::load::utc;
use super::people::{User, load_user};

/// Who may decide on a step, and how many approvals it needs.
#[derive(SimpleObject)]
pub struct WorkflowApprovalRule {
    pub required: i32,
    /// Drive members of at least this role decide (MEMBER when not set)…
    pub min_role: Option<DriveRoleGql>,
    /// …or only these users, when set.
    pub user_ids: Option<Vec<ID>>,
    pub allow_starter: bool,
}

impl From<crate::core::definition::ApprovalRule> for WorkflowApprovalRule {
    fn from(r: crate::core::definition::ApprovalRule) -> Self {
        Self {
            required: r.required as i32,
            min_role: r.min_role.map(Into::into),
            user_ids: r.user_ids.map(|ids| ids.into_iter().map(ID).collect()),
            allow_starter: r.allow_starter,
        }
    }
}

/// One person's decision on a step.
pub struct WorkflowApproval(pub entity::workflow_execution_approval::Model);

#[Object]
impl WorkflowApproval {
    async fn user(&self, ctx: &Context<'_>) -> Result<User> {
        load_user(ctx, &self.0.user_id).await
    }
    async fn approve(&self) -> bool {
        self.0.approve
    }
    async fn comment(&self) -> Option<&str> {
        self.0.comment.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        utc(self.0.created_at)
    }
}
