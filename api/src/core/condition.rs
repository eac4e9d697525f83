//! Step conditions: JSON Logic over the accumulated context, through the
//! datalogic-rs engine.

use serde_json::Value;

/// The operators of JSON Logic (jsonlogic.com), the ones a condition may use.
const OPERATORS: &[&str] = &[
    "var",
    "missing",
    "missing_some",
    "if",
    "?:",
    "==",
    "===",
    "!=",
    "!==",
    "!",
    "!!",
    "or",
    "and",
    ">",
    ">=",
    "<",
    "<=",
    "max",
    "min",
    "+",
    "-",
    "*",
    "/",
    "%",
    "map",
    "reduce",
    "filter",
    "all",
    "none",
    "some",
    "merge",
    "in",
    "cat",
    "substr",
    "log",
];

/// Checks that `rule` is a JSON Logic expression: every object is one known
/// operator applied to valid arguments, and the engine compiles it.
pub fn check(rule: &Value) -> Result<(), String> {
    check_node(rule, "")?;
    datalogic_rs::compile(&rule.to_string())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn check_node(node: &Value, at: &str) -> Result<(), String> {
    match node {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_node(item, &format!("{at}/{i}"))),
        Value::Object(map) => {
            let mut entries = map.iter();
            let (Some((op, args)), None) = (entries.next(), entries.next()) else {
                return Err(format!(
                    "{}an operation must be an object with exactly one key, the operator",
                    location(at)
                ));
            };
            if !OPERATORS.contains(&op.as_str()) {
                return Err(format!("{}unknown operator '{op}'", location(at)));
            }
            check_node(args, &format!("{at}/{op}"))
        }
        _ => Ok(()),
    }
}

fn location(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("at {at}: ")
    }
}

/// Evaluates `rule` over `context` with JSON Logic truthiness.
pub fn evaluate(rule: &Value, context: &Value) -> Result<bool, String> {
    let out = datalogic_rs::eval_str(&rule.to_string(), &context.to_string()).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    Ok(truthy(&v))
}

/// JSON Logic truthiness: false, null, 0, "" and [] are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_over_context() {
        let rule = json!({"==": [{"var": "step_0_output.text"}, "ok"]});
        assert!(evaluate(&rule, &json!({"step_0_output": {"text": "ok"}})).unwrap());
        assert!(!evaluate(&rule, &json!({"step_0_output": {"text": "no"}})).unwrap());
        assert!(evaluate(&json!(true), &json!({})).unwrap());
    }

    #[test]
    fn rejects_unknown_operators() {
        assert!(check(&json!({"no_such_op": [1, 2]})).is_err());
        assert!(check(&json!({">": [{"var": "x"}, 1]})).is_ok());
        assert!(
            check(&json!({"and": [true, {"bogus": 1}]}))
                .unwrap_err()
                .contains("at /and/1: unknown operator 'bogus'")
        );
        assert!(check(&json!({"==": [1, 1], "!=": [1, 2]})).is_err());
        assert!(check(&json!(true)).is_ok());
    }
}
