//! The permission table of docs/permissions.md, in one place. Resolvers ask these questions;
//! nothing else decides who may see or change what.
//!
//! What a user may not see does not exist for them (`None` / left out /
//! `NOT_FOUND`); what they may see but not change is `FORBIDDEN`.

use std::collections::HashMap;
use std::sync::RwLock;

use entity::{
    DriveRole, StepStatus, workflow_execution, workflow_execution_step, workflow_schedule, workflow_template,
};

use crate::core::definition::{ApprovalRule, StepDefinition};

use crate::error::{ApiError, ApiResult};

/// The viewer's identity and role in each drive they belong to, loaded once
/// per request (or WebSocket subscription).
#[derive(Debug)]
pub struct Access {
    user_id: String,
    // Changed within a request when the viewer's own membership changes
    // (a drive they just created, their own role edited).
    roles: RwLock<HashMap<String, DriveRole>>,
}

/// Which templates of one drive a viewer may list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateScope {
    None,
    All,
    PublicOrCreatedBy(String),
}

/// Which executions a viewer may list: all of some drives, their own in others.
#[derive(Debug, Clone, Default)]
pub struct ExecutionScope {
    pub all_in: Vec<String>,
    pub own_in: Vec<String>,
    pub user_id: String,
}

impl Access {
    pub fn new(user_id: impl Into<String>, roles: HashMap<String, DriveRole>) -> Self {
        Self {
            user_id: user_id.into(),
            roles: RwLock::new(roles),
        }
    }

    /// An owned copy, for streams that outlive the request.
    pub fn snapshot(&self) -> Access {
        Access::new(self.user_id.clone(), self.roles.read().expect("roles lock").clone())
    }

    /// The user and every role, as one string: two viewers with the same
    /// fingerprint are allowed exactly the same things.
    pub fn fingerprint(&self) -> String {
        let roles = self.roles.read().expect("roles lock");
        let mut list: Vec<(&String, &DriveRole)> = roles.iter().collect();
        list.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = self.user_id.clone();
        for (drive, role) in list {
            out.push_str(&format!("\u{1}{drive}={role:?}"));
        }
        out
    }

    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    pub fn role(&self, drive_id: &str) -> Option<DriveRole> {
        self.roles.read().expect("roles lock").get(drive_id).copied()
    }

    /// Records a change to the viewer's own membership made by this request.
    pub fn set_own_role(&self, drive_id: &str, role: Option<DriveRole>) {
        let mut roles = self.roles.write().expect("roles lock");
        match role {
            Some(r) => roles.insert(drive_id.to_owned(), r),
            None => roles.remove(drive_id),
        };
    }

    /// Ids of every drive the viewer belongs to.
    pub fn drive_ids(&self) -> Vec<String> {
        self.roles.read().expect("roles lock").keys().cloned().collect()
    }

    /// Any member sees the drive.
    pub fn can_see_drive(&self, drive_id: &str) -> bool {
        self.role(drive_id).is_some()
    }

    /// Public templates: any member. Private: the creator and ADMIN/OWNER.
    pub fn can_see_template(&self, t: &workflow_template::Model) -> bool {
        match self.role(&t.drive_id) {
            None => false,
            Some(role) => t.is_public || t.created_by == self.user_id || role >= DriveRole::Admin,
        }
    }

    /// A template's statistics count every run in the drive, whoever
    /// started it: they are as visible as the template.
    pub fn can_see_template_stats(&self, t: &workflow_template::Model) -> bool {
        self.can_see_template(t)
    }

    pub fn template_scope(&self, drive_id: &str) -> TemplateScope {
        match self.role(drive_id) {
            None => TemplateScope::None,
            Some(r) if r >= DriveRole::Admin => TemplateScope::All,
            Some(_) => TemplateScope::PublicOrCreatedBy(self.user_id.clone()),
        }
    }

    /// MEMBER or higher creates templates.
    pub fn check_create_template(&self, drive_id: &str) -> ApiResult<()> {
        match self.role(drive_id) {
            None => Err(ApiError::not_found("drive", drive_id)),
            Some(r) if r >= DriveRole::Member => Ok(()),
            Some(_) => Err(ApiError::Forbidden(
                "creating templates needs the MEMBER role or higher in this drive".into(),
            )),
        }
    }

    /// Its creator while MEMBER or higher, and ADMIN/OWNER, change or delete
    /// a template and its steps.
    pub fn check_change_template(&self, t: &workflow_template::Model) -> ApiResult<()> {
        if !self.can_see_template(t) {
            return Err(ApiError::not_found("workflow template", &t.id));
        }
        let role = self.role(&t.drive_id).unwrap_or(DriveRole::Viewer);
        if role >= DriveRole::Admin || (t.created_by == self.user_id && role >= DriveRole::Member) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "only the template's creator (MEMBER or higher) and drive ADMINs or the OWNER may change it".into(),
            ))
        }
    }

    /// Any member who can see the template starts it.
    pub fn check_start_execution(&self, t: &workflow_template::Model) -> ApiResult<()> {
        if self.can_see_template(t) {
            Ok(())
        } else {
            Err(ApiError::not_found("workflow template", &t.id))
        }
    }

    /// The user who started it, and ADMIN/OWNER, see an execution, subscribe
    /// to it, submit input and cancel it.
    pub fn can_see_execution(&self, e: &workflow_execution::Model) -> bool {
        match self.role(&e.drive_id) {
            None => false,
            Some(role) => e.user_id == self.user_id || role >= DriveRole::Admin,
        }
    }

    /// Who may decide on a step under `rule` (docs/permissions.md, "Approvers"): a drive
    /// member of at least `minRole` (default MEMBER), or only the listed
    /// `userIds`; the user who started the run only with `allowStarter`.
    pub fn may_decide(&self, rule: &ApprovalRule, e: &workflow_execution::Model) -> bool {
        let Some(role) = self.role(&e.drive_id) else {
            return false;
        };
        if e.user_id == self.user_id && !rule.allow_starter {
            return false;
        }
        match &rule.user_ids {
            Some(ids) => ids.iter().any(|id| id == &self.user_id),
            None => role >= rule.min_role.unwrap_or(DriveRole::Member),
        }
    }

    /// Who sees a run: those of `can_see_execution`, and the eligible
    /// approvers of a step it awaits or awaited (reached: not PENDING, or the
    /// step it is paused at).
    pub fn can_see_execution_with_steps(
        &self,
        e: &workflow_execution::Model,
        steps: &[workflow_execution_step::Model],
    ) -> bool {
        self.can_see_execution(e)
            || steps.iter().any(|s| {
                let reached = s.status != StepStatus::Pending || e.current_step_order == Some(s.step_order);
                reached && approval_rule(s).is_some_and(|rule| self.may_decide(&rule, e))
            })
    }

    /// Deciding on a run's step: `NOT_FOUND` when the run is invisible,
    /// `FORBIDDEN` when visible but the viewer may not decide.
    pub fn check_decide(
        &self,
        rule: &ApprovalRule,
        e: &workflow_execution::Model,
        steps: &[workflow_execution_step::Model],
    ) -> ApiResult<()> {
        if self.may_decide(rule, e) {
            Ok(())
        } else if self.can_see_execution_with_steps(e, steps) {
            Err(ApiError::Forbidden(
                "you may not decide on this step: its approval rule does not name you (or you started the run)".into(),
            ))
        } else {
            Err(ApiError::not_found("workflow execution", &e.id))
        }
    }

    pub fn check_act_on_execution(&self, e: &workflow_execution::Model) -> ApiResult<()> {
        if self.can_see_execution(e) {
            Ok(())
        } else {
            Err(ApiError::not_found("workflow execution", &e.id))
        }
    }

    pub fn execution_scope(&self) -> ExecutionScope {
        let mut scope = ExecutionScope {
            user_id: self.user_id.clone(),
            ..Default::default()
        };
        for (drive, role) in self.roles.read().expect("roles lock").iter() {
            if *role >= DriveRole::Admin {
                scope.all_in.push(drive.clone());
            } else {
                scope.own_in.push(drive.clone());
            }
        }
        scope
    }

    /// A schedule is visible to whoever sees its template.
    pub fn can_see_schedule(&self, t: &workflow_template::Model) -> bool {
        self.can_see_template(t)
    }

    /// Which schedules of a drive the viewer may list: those of the
    /// templates they may see.
    pub fn schedule_scope(&self, drive_id: &str) -> TemplateScope {
        self.template_scope(drive_id)
    }

    /// MEMBER or higher who can see the template schedules it.
    pub fn check_create_schedule(&self, t: &workflow_template::Model) -> ApiResult<()> {
        if !self.can_see_template(t) {
            return Err(ApiError::not_found("workflow template", &t.id));
        }
        match self.role(&t.drive_id) {
            Some(r) if r >= DriveRole::Member => Ok(()),
            _ => Err(ApiError::Forbidden(
                "scheduling a template needs the MEMBER role or higher in its drive".into(),
            )),
        }
    }

    /// Its creator, and ADMIN/OWNER, change or delete a schedule.
    pub fn check_change_schedule(&self, s: &workflow_schedule::Model, t: &workflow_template::Model) -> ApiResult<()> {
        if !self.can_see_schedule(t) {
            return Err(ApiError::not_found("workflow schedule", &s.id));
        }
        let role = self.role(&t.drive_id).unwrap_or(DriveRole::Viewer);
        if s.created_by == self.user_id || role >= DriveRole::Admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "only the schedule's creator and drive ADMINs or the OWNER may change it".into(),
            ))
        }
    }

    /// The runs of a schedule in `drive_id` the viewer sees, as executions
    /// are seen: all of them (`Some(None)`, ADMIN/OWNER), only their own
    /// (`Some(Some(user))`), or none.
    pub fn schedule_runs_filter(&self, drive_id: &str) -> Option<Option<String>> {
        match self.role(drive_id) {
            None => None,
            Some(r) if r >= DriveRole::Admin => Some(None),
            Some(_) => Some(Some(self.user_id.clone())),
        }
    }

    /// ADMIN/OWNER manage members.
    pub fn check_manage_members(&self, drive_id: &str) -> ApiResult<()> {
        match self.role(drive_id) {
            None => Err(ApiError::not_found("drive", drive_id)),
            Some(r) if r >= DriveRole::Admin => Ok(()),
            Some(_) => Err(ApiError::Forbidden(
                "managing members needs the ADMIN role or higher in this drive".into(),
            )),
        }
    }
}

/// The approval rule of a step record's definition, if it has one. A
/// definition that cannot be read grants no one anything (the run stops at
/// that step, so there is nothing to decide).
pub fn approval_rule(s: &workflow_execution_step::Model) -> Option<ApprovalRule> {
    StepDefinition::read(s.definition.as_ref()?).ok()?.approval
}
