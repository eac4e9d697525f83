//! Limits on hostile or runaway input. Operation limits (nesting, aliases,
//! root fields, complexity) are checked on the parsed document before the
//! schema validates it, so an alias bomb costs one linear pass; each refusal is
//! `GRAPHQL_VALIDATION_FAILED` and names the setting. Data limits (sizes of
//! templates, prompts, inputs and contexts) are `BAD_USER_INPUT` at the edge.

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Pos, Positioned, Request, ServerError, ServerResult, Variables};
use serde_json::Value;

use crate::config::Limits;
use crate::error::{ApiError, ApiResult, Code, with_code};

/// Brackets nested deeper than this in the query text are refused before it
/// is parsed (the parser recurses on them).
pub const MAX_QUERY_NESTING: usize = 64;

fn validation_error(message: impl Into<String>, pos: Option<Pos>) -> ServerError {
    Code::GraphqlValidationFailed.error(message, pos)
}

/// Parsed documents by their text, shared by every request of the process.
mod parsed {
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex};

    use async_graphql::parser::types::ExecutableDocument;

    /// Longer documents are parsed every time.
    pub const MAX_TEXT: usize = 16 * 1024;
    /// At most this many documents; then the cache starts over.
    const MAX_DOCUMENTS: usize = 512;

    static CACHE: LazyLock<Mutex<HashMap<String, Arc<ExecutableDocument>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));

    pub fn get(text: &str) -> Option<ExecutableDocument> {
        let doc = CACHE.lock().expect("parse cache lock").get(text).cloned();
        doc.map(|d| (*d).clone())
    }

    pub fn put(text: String, doc: &ExecutableDocument) {
        let doc = Arc::new(doc.clone());
        let mut cache = CACHE.lock().expect("parse cache lock");
        if cache.len() >= MAX_DOCUMENTS {
            cache.clear();
        }
        cache.insert(text, doc);
    }
}

/// The operation limits of `Limits`, checked by `admit` before a request runs.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub max_depth: usize,
    pub max_introspection_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    pub max_root_fields: usize,
    pub introspection: bool,
}

impl From<&Limits> for QueryLimits {
    fn from(l: &Limits) -> Self {
        Self {
            max_depth: l.max_query_depth,
            max_introspection_depth: l.max_introspection_depth,
            max_complexity: l.max_query_complexity,
            max_aliases: l.max_query_aliases,
            max_root_fields: l.max_root_fields,
            introspection: l.introspection,
        }
    }
}

/// What a request turned out to be once parsed: for logs and metrics.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    /// The operation's name, if it has one.
    pub name: Option<String>,
    /// `query`, `mutation`, `subscription`, or `unknown` (not found).
    pub kind: &'static str,
}

impl QueryLimits {
    /// Checks a request before the schema sees it, and parses it here, once
    /// (the schema reuses the parsed document): NUL characters, bracket
    /// nesting, syntax, then the operation limits on the parsed document —
    /// before anything else walks it, since async-graphql's own checks expand
    /// fragments without memoizing and a fragment bomb must be refused first.
    ///
    /// These are plain functions rather than a schema extension: any
    /// extension sends every field of every response through async-graphql's
    /// slow path (type lookups and a chain of boxed futures per field).
    pub fn admit(&self, request: &mut Request) -> Result<Admitted, ServerError> {
        // PostgreSQL cannot store U+0000 in text or JSONB: refuse it up front
        // rather than fail deep inside a write.
        if request.query.contains("\\u0000") || request.query.contains('\0') || variables_have_nul(&request.variables) {
            return Err(Code::BadUserInput.error(
                "text may not contain the NUL character (\\u0000); remove it and send the request again",
                None,
            ));
        }
        let nesting = bracket_nesting(&request.query);
        if nesting > MAX_QUERY_NESTING {
            return Err(validation_error(
                format!("the query nests brackets {nesting} levels deep; at most {MAX_QUERY_NESTING} are allowed"),
                None,
            ));
        }
        let wanted = request.operation_name.clone();
        // Clients send the same few documents again and again: parse each
        // once (async-graphql executes the document given it).
        let cached = parsed::get(&request.query);
        let key = (cached.is_none() && request.query.len() <= parsed::MAX_TEXT).then(|| request.query.clone());
        if let Some(doc) = cached {
            request.set_parsed_query(doc);
        }
        let doc = request
            .parsed_query()
            .map_err(|e| with_code(e, Code::GraphqlParseFailed))?;
        if let Some(key) = key {
            parsed::put(key, doc);
        }
        self.check(doc)?;
        let direct = !crate::graphql::render::merges_composite_fields(doc);
        let columns = crate::graphql::render::step_json_columns(doc);
        let op = doc.operations.iter().find(|(name, _)| match (&wanted, name) {
            (Some(want), Some(n)) => n.as_str() == want,
            (Some(_), None) => false,
            (None, _) => true,
        });
        let admitted = match op {
            Some((name, op)) => Admitted {
                name: name.map(|n| n.to_string()),
                kind: match op.node.ty {
                    OperationType::Query => "query",
                    OperationType::Mutation => "mutation",
                    OperationType::Subscription => "subscription",
                },
            },
            None => Admitted {
                name: None,
                kind: "unknown",
            },
        };
        if direct {
            request.data.insert(crate::graphql::render::DirectJson);
        }
        request.data.insert(columns);
        Ok(admitted)
    }

    /// Gives every error of a response its code (`error::code_errors`).
    /// `request_id`: the HTTP request's, named by internal errors.
    pub fn code_errors(&self, errors: &mut [ServerError], request_id: Option<&str>) {
        crate::error::code_errors(errors, self.max_complexity, request_id);
    }
}

/// What one selection set asks for, fragments expanded.
#[derive(Debug, Clone, Copy, Default)]
struct Measure {
    /// Deepest path through fields other than `__schema` / `__type`.
    depth: usize,
    /// Deepest path starting at `__schema` / `__type`.
    introspection_depth: usize,
    /// Aliased fields anywhere below.
    aliases: usize,
    /// Fields at this level (what would be root fields at the top).
    fields: usize,
    /// Where the deepest field is, for the error.
    deepest: Option<Pos>,
}

struct Measurer<'a> {
    doc: &'a ExecutableDocument,
    /// Fragments already measured; `None` while one is being measured (a cycle,
    /// which validation reports later, counts as empty here).
    fragments: HashMap<&'a str, Option<Measure>>,
}

impl<'a> Measurer<'a> {
    fn selection_set(&mut self, set: &'a Positioned<SelectionSet>) -> Measure {
        let mut m = Measure::default();
        for item in &set.node.items {
            let part = match &item.node {
                Selection::Field(field) => {
                    let children = self.selection_set(&field.node.selection_set);
                    let name = field.node.name.node.as_str();
                    let depth = 1 + children.depth.max(children.introspection_depth);
                    let mut part = Measure {
                        aliases: children.aliases.saturating_add(usize::from(field.node.alias.is_some())),
                        fields: 1,
                        deepest: children.deepest.or(Some(field.pos)),
                        ..Measure::default()
                    };
                    if name == "__schema" || name == "__type" {
                        part.introspection_depth = depth;
                    } else {
                        part.depth = depth;
                    }
                    part
                }
                Selection::InlineFragment(f) => self.selection_set(&f.node.selection_set),
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    match self.fragments.get(name) {
                        Some(Some(m)) => *m,
                        Some(None) => Measure::default(),
                        None => match self.doc.fragments.get(&spread.node.fragment_name.node) {
                            Some(fragment) => {
                                self.fragments.insert(name, None);
                                let m = self.selection_set(&fragment.node.selection_set);
                                self.fragments.insert(name, Some(m));
                                m
                            }
                            None => Measure::default(),
                        },
                    }
                }
            };
            if part.depth > m.depth || part.introspection_depth > m.introspection_depth {
                m.deepest = part.deepest;
            }
            m.depth = m.depth.max(part.depth);
            m.introspection_depth = m.introspection_depth.max(part.introspection_depth);
            m.aliases = m.aliases.saturating_add(part.aliases);
            m.fields = m.fields.saturating_add(part.fields);
        }
        m
    }
}

impl QueryLimits {
    /// Checks every operation of the document.
    pub fn check(&self, doc: &ExecutableDocument) -> ServerResult<()> {
        let mut measurer = Measurer {
            doc,
            fragments: HashMap::new(),
        };
        for (name, op) in doc.operations.iter() {
            let m = measurer.selection_set(&op.node.selection_set);
            let which = name.map_or_else(|| "the operation".to_owned(), |n| format!("operation '{n}'"));
            if !self.introspection && m.introspection_depth > 0 {
                return Err(validation_error(
                    "introspection (__schema, __type) is turned off on this server (INTROSPECTION=false)",
                    m.deepest,
                ));
            }
            if m.depth > self.max_depth {
                return Err(validation_error(
                    format!(
                        "{which} is nested {} fields deep; at most {} are allowed (MAX_QUERY_DEPTH)",
                        m.depth, self.max_depth
                    ),
                    m.deepest,
                ));
            }
            if m.introspection_depth > self.max_introspection_depth {
                return Err(validation_error(
                    format!(
                        "{which} nests introspection {} fields deep; at most {} are allowed (MAX_INTROSPECTION_DEPTH)",
                        m.introspection_depth, self.max_introspection_depth
                    ),
                    m.deepest,
                ));
            }
            if m.aliases > self.max_aliases {
                return Err(validation_error(
                    format!(
                        "{which} uses {} aliases; at most {} are allowed (MAX_QUERY_ALIASES)",
                        m.aliases, self.max_aliases
                    ),
                    Some(op.pos),
                ));
            }
            if m.fields > self.max_root_fields {
                return Err(validation_error(
                    format!(
                        "{which} asks for {} root fields; at most {} are allowed (MAX_ROOT_FIELDS); split it into several requests",
                        m.fields, self.max_root_fields
                    ),
                    Some(op.pos),
                ));
            }
        }
        Ok(())
    }
}

/// How deep `{`, `[` and `(` nest in GraphQL text, ignoring strings and comments.
pub fn bracket_nesting(query: &str) -> usize {
    let bytes = query.as_bytes();
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

fn variables_have_nul(vars: &Variables) -> bool {
    fn walk(v: &async_graphql::Value) -> bool {
        match v {
            async_graphql::Value::String(s) => s.contains('\0'),
            async_graphql::Value::List(items) => items.iter().any(walk),
            async_graphql::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || walk(v)),
            _ => false,
        }
    }
    vars.iter().any(|(_, v)| walk(v))
}

/// Bytes of `v` as compact JSON (what is stored and sent).
pub fn json_bytes(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    serde_json::to_writer(&mut c, v).expect("a JSON value serializes");
    c.0
}

/// `BAD_USER_INPUT` when `size` is over `max`, naming the field and the setting.
pub fn check_size(field: &str, size: usize, max: usize, setting: &str) -> ApiResult<()> {
    if size > max {
        return Err(ApiError::bad_input(format!(
            "{field}: is {size} bytes; at most {max} are allowed ({setting})"
        )));
    }
    Ok(())
}

/// The data limits, shared by the resolvers and the runner.
#[derive(Debug, Clone, Copy)]
pub struct DataLimits {
    pub max_template_bytes: usize,
    pub max_prompt_bytes: usize,
    pub max_input_bytes: usize,
    pub max_context_bytes: usize,
}

impl Default for DataLimits {
    fn default() -> Self {
        (&Limits::default()).into()
    }
}

impl From<&Limits> for DataLimits {
    fn from(l: &Limits) -> Self {
        Self {
            max_template_bytes: l.max_template_bytes,
            max_prompt_bytes: l.max_prompt_bytes,
            max_input_bytes: l.max_input_bytes,
            max_context_bytes: l.max_context_bytes,
        }
    }
}

impl DataLimits {
    pub fn prompt(&self, field: &str, prompt: &str) -> ApiResult<()> {
        check_size(field, prompt.len(), self.max_prompt_bytes, "MAX_PROMPT_BYTES")
    }

    pub fn input(&self, field: &str, input: &Value) -> ApiResult<()> {
        check_size(field, json_bytes(input), self.max_input_bytes, "MAX_INPUT_BYTES")
    }

    pub fn context(&self, field: &str, context: &Value) -> ApiResult<()> {
        check_size(field, json_bytes(context), self.max_context_bytes, "MAX_CONTEXT_BYTES")
    }

    pub fn template(&self, field: &str, bytes: usize) -> ApiResult<()> {
        check_size(field, bytes, self.max_template_bytes, "MAX_TEMPLATE_BYTES")
    }

    /// `BAD_USER_INPUT` when adding `key: value` would take `context` over the limit.
    /// `base`: the compact JSON size of `context` as it is.
    pub fn context_with(&self, field: &str, context: &Value, base: usize, key: &str, value: &Value) -> ApiResult<()> {
        let size = context_size_after(context, base, key, value);
        if size > self.max_context_bytes {
            return Err(ApiError::bad_input(format!(
                "{field}: would make accumulatedContext {size} bytes; at most {} are allowed (MAX_CONTEXT_BYTES)",
                self.max_context_bytes
            )));
        }
        Ok(())
    }

    /// Whether an agent's output may be stored and added to the context as
    /// `key`: `Err` says why not, for the step's error message (nothing is cut).
    /// `base`: the compact JSON size of `context` as it is.
    pub fn output_fits(&self, output: &Value, context: &Value, base: usize, key: &str) -> Result<(), String> {
        if value_has_nul(output) {
            return Err("its output contains the NUL character (\\u0000), which cannot be stored".into());
        }
        let size = context_size_after(context, base, key, output);
        if size > self.max_context_bytes {
            return Err(format!(
                "its output ({} bytes) would make accumulatedContext {size} bytes; at most {} are allowed \
                 (MAX_CONTEXT_BYTES)",
                json_bytes(output),
                self.max_context_bytes
            ));
        }
        Ok(())
    }
}

/// The compact JSON size of `context` with `key` set to `value`, computed
/// without copying the context.
pub fn context_size_with(context: &Value, key: &str, value: &Value) -> usize {
    context_size_after(context, json_bytes(context), key, value)
}

/// Like `context_size_with`, given `base`, the size of `context` as it is:
/// costs the size of the key's old and new value, not of the context.
pub fn context_size_after(context: &Value, base: usize, key: &str, value: &Value) -> usize {
    let Some(map) = context.as_object() else {
        return base;
    };
    let entry = |v: &Value| json_bytes(&Value::String(key.to_owned())) + 1 + json_bytes(v);
    match map.get(key) {
        Some(old) => base - entry(old) + entry(value),
        None => base + entry(value) + usize::from(!map.is_empty()),
    }
}

fn value_has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(value_has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || value_has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> QueryLimits {
        QueryLimits {
            max_depth: 3,
            max_introspection_depth: 4,
            max_complexity: 100,
            max_aliases: 2,
            max_root_fields: 2,
            introspection: true,
        }
    }

    fn check(q: &str) -> Result<(), String> {
        let doc = async_graphql::parser::parse_query(q).unwrap();
        limits().check(&doc).map_err(|e| e.message)
    }

    #[test]
    fn measures_depth_aliases_and_root_fields_through_fragments() {
        assert!(check("{ a { b { c } } }").is_ok());
        assert!(check("{ a { b { c { d } } } }").unwrap_err().contains("4 fields deep"));
        assert!(
            check("{ a { ...F } } fragment F on T { b { c { d } } }")
                .unwrap_err()
                .contains("MAX_QUERY_DEPTH")
        );
        assert!(check("{ __schema { a { b { c } } } }").is_ok());
        assert!(
            check("{ __schema { a { b { c { d } } } } }")
                .unwrap_err()
                .contains("MAX_INTROSPECTION_DEPTH")
        );
        assert!(check("{ x: a y: a }").is_ok());
        assert!(check("{ x: a y: a z: a }").unwrap_err().contains("3 aliases"));
        assert!(
            check("{ ...F ...F ...F } fragment F on Q { x: a }")
                .unwrap_err()
                .contains("MAX_QUERY_ALIASES")
        );
        assert!(check("{ a b c }").unwrap_err().contains("3 root fields"));
        // A cycle is left to validation, not looped on.
        assert!(check("{ ...F } fragment F on Q { a ...F }").is_ok());
    }

    #[test]
    fn fragment_bombs_are_measured_once() {
        let mut q = String::from("{ ...F0 }\n");
        for i in 0..40 {
            q.push_str(&format!("fragment F{i} on Q {{ ...F{n} ...F{n} }}\n", n = i + 1));
        }
        q.push_str("fragment F40 on Q { a }\n");
        // 2^40 root fields once expanded: measured in linear time, refused.
        assert!(check(&q).unwrap_err().contains("root fields"));
    }

    #[test]
    fn context_size_with_matches_the_serialized_size() {
        use serde_json::json;
        for (ctx, key, value) in [
            (json!({}), "k", json!("v")),
            (json!({"a": 1}), "k", json!({"x": [1, 2]})),
            (json!({"a": 1, "k": "old value"}), "k", json!("new")),
            (json!({"k": "only"}), "k", json!(null)),
        ] {
            let mut after = ctx.clone();
            after[key] = value.clone();
            assert_eq!(
                context_size_with(&ctx, key, &value),
                json_bytes(&after),
                "{ctx} + {key}"
            );
        }
    }

    #[test]
    fn nesting_ignores_strings_and_comments() {
        assert_eq!(bracket_nesting(r#"{ a(x: "{{{{[[[") { b } } # {{{{"#), 2);
        assert_eq!(bracket_nesting("{ a(x: \"\"\" {{{ \"\"\") }"), 2);
        assert_eq!(bracket_nesting(&"{".repeat(100)), 100);
    }
}
