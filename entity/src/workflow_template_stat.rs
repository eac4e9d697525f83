use sea_orm::entity::prelude::*;

/// Roll-up of one template's runs that started in one UTC hour: the run as
/// a whole (`step_order` -1) or one of its steps. Only ever added to, by the
/// fold of `workflow_execution_stats` rows. Rows from before hourly roll-ups
/// hold a whole day, at its 00:00.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_template_stats")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(column_name = "templateId")]
    pub template_id: String,
    /// The hour's first instant.
    pub hour: DateTime,
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
    /// Histogram bucket (as a string key) -> count of durations in it.
    #[sea_orm(column_type = "JsonBinary")]
    pub durations: Json,
    #[sea_orm(column_name = "durationMaxMs")]
    pub duration_max_ms: Option<i64>,
    #[sea_orm(column_name = "createdAt")]
    pub created_at: DateTime,
    #[sea_orm(column_name = "updatedAt")]
    pub updated_at: DateTime,
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
