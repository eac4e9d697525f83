//! Data limits: sizes of templates, prompts, inputs and contexts, measured as
//! the compact JSON that is stored and sent. Over a limit is
//! `BAD_USER_INPUT` at the edge, naming the field and the setting; a step
//! whose output would not fit fails with a message saying why.

use serde_json::Value;

use crate::config::Limits;
use crate::error::{ApiError, ApiResult};

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
}
