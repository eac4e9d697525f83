//! `workflow_templates.tags`: `text[]` on PostgreSQL, a JSON array in a text
//! column on SQLite (sea-query cannot bind arrays for SQLite). Reading works
//! on both through `TryGetable`; writing must go through [`Tags::to_value`],
//! which picks the representation for the backend.

use sea_orm::sea_query::{ArrayType, ColumnType, Nullable, ValueType, ValueTypeErr};
use sea_orm::{ColIdx, DbBackend, QueryResult, TryGetError, TryGetable, Value};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tags(pub Vec<String>);

impl Tags {
    /// The bind value for `backend`: a text array on PostgreSQL, JSON text on SQLite.
    pub fn to_value(&self, backend: DbBackend) -> Value {
        match backend {
            DbBackend::Postgres => Value::Array(
                ArrayType::String,
                Some(Box::new(
                    self.0.iter().map(|t| Value::String(Some(t.clone()))).collect(),
                )),
            ),
            _ => Value::String(Some(serde_json::to_string(&self.0).unwrap_or_else(|_| "[]".into()))),
        }
    }
}

impl TryGetable for Tags {
    fn try_get_by<I: ColIdx>(res: &QueryResult, index: I) -> Result<Self, TryGetError> {
        if res.try_as_pg_row().is_some() {
            let v: Option<Vec<String>> = res.try_get_by(index).map_err(TryGetError::DbErr)?;
            return Ok(Tags(v.unwrap_or_default()));
        }
        let v: Option<String> = res.try_get_by(index).map_err(TryGetError::DbErr)?;
        match v {
            None => Ok(Tags::default()),
            Some(s) => serde_json::from_str(&s)
                .map(Tags)
                .map_err(|e| TryGetError::DbErr(sea_orm::DbErr::Type(format!("tags: {e}")))),
        }
    }
}

/// The PostgreSQL form; SQLite writes use [`Tags::to_value`].
impl From<Tags> for Value {
    fn from(t: Tags) -> Self {
        t.to_value(DbBackend::Postgres)
    }
}

impl ValueType for Tags {
    fn try_from(v: Value) -> Result<Self, ValueTypeErr> {
        match v {
            Value::Array(_, Some(items)) => Ok(Tags(
                items
                    .into_iter()
                    .filter_map(|i| match i {
                        Value::String(Some(s)) => Some(s),
                        _ => None,
                    })
                    .collect(),
            )),
            Value::Array(_, None) => Ok(Tags::default()),
            Value::String(Some(s)) => serde_json::from_str(&s).map(Tags).map_err(|_| ValueTypeErr),
            Value::String(None) => Ok(Tags::default()),
            _ => Err(ValueTypeErr),
        }
    }

    fn type_name() -> String {
        "Tags".into()
    }

    fn array_type() -> ArrayType {
        ArrayType::String
    }

    fn column_type() -> ColumnType {
        ColumnType::Array(std::sync::Arc::new(ColumnType::Text))
    }
}

impl Nullable for Tags {
    fn null() -> Value {
        Value::Array(ArrayType::String, None)
    }
}
