//! Checks run when a template or step is saved. Each failure is
//! `BAD_USER_INPUT` with a message that names the field; the caller writes
//! nothing when any check fails.

use serde_json::Value;

use crate::core::{condition, prompt};
use crate::error::{ApiError, ApiResult, ValidationProblem};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_CHARS: usize = 100;

/// A template name: trimmed, non-empty, at most 200 characters.
pub fn template_name(field: &str, raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ApiError::bad_input(format!("{field}: must not be empty")));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_input(format!(
            "{field}: must be at most {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_owned())
}

/// Optional free text: trimmed; empty becomes absent.
pub fn optional_text(field: &str, raw: Option<String>, max_chars: usize) -> ApiResult<Option<String>> {
    match raw.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()) {
        Some(s) if s.chars().count() > max_chars => Err(ApiError::bad_input(format!(
            "{field}: must be at most {max_chars} characters"
        ))),
        other => Ok(other),
    }
}

/// Tags: trimmed, non-empty, without duplicates (first occurrence kept).
pub fn tags(field: &str, raw: Vec<String>) -> ApiResult<Vec<String>> {
    if raw.len() > MAX_TAGS {
        return Err(ApiError::bad_input(format!("{field}: at most {MAX_TAGS} tags")));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let t = t.trim().to_owned();
        if t.is_empty() {
            return Err(ApiError::bad_input(format!("{field}[{i}]: a tag must not be empty")));
        }
        if t.chars().count() > MAX_TAG_CHARS {
            return Err(ApiError::bad_input(format!(
                "{field}[{i}]: a tag must be at most {MAX_TAG_CHARS} characters"
            )));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// `id` must be one of the `known` agent ids (the built-ins and the agents
/// file's).
pub fn agent_id<'a>(field: &str, id: &str, known: impl Iterator<Item = &'a str>) -> ApiResult<()> {
    let known: Vec<&str> = known.collect();
    if !known.contains(&id) {
        return Err(ApiError::bad_input(format!(
            "{field}: unknown agent '{id}' (known agents: {})",
            known.join(", ")
        )));
    }
    Ok(())
}

pub fn prompt_template(field: &str, template: &str) -> ApiResult<()> {
    if template.trim().is_empty() {
        return Err(ApiError::bad_input(format!("{field}: must not be empty")));
    }
    Ok(())
}

/// `inputSchema` must be a JSON Schema that compiles.
pub fn input_schema(field: &str, schema: &Value) -> ApiResult<()> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err(ApiError::bad_input(format!("{field}: must be a JSON Schema object")));
    }
    jsonschema::validator_for(schema)
        .map(|_| ())
        .map_err(|e| ApiError::bad_input(format!("{field}: not a valid JSON Schema: {e}")))
}

/// `condition` must parse as JSON Logic.
pub fn condition(field: &str, rule: &Value) -> ApiResult<()> {
    condition::check(rule).map_err(|e| ApiError::bad_input(format!("{field}: not a valid JSON Logic expression: {e}")))
}

/// `metadata` is free-form JSON, but the keys the runner reads must be ones
/// it can read (the same reading the runner does).
pub fn metadata(field: &str, meta: &Value) -> ApiResult<()> {
    if !meta.is_object() {
        return Err(ApiError::bad_input(format!("{field}: must be a JSON object")));
    }
    crate::core::definition::Attempts::parse(Some(meta))
        .map(|_| ())
        .map_err(|e| ApiError::bad_input(format!("{field}.{e}")))
}

/// A step as the reference check sees it.
pub struct OrderedPrompt<'a> {
    pub order: i32,
    pub prompt: &'a str,
}

/// No prompt may name `step_K_output` of a step that does not run before it
/// (nor `step_K_input` of a later step). Checked over the whole template
/// after every change, so a reorder or delete cannot break a prompt.
pub fn step_references(steps: &[OrderedPrompt<'_>], field_of: impl Fn(i32) -> String) -> ApiResult<()> {
    for s in steps {
        for p in prompt::placeholders(s.prompt) {
            if let Some((kind, k)) = prompt::step_reference(p.path) {
                let bad = match kind {
                    prompt::StepRef::Output => k >= i64::from(s.order),
                    prompt::StepRef::Input => k > i64::from(s.order),
                };
                if bad {
                    let name = p.path.split('.').next().unwrap_or(p.path);
                    return Err(ApiError::bad_input(format!(
                        "{}: '{{{{{}}}}}' names {name}, but step {k} does not run before step {} (this step)",
                        field_of(s.order),
                        p.path,
                        s.order
                    )));
                }
            }
        }
    }
    Ok(())
}

/// One step of a template as the parallel-group rules see it, in order.
pub struct GroupedStep<'a> {
    pub prompt: &'a str,
    pub group: Option<&'a str>,
    pub requires_input: bool,
    pub approval: bool,
}

/// docs/runs.md, "Parallel groups": a group's steps are adjacent, none of them waits
/// for input or approval, and no prompt in a group names the output of a
/// step in the same group (they run at the same time).
pub fn parallel_groups(steps: &[GroupedStep<'_>]) -> ApiResult<()> {
    let mut ended: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut previous: Option<&str> = None;
    for (i, s) in steps.iter().enumerate() {
        if previous != s.group
            && let Some(p) = previous
        {
            ended.insert(p);
        }
        previous = s.group;
        let Some(group) = s.group else { continue };
        if ended.contains(group) {
            return Err(ApiError::bad_input(format!(
                "steps[{i}].parallelGroup: the steps of group '{group}' must be adjacent"
            )));
        }
        if s.requires_input || s.approval {
            return Err(ApiError::bad_input(format!(
                "steps[{i}].parallelGroup: a step of group '{group}' cannot wait for user input or approval"
            )));
        }
        for p in prompt::placeholders(s.prompt) {
            if let Some((prompt::StepRef::Output, k)) = prompt::step_reference(p.path) {
                let same = usize::try_from(k)
                    .ok()
                    .and_then(|k| steps.get(k))
                    .is_some_and(|other| other.group == Some(group));
                if same {
                    return Err(ApiError::bad_input(format!(
                        "steps[{i}].promptTemplate: '{{{{{}}}}}' names the output of step {k}, which runs at the same time in group '{group}'",
                        p.path
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Validates `input` against a step's `inputSchema`, listing every problem.
pub fn user_input(schema: Option<&Value>, input: &Value) -> ApiResult<()> {
    let Some(schema) = schema else { return Ok(()) };
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| ApiError::Internal(format!("stored inputSchema does not compile: {e}")))?;
    let problems: Vec<ValidationProblem> = validator
        .iter_errors(input)
        .map(|e| ValidationProblem {
            path: e.instance_path().to_string(),
            message: e.to_string(),
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::BadUserInput {
            message: format!(
                "input: does not match the step's inputSchema ({} problem(s))",
                problems.len()
            ),
            validation_errors: problems,
        })
    }
}
