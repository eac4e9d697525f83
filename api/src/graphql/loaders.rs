//! DataLoaders for every nested field: each batches the keys of one level of
//! the response into a single `IN (…)` query. Made per request, so nothing is
//! cached across viewers.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use chrono::NaiveDateTime;
use entity::{
    drive, drive_member, user, workflow_execution as execution, workflow_execution_step as exec_step,
    workflow_schedule as schedule, workflow_step as step, workflow_template as template,
    workflow_template_version as version,
};
use sea_orm::{DatabaseConnection, DbErr};

use crate::domain;
use crate::domain::pagination::{Cursor, Page};

pub type LoadError = Arc<DbErr>;

type Cached<T> = DataLoader<T, HashMapCache>;

macro_rules! by_id_loader {
    ($name:ident, $model:ty, $find:path) => {
        pub struct $name(pub DatabaseConnection);

        impl Loader<String> for $name {
            type Value = $model;
            type Error = LoadError;

            async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
                let rows = $find(&self.0, keys).await.map_err(Arc::new)?;
                Ok(rows.into_iter().map(|r| (r.id.clone(), r)).collect())
            }
        }
    };
}

by_id_loader!(UserLoader, user::Model, domain::users::find_many);
by_id_loader!(DriveLoader, drive::Model, domain::drives::find_many);
by_id_loader!(TemplateLoader, template::Model, domain::templates::find_many);
by_id_loader!(StepLoader, step::Model, domain::steps::find_many);
by_id_loader!(ExecutionLoader, execution::Model, domain::executions::find_many);

/// The decisions on each step record, oldest first.
pub struct ApprovalsOfStep(pub DatabaseConnection);

impl Loader<String> for ApprovalsOfStep {
    type Value = Vec<entity::workflow_execution_approval::Model>;
    type Error = LoadError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = domain::approvals::of_steps(&self.0, keys).await.map_err(Arc::new)?;
        let mut map: HashMap<String, Self::Value> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for r in rows {
            map.entry(r.execution_step_id.clone()).or_default().push(r);
        }
        Ok(map)
    }
}

/// The executions that retry each execution, oldest first.
pub struct RetriesOf(pub DatabaseConnection);

impl Loader<String> for RetriesOf {
    type Value = Vec<execution::Model>;
    type Error = LoadError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = domain::executions::retries_of(&self.0, keys).await.map_err(Arc::new)?;
        let mut map: HashMap<String, Self::Value> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for r in rows {
            if let Some(of) = r.retry_of_execution_id.clone() {
                map.entry(of).or_default().push(r);
            }
        }
        Ok(map)
    }
}

/// One page of a template's versions: newest first, `first` of them (and
/// one more, to tell whether there is a next page) below `before`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionPage {
    pub template_id: String,
    pub first: u64,
    pub before: Option<i32>,
}

pub struct VersionsOfTemplate(pub DatabaseConnection);

impl Loader<VersionPage> for VersionsOfTemplate {
    type Value = Vec<version::Model>;
    type Error = LoadError;

    async fn load(&self, keys: &[VersionPage]) -> Result<HashMap<VersionPage, Self::Value>, Self::Error> {
        // One statement per page shape; a page of templates asks one shape.
        let mut shapes: HashMap<(u64, Option<i32>), Vec<String>> = HashMap::new();
        for k in keys {
            shapes
                .entry((k.first, k.before))
                .or_default()
                .push(k.template_id.clone());
        }
        let mut map: HashMap<VersionPage, Self::Value> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for ((first, before), ids) in shapes {
            for row in domain::versions::pages(&self.0, &ids, first, before)
                .await
                .map_err(Arc::new)?
            {
                let key = VersionPage {
                    template_id: row.template_id.clone(),
                    first,
                    before,
                };
                map.entry(key).or_default().push(row);
            }
        }
        Ok(map)
    }
}

/// A template's statistics over the runs that started at or after `since`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatsKey {
    pub template_id: String,
    pub since: Option<chrono::NaiveDateTime>,
}

pub struct StatsOfTemplate(pub DatabaseConnection);

impl Loader<StatsKey> for StatsOfTemplate {
    type Value = Arc<domain::stats::TemplateStats>;
    type Error = LoadError;

    async fn load(&self, keys: &[StatsKey]) -> Result<HashMap<StatsKey, Self::Value>, Self::Error> {
        // Two statements per `since`; a page of templates asks one.
        let mut by_since: HashMap<Option<chrono::NaiveDateTime>, Vec<String>> = HashMap::new();
        for k in keys {
            by_since.entry(k.since).or_default().push(k.template_id.clone());
        }
        let mut map = HashMap::new();
        for (since, ids) in by_since {
            for (template_id, stats) in domain::stats::of_templates(&self.0, &ids, since)
                .await
                .map_err(Arc::new)?
            {
                map.insert(StatsKey { template_id, since }, Arc::new(stats));
            }
        }
        Ok(map)
    }
}

/// A template's steps, in `stepOrder`.
pub struct StepsOfTemplate(pub DatabaseConnection);

impl Loader<String> for StepsOfTemplate {
    type Value = Vec<Arc<step::Model>>;
    type Error = LoadError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = domain::steps::of_templates(&self.0, keys).await.map_err(Arc::new)?;
        let mut map: HashMap<String, Self::Value> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for r in rows {
            map.entry(r.workflow_template_id.clone()).or_default().push(Arc::new(r));
        }
        Ok(map)
    }
}

/// An execution's step records, in `stepOrder`.
pub struct StepsOfExecution(pub DatabaseConnection);

impl Loader<String> for StepsOfExecution {
    type Value = Vec<Arc<exec_step::Model>>;
    type Error = LoadError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = domain::executions::steps_of(&self.0, keys).await.map_err(Arc::new)?;
        let mut map: HashMap<String, Self::Value> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for r in rows {
            map.entry(r.workflow_execution_id.clone())
                .or_default()
                .push(Arc::new(r));
        }
        Ok(map)
    }
}

/// A drive's members, in the order they joined.
pub struct MembersOfDrive(pub DatabaseConnection);

impl Loader<String> for MembersOfDrive {
    type Value = Vec<drive_member::Model>;
    type Error = LoadError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let mut map = domain::drives::members_of(&self.0, keys).await.map_err(Arc::new)?;
        for k in keys {
            map.entry(k.clone()).or_default();
        }
        Ok(map)
    }
}

/// A template's schedules, newest first.
pub struct SchedulesOfTemplate(pub DatabaseConnection);

impl Loader<String> for SchedulesOfTemplate {
    type Value = Vec<Arc<schedule::Model>>;
    type Error = LoadError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let rows = domain::schedules::of_templates(&self.0, keys).await.map_err(Arc::new)?;
        let mut map: HashMap<String, Self::Value> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for r in rows {
            map.entry(r.template_id.clone()).or_default().push(Arc::new(r));
        }
        Ok(map)
    }
}

/// One page of a schedule's runs: those started by `user_id` only when
/// set, `first` of them after the cursor `after`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScheduleRunsKey {
    pub schedule_id: String,
    pub user_id: Option<String>,
    pub first: u64,
    pub after: Option<(NaiveDateTime, String)>,
}

/// Pages of schedules' runs: one statement for all the schedules that ask
/// for the same page.
pub struct RunsOfSchedule(pub DatabaseConnection);

impl Loader<ScheduleRunsKey> for RunsOfSchedule {
    type Value = Page<execution::Model>;
    type Error = LoadError;

    async fn load(&self, keys: &[ScheduleRunsKey]) -> Result<HashMap<ScheduleRunsKey, Self::Value>, Self::Error> {
        type Group = (Option<String>, u64, Option<(NaiveDateTime, String)>);
        let mut groups: HashMap<Group, Vec<String>> = HashMap::new();
        for k in keys {
            groups
                .entry((k.user_id.clone(), k.first, k.after.clone()))
                .or_default()
                .push(k.schedule_id.clone());
        }
        let mut out = HashMap::new();
        for ((user_id, first, after), ids) in groups {
            let cursor = after.clone().map(|(created_at, id)| Cursor { created_at, id });
            let pages =
                domain::executions::pages_of_schedules(&self.0, &ids, user_id.as_deref(), first, cursor.as_ref())
                    .await
                    .map_err(Arc::new)?;
            for (schedule_id, page) in pages {
                out.insert(
                    ScheduleRunsKey {
                        schedule_id,
                        user_id: user_id.clone(),
                        first,
                        after: after.clone(),
                    },
                    page,
                );
            }
        }
        Ok(out)
    }
}

/// All loaders of one request (or one WebSocket connection).
pub struct Loaders {
    pub users: Cached<UserLoader>,
    pub drives: Cached<DriveLoader>,
    pub templates: Cached<TemplateLoader>,
    pub steps: Cached<StepLoader>,
    pub steps_of_template: Cached<StepsOfTemplate>,
    pub steps_of_execution: Cached<StepsOfExecution>,
    pub members_of_drive: Cached<MembersOfDrive>,
    pub executions: Cached<ExecutionLoader>,
    pub retries_of: Cached<RetriesOf>,
    pub approvals_of_step: Cached<ApprovalsOfStep>,
    pub versions_of_template: Cached<VersionsOfTemplate>,
    pub schedules_of_template: Cached<SchedulesOfTemplate>,
    pub runs_of_schedule: Cached<RunsOfSchedule>,
    pub stats_of_template: Cached<StatsOfTemplate>,
}

fn loader<T>(inner: T, cache: bool) -> Cached<T> {
    let l = DataLoader::with_cache(inner, tokio::spawn, HashMapCache::default());
    l.enable_all_cache(cache);
    l
}

impl Loaders {
    /// `cache`: remember rows for the rest of the request. A WebSocket
    /// connection lives long, so its loaders batch but do not cache.
    pub fn new(db: &DatabaseConnection, cache: bool) -> Self {
        Self {
            users: loader(UserLoader(db.clone()), cache),
            drives: loader(DriveLoader(db.clone()), cache),
            templates: loader(TemplateLoader(db.clone()), cache),
            steps: loader(StepLoader(db.clone()), cache),
            steps_of_template: loader(StepsOfTemplate(db.clone()), cache),
            steps_of_execution: loader(StepsOfExecution(db.clone()), cache),
            members_of_drive: loader(MembersOfDrive(db.clone()), cache),
            executions: loader(ExecutionLoader(db.clone()), cache),
            retries_of: loader(RetriesOf(db.clone()), cache),
            approvals_of_step: loader(ApprovalsOfStep(db.clone()), cache),
            versions_of_template: loader(VersionsOfTemplate(db.clone()), cache),
            schedules_of_template: loader(SchedulesOfTemplate(db.clone()), cache),
            runs_of_schedule: loader(RunsOfSchedule(db.clone()), cache),
            stats_of_template: loader(StatsOfTemplate(db.clone()), cache),
        }
    }

    /// Primes the caches for a page of templates (`templates::page`): its
    /// creators, read with it, and up front what its nodes will ask for,
    /// in one query each, so the statement count does not depend on how the
    /// executor interleaves the page's resolvers. `steps`: the JSON columns
    /// of the steps the request may read (see `steps::of_templates_reading`).
    pub async fn feed_template_page(
        &self,
        db: &DatabaseConnection,
        rows: &[domain::templates::PageRow],
        steps: Option<domain::steps::JsonColumns>,
        drives: bool,
    ) -> Result<(), DbErr> {
        let mut users: HashMap<String, user::Model> = HashMap::new();
        for u in rows.iter().filter_map(|r| r.creator.as_ref()) {
            users.entry(u.id.clone()).or_insert_with(|| u.clone());
        }
        self.users.feed_many(users).await;
        // Steps kept from an earlier request for the same template version
        // need no statement; the others are read.
        let mut known: HashMap<String, Vec<Arc<step::Model>>> = HashMap::new();
        let mut missing: Vec<String> = Vec::new();
        if let Some(reading) = steps {
            for t in rows.iter().map(|r| &r.template) {
                match template_steps::get(&t.id, t.version, reading) {
                    Some(s) => {
                        known.insert(t.id.clone(), s);
                    }
                    None => missing.push(t.id.clone()),
                }
            }
        }
        let mut drive_ids: Vec<String> = rows.iter().map(|r| r.template.drive_id.clone()).collect();
        drive_ids.sort();
        drive_ids.dedup();
        let (s, d) = tokio::join!(
            async {
                match steps {
                    Some(reading) if !missing.is_empty() => {
                        Some(domain::steps::of_templates_reading(db, &missing, reading).await)
                    }
                    _ => None,
                }
            },
            async {
                match drives {
                    true => Some(domain::drives::find_many(db, &drive_ids).await),
                    false => None,
                }
            },
        );
        if let Some(s) = s {
            let mut read: HashMap<String, Vec<Arc<step::Model>>> =
                missing.iter().map(|k| (k.clone(), Vec::new())).collect();
            for r in s? {
                read.entry(r.workflow_template_id.clone())
                    .or_default()
                    .push(Arc::new(r));
            }
            let reading = steps.unwrap_or(domain::steps::JsonColumns::ALL);
            for t in rows.iter().map(|r| &r.template) {
                if let Some(s) = read.get(&t.id) {
                    template_steps::put(&t.id, t.version, reading, s.clone());
                }
            }
            known.extend(read);
        }
        if !known.is_empty() {
            self.steps_of_template.feed_many(known).await;
        }
        if let Some(d) = d {
            self.drives.feed_many(d?.into_iter().map(|r| (r.id.clone(), r))).await;
        }
        Ok(())
    }
}

/// The steps of template versions, shared by the requests of this process:
/// a template's steps change only with its `version` (every write of them
/// bumps it in the same transaction), so a page that read a template's row
/// knows whether the kept steps are still its steps. Entries also expire
/// after `TTL`, so a change made outside the API (SQL by hand) shows within
/// seconds.
mod template_steps {
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex};
    use std::time::{Duration, Instant};

    use entity::workflow_step as step;

    use crate::domain::steps::JsonColumns;

    const TTL: Duration = Duration::from_secs(5);
    /// At most this many templates, and about this many bytes of steps;
    /// then the cache starts over.
    const MAX_TEMPLATES: usize = 4096;
    const MAX_BYTES: usize = 64 << 20;

    struct Entry {
        version: i32,
        reading: JsonColumns,
        at: Instant,
        bytes: usize,
        steps: Vec<Arc<step::Model>>,
    }

    #[derive(Default)]
    struct Cache {
        entries: HashMap<String, Entry>,
        bytes: usize,
    }

    static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(Cache::default()));

    /// The steps of `template` at `version`, read with at least the JSON
    /// columns `wanted`.
    pub fn get(template: &str, version: i32, wanted: JsonColumns) -> Option<Vec<Arc<step::Model>>> {
        let cache = CACHE.lock().expect("template steps lock");
        let e = cache.entries.get(template)?;
        (e.version == version && e.reading.covers(wanted) && e.at.elapsed() < TTL).then(|| e.steps.clone())
    }

    pub fn put(template: &str, version: i32, reading: JsonColumns, steps: Vec<Arc<step::Model>>) {
        let bytes = template.len() + steps.iter().map(|s| size_of(s)).sum::<usize>();
        if bytes > MAX_BYTES / 16 {
            return; // One template's steps may not crowd out the rest.
        }
        let mut cache = CACHE.lock().expect("template steps lock");
        if let Some(old) = cache.entries.remove(template) {
            cache.bytes -= old.bytes;
        }
        if cache.entries.len() >= MAX_TEMPLATES || cache.bytes + bytes > MAX_BYTES {
            *cache = Cache::default();
        }
        cache.bytes += bytes;
        cache.entries.insert(
            template.to_owned(),
            Entry {
                version,
                reading,
                at: Instant::now(),
                bytes,
                steps,
            },
        );
    }

    /// About what a step takes in memory: its texts, its JSON as text, and
    /// a fixed part for the rest.
    fn size_of(s: &step::Model) -> usize {
        let json = |v: &Option<serde_json::Value>| v.as_ref().map_or(0, |v| v.to_string().len() * 2);
        256 + s.id.len()
            + s.workflow_template_id.len()
            + s.agent_id.len()
            + s.prompt_template.len()
            + s.parallel_group.as_ref().map_or(0, String::len)
            + json(&s.input_schema)
            + json(&s.metadata)
            + json(&s.condition)
            + json(&s.approval)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn step(template: &str, prompt: String) -> Arc<step::Model> {
            let at = chrono::NaiveDateTime::default();
            Arc::new(step::Model {
                id: crate::domain::new_id(),
                workflow_template_id: template.to_owned(),
                step_order: 0,
                agent_id: "echo".into(),
                prompt_template: prompt,
                requires_user_input: false,
                input_schema: None,
                metadata: Some(serde_json::json!({ "timeoutMs": 1 })),
                condition: None,
                parallel_group: None,
                approval: None,
                created_at: at,
                updated_at: at,
            })
        }

        #[test]
        fn kept_steps_serve_only_their_version_and_columns() {
            let t = crate::domain::new_id();
            let lean = JsonColumns {
                metadata: false,
                ..JsonColumns::ALL
            };
            put(&t, 3, lean, vec![step(&t, "p".into())]);
            assert_eq!(get(&t, 3, lean).map(|s| s.len()), Some(1));
            assert!(get(&t, 4, lean).is_none(), "another version");
            assert!(get(&t, 3, JsonColumns::ALL).is_none(), "read without metadata");
            put(&t, 4, JsonColumns::ALL, vec![step(&t, "q".into())]);
            assert!(get(&t, 3, lean).is_none(), "replaced by the newer version");
            assert_eq!(get(&t, 4, lean).unwrap()[0].prompt_template, "q");
        }

        #[test]
        fn steps_too_large_are_not_kept() {
            let t = crate::domain::new_id();
            put(&t, 1, JsonColumns::ALL, vec![step(&t, "x".repeat(MAX_BYTES / 16))]);
            assert!(get(&t, 1, JsonColumns::ALL).is_none());
        }
    }
}
