//! Prompt templates: `{{ path }}` placeholders filled from the accumulated
//! context (and `input`, the step's own user input).
//!
//! A placeholder is `{{`, optional spaces, a dotted path of names and array
//! indexes, optional spaces, `}}`. Anything else between braces is left as
//! text, so prompts may contain code with braces.

use serde_json::Value;

/// A `{{ … }}` placeholder found in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder<'a> {
    /// The whole path, e.g. `step_0_output.text`.
    pub path: &'a str,
    /// Byte range of `{{ … }}` in the template.
    pub start: usize,
    pub end: usize,
}

fn is_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|seg| !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
}

/// Every placeholder in `template`, in order.
pub fn placeholders(template: &str) -> Vec<Placeholder<'_>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = template[from..].find("{{").map(|i| i + from) {
        let inner_start = open + 2;
        match template[inner_start..].find("}}").map(|i| i + inner_start) {
            Some(close) => {
                let inner = template[inner_start..close].trim_matches(' ');
                if is_path(inner) {
                    out.push(Placeholder {
                        path: inner,
                        start: open,
                        end: close + 2,
                    });
                    from = close + 2;
                } else {
                    // Not a placeholder: keep scanning just past this `{`.
                    from = open + 1;
                }
            }
            None => break,
        }
    }
    out
}

/// `step_K_output` / `step_K_input` named by a path's first segment.
pub fn step_reference(path: &str) -> Option<(StepRef, i64)> {
    let first = path.split('.').next()?;
    let rest = first.strip_prefix("step_")?;
    let (num, kind) = rest.rsplit_once('_')?;
    let k: i64 = num.parse().ok()?;
    match kind {
        "output" => Some((StepRef::Output, k)),
        "input" => Some((StepRef::Input, k)),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepRef {
    Output,
    Input,
}

/// Follows a dotted path through objects and arrays.
pub fn lookup<'v>(root: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = root;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(map) => map.get(seg)?,
            Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Compact JSON with object keys sorted, so a rendered prompt is the same
/// whichever database the context came from.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("missing variable '{0}'")]
pub struct MissingVariable(pub String);

/// Fills every placeholder. `input` (the step's user input), when given, is
/// what `{{input…}}` reads; otherwise `input` is looked up in the context.
pub fn render(template: &str, context: &Value, input: Option<&Value>) -> Result<String, MissingVariable> {
    let mut out = String::with_capacity(template.len());
    let mut last = 0;
    for p in placeholders(template) {
        out.push_str(&template[last..p.start]);
        let value = match (input, p.path.split_once('.')) {
            (Some(inp), Some(("input", rest))) => lookup(inp, rest),
            (Some(inp), None) if p.path == "input" => Some(inp),
            _ => lookup(context, p.path),
        };
        match value {
            Some(Value::String(s)) => out.push_str(s),
            Some(other) => out.push_str(&canonical_json(other)),
            None => return Err(MissingVariable(p.path.to_owned())),
        }
        last = p.end;
    }
    out.push_str(&template[last..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_the_documented_rules() {
        let ctx = json!({"code": "fn x() {}", "n": 3, "obj": {"b": 1, "a": [true, null]}, "items": ["x", "y"], "nil": null,
                         "step_0_output": {"text": "hi"}});
        assert_eq!(
            render("{{code}}|{{ code }}", &ctx, None).unwrap(),
            "fn x() {}|fn x() {}"
        );
        assert_eq!(
            render("{{n}} {{obj}}", &ctx, None).unwrap(),
            r#"3 {"a":[true,null],"b":1}"#
        );
        assert_eq!(
            render("{{items.1}} {{step_0_output.text}} {{nil}}", &ctx, None).unwrap(),
            "y hi null"
        );
        assert_eq!(
            render("{{input.level}}", &ctx, Some(&json!({"level": "basic"}))).unwrap(),
            "basic"
        );
        assert_eq!(
            render("{{missing.x}}", &ctx, None),
            Err(MissingVariable("missing.x".into()))
        );
        assert_eq!(
            render("{{items.5}}", &ctx, None),
            Err(MissingVariable("items.5".into()))
        );
    }

    #[test]
    fn leaves_non_placeholders_alone() {
        let ctx = json!({"x": "X"});
        assert_eq!(
            render("fn() { {x} } {{ {{x}} }} {{", &ctx, None).unwrap(),
            "fn() { {x} } {{ X }} {{"
        );
        assert_eq!(render("{{a b}} {{}} }}", &ctx, None).unwrap(), "{{a b}} {{}} }}");
    }

    #[test]
    fn finds_step_references() {
        assert_eq!(step_reference("step_12_output.text"), Some((StepRef::Output, 12)));
        assert_eq!(step_reference("step_1_input"), Some((StepRef::Input, 1)));
        assert_eq!(step_reference("step_x_output"), None);
        assert_eq!(step_reference("code"), None);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;
        use serde_json::{Map, Value, json};

        /// Text made of the characters that matter to the scanner.
        fn tricky_text() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    Just("{".to_owned()),
                    Just("}".to_owned()),
                    Just("{{".to_owned()),
                    Just("}}".to_owned()),
                    Just(" ".to_owned()),
                    Just(".".to_owned()),
                    Just("a".to_owned()),
                    Just("b_1".to_owned()),
                    Just("0".to_owned()),
                    Just("é🦀".to_owned()),
                    "[a-z{}. ]{0,4}",
                ],
                0..40,
            )
            .prop_map(|parts| parts.concat())
        }

        fn name() -> impl Strategy<Value = String> {
            "[a-z][a-z0-9_]{0,6}"
        }

        /// Plain text: no braces at all.
        fn plain() -> impl Strategy<Value = String> {
            "[^{}]{0,12}"
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn placeholders_are_well_formed(t in tricky_text()) {
                let mut last_end = 0;
                for p in placeholders(&t) {
                    prop_assert!(p.start >= last_end);
                    prop_assert!(t.is_char_boundary(p.start) && t.is_char_boundary(p.end));
                    let whole = &t[p.start..p.end];
                    prop_assert!(whole.starts_with("{{") && whole.ends_with("}}"));
                    prop_assert_eq!(whole[2..whole.len() - 2].trim_matches(' '), p.path);
                    last_end = p.end;
                }
            }

            #[test]
            fn rendering_never_panics_and_names_only_real_placeholders(
                t in tricky_text(),
                keys in proptest::collection::vec(name(), 0..4),
            ) {
                let ctx: Map<String, Value> = keys.iter().map(|k| (k.clone(), json!(k))).collect();
                match render(&t, &Value::Object(ctx), None) {
                    Ok(out) => {
                        // With no placeholders the text is returned as is.
                        if placeholders(&t).is_empty() {
                            prop_assert_eq!(out, t);
                        }
                    }
                    Err(MissingVariable(v)) => {
                        prop_assert!(placeholders(&t).iter().any(|p| p.path == v));
                    }
                }
            }

            #[test]
            fn rendering_substitutes_exactly(
                parts in proptest::collection::vec((plain(), name(), plain(), 0usize..3), 1..6),
            ) {
                let mut template = String::new();
                let mut expected = String::new();
                let mut ctx = Map::new();
                for (before, key, value, spaces) in &parts {
                    let pad = " ".repeat(*spaces);
                    template.push_str(before);
                    template.push_str(&format!("{{{{{pad}{key}{pad}}}}}"));
                    ctx.entry(key.clone()).or_insert_with(|| json!(value));
                    expected.push_str(before);
                    expected.push_str(ctx[key].as_str().unwrap());
                }
                prop_assert_eq!(render(&template, &Value::Object(ctx), None).unwrap(), expected);
            }

            #[test]
            fn objects_render_the_same_whatever_their_key_order(
                entries in proptest::collection::btree_map(name(), any::<i32>(), 0..6),
            ) {
                let forward: Map<String, Value> = entries.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                let backward: Map<String, Value> = entries.iter().rev().map(|(k, v)| (k.clone(), json!(v))).collect();
                let a = render("{{o}}", &json!({"o": forward}), None).unwrap();
                let b = render("{{o}}", &json!({"o": backward}), None).unwrap();
                prop_assert_eq!(&a, &b);
                let back: Value = serde_json::from_str(&a).unwrap();
                prop_assert_eq!(back, json!(entries));
            }
        }
    }
}
