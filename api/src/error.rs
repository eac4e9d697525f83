//! One error type for the edge: every failure a client can see maps to one of
//! `extensions.code` values of docs/errors.md here, and nowhere else. Internal causes
//! are logged with their whole chain, never sent to the client.

use async_graphql::{ErrorExtensions, Pos, ServerError};
use serde::Serialize;

/// The values of `extensions.code`, spelled here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unauthenticated,
    Forbidden,
    NotFound,
    BadUserInput,
    Conflict,
    InternalServerError,
    /// Not valid GraphQL (or not a GraphQL request at all).
    GraphqlParseFailed,
    /// Invalid against the schema, or over a limit.
    GraphqlValidationFailed,
}

impl Code {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::Conflict => "CONFLICT",
            Self::InternalServerError => "INTERNAL_SERVER_ERROR",
            Self::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            Self::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
        }
    }

    /// A request-level error with this code.
    pub fn error(self, message: impl Into<String>, pos: Option<Pos>) -> ServerError {
        let mut err = ServerError::new(message, pos);
        set_code(&mut err, self);
        err
    }
}

/// The code an error carries, if any.
pub fn code_of(err: &ServerError) -> Option<&str> {
    match err.extensions.as_ref()?.get("code")? {
        async_graphql::Value::String(s) => Some(s.as_str()),
        _ => None,
    }
}

fn set_code(err: &mut ServerError, code: Code) {
    err.extensions
        .get_or_insert_with(Default::default)
        .set("code", code.as_str());
}

/// `err` with `code` unless it has one.
pub fn with_code(mut err: ServerError, code: Code) -> ServerError {
    if code_of(&err).is_none() {
        set_code(&mut err, code);
    }
    err
}

/// The message a client sees for any error that is ours to fix.
pub const INTERNAL_MESSAGE: &str = "internal server error";

/// Gives every error of a response its code, and keeps internal detail out
/// of it. This is the one place where errors that were raised without a code
/// get one:
/// - on a field (they have a path): async-graphql's own refusals of an
///   argument value are `BAD_USER_INPUT`; anything else was not coded on
///   purpose (a stray `?` on a library error) and is `INTERNAL_SERVER_ERROR`
///   with a generic message, its text logged;
/// - of the whole document (no path: parsing, validation, the recursion
///   guard, complexity), `GRAPHQL_VALIDATION_FAILED`.
///
/// Every `INTERNAL_SERVER_ERROR` carries `extensions.requestId` and names it
/// in its message: the id the log lines of its detail carry.
pub fn code_errors(errors: &mut [ServerError], max_complexity: usize, request_id: Option<&str>) {
    let mut fallback_id = None;
    let mut request_id = || -> String {
        match request_id {
            Some(id) => id.to_owned(),
            None => fallback_id.get_or_insert_with(cuid2::create_id).clone(),
        }
    };
    for e in errors.iter_mut() {
        match code_of(e) {
            Some(c) if c == Code::InternalServerError.as_str() => {
                let id = request_id();
                internal(e, &id);
            }
            Some(_) => {}
            None if !e.path.is_empty() => {
                if is_argument_refusal(&e.message) {
                    set_code(e, Code::BadUserInput);
                } else {
                    let id = request_id();
                    tracing::error!(error = %e.message, path = ?e.path, request_id = %id, "uncoded resolver error");
                    e.message.clear();
                    internal(e, &id);
                }
            }
            None if e.message == "Query is too complex." => {
                let mut err = Code::GraphqlValidationFailed.error(
                    format!(
                        "the query's complexity is over the limit of {max_complexity} (MAX_QUERY_COMPLEXITY): each field costs 1 \
                         and a list asked for with `first: n` costs n times its fields; ask for fewer fields or smaller pages"
                    ),
                    e.locations.first().copied(),
                );
                err.path = std::mem::take(&mut e.path);
                *e = err;
            }
            None if e.message.contains("recursion depth") || e.message.contains("recursion limit") => {
                // Raised by async-graphql's own recursion guard: a size limit, not bad syntax.
                *e = Code::GraphqlValidationFailed.error(
                    format!("the query is nested too deeply: {}", e.message),
                    e.locations.first().copied(),
                );
            }
            None => set_code(e, Code::GraphqlValidationFailed),
        }
    }
}

/// `e` as the client sees an internal error: the generic message with the
/// request id, nothing of its cause.
fn internal(e: &mut ServerError, request_id: &str) {
    e.message = format!("{INTERNAL_MESSAGE} (request id {request_id}); the server's log has the detail");
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", Code::InternalServerError.as_str());
    ext.set("requestId", request_id);
    e.extensions = Some(ext);
    e.source = None;
}

/// Whether an uncoded field error is async-graphql refusing the value given
/// for an argument (these are the messages of its `InputValueError` and of
/// an undefined variable), as opposed to an error a resolver returned.
fn is_argument_refusal(message: &str) -> bool {
    message.starts_with("Failed to parse \"")
        || message.starts_with("Expected input type \"")
        || message.starts_with("Invalid value for argument")
        || (message.starts_with("Variable ") && message.ends_with(" is not defined."))
}

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
    /// The server cannot go on with this request now (its database stayed
    /// away): INTERNAL_SERVER_ERROR, coded on purpose, with a message saying
    /// what to do rather than the generic one. Sent as it is where the
    /// transport ends a subscription with it (`ws`); `code_errors` gives it
    /// the generic message in a response, like any internal error.
    Unavailable(String),
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
            Self::Unauthenticated(m)
            | Self::Forbidden(m)
            | Self::NotFound(m)
            | Self::Conflict(m)
            | Self::Unavailable(m) => m.clone(),
            Self::BadUserInput { message, .. } => message.clone(),
            Self::Database(_) | Self::Internal(_) => INTERNAL_MESSAGE.into(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::Forbidden(_) => Code::Forbidden,
            Self::NotFound(_) => Code::NotFound,
            Self::BadUserInput { .. } => Code::BadUserInput,
            Self::Conflict(_) => Code::Conflict,
            Self::Database(_) | Self::Internal(_) | Self::Unavailable(_) => Code::InternalServerError,
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
                INTERNAL_MESSAGE.to_owned()
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                INTERNAL_MESSAGE.to_owned()
            }
            other => other.message(),
        };
        let code = err.code();
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", code.as_str());
            if let ApiError::BadUserInput { validation_errors, .. } = &err
                && !validation_errors.is_empty()
            {
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
        })
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
    use chrono::{DateTime, Utc};

    use super::*;

    struct Query;

    #[Object]
    impl Query {
        async fn not_found(&self) -> async_graphql::Result<i32> {
            Err(ApiError::NotFound("template t1 was not found".into()).into())
        }
        async fn bad_input(&self) -> async_graphql::Result<i32> {
            Err(ApiError::bad_input("input.name: must not be empty").into())
        }
        async fn database(&self) -> async_graphql::Result<i32> {
            Err(ApiError::Database(sea_orm::DbErr::Custom(
                "relation \"secret_table\" does not exist".into(),
            ))
            .into())
        }
        /// A stray `?` on a library error: no code was given on purpose.
        async fn stray(&self) -> async_graphql::Result<i32> {
            let read: Result<i32, sea_orm::DbErr> = Err(sea_orm::DbErr::Custom("SELECT secret FROM t".into()));
            Ok(read?)
        }
        async fn at(&self, when: DateTime<Utc>) -> String {
            when.to_rfc3339()
        }
    }

    async fn run(query: &str, variables: serde_json::Value) -> Vec<ServerError> {
        let schema = Schema::new(Query, EmptyMutation, EmptySubscription);
        let request = async_graphql::Request::new(query).variables(async_graphql::Variables::from_json(variables));
        let mut errors = schema.execute(request).await.errors;
        code_errors(&mut errors, 100, Some("req-1"));
        errors
    }

    fn code(e: &ServerError) -> &str {
        code_of(e).unwrap()
    }

    #[tokio::test]
    async fn every_error_gets_its_code_and_internal_ones_keep_their_text_to_the_log() {
        let errors = run("{ notFound }", serde_json::Value::Null).await;
        assert_eq!(
            (code(&errors[0]), errors[0].message.as_str()),
            ("NOT_FOUND", "template t1 was not found")
        );
        let errors = run("{ badInput }", serde_json::Value::Null).await;
        assert_eq!(code(&errors[0]), "BAD_USER_INPUT");
        for field in ["database", "stray"] {
            let errors = run(&format!("{{ {field} }}"), serde_json::Value::Null).await;
            let e = &errors[0];
            assert_eq!(code(e), "INTERNAL_SERVER_ERROR", "{field}");
            assert_eq!(
                e.message,
                "internal server error (request id req-1); the server's log has the detail"
            );
            let ext = serde_json::to_string(&e.extensions).unwrap();
            assert!(ext.contains("\"requestId\":\"req-1\""), "{ext}");
            assert!(!ext.contains("secret") && !e.message.contains("secret"), "{field}");
        }
        // async-graphql refusing an argument's value is the user's mistake.
        let errors = run(
            "query($w: DateTime!) { at(when: $w) }",
            serde_json::json!({"w": "yesterday"}),
        )
        .await;
        assert_eq!(code(&errors[0]), "BAD_USER_INPUT", "{}", errors[0].message);
        // Errors of the whole document.
        let errors = run("{ nope }", serde_json::Value::Null).await;
        assert_eq!(code(&errors[0]), "GRAPHQL_VALIDATION_FAILED");
    }
}
