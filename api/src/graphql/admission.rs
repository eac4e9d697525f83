//! Admission: what a request must pass before the schema runs it. Operation
//! limits (nesting, aliases, root fields, complexity) are checked on the
//! parsed document before the schema validates it, so an alias bomb costs
//! one linear pass; each refusal is `GRAPHQL_VALIDATION_FAILED` and names the
//! setting. Documents are parsed once per text. (Data limits are
//! `core::limits`.)

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Pos, Positioned, Request, ServerError, ServerResult, Variables};

use crate::config::Limits;
use crate::error::{Code, with_code};

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
    fn nesting_ignores_strings_and_comments() {
        assert_eq!(bracket_nesting(r#"{ a(x: "{{{{[[[") { b } } # {{{{"#), 2);
        assert_eq!(bracket_nesting("{ a(x: \"\"\" {{{ \"\"\") }"), 2);
        assert_eq!(bracket_nesting(&"{".repeat(100)), 100);
    }
}
