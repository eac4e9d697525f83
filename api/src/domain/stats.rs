//! Template statistics (docs/statistics.md): how durations are bucketed,
//! how a page of templates' statistics since an instant are read back from
//! the hourly roll-ups (`workflow_template_stats`) and the rows finished
//! runs and steps left (`workflow_execution_stats`), how the fold moves those
//! rows into the roll-ups, and how percentiles come out of the buckets.
//!
//! Durations go into fixed logarithmic buckets, eight per doubling: bucket 0
//! holds 0 ms, bucket b ≥ 1 holds [2^((b-1)/8), 2^(b/8)) ms. Buckets from
//! any hours, rows and instances add up, so a percentile over any period is
//! exact up to its bucket: it is reported as the bucket's largest whole
//! millisecond (capped by the exact maximum), never below the true value
//! and less than 9.1% (2^(1/8)) above it.

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDateTime, SubsecRound, Timelike};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

const PER_DOUBLING: f64 = 8.0;
/// 2^40 ms is 35 years: anything longer shares the last bucket.
const LAST_BUCKET: i32 = 320;

/// The histogram bucket of a duration in milliseconds.
pub fn bucket(ms: i64) -> i32 {
    if ms < 1 {
        return 0;
    }
    let b = (PER_DOUBLING * (ms as f64).log2()).floor() as i32 + 1;
    b.clamp(1, LAST_BUCKET)
}

/// The largest whole millisecond in bucket `b`.
pub fn bucket_upper(b: i32) -> i64 {
    if b <= 0 {
        return 0;
    }
    ((f64::from(b) / PER_DOUBLING).exp2().ceil() as i64 - 1).max(1)
}

/// Sums of one scope (the run as a whole, or one step) over a period.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub skipped: i64,
    pub attempts: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub max_ms: Option<i64>,
    /// Bucket -> durations in it.
    pub buckets: BTreeMap<i32, i64>,
}

impl Totals {
    /// The nearest-rank percentile `q` (0 < q ≤ 1) of the bucketed
    /// durations, as its bucket's upper end capped by the exact maximum.
    pub fn percentile(&self, q: f64) -> Option<i64> {
        let n: i64 = self.buckets.values().sum();
        if n <= 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as i64).clamp(1, n);
        let mut seen = 0;
        for (b, count) in &self.buckets {
            seen += count;
            if seen >= rank {
                let upper = bucket_upper(*b);
                return Some(self.max_ms.map_or(upper, |m| upper.min(m)));
            }
        }
        self.max_ms
    }
}

/// One template's statistics: the run as a whole and each step by `stepOrder`.
#[derive(Debug, Default, Clone)]
pub struct TemplateStats {
    pub runs: Totals,
    /// RUNNING and PAUSED executions now, counted from the executions.
    pub active: i64,
    pub steps: BTreeMap<i32, Totals>,
}

/// `stepOrder` of the roll-up row that holds the run as a whole.
pub const RUN_SCOPE: i32 = -1;

/// Placeholders for the values of one statement, numbered in order.
struct Params {
    backend: DbBackend,
    values: Vec<Value>,
}

impl Params {
    fn new(backend: DbBackend) -> Self {
        Self {
            backend,
            values: Vec::new(),
        }
    }

    fn one(&mut self, v: impl Into<Value>) -> String {
        self.values.push(v.into());
        match self.backend {
            DbBackend::Postgres => format!("${}", self.values.len()),
            _ => "?".to_owned(),
        }
    }

    fn list(&mut self, ids: &[String]) -> String {
        ids.iter().map(|id| self.one(id.clone())).collect::<Vec<_>>().join(", ")
    }
}

/// The first whole UTC hour at or after `t`.
pub fn hour_ceil(t: NaiveDateTime) -> NaiveDateTime {
    let floor = hour_floor(t);
    if floor == t {
        t
    } else {
        floor + chrono::Duration::hours(1)
    }
}

/// The UTC hour `t` is in: the roll-up it is added to.
pub fn hour_floor(t: NaiveDateTime) -> NaiveDateTime {
    t.date().and_hms_opt(t.hour(), 0, 0).expect("a whole hour exists")
}

/// The instant a `stats(since:)` is answered from: `since` itself while
/// the rows of runs started since then are all kept (retention off, or
/// `since` within the last `retention_days`); otherwise the first whole
/// hour after it, from which the roll-ups alone are exact.
///
/// Times are kept to the microsecond, so `since` is too.
pub fn effective_since(since: NaiveDateTime, retention_days: u32, now: NaiveDateTime) -> NaiveDateTime {
    let since = since.trunc_subsecs(6);
    if retention_days > 0 && since < now - chrono::Duration::days(i64::from(retention_days)) {
        hour_ceil(since)
    } else {
        since
    }
}

/// Where the sums of one statement come from, for `since` (see the
/// README's "Statistics and retention"): the roll-ups of the hours from B
/// (the first whole hour at or after `since`) on; the rows not yet folded
/// of runs started from B on; every row of runs started in [since, B).
/// Each row is counted by exactly one of them. `roll_up` and `rows`: what
/// to select (from, columns, group by) from each table, aliased `st` and `x`.
fn parts(
    p: &mut Params,
    ids: &[String],
    since: Option<NaiveDateTime>,
    roll_up: (&str, &str, &str),
    rows: (&str, &str, &str),
) -> String {
    let boundary = since.map(hour_ceil);
    let mut out = Vec::new();
    let (from, select, group) = roll_up;
    let list = p.list(ids);
    let from_b = boundary.map_or(String::new(), |b| format!(r#" AND st."hour" >= {}"#, p.one(b)));
    out.push(format!(
        r#"SELECT {select} FROM {from} WHERE st."templateId" IN ({list}){from_b} GROUP BY {group}"#
    ));
    let (from, select, group) = rows;
    let list = p.list(ids);
    let from_b = boundary.map_or(String::new(), |b| format!(r#" AND x."startedAt" >= {}"#, p.one(b)));
    out.push(format!(
        r#"SELECT {select} FROM {from} WHERE x."templateId" IN ({list}) AND NOT x."folded"{from_b} GROUP BY {group}"#
    ));
    if let (Some(since), Some(b)) = (since, boundary)
        && since < b
    {
        let list = p.list(ids);
        let (since, b) = (p.one(since), p.one(b));
        out.push(format!(
            r#"SELECT {select} FROM {from} WHERE x."templateId" IN ({list}) AND x."startedAt" >= {since} AND x."startedAt" < {b} GROUP BY {group}"#
        ));
    }
    out.join("\n UNION ALL\n ")
}

/// The statistics of `ids` over runs that started at or after `since` (all
/// runs when `None`), in two statements however many templates: the sums
/// (with the live count of active runs), and the duration buckets.
pub async fn of_templates(
    db: &impl ConnectionTrait,
    ids: &[String],
    since: Option<NaiveDateTime>,
) -> Result<HashMap<String, TemplateStats>, DbErr> {
    let mut out: HashMap<String, TemplateStats> = ids.iter().map(|id| (id.clone(), TemplateStats::default())).collect();
    if ids.is_empty() {
        return Ok(out);
    }
    let backend = db.get_database_backend();
    let sum = |c: &str, t: &str| format!(r#"CAST(SUM({t}."{c}") AS BIGINT)"#);
    let sums_of = |t: &str, max: &str| {
        format!(
            r#"{t}."templateId" AS t, {t}."stepOrder" AS s, {}, {}, {}, {}, {}, {} AS prompt, {} AS completion,
               MAX({t}."{max}") AS max_ms, CAST(0 AS BIGINT) AS active"#,
            sum("completed", t) + " AS completed",
            sum("failed", t) + " AS failed",
            sum("cancelled", t) + " AS cancelled",
            sum("skipped", t) + " AS skipped",
            sum("attempts", t) + " AS attempts",
            sum("promptTokens", t),
            sum("completionTokens", t),
        )
    };
    let mut p = Params::new(backend);
    let mut sums = parts(
        &mut p,
        ids,
        since,
        (
            "workflow_template_stats st",
            &sums_of("st", "durationMaxMs"),
            r#"st."templateId", st."stepOrder""#,
        ),
        (
            "workflow_execution_stats x",
            &sums_of("x", "durationMs"),
            r#"x."templateId", x."stepOrder""#,
        ),
    );
    let list = p.list(ids);
    let started = since.map_or(String::new(), |s| format!(r#" AND "startedAt" >= {}"#, p.one(s)));
    sums.push_str(&format!(
        r#"
         UNION ALL
         SELECT "workflowTemplateId", {RUN_SCOPE}, 0, 0, 0, 0, 0, 0, 0, NULL, CAST(COUNT(*) AS BIGINT)
         FROM workflow_executions
         WHERE "workflowTemplateId" IN ({list}) AND "status" IN ('running', 'paused'){started}
         GROUP BY "workflowTemplateId""#
    ));
    let sum_values = p.values;

    let each = match backend {
        DbBackend::Postgres => r#"jsonb_each_text(st."durations")"#,
        _ => r#"json_each(st."durations")"#,
    };
    let mut p = Params::new(backend);
    let hist = parts(
        &mut p,
        ids,
        since,
        (
            &format!("workflow_template_stats st, {each} d"),
            r#"st."templateId" AS t, st."stepOrder" AS s, d.key AS b, CAST(SUM(CAST(d.value AS BIGINT)) AS BIGINT) AS n"#,
            r#"st."templateId", st."stepOrder", d.key"#,
        ),
        (
            "workflow_execution_stats x",
            r#"x."templateId", x."stepOrder", CAST(x."durationBucket" AS TEXT), CAST(COUNT(x."durationBucket") AS BIGINT)"#,
            r#"x."templateId", x."stepOrder", x."durationBucket""#,
        ),
    );
    let (sum_rows, hist_rows) = tokio::try_join!(
        db.query_all_raw(Statement::from_sql_and_values(backend, sums, sum_values)),
        db.query_all_raw(Statement::from_sql_and_values(backend, hist, p.values)),
    )?;
    for r in sum_rows {
        let t: String = r.try_get("", "t")?;
        let s: i32 = r.try_get("", "s")?;
        let Some(stats) = out.get_mut(&t) else { continue };
        stats.active += r.try_get::<i64>("", "active")?;
        let totals = scope(stats, s);
        totals.completed += r.try_get::<i64>("", "completed")?;
        totals.failed += r.try_get::<i64>("", "failed")?;
        totals.cancelled += r.try_get::<i64>("", "cancelled")?;
        totals.skipped += r.try_get::<i64>("", "skipped")?;
        totals.attempts += r.try_get::<i64>("", "attempts")?;
        totals.prompt_tokens += r.try_get::<i64>("", "prompt")?;
        totals.completion_tokens += r.try_get::<i64>("", "completion")?;
        if let Some(m) = r.try_get::<Option<i64>>("", "max_ms")? {
            totals.max_ms = Some(totals.max_ms.map_or(m, |x| x.max(m)));
        }
    }
    for r in hist_rows {
        let t: String = r.try_get("", "t")?;
        let s: i32 = r.try_get("", "s")?;
        // NULL: rows of that scope none of which was timed.
        let Some(b) = r.try_get::<Option<String>>("", "b")? else {
            continue;
        };
        let n: i64 = r.try_get("", "n")?;
        let (Some(stats), Ok(b)) = (out.get_mut(&t), b.parse::<i32>()) else {
            continue;
        };
        *scope(stats, s).buckets.entry(b).or_default() += n;
    }
    Ok(out)
}

/// Folds up to `limit` rows of `workflow_execution_stats` not yet folded
/// into the hourly roll-ups: marks them folded and adds them to the hour
/// their run started in, both on `db` (give a transaction: a statement sees
/// a row either unfolded or in its roll-up, never both or neither).
/// Returns how many rows it folded.
pub async fn fold_batch(db: &impl ConnectionTrait, limit: u64) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let mut p = Params::new(backend);
    // `NOT "folded"` again outside the subquery: on PostgreSQL, a row another
    // fold marked meanwhile is checked again once its lock is released.
    let sql = format!(
        r#"UPDATE workflow_execution_stats SET "folded" = true
           WHERE "id" IN (SELECT "id" FROM workflow_execution_stats WHERE NOT "folded" LIMIT {}) AND NOT "folded"
           RETURNING "templateId", "startedAt", "stepOrder", "completed", "failed", "cancelled", "skipped",
                     "attempts", "promptTokens", "completionTokens", "durationMs", "durationBucket""#,
        p.one(i64::try_from(limit).unwrap_or(i64::MAX))
    );
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, p.values))
        .await?;
    let folded = rows.len() as u64;
    let mut hours: BTreeMap<(String, NaiveDateTime, i32), Totals> = BTreeMap::new();
    for r in rows {
        let started: NaiveDateTime = r.try_get("", "startedAt")?;
        let t = hours
            .entry((
                r.try_get("", "templateId")?,
                hour_floor(started),
                r.try_get("", "stepOrder")?,
            ))
            .or_default();
        t.completed += r.try_get::<i64>("", "completed")?;
        t.failed += r.try_get::<i64>("", "failed")?;
        t.cancelled += r.try_get::<i64>("", "cancelled")?;
        t.skipped += r.try_get::<i64>("", "skipped")?;
        t.attempts += r.try_get::<i64>("", "attempts")?;
        t.prompt_tokens += r.try_get::<i64>("", "promptTokens")?;
        t.completion_tokens += r.try_get::<i64>("", "completionTokens")?;
        if let Some(ms) = r.try_get::<Option<i64>>("", "durationMs")? {
            t.max_ms = Some(t.max_ms.map_or(ms, |m| m.max(ms)));
        }
        if let Some(b) = r.try_get::<Option<i32>>("", "durationBucket")? {
            *t.buckets.entry(b).or_default() += 1;
        }
    }
    if hours.is_empty() {
        return Ok(folded);
    }
    let (sql, values) = add_to_hours(backend, &hours);
    db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    Ok(folded)
}

/// The upsert adding `hours` (by template, hour, stepOrder) to the roll-ups.
fn add_to_hours(backend: DbBackend, hours: &BTreeMap<(String, NaiveDateTime, i32), Totals>) -> (String, Vec<Value>) {
    const CASTS: [&str; 15] = [
        "text",
        "text",
        "timestamp",
        "integer",
        "bigint",
        "bigint",
        "bigint",
        "bigint",
        "bigint",
        "bigint",
        "bigint",
        "jsonb",
        "bigint",
        "timestamp",
        "timestamp",
    ];
    let at = super::now();
    let mut p = Params::new(backend);
    let mut tuples = Vec::with_capacity(hours.len());
    for ((template, hour, step), t) in hours {
        let durations: serde_json::Map<String, serde_json::Value> =
            t.buckets.iter().map(|(b, n)| (b.to_string(), (*n).into())).collect();
        let row: [Value; 15] = [
            super::new_id().into(),
            template.clone().into(),
            (*hour).into(),
            (*step).into(),
            t.completed.into(),
            t.failed.into(),
            t.cancelled.into(),
            t.skipped.into(),
            t.attempts.into(),
            t.prompt_tokens.into(),
            t.completion_tokens.into(),
            serde_json::Value::Object(durations).into(),
            t.max_ms.into(),
            at.into(),
            at.into(),
        ];
        let cells: Vec<String> = row
            .into_iter()
            .zip(CASTS)
            .map(|(v, cast)| match backend {
                DbBackend::Postgres => format!("{}::{cast}", p.one(v)),
                _ => p.one(v),
            })
            .collect();
        tuples.push(format!("({})", cells.join(", ")));
    }
    let t = "workflow_template_stats";
    let add = |c: &str| format!(r#""{c}" = {t}."{c}" + excluded."{c}""#);
    let (max, durations) = match backend {
        DbBackend::Postgres => (
            format!(r#"GREATEST({t}."durationMaxMs", excluded."durationMaxMs")"#),
            format!(
                r#"{t}."durations" || COALESCE((SELECT jsonb_object_agg(d.key, COALESCE(({t}."durations" ->> d.key)::bigint, 0) + d.value::bigint)
                     FROM jsonb_each_text(excluded."durations") d), '{{}}'::jsonb)"#
            ),
        ),
        _ => (
            format!(
                r#"max(COALESCE({t}."durationMaxMs", excluded."durationMaxMs"), COALESCE(excluded."durationMaxMs", {t}."durationMaxMs"))"#
            ),
            format!(
                r#"json_patch({t}."durations", (SELECT json_group_object(d.key, COALESCE(json_extract({t}."durations", '$."' || d.key || '"'), 0) + d.value)
                     FROM json_each(excluded."durations") d))"#
            ),
        ),
    };
    let sets = [
        "completed",
        "failed",
        "cancelled",
        "skipped",
        "attempts",
        "promptTokens",
        "completionTokens",
    ]
    .map(add)
    .join(", ");
    let sql = format!(
        r#"INSERT INTO {t} ("id", "templateId", "hour", "stepOrder", "completed", "failed", "cancelled", "skipped", "attempts",
                           "promptTokens", "completionTokens", "durations", "durationMaxMs", "createdAt", "updatedAt")
           VALUES {}
           ON CONFLICT ("templateId", "hour", "stepOrder") DO UPDATE SET {sets},
             "durations" = {durations}, "durationMaxMs" = {max}, "updatedAt" = excluded."updatedAt""#,
        tuples.join(", ")
    );
    (sql, p.values)
}

fn scope(stats: &mut TemplateStats, step_order: i32) -> &mut Totals {
    if step_order == RUN_SCOPE {
        &mut stats.runs
    } else {
        stats.steps.entry(step_order).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_upper_bound_and_are_within_nine_percent() {
        for ms in [0_i64, 1, 2, 3, 7, 10, 99, 100, 101, 250, 1000, 12_345, 86_400_000] {
            let b = bucket(ms);
            let upper = bucket_upper(b);
            assert!(upper >= ms, "{ms} -> bucket {b} upper {upper}");
            assert_eq!(bucket(upper), b, "{ms}: upper {upper} is in the same bucket");
            assert!(
                (upper as f64) < (ms.max(1) as f64) * 2f64.powf(1.0 / 8.0),
                "{ms} -> {upper}"
            );
        }
    }

    #[test]
    fn since_is_exact_within_retention_and_else_the_next_whole_hour() {
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
        let now = t("2026-12-08 00:13:00");
        assert_eq!(hour_floor(t("2026-12-07 23:59:59.999999")), t("2026-12-07 23:00:00"));
        assert_eq!(hour_ceil(t("2026-12-07 23:00:00.000001")), t("2026-12-08 00:00:00"));
        assert_eq!(hour_ceil(t("2026-12-08 01:00:00")), t("2026-12-08 01:00:00"));
        // Retention off: any since, to the microsecond.
        assert_eq!(
            effective_since(t("2020-01-01 10:10:10.1234567"), 0, now),
            t("2020-01-01 10:10:10.123456")
        );
        // Within the last day kept, and in the future: as asked.
        assert_eq!(
            effective_since(t("2026-12-07 00:13:00"), 1, now),
            t("2026-12-07 00:13:00")
        );
        assert_eq!(
            effective_since(t("2026-12-08 01:13:00"), 1, now),
            t("2026-12-08 01:13:00")
        );
        // Older: from the next whole hour, which a whole hour is already.
        assert_eq!(
            effective_since(t("2026-12-07 00:12:59"), 1, now),
            t("2026-12-07 01:00:00")
        );
        assert_eq!(
            effective_since(t("2026-12-01 05:00:00"), 1, now),
            t("2026-12-01 05:00:00")
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut t = Totals::default();
        for ms in [10_i64, 20, 30, 40, 1000] {
            *t.buckets.entry(bucket(ms)).or_default() += 1;
        }
        t.max_ms = Some(1000);
        assert_eq!(t.percentile(0.5), Some(bucket_upper(bucket(30))));
        assert_eq!(t.percentile(0.95), Some(1000));
        assert_eq!(Totals::default().percentile(0.5), None);
    }
}
