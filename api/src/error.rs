//! One error type for the edge: every failure a client can see maps to one of
//! API.md's `extensions.code` values here, and nowhere else. Internal causes
//! are logged with their whole chain, never sent to the client.

use async_graphql::ErrorExtensions;
use serde::Serialize;

/// One problem found in user input, as `extensions.validationErrors` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ValidationProblem {
    pub path: String,
    pub message: String,
}

/// Deliberately not `Display`: async-graphql converts any `Display` type into
/// an error without a code, so this type converts only through the `From`
/// below, which sets `extensions.code`.
#[derive(Debug)]
pub enum ApiError {
    Unauthenticated(String),
    Forbidden(String),
    NotFound(String),
    BadUserInput {
        message: String,
        validation_errors: Vec<ValidationProblem>,
    },
    Conflict(String),
    Database(sea_orm::DbErr),
    Internal(String),
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Database(e)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::BadUserInput {
            message: message.into(),
            validation_errors: Vec::new(),
        }
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::NotFound(format!("{what} {id} was not found"))
    }

    /// The message a client sees (internal causes are not shown).
    pub fn message(&self) -> String {
        match self {
            Self::Unauthenticated(m) | Self::Forbidden(m) | Self::NotFound(m) | Self::Conflict(m) => m.clone(),
            Self::BadUserInput { message, .. } => message.clone(),
            Self::Database(_) | Self::Internal(_) => "internal server error".into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::BadUserInput { .. } => "BAD_USER_INPUT",
            Self::Conflict(_) => "CONFLICT",
            Self::Database(_) | Self::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }
}

/// A unique-constraint violation means the client raced itself or asked for a
/// duplicate; everything else from the database is ours to fix.
pub fn is_unique_violation(err: &sea_orm::DbErr) -> bool {
    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

impl From<ApiError> for async_graphql::Error {
    fn from(err: ApiError) -> Self {
        let message = match &err {
            ApiError::Database(e) => {
                tracing::error!(error = %e, debug = ?e, "database error");
                "internal server error".to_string()
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                "internal server error".to_string()
            }
            other => other.message(),
        };
        let code = err.code();
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", code);
            if let ApiError::BadUserInput { validation_errors, .. } = &err {
                if !validation_errors.is_empty() {
                    let list: Vec<async_graphql::Value> = validation_errors
                        .iter()
                        .map(|p| {
                            let mut m = async_graphql::indexmap::IndexMap::new();
                            m.insert(
                                async_graphql::Name::new("path"),
                                async_graphql::Value::from(p.path.clone()),
                            );
                            m.insert(
                                async_graphql::Name::new("message"),
                                async_graphql::Value::from(p.message.clone()),
                            );
                            async_graphql::Value::Object(m)
                        })
                        .collect();
                    ext.set("validationErrors", async_graphql::Value::List(list));
                }
            }
        })
    }
}
