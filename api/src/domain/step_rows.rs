//! Reads of template steps: by id, and a page's worth by template, with
//! only the JSON columns a request reads. `steps` writes them, `versions`
//! snapshots them; both read through here.

use entity::workflow_step as step;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, IdenStatic, Iterable, QueryFilter, QueryOrder,
    QuerySelect,
};

pub async fn find(db: &impl ConnectionTrait, id: &str) -> Result<Option<step::Model>, DbErr> {
    step::Entity::find_by_id(id.to_owned()).one(db).await
}

pub async fn find_many(db: &impl ConnectionTrait, ids: &[String]) -> Result<Vec<step::Model>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    step::Entity::find()
        .filter(step::Column::Id.is_in(ids.iter().cloned()))
        .all(db)
        .await
}

/// The steps of many templates, each template's in `stepOrder`.
pub async fn of_templates(db: &impl ConnectionTrait, template_ids: &[String]) -> Result<Vec<step::Model>, DbErr> {
    if template_ids.is_empty() {
        return Ok(Vec::new());
    }
    step::Entity::find()
        .filter(step::Column::WorkflowTemplateId.is_in(template_ids.iter().cloned()))
        .order_by_asc(step::Column::WorkflowTemplateId)
        .order_by_asc(step::Column::StepOrder)
        .all(db)
        .await
}

/// Which of a step's JSON columns a request may read; the others need not
/// be fetched (PostgreSQL turns each stored `jsonb` into text to send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonColumns {
    pub input_schema: bool,
    pub metadata: bool,
    pub condition: bool,
    pub approval: bool,
}

impl JsonColumns {
    pub const ALL: Self = Self {
        input_schema: true,
        metadata: true,
        condition: true,
        approval: true,
    };

    /// Whether rows read with these columns hold everything `wanted` reads.
    pub fn covers(&self, wanted: JsonColumns) -> bool {
        (self.input_schema || !wanted.input_schema)
            && (self.metadata || !wanted.metadata)
            && (self.condition || !wanted.condition)
            && (self.approval || !wanted.approval)
    }

    fn reads(&self, c: step::Column) -> bool {
        match c {
            step::Column::InputSchema => self.input_schema,
            step::Column::Metadata => self.metadata,
            step::Column::Condition => self.condition,
            step::Column::Approval => self.approval,
            _ => true,
        }
    }
}

/// `of_templates`, with the JSON columns `reading` leaves out read as NULL.
/// Only for a request that reads none of them anywhere: the rows are not
/// the stored ones.
pub async fn of_templates_reading(
    db: &impl ConnectionTrait,
    template_ids: &[String],
    reading: JsonColumns,
) -> Result<Vec<step::Model>, DbErr> {
    if reading == JsonColumns::ALL {
        return of_templates(db, template_ids).await;
    }
    if template_ids.is_empty() {
        return Ok(Vec::new());
    }
    let null = match db.get_database_backend() {
        DbBackend::Postgres => "NULL::jsonb",
        _ => "NULL",
    };
    let mut query = step::Entity::find().select_only();
    for c in step::Column::iter() {
        query = if reading.reads(c) {
            query.column(c)
        } else {
            query.column_as(Expr::cust(null), c.as_str())
        };
    }
    query
        .filter(step::Column::WorkflowTemplateId.is_in(template_ids.iter().cloned()))
        .order_by_asc(step::Column::WorkflowTemplateId)
        .order_by_asc(step::Column::StepOrder)
        .into_model::<step::Model>()
        .all(db)
        .await
}
