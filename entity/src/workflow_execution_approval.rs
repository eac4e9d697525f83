use sea_orm::entity::prelude::*;

/// One person's decision on a step of a run that awaits approval.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_execution_approvals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(column_name = "executionStepId")]
    pub execution_step_id: String,
    #[sea_orm(column_name = "userId")]
    pub user_id: String,
    pub approve: bool,
    pub comment: Option<String>,
    #[sea_orm(column_name = "createdAt")]
    pub created_at: DateTime,
    #[sea_orm(column_name = "updatedAt")]
    pub updated_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::workflow_execution_step::Entity",
        from = "Column::ExecutionStepId",
        to = "super::workflow_execution_step::Column::Id",
        on_delete = "Cascade"
    )]
    Step,
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "Cascade"
    )]
    User,
}

impl ActiveModelBehavior for ActiveModel {}
