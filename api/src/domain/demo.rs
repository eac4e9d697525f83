//! The demo a newcomer gets on an empty database without `JWT_SECRET`: a
//! user, a drive and the README's "Code Review Workflow" (built-in `echo`
//! agents), so a workflow can be run and watched at once.

use entity::drive;
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};
use serde_json::json;

use crate::auth::Viewer;
use crate::domain::steps::NewStep;
use crate::domain::templates::{self, NewTemplate};
use crate::domain::{drives, users};

/// The demo user, whose token the server prints at start without `JWT_SECRET`.
pub const DEMO_USER_ID: &str = "demo-user";

pub async fn seed_if_empty(db: &DatabaseConnection) -> anyhow::Result<()> {
    if drive::Entity::find().count(db).await? > 0 {
        return Ok(());
    }
    let viewer = Viewer {
        id: DEMO_USER_ID.into(),
        name: Some("Demo User".into()),
        email: None,
    };
    users::upsert(db, &viewer).await?;
    let drive = drives::create(db, DEMO_USER_ID, "Demo drive").await?;
    let step = |prompt: &str| NewStep {
        agent_id: "echo".into(),
        prompt_template: prompt.into(),
        requires_user_input: false,
        input_schema: None,
        metadata: None,
        condition: None,
        parallel_group: None,
        approval: None,
    };
    let mut docs = step(
        "Generate documentation based on review: {{step_0_output.text}} and security analysis: {{step_1_output.text}}. Detail: {{input.detailLevel}}",
    );
    docs.requires_user_input = true;
    docs.input_schema = Some(json!({
        "type": "object",
        "properties": {
            "includeExamples": {"type": "boolean"},
            "detailLevel": {"type": "string", "enum": ["basic", "detailed", "comprehensive"]}
        },
        "required": ["detailLevel"]
    }));
    templates::create(
        db,
        NewTemplate {
            drive_id: drive.id.clone(),
            created_by: DEMO_USER_ID.into(),
            name: "Code Review Workflow".into(),
            description: Some("Automated code review with security analysis".into()),
            category: Some("code-review".into()),
            tags: vec!["security".into(), "quality".into(), "automated".into()],
            is_public: true,
            steps: vec![
                step("Review the following code for bugs and improvements: {{code}}"),
                step("Analyze security vulnerabilities in: {{code}}. Previous review: {{step_0_output.text}}"),
                docs,
            ],
            parent_template_id: None,
        },
    )
    .await?;
    tracing::info!(drive = %drive.id, "created the demo drive with the Code Review Workflow");
    Ok(())
}
