//! The committed `schema.graphql` is the schema the server serves.

#[test]
fn committed_schema_graphql_matches_the_server() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run `cargo run -- schema > schema.graphql` at the workspace root",
            path.display()
        )
    });
    let served = workflows::graphql::sdl();
    if committed.trim_end() != served.trim_end() {
        let first_diff = committed
            .lines()
            .zip(served.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("line {}: committed `{a}`, server `{b}`", i + 1))
            .unwrap_or_else(|| "one is a prefix of the other".into());
        panic!(
            "schema.graphql is out of date ({first_diff}); run `cargo run -- schema > schema.graphql` at the workspace root"
        );
    }
}

#[test]
fn schema_has_the_root_types_and_names_of_api_md() {
    let sdl = workflows::graphql::sdl();
    for needle in [
        "type Query",
        "type Mutation",
        "workflowTemplates(driveId: ID!, filter: WorkflowTemplateFilter, first: Int, after: String): WorkflowTemplateConnection!",
        "createWorkflowTemplate(input: CreateWorkflowTemplateInput!): WorkflowTemplate!",
        "reorderWorkflowSteps(templateId: ID!, stepIds: [ID!]!): WorkflowTemplate!",
        "addWorkflowStep(templateId: ID!, input: WorkflowStepInput!, stepOrder: Int): WorkflowStep!",
        "enum DriveRole",
        "scalar DateTime",
        "scalar JSON",
    ] {
        assert!(sdl.contains(needle), "schema lacks `{needle}`:\n{sdl}");
    }
}
