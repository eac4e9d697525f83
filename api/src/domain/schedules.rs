//! Workflow schedules: create, change, delete, list; and for the scheduler,
//! the due ones and the conditional claim of one due time.

use chrono::NaiveDateTime;
use entity::{workflow_schedule as schedule, workflow_template as template};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::Value;

use super::pagination::{Cursor, Page};
use super::{new_id, now};
use crate::core::cron::Schedule;
use crate::domain::access::TemplateScope;

/// A validated schedule ready to be written.
pub struct NewSchedule {
    pub template: template::Model,
    pub created_by: String,
    pub schedule: Schedule,
    pub context: Value,
    pub enabled: bool,
}

/// Validated changes; `None` leaves a field as it is. `schedule` is the
/// cron and time zone as they will be (changed or not).
pub struct ScheduleChanges {
    pub schedule: Schedule,
    pub timing_changed: bool,
    pub context: Option<Value>,
    pub enabled: Option<bool>,
}

/// The first due time is the next one after `clock_now`, the time the
/// scheduler goes by (`Engine::clock`).
pub async fn create(
    db: &impl ConnectionTrait,
    new: NewSchedule,
    clock_now: NaiveDateTime,
) -> Result<schedule::Model, DbErr> {
    let at = now();
    let row = schedule::Model {
        id: new_id(),
        template_id: new.template.id.clone(),
        drive_id: new.template.drive_id.clone(),
        created_by: new.created_by,
        cron: new.schedule.expression().to_owned(),
        timezone: new.schedule.timezone().to_owned(),
        context: new.context,
        enabled: new.enabled,
        next_run_at: new.enabled.then(|| new.schedule.next_after(clock_now)).flatten(),
        last_run_at: None,
        last_execution_id: None,
        last_error: None,
        created_at: at,
        updated_at: at,
    };
    schedule::Entity::insert(schedule::ActiveModel::from(row.clone()))
        .exec_without_returning(db)
        .await?;
    Ok(row)
}

/// Applies `changes`. A new cron or time zone, or enabling, sets the next
/// due time from `clock_now` (times missed while disabled are not made up);
/// disabling clears it.
pub async fn update(
    db: &impl ConnectionTrait,
    current: &schedule::Model,
    changes: ScheduleChanges,
    clock_now: NaiveDateTime,
) -> Result<schedule::Model, DbErr> {
    let at = now();
    let mut row = current.clone();
    row.cron = changes.schedule.expression().to_owned();
    row.timezone = changes.schedule.timezone().to_owned();
    if let Some(c) = changes.context {
        row.context = c;
    }
    let enabling = changes.enabled == Some(true) && !current.enabled;
    if let Some(e) = changes.enabled {
        row.enabled = e;
    }
    if !row.enabled {
        row.next_run_at = None;
    } else if changes.timing_changed || enabling || row.next_run_at.is_none() {
        row.next_run_at = changes.schedule.next_after(clock_now);
    }
    row.updated_at = at;
    let active = schedule::ActiveModel {
        id: NotSet,
        template_id: NotSet,
        drive_id: NotSet,
        created_by: NotSet,
        cron: Set(row.cron.clone()),
        timezone: Set(row.timezone.clone()),
        context: Set(row.context.clone()),
        enabled: Set(row.enabled),
        next_run_at: Set(row.next_run_at),
        last_run_at: NotSet,
        last_execution_id: NotSet,
        last_error: NotSet,
        created_at: NotSet,
        updated_at: Set(at),
    };
    schedule::Entity::update_many()
        .set(active)
        .filter(schedule::Column::Id.eq(current.id.clone()))
        .exec(db)
        .await?;
    Ok(row)
}

pub async fn delete(db: &impl ConnectionTrait, id: &str) -> Result<bool, DbErr> {
    let res = schedule::Entity::delete_by_id(id.to_owned()).exec(db).await?;
    Ok(res.rows_affected > 0)
}

pub async fn find(db: &impl ConnectionTrait, id: &str) -> Result<Option<schedule::Model>, DbErr> {
    schedule::Entity::find_by_id(id.to_owned()).one(db).await
}

/// A schedule and its template, in one statement.
pub async fn find_with_template(
    db: &impl ConnectionTrait,
    id: &str,
) -> Result<Option<(schedule::Model, template::Model)>, DbErr> {
    let row = schedule::Entity::find_by_id(id.to_owned())
        .find_also_related(template::Entity)
        .one(db)
        .await?;
    Ok(row.and_then(|(s, t)| t.map(|t| (s, t))))
}

/// The schedules of many templates, each template's newest first.
pub async fn of_templates(db: &impl ConnectionTrait, template_ids: &[String]) -> Result<Vec<schedule::Model>, DbErr> {
    if template_ids.is_empty() {
        return Ok(Vec::new());
    }
    schedule::Entity::find()
        .filter(schedule::Column::TemplateId.is_in(template_ids.iter().cloned()))
        .order_by_desc(schedule::Column::CreatedAt)
        .order_by_desc(schedule::Column::Id)
        .all(db)
        .await
}

/// The schedules of a drive whose templates the viewer may see; `None` when
/// they may see none.
pub fn list_condition(drive_id: &str, scope: &TemplateScope) -> Option<Condition> {
    let in_drive = Condition::all().add(schedule::Column::DriveId.eq(drive_id));
    match scope {
        TemplateScope::None => None,
        TemplateScope::All => Some(in_drive),
        TemplateScope::PublicOrCreatedBy(user) => Some(
            in_drive.add(
                Condition::any()
                    .add(template::Column::IsPublic.eq(true))
                    .add(template::Column::CreatedBy.eq(user.clone())),
            ),
        ),
    }
}

fn visible(cond: Condition) -> sea_orm::Select<schedule::Entity> {
    schedule::Entity::find().inner_join(template::Entity).filter(cond)
}

pub async fn list(
    db: &impl ConnectionTrait,
    cond: Condition,
    first: u64,
    after: Option<&Cursor>,
) -> Result<Page<schedule::Model>, DbErr> {
    super::pagination::newest_first(
        db,
        visible(cond),
        schedule::Column::CreatedAt,
        schedule::Column::Id,
        first,
        after,
    )
    .await
}

pub async fn count(db: &impl ConnectionTrait, cond: Condition) -> Result<u64, DbErr> {
    visible(cond).count(db).await
}

/// Enabled schedules whose next due time has come, earliest first.
pub async fn due(db: &impl ConnectionTrait, at: NaiveDateTime, limit: u64) -> Result<Vec<schedule::Model>, DbErr> {
    schedule::Entity::find()
        .filter(schedule::Column::Enabled.eq(true))
        .filter(schedule::Column::NextRunAt.lte(at))
        .order_by_asc(schedule::Column::NextRunAt)
        .limit(limit)
        .all(db)
        .await
}

/// What became of one due time.
pub enum Fire {
    /// A run is being started (its row follows in the same transaction).
    Started,
    /// No run: the reason is kept as `lastError`.
    Skipped(String),
}

/// Claims the due time `due_at` of schedule `id`: moves `nextRunAt` on to
/// `next`, only while the schedule is enabled and `nextRunAt` is still
/// `due_at`. Of several instances claiming the same due time, exactly one
/// gets `true`; the others wait for its transaction and then match no row.
pub async fn claim(
    db: &impl ConnectionTrait,
    id: &str,
    due_at: NaiveDateTime,
    next: Option<NaiveDateTime>,
    fire: &Fire,
) -> Result<bool, DbErr> {
    let at = now();
    let (last_run_at, last_error) = match fire {
        Fire::Started => (Set(Some(at)), Set(None)),
        Fire::Skipped(reason) => (NotSet, Set(Some(reason.clone()))),
    };
    let res = schedule::Entity::update_many()
        .set(schedule::ActiveModel {
            next_run_at: Set(next),
            last_run_at,
            last_error,
            updated_at: Set(at),
            ..Default::default()
        })
        .filter(schedule::Column::Id.eq(id))
        .filter(schedule::Column::Enabled.eq(true))
        .filter(schedule::Column::NextRunAt.eq(due_at))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Records the run a claimed due time started (after its row was written,
/// in the same transaction).
pub async fn set_last_execution(db: &impl ConnectionTrait, id: &str, execution_id: &str) -> Result<(), DbErr> {
    schedule::Entity::update_many()
        .set(schedule::ActiveModel {
            last_execution_id: Set(Some(execution_id.to_owned())),
            ..Default::default()
        })
        .filter(schedule::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}
