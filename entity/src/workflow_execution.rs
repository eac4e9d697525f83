use sea_orm::entity::prelude::*;

use crate::ExecutionStatus;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_executions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(column_name = "workflowTemplateId")]
    pub workflow_template_id: String,
    #[sea_orm(column_name = "userId")]
    pub user_id: String,
    #[sea_orm(column_name = "driveId")]
    pub drive_id: String,
    pub status: ExecutionStatus,
    #[sea_orm(column_name = "currentStepOrder")]
    pub current_step_order: Option<i32>,
    #[sea_orm(column_name = "accumulatedContext", column_type = "JsonBinary")]
    pub accumulated_context: Json,
    /// The context the run started with.
    #[sea_orm(column_name = "initialContext", column_type = "JsonBinary")]
    pub initial_context: Json,
    #[sea_orm(column_name = "startedAt")]
    pub started_at: Option<DateTime>,
    #[sea_orm(column_name = "pausedAt")]
    pub paused_at: Option<DateTime>,
    #[sea_orm(column_name = "completedAt")]
    pub completed_at: Option<DateTime>,
    #[sea_orm(column_name = "failedAt")]
    pub failed_at: Option<DateTime>,
    #[sea_orm(column_name = "errorMessage", column_type = "Text", nullable)]
    pub error_message: Option<String>,
    /// Number of the last event published for this execution.
    pub sequence: i64,
    /// Highest event number handed out for streamed output (see the migration).
    #[sea_orm(column_name = "sequenceReserved")]
    pub sequence_reserved: i64,
    /// The instance working on this RUNNING execution, and until when.
    #[sea_orm(column_name = "leaseOwner")]
    pub lease_owner: Option<String>,
    #[sea_orm(column_name = "leaseExpiresAt")]
    pub lease_expires_at: Option<DateTime>,
    /// The template version this run executes.
    #[sea_orm(column_name = "templateVersion")]
    pub template_version: i32,
    /// The run this one re-runs from a step.
    #[sea_orm(column_name = "retryOfExecutionId")]
    pub retry_of_execution_id: Option<String>,
    /// The schedule that started this run (null once it was deleted), and
    /// the due time it was started for.
    #[sea_orm(column_name = "scheduleId")]
    pub schedule_id: Option<String>,
    #[sea_orm(column_name = "scheduledFor")]
    pub scheduled_for: Option<DateTime>,
    #[sea_orm(column_name = "createdAt")]
    pub created_at: DateTime,
    #[sea_orm(column_name = "updatedAt")]
    pub updated_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::workflow_template::Entity",
        from = "Column::WorkflowTemplateId",
        to = "super::workflow_template::Column::Id",
        on_delete = "Cascade"
    )]
    Template,
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "Cascade"
    )]
    User,
    #[sea_orm(
        belongs_to = "super::drive::Entity",
        from = "Column::DriveId",
        to = "super::drive::Column::Id",
        on_delete = "Cascade"
    )]
    Drive,
    #[sea_orm(has_many = "super::workflow_execution_step::Entity")]
    Steps,
}

impl Related<super::workflow_template::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Template.def()
    }
}

impl Related<super::workflow_execution_step::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Steps.def()
    }
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
