use sea_orm::entity::prelude::*;

use crate::Tags;

/// A template as one version left it: its fields and its steps.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_template_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(column_name = "templateId")]
    pub template_id: String,
    pub version: i32,
    pub name: String,
    pub description: Option<String>,
    pub category: Option<String>,
    /// Written with `Tags::to_value` (the representation differs per backend).
    pub tags: Tags,
    /// The steps in `stepOrder`, each `{id, stepOrder, agentId, promptTemplate, …}`.
    #[sea_orm(column_type = "JsonBinary")]
    pub steps: Json,
    /// Who made this version.
    #[sea_orm(column_name = "createdBy")]
    pub created_by: String,
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
        belongs_to = "super::user::Entity",
        from = "Column::CreatedBy",
        to = "super::user::Column::Id",
        on_delete = "Cascade"
    )]
    Creator,
}

impl ActiveModelBehavior for ActiveModel {}
