//! Objects written straight to JSON text.
//!
//! async-graphql resolves every field of every object as a boxed future, run
//! through a `FuturesUnordered`, and collects the results into an `IndexMap`
//! that is serialized afterwards. For the fields that only copy a column
//! (`id`, `name`, `stepOrder`, a stored JSON value …) that machinery costs
//! many times the field itself: on the nested template page (50 templates ×
//! 5 steps, ~1,600 fields) it was most of the server's CPU.
//!
//! `Direct<T>` and `DirectList<T>` are the same GraphQL types as `T` and
//! `[T!]!`, but write a plain field (`Plain::write_plain`) to the response
//! text directly, in selection order. Every other field (one that loads, takes
//! arguments, or may fail) still goes through the type's own `#[Object]`
//! resolver, and its value is written after it. A list runs one future per
//! item, so loads on sibling items still batch in their DataLoader.
//!
//! The result rides in the response tree as `Value::Binary`, which
//! `json::write` copies through. async-graphql merges two selections of the
//! same composite field (`steps { id } steps { name }`) by merging their
//! value trees, which it cannot do with text; a document that selects any
//! composite field twice under one response key is therefore resolved the
//! ordinary way (`QueryLimits::admit` decides, `DirectJson` says so), as is
//! any selection with a directive other than `@skip` / `@include`.

use std::borrow::Cow;
use std::collections::HashSet;

use async_graphql::parser::types::{ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::resolve_list;
use async_graphql::{ContainerType, ContextSelectionSet, OutputType, Positioned, ServerResult, Value};

use super::json::{write_str, write_value};

/// Request data: the document may be rendered as text (see the module docs).
pub struct DirectJson;

/// A type some of whose fields are plain copies of its data.
pub trait Plain: ContainerType + Send + Sync {
    /// Writes the JSON value of the field named `name` when it is a plain
    /// field of this type (no arguments, nothing to load, cannot fail);
    /// otherwise writes nothing and returns false.
    fn write_plain(&self, name: &str, out: &mut Vec<u8>) -> bool;
}

/// `T`, written as text when the document allows.
pub struct Direct<T>(pub T);

/// `[T!]!`, written as text when the document allows.
pub struct DirectList<T>(pub Vec<T>);

impl<T> From<Vec<T>> for DirectList<T> {
    fn from(items: Vec<T>) -> Self {
        Self(items)
    }
}

impl<T: OutputType + Plain> OutputType for Direct<T> {
    fn type_name() -> Cow<'static, str> {
        T::type_name()
    }

    fn qualified_type_name() -> String {
        T::qualified_type_name()
    }

    fn introspection_type_name(&self) -> Cow<'static, str> {
        self.0.introspection_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        T::create_type_info(registry)
    }

    async fn resolve(&self, ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        let Some(fields) = plan::<T>(ctx, Some(&self.0)) else {
            return self.0.resolve(ctx, field).await;
        };
        let mut out = Vec::with_capacity(256);
        write_object(ctx, &self.0, &fields, &mut out).await;
        Ok(Value::Binary(out.into()))
    }
}

impl<T: OutputType + Plain> OutputType for DirectList<T> {
    fn type_name() -> Cow<'static, str> {
        <Vec<T> as OutputType>::type_name()
    }

    fn qualified_type_name() -> String {
        <Vec<T> as OutputType>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Vec<T> as OutputType>::create_type_info(registry)
    }

    async fn resolve(&self, ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        let Some(fields) = plan::<T>(ctx, self.0.first()) else {
            return resolve_list(ctx, field, &self.0, Some(self.0.len())).await;
        };
        let items = self.0.iter().enumerate().map(|(idx, item)| {
            let fields = &fields;
            async move {
                let ctx_idx = ctx.with_index(idx);
                let mut out = Vec::with_capacity(256);
                write_object(&ctx_idx, item, fields, &mut out).await;
                out
            }
        });
        let parts = futures::future::join_all(items).await;
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 2);
        out.push(b'[');
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(part);
        }
        out.push(b']');
        Ok(Value::Binary(out.into()))
    }
}

/// The fields of `ctx`'s selection set that apply to `T`, fragments
/// flattened, each response key once; `None` when this selection must be
/// resolved the ordinary way.
/// Each field comes with whether it is plain (`__typename`, or one that
/// `sample` writes: which fields are plain depends on the name only).
fn plan<'a, T: OutputType + Plain>(
    ctx: &ContextSelectionSet<'a>,
    sample: Option<&T>,
) -> Option<Vec<(&'a Positioned<Field>, bool)>> {
    ctx.data_opt::<DirectJson>()?;
    let mut fields = Vec::new();
    let mut keys = HashSet::new();
    collect::<T>(ctx, &ctx.item.node, &mut fields, &mut keys, 0)?;
    let mut scratch = Vec::new();
    Some(
        fields
            .into_iter()
            .map(|f| {
                let name = f.node.name.node.as_str();
                let plain = name == "__typename" || sample.is_some_and(|s| s.write_plain(name, &mut scratch));
                (f, plain)
            })
            .collect(),
    )
}

fn collect<'a, T: OutputType>(
    ctx: &ContextSelectionSet<'a>,
    set: &'a SelectionSet,
    fields: &mut Vec<&'a Positioned<Field>>,
    keys: &mut HashSet<&'a str>,
    depth: usize,
) -> Option<()> {
    // Validation refuses fragment cycles; this only bounds the walk.
    if depth > 32 {
        return None;
    }
    for selection in &set.items {
        if !selection.node.directives().is_empty() {
            return None;
        }
        let (condition, inner) = match &selection.node {
            Selection::Field(field) => {
                // A repeated key is the same field with the same arguments
                // (validation checks that); it is written once.
                if keys.insert(field.node.response_key().node.as_str()) {
                    fields.push(field);
                }
                continue;
            }
            Selection::FragmentSpread(spread) => {
                let fragment = ctx.query_env.fragments.get(&spread.node.fragment_name.node)?;
                (
                    Some(fragment.node.type_condition.node.on.node.as_str()),
                    &fragment.node.selection_set.node,
                )
            }
            Selection::InlineFragment(fragment) => (
                fragment.node.type_condition.as_ref().map(|c| c.node.on.node.as_str()),
                &fragment.node.selection_set.node,
            ),
        };
        let name = T::type_name();
        let applies = condition.is_none_or(|c| {
            c == name
                || ctx
                    .schema_env
                    .registry
                    .implements
                    .get(name.as_ref())
                    .is_some_and(|interfaces| interfaces.contains(c))
        });
        if applies {
            collect::<T>(ctx, inner, fields, keys, depth + 1)?;
        }
    }
    Some(())
}

/// One object: plain fields written in place, the others resolved by `T`'s
/// resolver, all of them at once (so the loads of every field of every item
/// reach their DataLoaders before any batch is sent, as with async-graphql's
/// own executor). A field whose resolver fails is left out and its error
/// recorded, as async-graphql does; an object with no fields left is `null`.
async fn write_object<T: Plain>(
    ctx: &ContextSelectionSet<'_>,
    item: &T,
    fields: &[(&Positioned<Field>, bool)],
    out: &mut Vec<u8>,
) {
    let resolved = futures::future::join_all(fields.iter().map(|&(field, plain)| async move {
        if plain {
            None
        } else {
            Some(item.resolve_field(&ctx.with_field(field)).await)
        }
    }))
    .await;
    let start = out.len();
    let mut written = 0;
    for (&(field, _), value) in fields.iter().zip(resolved) {
        let value = match value {
            Some(Ok(v)) => Some(v.unwrap_or_default()),
            Some(Err(e)) => {
                ctx.add_error(e);
                continue;
            }
            None => None,
        };
        out.push(if written == 0 { b'{' } else { b',' });
        write_str(field.node.response_key().node.as_str(), out);
        out.push(b':');
        match value {
            Some(v) => write_value(&v, out),
            None if field.node.name.node == "__typename" => write_str(&item.introspection_type_name(), out),
            None => {
                item.write_plain(field.node.name.node.as_str(), out);
            }
        }
        written += 1;
    }
    if written == 0 {
        out.truncate(start);
        out.extend_from_slice(b"null");
    } else {
        out.push(b'}');
    }
}

/// Whether any selection set of `doc` selects a field that has a selection
/// of its own twice under one response key (directly or through fragments).
/// Such a document is not rendered as text (see the module docs).
pub fn merges_composite_fields(doc: &ExecutableDocument) -> bool {
    let sets = doc
        .operations
        .iter()
        .map(|(_, op)| &op.node.selection_set.node)
        .chain(doc.fragments.values().map(|f| &f.node.selection_set.node));
    sets.into_iter().any(|set| merges_in(doc, set, 0))
}

fn merges_in(doc: &ExecutableDocument, set: &SelectionSet, depth: usize) -> bool {
    if depth > 32 {
        return true;
    }
    let mut fields = Vec::new();
    flatten(doc, set, &mut fields, 0);
    let mut seen: HashSet<&str> = HashSet::new();
    for f in &fields {
        let composite = !f.node.selection_set.node.items.is_empty();
        let key = f.node.response_key().node.as_str();
        if composite && !seen.insert(key) {
            return true;
        }
    }
    // A leaf and a composite field under one key cannot both be valid;
    // validation reports that. Below each composite field:
    fields
        .iter()
        .filter(|f| !f.node.selection_set.node.items.is_empty())
        .any(|f| merges_in(doc, &f.node.selection_set.node, depth + 1))
}

/// Which of a template step's JSON columns the document may read: a field
/// of that name selected anywhere in it, on any type (so never too few).
pub fn step_json_columns(doc: &ExecutableDocument) -> crate::domain::steps::JsonColumns {
    fn visit<'a>(set: &'a SelectionSet, names: &mut HashSet<&'a str>) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(f) => {
                    names.insert(f.node.name.node.as_str());
                    visit(&f.node.selection_set.node, names);
                }
                Selection::InlineFragment(fragment) => visit(&fragment.node.selection_set.node, names),
                // The fragment's own selection is visited below.
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    let mut names = HashSet::new();
    for (_, op) in doc.operations.iter() {
        visit(&op.node.selection_set.node, &mut names);
    }
    for fragment in doc.fragments.values() {
        visit(&fragment.node.selection_set.node, &mut names);
    }
    crate::domain::steps::JsonColumns {
        input_schema: names.contains("inputSchema"),
        metadata: names.contains("metadata"),
        condition: names.contains("condition"),
        approval: names.contains("approval"),
    }
}

fn flatten<'a>(doc: &'a ExecutableDocument, set: &'a SelectionSet, out: &mut Vec<&'a Positioned<Field>>, depth: usize) {
    if depth > 32 {
        return;
    }
    for selection in &set.items {
        match &selection.node {
            Selection::Field(f) => out.push(f),
            Selection::FragmentSpread(spread) => {
                if let Some(fragment) = doc.fragments.get(&spread.node.fragment_name.node) {
                    flatten(doc, &fragment.node.selection_set.node, out, depth + 1);
                }
            }
            Selection::InlineFragment(fragment) => flatten(doc, &fragment.node.selection_set.node, out, depth + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merges(q: &str) -> bool {
        merges_composite_fields(&async_graphql::parser::parse_query(q).unwrap())
    }

    #[test]
    fn finds_composite_fields_selected_twice() {
        assert!(!merges("{ a { id id b { c } } d: a { id } }"));
        assert!(merges("{ a { id } a { name } }"));
        assert!(merges("{ x { a { id } ... on T { a { name } } } }"));
        assert!(merges("{ x { ...F a { id } } } fragment F on T { a { name } }"));
        assert!(merges("{ x { y { a { id } a { name } } } }"));
        assert!(!merges("{ x { ...F } } fragment F on T { a { name } b: a { id } }"));
    }
}
