//! Template statistics (docs/statistics.md): how durations are bucketed,
//! how the roll-ups of `workflow_template_stats` are read back for a page of
//! templates, and how percentiles come out of the buckets.
//!
//! Durations go into fixed logarithmic buckets, eight per doubling: bucket 0
//! holds 0 ms, bucket b ≥ 1 holds [2^((b-1)/8), 2^(b/8)) ms. Buckets from
//! any days and instances add up, so a percentile over any range of days is
//! exact up to its bucket: it is reported as the bucket's largest whole
//! millisecond (capped by the exact maximum), never below the true value
//! and less than 9.1% (2^(1/8)) above it.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
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

/// Sums of one roll-up scope (the run as a whole, or one step) over days.
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

fn placeholders(backend: DbBackend, from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| match backend {
            DbBackend::Postgres => format!("${i}"),
            _ => "?".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The statistics of `ids` over runs that started on `since`'s day or later
/// (all runs when `None`), in two statements however many templates: the
/// sums (with the live count of active runs), and the duration buckets.
pub async fn of_templates(
    db: &impl ConnectionTrait,
    ids: &[String],
    since: Option<NaiveDate>,
) -> Result<HashMap<String, TemplateStats>, DbErr> {
    let mut out: HashMap<String, TemplateStats> = ids.iter().map(|id| (id.clone(), TemplateStats::default())).collect();
    if ids.is_empty() {
        return Ok(out);
    }
    let backend = db.get_database_backend();
    // Parameters: the ids, then `since` (as a day for roll-ups, as a
    // timestamp for executions), once per half of the union.
    let mut values: Vec<Value> = Vec::new();
    let args = |values: &mut Vec<Value>, since_value: Option<Value>| -> (String, String) {
        let list = placeholders(backend, values.len() + 1, ids.len());
        values.extend(ids.iter().map(|id| Value::from(id.clone())));
        let since_ph = since_value.map(|v| {
            values.push(v);
            placeholders(backend, values.len(), 1)
        });
        (list, since_ph.unwrap_or_default())
    };
    let day_value = since.map(Value::from);
    let start_value = since.map(|d| Value::from(d.and_hms_opt(0, 0, 0).expect("midnight exists")));

    let (list1, since1) = args(&mut values, day_value.clone());
    let (list2, since2) = args(&mut values, start_value);
    let day_cond = |ph: &str| {
        if ph.is_empty() {
            String::new()
        } else {
            format!(r#" AND "day" >= {ph}"#)
        }
    };
    let start_cond = if since2.is_empty() {
        String::new()
    } else {
        format!(r#" AND "startedAt" >= {since2}"#)
    };
    let sums = format!(
        r#"SELECT "templateId" AS t, "stepOrder" AS s,
                  CAST(SUM("completed") AS BIGINT) AS completed, CAST(SUM("failed") AS BIGINT) AS failed,
                  CAST(SUM("cancelled") AS BIGINT) AS cancelled, CAST(SUM("skipped") AS BIGINT) AS skipped,
                  CAST(SUM("attempts") AS BIGINT) AS attempts, CAST(SUM("promptTokens") AS BIGINT) AS prompt,
                  CAST(SUM("completionTokens") AS BIGINT) AS completion, MAX("durationMaxMs") AS max_ms,
                  CAST(0 AS BIGINT) AS active
           FROM workflow_template_stats WHERE "templateId" IN ({list1}){}
           GROUP BY "templateId", "stepOrder"
           UNION ALL
           SELECT "workflowTemplateId", {RUN_SCOPE}, 0, 0, 0, 0, 0, 0, 0, NULL, CAST(COUNT(*) AS BIGINT)
           FROM workflow_executions
           WHERE "workflowTemplateId" IN ({list2}) AND "status" IN ('running', 'paused'){start_cond}
           GROUP BY "workflowTemplateId""#,
        day_cond(&since1)
    );
    let mut hist_values = Vec::new();
    let (list3, since3) = args(&mut hist_values, day_value);
    let each = match backend {
        DbBackend::Postgres => r#"jsonb_each_text(st."durations")"#,
        _ => r#"json_each(st."durations")"#,
    };
    let hist = format!(
        r#"SELECT st."templateId" AS t, st."stepOrder" AS s, d.key AS b, CAST(SUM(CAST(d.value AS BIGINT)) AS BIGINT) AS n
           FROM workflow_template_stats st, {each} d
           WHERE st."templateId" IN ({list3}){}
           GROUP BY st."templateId", st."stepOrder", d.key"#,
        day_cond(&since3).replace(r#""day""#, r#"st."day""#)
    );
    let (sum_rows, hist_rows) = tokio::try_join!(
        db.query_all_raw(Statement::from_sql_and_values(backend, sums, values)),
        db.query_all_raw(Statement::from_sql_and_values(backend, hist, hist_values)),
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
        let b: String = r.try_get("", "b")?;
        let n: i64 = r.try_get("", "n")?;
        let (Some(stats), Ok(b)) = (out.get_mut(&t), b.parse::<i32>()) else {
            continue;
        };
        *scope(stats, s).buckets.entry(b).or_default() += n;
    }
    Ok(out)
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
