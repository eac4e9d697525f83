use sea_orm::entity::prelude::*;

/// A cron schedule that starts runs of a template as its creator.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_schedules")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(column_name = "templateId")]
    pub template_id: String,
    #[sea_orm(column_name = "driveId")]
    pub drive_id: String,
    #[sea_orm(column_name = "createdBy")]
    pub created_by: String,
    pub cron: String,
    /// An IANA time zone name.
    pub timezone: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub context: Json,
    pub enabled: bool,
    /// The next due time; null while disabled.
    #[sea_orm(column_name = "nextRunAt")]
    pub next_run_at: Option<DateTime>,
    #[sea_orm(column_name = "lastRunAt")]
    pub last_run_at: Option<DateTime>,
    #[sea_orm(column_name = "lastExecutionId")]
    pub last_execution_id: Option<String>,
    #[sea_orm(column_name = "lastError", column_type = "Text", nullable)]
    pub last_error: Option<String>,
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
    #[sea_orm(
        belongs_to = "super::drive::Entity",
        from = "Column::DriveId",
        to = "super::drive::Column::Id",
        on_delete = "Cascade"
    )]
    Drive,
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::CreatedBy",
        to = "super::user::Column::Id",
        on_delete = "Cascade"
    )]
    Creator,
    #[sea_orm(
        belongs_to = "super::workflow_execution::Entity",
        from = "Column::LastExecutionId",
        to = "super::workflow_execution::Column::Id",
        on_delete = "SetNull"
    )]
    LastExecution,
}

impl Related<super::workflow_template::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Template.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
