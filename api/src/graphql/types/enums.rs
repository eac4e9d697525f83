//! The enums of the API and their mapping to the stored ones.

use async_graphql::Enum;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "DriveRole")]
pub enum DriveRoleGql {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl From<entity::DriveRole> for DriveRoleGql {
    fn from(r: entity::DriveRole) -> Self {
        match r {
            entity::DriveRole::Owner => Self::Owner,
            entity::DriveRole::Admin => Self::Admin,
            entity::DriveRole::Member => Self::Member,
            entity::DriveRole::Viewer => Self::Viewer,
        }
    }
}

impl From<DriveRoleGql> for entity::DriveRole {
    fn from(r: DriveRoleGql) -> Self {
        match r {
            DriveRoleGql::Owner => Self::Owner,
            DriveRoleGql::Admin => Self::Admin,
            DriveRoleGql::Member => Self::Member,
            DriveRoleGql::Viewer => Self::Viewer,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "WorkflowExecutionStatus")]
pub enum ExecutionStatusGql {
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl From<entity::ExecutionStatus> for ExecutionStatusGql {
    fn from(s: entity::ExecutionStatus) -> Self {
        use entity::ExecutionStatus as S;
        match s {
            S::Running => Self::Running,
            S::Paused => Self::Paused,
            S::Completed => Self::Completed,
            S::Failed => Self::Failed,
            S::Cancelled => Self::Cancelled,
        }
    }
}

impl From<ExecutionStatusGql> for entity::ExecutionStatus {
    fn from(s: ExecutionStatusGql) -> Self {
        match s {
            ExecutionStatusGql::Running => Self::Running,
            ExecutionStatusGql::Paused => Self::Paused,
            ExecutionStatusGql::Completed => Self::Completed,
            ExecutionStatusGql::Failed => Self::Failed,
            ExecutionStatusGql::Cancelled => Self::Cancelled,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "WorkflowExecutionStepStatus")]
pub enum StepStatusGql {
    Pending,
    Running,
    Completed,
    Failed,
    Skipped,
}

impl From<entity::StepStatus> for StepStatusGql {
    fn from(s: entity::StepStatus) -> Self {
        use entity::StepStatus as S;
        match s {
            S::Pending => Self::Pending,
            S::Running => Self::Running,
            S::Completed => Self::Completed,
            S::Failed => Self::Failed,
            S::Skipped => Self::Skipped,
        }
    }
}

/// What a step the run is paused at waits for.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "WorkflowExecutionStepAwaiting")]
pub enum Awaiting {
    Approval,
    Input,
}
