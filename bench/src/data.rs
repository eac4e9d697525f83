//! The benchmark's fixed data set, written through the server's own database
//! layer (sea-orm bulk inserts). It follows the data set of the peer
//! comparison in BENCHMARKS.md row for row — users, drives, memberships,
//! templates × 5 steps, executions × 5 step records with ~500-byte outputs —
//! so the reads measured here are the reads that comparison makes; ids are
//! derived from a key, so every load is the same.

use chrono::{Duration, NaiveDate, NaiveDateTime};
use entity::workflow_step as step;
use entity::workflow_template::{self as template, search_text};
use entity::{DriveRole, ExecutionStatus, StepStatus, Tags};
use entity::{drive, drive_member, user, workflow_execution as execution, workflow_execution_step as exec_step};
use sea_orm::sea_query::Query;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, TransactionTrait,
};
use serde_json::{Value, json};

/// How much data: the full set, or the CI-sized one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSize {
    pub templates: u32,
    pub executions: u32,
}

pub const USERS: u32 = 10;
pub const DRIVES: u32 = 5;
pub const STEPS: u32 = 5;
const NAMES: [&str; 10] = [
    "Ada Lovelace",
    "Grace Hopper",
    "Alan Turing",
    "Katherine Johnson",
    "Linus Torvalds",
    "Margaret Hamilton",
    "Dennis Ritchie",
    "Barbara Liskov",
    "Ken Thompson",
    "Frances Allen",
];
const DRIVE_NAMES: [&str; 5] = [
    "Engineering",
    "Security",
    "Docs & Content",
    "Data Science",
    "Operations",
];
const CATEGORIES: [&str; 6] = [
    "code-review",
    "security",
    "documentation",
    "data-analysis",
    "content-generation",
    "operations",
];
const TITLES: [&str; 6] = [
    "Code review",
    "Security audit",
    "API documentation",
    "Sales data analysis",
    "Blog post drafting",
    "Incident postmortem",
];
const TAGS: [&str; 10] = [
    "automated",
    "quality",
    "security",
    "weekly",
    "team",
    "draft",
    "ai",
    "review",
    "reporting",
    "priority",
];
const AGENTS: [&str; 5] = [
    "code-reviewer",
    "security-analyst",
    "documentation-writer",
    "summarizer",
    "qa-tester",
];

/// A CUID2-looking id (a letter and 23 hex digits) derived from `kind` and
/// `key`: two FNV-1a hashes, so loads are reproducible without a hash crate.
pub fn id(kind: &str, key: &str) -> String {
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in kind.bytes().chain(*b":").chain(key.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let hex = format!("{:016x}{:016x}", fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    format!("c{}", &hex[..23])
}

pub fn user_id(u: u32) -> String {
    id("user", &u.to_string())
}
pub fn user_name(u: u32) -> &'static str {
    NAMES[(u - 1) as usize]
}
pub fn drive_id(d: u32) -> String {
    id("drive", &d.to_string())
}
pub fn execution_id(e: u32) -> String {
    id("execution", &e.to_string())
}
/// Who started execution `e`.
pub fn execution_user(e: u32) -> u32 {
    (e * 3) % 10 + 1
}

fn at(base: NaiveDateTime, minutes: i64) -> NaiveDateTime {
    base + Duration::minutes(minutes)
}

fn base(y: i32, m: u32, d: u32, h: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(h, 0, 0))
        .expect("valid date")
}

fn status_of(e: u32) -> ExecutionStatus {
    match e % 20 {
        0..=11 => ExecutionStatus::Completed,
        12..=13 => ExecutionStatus::Running,
        14..=15 => ExecutionStatus::Paused,
        16..=18 => ExecutionStatus::Failed,
        _ => ExecutionStatus::Cancelled,
    }
}

/// An execution that stays PAUSED (idle subscriptions watch it): the first
/// with `e % 20 == 14`.
pub const PAUSED_EXECUTION: u32 = 14;

/// Row counts (users, drives, templates, steps, executions, execution steps).
pub async fn counts(db: &DatabaseConnection) -> Result<[u64; 6], DbErr> {
    Ok([
        user::Entity::find().count(db).await?,
        drive::Entity::find().count(db).await?,
        template::Entity::find().count(db).await?,
        step::Entity::find().count(db).await?,
        execution::Entity::find().count(db).await?,
        exec_step::Entity::find().count(db).await?,
    ])
}

pub fn expected(size: DataSize) -> [u64; 6] {
    [
        u64::from(USERS),
        u64::from(DRIVES),
        u64::from(size.templates),
        u64::from(size.templates * STEPS),
        u64::from(size.executions),
        u64::from(size.executions * STEPS),
    ]
}

/// Deletes every row of the seven tables (children first).
pub async fn clear(db: &DatabaseConnection) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    exec_step::Entity::delete_many().exec(&txn).await?;
    execution::Entity::delete_many().exec(&txn).await?;
    step::Entity::delete_many().exec(&txn).await?;
    template::Entity::delete_many().exec(&txn).await?;
    drive_member::Entity::delete_many().exec(&txn).await?;
    drive::Entity::delete_many().exec(&txn).await?;
    user::Entity::delete_many().exec(&txn).await?;
    txn.commit().await
}

const CHUNK: usize = 1000;

/// Writes the whole data set in one transaction.
pub async fn load(db: &DatabaseConnection, size: DataSize) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();

    let users = (1..=USERS).map(|u| user::ActiveModel {
        id: Set(user_id(u)),
        name: Set(Some(user_name(u).to_owned())),
        email: Set(Some(format!(
            "{}@example.com",
            user_name(u).to_lowercase().replace(' ', ".")
        ))),
    });
    user::Entity::insert_many(users).exec_without_returning(&txn).await?;

    let drive_base = base(2023, 12, 1, 9);
    let drives = (1..=DRIVES).map(|d| drive::ActiveModel {
        id: Set(drive_id(d)),
        name: Set(DRIVE_NAMES[(d - 1) as usize].to_owned()),
        owner_id: Set(user_id(d)),
        created_at: Set(drive_base + Duration::days(i64::from(d))),
    });
    drive::Entity::insert_many(drives).exec_without_returning(&txn).await?;

    let mut members = Vec::new();
    for d in 1..=DRIVES {
        for u in 1..=USERS {
            let role = if u == d {
                DriveRole::Owner
            } else if u == d + 5 {
                DriveRole::Admin
            } else if u % 4 == 0 {
                DriveRole::Viewer
            } else {
                DriveRole::Member
            };
            members.push(drive_member::ActiveModel {
                id: Set(id("member", &format!("{d}-{u}"))),
                drive_id: Set(drive_id(d)),
                user_id: Set(user_id(u)),
                role: Set(role),
                created_at: Set(drive_base + Duration::days(i64::from(d)) + Duration::hours(i64::from(u))),
            });
        }
    }
    drive_member::Entity::insert_many(members)
        .exec_without_returning(&txn)
        .await?;

    // Templates: drive ((i-1) % 5) + 1, createdAt rising with i.
    let tpl_base = base(2024, 1, 1, 8);
    let templates: Vec<(u32, NaiveDateTime)> = (1..=size.templates)
        .map(|i| (i, at(tpl_base, i64::from(i) * 53)))
        .collect();
    for chunk in templates.chunks(CHUNK) {
        let mut insert = Query::insert();
        insert.into_table(template::Entity).columns([
            template::Column::Id,
            template::Column::Name,
            template::Column::Description,
            template::Column::DriveId,
            template::Column::CreatedBy,
            template::Column::Category,
            template::Column::Tags,
            template::Column::IsPublic,
            template::Column::CreatedAt,
            template::Column::UpdatedAt,
            template::Column::SearchName,
            template::Column::SearchDescription,
        ]);
        for &(i, created) in chunk {
            let c = ((i - 1) % 6) as usize;
            let tag = |k: u32| TAGS[(k % 10) as usize].to_owned();
            let tags = if i % 4 == 0 {
                vec![tag(i), tag(i + 3), tag(i + 6)]
            } else {
                vec![tag(i), tag(i + 3)]
            };
            let name = format!("{} workflow #{i}", TITLES[c]);
            let description = format!(
                "Runs a five-step agent pipeline for {} work: gathers context, drafts, reviews, asks the owner \
                 to confirm, then publishes. Variant {i}.",
                CATEGORIES[c]
            );
            insert.values_panic([
                id("template", &i.to_string()).into(),
                name.clone().into(),
                description.clone().into(),
                drive_id((i - 1) % DRIVES + 1).into(),
                user_id((i * 7) % 10 + 1).into(),
                CATEGORIES[c].into(),
                Tags(tags).to_value(backend).into(),
                (i % 3 != 0).into(),
                created.into(),
                (created + Duration::days(i64::from(i % 7))).into(),
                search_text(&name).into(),
                search_text(&description).into(),
            ]);
        }
        txn.execute(&insert).await?;
    }

    let steps: Vec<step::ActiveModel> = templates
        .iter()
        .flat_map(|&(i, created)| (0..STEPS).map(move |s| (i, s, created)))
        .map(|(i, s, created)| step::ActiveModel {
            id: Set(id("step", &format!("{i}-{s}"))),
            workflow_template_id: Set(id("template", &i.to_string())),
            step_order: Set(s as i32),
            agent_id: Set(AGENTS[((i + s) % 5) as usize].to_owned()),
            prompt_template: Set(prompt(i, s)),
            requires_user_input: Set(s == 2),
            input_schema: Set(Some(input_schema(s))),
            metadata: Set(Some(json!({
                "timeoutMs": 30000 + 5000 * s,
                "retry": { "maxAttempts": 1 + (i + s) % 3, "backoffMs": 500 }
            }))),
            condition: Set(None),
            parallel_group: Set(None),
            approval: Set(None),
            created_at: Set(created),
            updated_at: Set(created + Duration::days(i64::from(i % 7))),
        })
        .collect();
    for chunk in steps.chunks(CHUNK) {
        step::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&txn)
            .await?;
    }

    let exec_base = base(2024, 6, 1, 0);
    let executions: Vec<u32> = (1..=size.executions).collect();
    for chunk in executions.chunks(CHUNK) {
        let mut rows = Vec::with_capacity(chunk.len());
        let mut step_rows = Vec::with_capacity(chunk.len() * STEPS as usize);
        for &e in chunk {
            let t = (e - 1) % size.templates + 1;
            let st = status_of(e);
            let cur = match st {
                ExecutionStatus::Completed => 4,
                ExecutionStatus::Paused => 2,
                _ => (e % 5) as i32,
            };
            let started = exec_base + Duration::seconds(i64::from(e) * 131);
            let secs = |n: u32| Duration::seconds(i64::from(n));
            let ended = match st {
                ExecutionStatus::Completed => started + secs(90 + e % 400),
                ExecutionStatus::Failed => started + secs(30 + e % 200),
                ExecutionStatus::Paused => started + secs(40),
                _ => started + secs(5),
            };
            let user = execution_user(e);
            rows.push(execution::ActiveModel {
                id: Set(execution_id(e)),
                workflow_template_id: Set(id("template", &t.to_string())),
                user_id: Set(user_id(user)),
                drive_id: Set(drive_id((t - 1) % DRIVES + 1)),
                status: Set(st),
                current_step_order: Set(Some(cur)),
                accumulated_context: Set(json!({
                    "language": "rust",
                    "code": format!("fn handle(req: Request) -> Result<Response> {{ route(req, {e}) }}"),
                    "ticket": format!("PS-{}", 1000 + e % 9000),
                    "requestedBy": format!("user {user}"),
                })),
                started_at: Set(Some(started)),
                paused_at: Set((st == ExecutionStatus::Paused).then(|| started + secs(40))),
                completed_at: Set((st == ExecutionStatus::Completed).then_some(ended)),
                failed_at: Set((st == ExecutionStatus::Failed).then_some(ended)),
                error_message: Set(match st {
                    ExecutionStatus::Failed => Some(format!(
                        "Step {cur} failed: agent timed out after 30000 ms (attempt 3 of 3)"
                    )),
                    ExecutionStatus::Cancelled => Some("Cancelled by user".into()),
                    _ => None,
                }),
                created_at: Set(started),
                updated_at: Set(ended),
                ..Default::default()
            });
            for s in 0..STEPS {
                let so = s as i32;
                let sst = if st == ExecutionStatus::Completed || so < cur {
                    StepStatus::Completed
                } else if so > cur {
                    StepStatus::Pending
                } else {
                    match st {
                        ExecutionStatus::Running => StepStatus::Running,
                        ExecutionStatus::Paused => StepStatus::Pending,
                        _ => StepStatus::Failed,
                    }
                };
                let step_start = started + secs(20 * s);
                step_rows.push(exec_step::ActiveModel {
                    id: Set(id("execution-step", &format!("{e}-{s}"))),
                    workflow_execution_id: Set(execution_id(e)),
                    workflow_step_id: Set(Some(id("step", &format!("{t}-{s}")))),
                    step_order: Set(so),
                    status: Set(sst),
                    agent_input: Set(Some(json!({ "prompt": rendered(t, s, e) }))),
                    agent_output: Set(Some(agent_output(e, s))),
                    user_input: Set((s == 2
                        && matches!(sst, StepStatus::Completed | StepStatus::Running | StepStatus::Failed))
                    .then(|| {
                        json!({
                            "detailLevel": (["basic", "detailed", "comprehensive"][(e % 3) as usize]),
                            "includeExamples": e % 2 == 0,
                        })
                    })),
                    started_at: Set((sst != StepStatus::Pending).then_some(step_start)),
                    completed_at: Set((sst == StepStatus::Completed).then(|| step_start + secs(15))),
                    error_message: Set(match sst {
                        StepStatus::Failed if st == ExecutionStatus::Cancelled => Some("cancelled".into()),
                        StepStatus::Failed => Some(format!(
                            "agent timed out after {} ms (attempt 3 of 3)",
                            30000 + 5000 * s
                        )),
                        _ => None,
                    }),
                    definition: Set(None),
                    reused: Set(false),
                    created_at: Set(started),
                    updated_at: Set(step_start + secs(15)),
                });
            }
        }
        execution::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await?;
        for part in step_rows.chunks(CHUNK) {
            exec_step::Entity::insert_many(part.to_vec())
                .exec_without_returning(&txn)
                .await?;
        }
    }
    txn.commit().await
}

/// Prompts of 180–206 characters with `{{variables}}`, as in seed.sql.
fn prompt(i: u32, s: u32) -> String {
    match s {
        0 => format!(
            "Review the following {{{{language}}}} change for workflow #{i}. List bugs, risky edge cases and \
             unclear naming, each with a severity (low/medium/high) and a one-line fix suggestion. Change: {{{{code}}}}"
        ),
        1 => "Using the review in {{step_0_output.text}}, analyse the same change for security problems: \
              injection, missing authorization checks, secrets in code and unsafe deserialization. Cite the \
              line of each finding."
            .into(),
        2 => "Draft documentation for the change at detail level {{input.detailLevel}}. Include a summary, the \
              public API it touches and, when {{input.includeExamples}} is true, two short usage examples."
            .into(),
        3 => "Summarize {{step_1_output.text}} and {{step_2_output.text}} for a busy reviewer in at most five \
              bullet points. Start with the most severe item and end with a clear merge or do-not-merge verdict."
            .into(),
        _ => format!(
            "Write a test plan for workflow #{i} that covers every finding in {{{{step_3_output.text}}}}: one \
             test per finding, with its name, the input it uses and the assertion that proves the fix."
        ),
    }
}

/// The prompt with each `{{var}}` replaced by `<var of run e>` (~225 bytes of agentInput).
fn rendered(t: u32, s: u32, e: u32) -> String {
    let p = prompt(t, s);
    let mut out = String::with_capacity(p.len() + 40);
    let mut rest = p.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else { break };
        let name = rest[start + 2..start + end].trim();
        out.push_str(&format!("<{name} of run {e}>"));
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

fn input_schema(s: u32) -> Value {
    if s == 2 {
        json!({
            "type": "object",
            "required": ["detailLevel"],
            "properties": {
                "detailLevel": { "type": "string", "enum": ["basic", "detailed", "comprehensive"] },
                "includeExamples": { "type": "boolean" }
            }
        })
    } else {
        json!({ "type": "object", "properties": { "notes": { "type": "string", "maxLength": 500 * (s + 1) } } })
    }
}

/// A ~500-byte agent answer.
fn agent_output(e: u32, s: u32) -> Value {
    let reference = &id("ref", &format!("{e}/{s}"))[1..13];
    json!({
        "text": format!(
            "Found {} issues for ticket PS-{}. The most severe is an unchecked index in the request parser \
             (line {}); the rest are naming and missing error context. Fixes are listed by impact. Ref {reference}.",
            2 + (e + s) % 5,
            1000 + e % 9000,
            10 + (e * 7 + s) % 300
        ),
        "model": "llama3.1:8b-instruct",
        "usage": {
            "promptTokens": 300 + e % 200,
            "completionTokens": 150 + (e * s) % 150,
            "totalTokens": 450 + e % 200 + (e * s) % 150
        },
        "finishReason": "stop",
        "findings": [
            { "severity": "high", "line": 10 + (e * 7 + s) % 300, "summary": "index used before bounds check" },
            { "severity": "low", "line": 20 + (e * 11 + s) % 300, "summary": "error lacks request context" }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_cuid_shaped() {
        assert_eq!(id("user", "1"), id("user", "1"));
        assert_ne!(id("user", "1"), id("user", "2"));
        let i = id("drive", "1");
        assert_eq!(i.len(), 24);
        assert!(i.starts_with('c') && i[1..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn prompts_and_outputs_have_the_seed_sizes() {
        for s in 0..STEPS {
            let n = prompt(996, s).len();
            assert!((170..=215).contains(&n), "step {s}: {n} chars");
        }
        let out = agent_output(1, 0).to_string().len();
        assert!((450..=600).contains(&out), "{out} bytes");
        assert!(!rendered(1, 0, 1).contains("{{"));
    }
}
