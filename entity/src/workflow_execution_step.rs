use sea_orm::entity::prelude::*;

use crate::StepStatus;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_execution_steps")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(column_name = "workflowExecutionId")]
    pub workflow_execution_id: String,
    #[sea_orm(column_name = "workflowStepId")]
    pub workflow_step_id: Option<String>,
    #[sea_orm(column_name = "stepOrder")]
    pub step_order: i32,
    pub status: StepStatus,
    #[sea_orm(column_name = "agentInput", column_type = "JsonBinary", nullable)]
    pub agent_input: Option<Json>,
    #[sea_orm(column_name = "agentOutput", column_type = "JsonBinary", nullable)]
    pub agent_output: Option<Json>,
    #[sea_orm(column_name = "userInput", column_type = "JsonBinary", nullable)]
    pub user_input: Option<Json>,
    #[sea_orm(column_name = "startedAt")]
    pub started_at: Option<DateTime>,
    #[sea_orm(column_name = "completedAt")]
    pub completed_at: Option<DateTime>,
    #[sea_orm(column_name = "errorMessage", column_type = "Text", nullable)]
    pub error_message: Option<String>,
    /// The template step as it was when the run started.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub definition: Option<Json>,
    /// Copied, as it ended, from the run this one retries; never run here.
    pub reused: bool,
    #[sea_orm(column_name = "createdAt")]
    pub created_at: DateTime,
    #[sea_orm(column_name = "updatedAt")]
    pub updated_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::workflow_execution::Entity",
        from = "Column::WorkflowExecutionId",
        to = "super::workflow_execution::Column::Id",
        on_delete = "Cascade"
    )]
    Execution,
    #[sea_orm(
        belongs_to = "super::workflow_step::Entity",
        from = "Column::WorkflowStepId",
        to = "super::workflow_step::Column::Id",
        on_delete = "SetNull"
    )]
    StepDefinition,
}

impl Related<super::workflow_execution::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Execution.def()
    }
}

impl Related<super::workflow_step::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::StepDefinition.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
