use sea_orm::entity::prelude::*;

/// What one finished run (`step_order` -1) or step adds to its template's
/// statistics, with the run's start, written by the change that finished
/// it. Counted from here until `folded` into the hour's
/// `workflow_template_stats` row; deleted (once folded) by the retention
/// sweep, not with the execution.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_execution_stats")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(column_name = "templateId")]
    pub template_id: String,
    #[sea_orm(column_name = "executionId")]
    pub execution_id: String,
    #[sea_orm(column_name = "startedAt")]
    pub started_at: DateTime,
    /// -1: the run as a whole; otherwise the step's `stepOrder`.
    #[sea_orm(column_name = "stepOrder")]
    pub step_order: i32,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub skipped: i64,
    pub attempts: i64,
    #[sea_orm(column_name = "promptTokens")]
    pub prompt_tokens: i64,
    #[sea_orm(column_name = "completionTokens")]
    pub completion_tokens: i64,
    #[sea_orm(column_name = "durationMs")]
    pub duration_ms: Option<i64>,
    /// The histogram bucket of `duration_ms`.
    #[sea_orm(column_name = "durationBucket")]
    pub duration_bucket: Option<i32>,
    pub folded: bool,
    #[sea_orm(column_name = "createdAt")]
    pub created_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::workflow_template::Entity",
        from = "Column::TemplateId",
        to = "super::workflow_template::Column::Id",
        on_delete = "Cascade"
    )]
    Template,
}

impl ActiveModelBehavior for ActiveModel {}
