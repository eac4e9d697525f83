//! Stored JSON on its way out, and writing responses.
//!
//! async-graphql builds every response as a `ConstValue` tree, so a stored
//! JSON value (a step's `inputSchema`, an execution's `accumulatedContext`)
//! would be copied node by node into that tree — a map, a hash table and a
//! name per key — only to be serialized again. `StoredJson` serializes it
//! once, to text, which rides in the tree as `ConstValue::Binary`; `write`
//! copies that text through as it is. Nothing else in this schema produces
//! `Binary` (there are no uploads or byte scalars), so every response must be
//! written by `write` / `to_bytes`, never by `Response`'s own `Serialize`.

use std::borrow::Cow;

use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::{ContextSelectionSet, Json, OutputType, Positioned, Response, ServerResult, Value as Gql};
use serde_json::Value;

/// The `JSON` scalar (the same one async-graphql registers for input) on
/// output, for a stored value.
pub struct StoredJson<'a>(pub &'a Value);

impl OutputType for StoredJson<'_> {
    fn type_name() -> Cow<'static, str> {
        <Json<Value> as OutputType>::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Json<Value> as OutputType>::create_type_info(registry)
    }

    async fn resolve(&self, _ctx: &ContextSelectionSet<'_>, _field: &Positioned<Field>) -> ServerResult<Gql> {
        let text = serde_json::to_vec(self.0).expect("a JSON value serializes");
        Ok(Gql::Binary(text.into()))
    }
}

/// A response as JSON text: `data`, then `extensions` and `errors` when
/// there are any (the order and shape of async-graphql's own `Serialize`).
pub fn to_bytes(resp: &Response) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write(resp, &mut out);
    out
}

/// Like `to_bytes`, into `out`.
pub fn write(resp: &Response, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"data":"#);
    write_value(&resp.data, out);
    if !resp.extensions.is_empty() {
        out.extend_from_slice(br#","extensions":{"#);
        for (i, (k, v)) in resp.extensions.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(k, out);
            out.push(b':');
            write_value(v, out);
        }
        out.push(b'}');
    }
    if !resp.errors.is_empty() {
        out.extend_from_slice(br#","errors":"#);
        serde_json::to_writer(&mut *out, &resp.errors).expect("errors serialize");
    }
    out.push(b'}');
}

/// A batch: one response, or a JSON array of them.
pub fn batch_to_bytes(responses: &[Response], single: bool) -> Vec<u8> {
    if single && let Some(r) = responses.first() {
        return to_bytes(r);
    }
    let mut out = Vec::with_capacity(1024 * responses.len().max(1));
    out.push(b'[');
    for (i, r) in responses.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(r, &mut out);
    }
    out.push(b']');
    out
}

pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, s).expect("a string serializes");
}

pub(crate) fn write_value(v: &Gql, out: &mut Vec<u8>) {
    match v {
        Gql::Null => out.extend_from_slice(b"null"),
        Gql::Boolean(true) => out.extend_from_slice(b"true"),
        Gql::Boolean(false) => out.extend_from_slice(b"false"),
        Gql::Number(n) => serde_json::to_writer(&mut *out, n).expect("a number serializes"),
        Gql::String(s) => write_str(s, out),
        Gql::Enum(name) => write_str(name.as_str(), out),
        // Stored JSON, already serialized by `StoredJson`.
        Gql::Binary(text) => out.extend_from_slice(text),
        Gql::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Gql::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k.as_str(), out);
                out.push(b':');
                write_value(v, out);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_what_serde_writes_and_stored_json_as_it_is() {
        let stored = json!({"b": [1, 2.5, "x\"y"], "a": null, "nested": {"t": true}});
        let text = serde_json::to_vec(&stored).unwrap();
        let tree = Gql::from_json(json!({"s": "é\n\"", "n": 3, "f": -1.5, "l": [true, false, null], "o": {}})).unwrap();
        let mut resp = Response::new(Gql::List(vec![tree.clone(), Gql::Binary(text.into())]));
        resp.errors.push(async_graphql::ServerError::new("boom", None));
        let written: serde_json::Value = serde_json::from_slice(&to_bytes(&resp)).unwrap();
        let expected = json!({
            "data": [serde_json::to_value(&tree).unwrap(), stored],
            "errors": [{"message": "boom"}],
        });
        assert_eq!(written, expected);
        // Without the stored value, byte for byte what async-graphql writes.
        let plain = Response::new(tree);
        assert_eq!(to_bytes(&plain), serde_json::to_vec(&plain).unwrap());
    }
}
