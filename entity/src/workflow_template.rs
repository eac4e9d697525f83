use sea_orm::entity::prelude::*;

use crate::Tags;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_templates")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    #[sea_orm(column_name = "driveId")]
    pub drive_id: String,
    #[sea_orm(column_name = "createdBy")]
    pub created_by: String,
    pub category: Option<String>,
    /// Written with `Tags::to_value` (the representation differs per backend).
    pub tags: Tags,
    #[sea_orm(column_name = "isPublic")]
    pub is_public: bool,
    /// Bumped by every change to the template or its steps (from 1).
    pub version: i32,
    /// The template this one was duplicated from.
    #[sea_orm(column_name = "parentTemplateId")]
    pub parent_template_id: Option<String>,
    #[sea_orm(column_name = "createdAt")]
    pub created_at: DateTime,
    #[sea_orm(column_name = "updatedAt")]
    pub updated_at: DateTime,
    /// `search_text(name)`, written with every write of `name`.
    #[sea_orm(column_name = "searchName")]
    pub search_name: String,
    /// `search_text(description)` (empty without one), written with every
    /// write of `description`.
    #[sea_orm(column_name = "searchDescription")]
    pub search_description: String,
}

/// The form of a text kept in the search columns and of a search matched
/// against them: lower case, one character at a time, with the final sigma
/// `ς` written as `σ`. The same on both databases, unlike SQL `lower()`
/// (ASCII-only on SQLite, locale-dependent on PostgreSQL). Folding each
/// character on its own (not `str::to_lowercase`, which picks `ς` or `σ` from
/// the neighbours) keeps substrings substrings: if a search occurs in a name,
/// its folded form occurs in the folded name.
pub fn search_text(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c == 'ς' { 'σ' } else { c })
        .collect()
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
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
    #[sea_orm(has_many = "super::workflow_step::Entity")]
    Steps,
    #[sea_orm(has_many = "super::workflow_execution::Entity")]
    Executions,
}

impl Related<super::workflow_step::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Steps.def()
    }
}

impl Related<super::drive::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Drive.def()
    }
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Creator.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
