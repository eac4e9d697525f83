use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_steps")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(column_name = "workflowTemplateId")]
    pub workflow_template_id: String,
    #[sea_orm(column_name = "stepOrder")]
    pub step_order: i32,
    #[sea_orm(column_name = "agentId")]
    pub agent_id: String,
    #[sea_orm(column_name = "promptTemplate", column_type = "Text")]
    pub prompt_template: String,
    #[sea_orm(column_name = "requiresUserInput")]
    pub requires_user_input: bool,
    #[sea_orm(column_name = "inputSchema", column_type = "JsonBinary", nullable)]
    pub input_schema: Option<Json>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub metadata: Option<Json>,
    /// JSON Logic evaluated over the accumulated context; false skips the step.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub condition: Option<Json>,
    /// Adjacent steps sharing a group run side by side.
    #[sea_orm(column_name = "parallelGroup")]
    pub parallel_group: Option<String>,
    /// Who must approve the step before it runs (`{required, minRole, userIds, allowStarter}`).
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub approval: Option<Json>,
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
}

impl Related<super::workflow_template::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Template.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
