//! Step conditions: JSON Logic over the accumulated context, through the
//! datalogic-rs engine.

use serde_json::Value;

/// Checks that `rule` is a JSON Logic expression the engine accepts.
pub fn check(rule: &Value) -> Result<(), String> {
    datalogic_rs::compile(&rule.to_string())
        .map(|_| ())
        .map_err(|e| e.to_string())
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
    }
}
