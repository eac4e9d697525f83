//! Template versions and re-runs (docs/domain.md, "Template versions";
//! docs/runs.md, "Re-running from a step"):
//! - `workflow_templates.version` (from 1) and `parentTemplateId` (the
//!   template it was duplicated from; SET NULL);
//! - `workflow_template_versions`: the whole template as each version left
//!   it (templateId CASCADE, createdBy CASCADE like a template's creator);
//! - `workflow_executions.templateVersion` and `retryOfExecutionId` (SET NULL);
//! - `workflow_execution_steps.reused`: copied from the run retried.
//!
//! Every existing template gets its current state as version 1.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000008_versions_retries"
    }
}

const POSTGRES: &str = r#"
ALTER TABLE workflow_templates ADD COLUMN "version" integer NOT NULL DEFAULT 1;
ALTER TABLE workflow_templates ADD COLUMN "parentTemplateId" text REFERENCES workflow_templates ("id") ON DELETE SET NULL;
CREATE INDEX workflow_templates_parent_template_id_idx ON workflow_templates ("parentTemplateId");
CREATE TABLE workflow_template_versions (
    "id"          text PRIMARY KEY,
    "templateId"  text NOT NULL REFERENCES workflow_templates ("id") ON DELETE CASCADE,
    "version"     integer NOT NULL,
    "name"        text NOT NULL,
    "description" text,
    "category"    text,
    "tags"        text[],
    "steps"       jsonb NOT NULL DEFAULT '[]'::jsonb,
    "createdBy"   text NOT NULL REFERENCES users ("id") ON DELETE CASCADE,
    "createdAt"   timestamp NOT NULL DEFAULT now(),
    "updatedAt"   timestamp NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX workflow_template_versions_template_id_version_key ON workflow_template_versions ("templateId", "version");
CREATE INDEX workflow_template_versions_created_by_idx ON workflow_template_versions ("createdBy");
ALTER TABLE workflow_executions ADD COLUMN "templateVersion" integer NOT NULL DEFAULT 1;
ALTER TABLE workflow_executions ADD COLUMN "retryOfExecutionId" text REFERENCES workflow_executions ("id") ON DELETE SET NULL;
CREATE INDEX workflow_executions_retry_of_execution_id_idx ON workflow_executions ("retryOfExecutionId");
ALTER TABLE workflow_execution_steps ADD COLUMN "reused" boolean NOT NULL DEFAULT false;
"#;

const SQLITE: &str = r#"
ALTER TABLE workflow_templates ADD COLUMN "version" integer NOT NULL DEFAULT 1;
ALTER TABLE workflow_templates ADD COLUMN "parentTemplateId" text REFERENCES workflow_templates ("id") ON DELETE SET NULL;
CREATE INDEX workflow_templates_parent_template_id_idx ON workflow_templates ("parentTemplateId");
CREATE TABLE workflow_template_versions (
    "id"          text PRIMARY KEY,
    "templateId"  text NOT NULL REFERENCES workflow_templates ("id") ON DELETE CASCADE,
    "version"     integer NOT NULL,
    "name"        text NOT NULL,
    "description" text,
    "category"    text,
    "tags"        text CHECK ("tags" IS NULL OR json_type("tags") = 'array'),
    "steps"       text NOT NULL DEFAULT '[]',
    "createdBy"   text NOT NULL REFERENCES users ("id") ON DELETE CASCADE,
    "createdAt"   text NOT NULL,
    "updatedAt"   text NOT NULL
);
CREATE UNIQUE INDEX workflow_template_versions_template_id_version_key ON workflow_template_versions ("templateId", "version");
CREATE INDEX workflow_template_versions_created_by_idx ON workflow_template_versions ("createdBy");
ALTER TABLE workflow_executions ADD COLUMN "templateVersion" integer NOT NULL DEFAULT 1;
ALTER TABLE workflow_executions ADD COLUMN "retryOfExecutionId" text REFERENCES workflow_executions ("id") ON DELETE SET NULL;
CREATE INDEX workflow_executions_retry_of_execution_id_idx ON workflow_executions ("retryOfExecutionId");
ALTER TABLE workflow_execution_steps ADD COLUMN "reused" boolean NOT NULL DEFAULT 0;
"#;

/// A template's steps as a version stores them (`domain::versions::VersionStep`).
const STEPS_POSTGRES: &str = r#"(SELECT COALESCE(jsonb_agg(jsonb_build_object(
      'id', s."id", 'stepOrder', s."stepOrder", 'agentId', s."agentId",
      'promptTemplate', s."promptTemplate", 'requiresUserInput', s."requiresUserInput",
      'inputSchema', s."inputSchema", 'metadata', s."metadata", 'condition', s."condition")
      ORDER BY s."stepOrder"), '[]'::jsonb)
    FROM workflow_steps s WHERE s."workflowTemplateId" = t."id")"#;

const STEPS_SQLITE: &str = r#"(SELECT COALESCE(json_group_array(json(o.step)), '[]') FROM (
      SELECT json_object(
        'id', s."id", 'stepOrder', s."stepOrder", 'agentId', s."agentId",
        'promptTemplate', s."promptTemplate",
        'requiresUserInput', CASE WHEN s."requiresUserInput" THEN json('true') ELSE json('false') END,
        'inputSchema', json(s."inputSchema"), 'metadata', json(s."metadata"),
        'condition', json(s."condition")) AS step
      FROM workflow_steps s WHERE s."workflowTemplateId" = t."id" ORDER BY s."stepOrder") o)"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = db.get_database_backend();
        let (ddl, steps) = match backend {
            DbBackend::Postgres => (POSTGRES, STEPS_POSTGRES),
            _ => (SQLITE, STEPS_SQLITE),
        };
        for stmt in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            db.execute_unprepared(stmt).await?;
        }
        // Version 1 of every template, one id each (CUID2, made here).
        let ids = db
            .query_all_raw(Statement::from_string(backend, "SELECT id FROM workflow_templates"))
            .await?;
        for chunk in ids.chunks(200) {
            let mut values = Vec::new();
            let mut pairs = Vec::new();
            for row in chunk {
                let id: String = row.try_get("", "id")?;
                let n = values.len();
                pairs.push(match backend {
                    DbBackend::Postgres => format!("SELECT ${}::text AS tid, ${}::text AS vid", n + 1, n + 2),
                    _ => "SELECT ? AS tid, ? AS vid".to_owned(),
                });
                values.push(id.into());
                values.push(cuid2::create_id().into());
            }
            let sql = format!(
                r#"INSERT INTO workflow_template_versions
                     ("id", "templateId", "version", "name", "description", "category", "tags", "steps", "createdBy", "createdAt", "updatedAt")
                   SELECT m.vid, t."id", 1, t."name", t."description", t."category", t."tags", {steps},
                          t."createdBy", t."updatedAt", t."updatedAt"
                   FROM workflow_templates t JOIN ({}) m ON m.tid = t."id""#,
                pairs.join(" UNION ALL ")
            );
            db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for stmt in [
            r#"ALTER TABLE workflow_execution_steps DROP COLUMN "reused""#,
            "DROP INDEX workflow_executions_retry_of_execution_id_idx",
            r#"ALTER TABLE workflow_executions DROP COLUMN "retryOfExecutionId""#,
            r#"ALTER TABLE workflow_executions DROP COLUMN "templateVersion""#,
            "DROP TABLE workflow_template_versions",
            "DROP INDEX workflow_templates_parent_template_id_idx",
            r#"ALTER TABLE workflow_templates DROP COLUMN "parentTemplateId""#,
            r#"ALTER TABLE workflow_templates DROP COLUMN "version""#,
        ] {
            db.execute_unprepared(stmt).await?;
        }
        Ok(())
    }
}
