//! Child rows read inside their parent's row, as one JSON array (a
//! correlated subquery), so a parent and its children cost one statement
//! and are one snapshot. PostgreSQL writes them with `json_agg` of the rows
//! (timestamps `2026-12-01T10:00:00.123456`, booleans); SQLite with
//! `json_object` of every column (timestamps as stored,
//! `2026-12-01 10:00:00.123456`, booleans as 0 and 1). The decoders here
//! read both.

use chrono::NaiveDateTime;
use sea_orm::{ColumnTrait, ColumnType, DbBackend, IdenStatic, Iterable};
use serde_json::Value;

/// The subquery giving the rows of `table` whose `fk` column equals
/// `parent` (a qualified column of the outer statement) as one JSON array
/// of objects keyed by column name, in no particular order; NULL for none.
/// `C`: the child entity's columns (JSON columns nest as JSON on SQLite).
pub fn array_sql<C>(backend: DbBackend, table: &str, fk: &str, parent: &str) -> String
where
    C: ColumnTrait + Iterable + IdenStatic,
{
    match backend {
        DbBackend::Postgres => {
            format!(r#"(SELECT json_agg(c)::text FROM "{table}" c WHERE c."{fk}" = {parent})"#)
        }
        _ => {
            let fields: Vec<String> = C::iter()
                .map(|col| {
                    let name = col.as_str();
                    match col.def().get_column_type() {
                        ColumnType::Json | ColumnType::JsonBinary => format!(r#"'{name}', json(c."{name}")"#),
                        _ => format!(r#"'{name}', c."{name}""#),
                    }
                })
                .collect();
            format!(
                r#"(SELECT json_group_array(json_object({})) FROM "{table}" c WHERE c."{fk}" = {parent})"#,
                fields.join(", ")
            )
        }
    }
}

/// A timestamp as either database writes it into JSON.
pub fn time(t: &str) -> Result<NaiveDateTime, String> {
    // `FromStr` reads `2026-12-01T10:00:00.123456` without a format string
    // to interpret; SQLite's space becomes the `T` it expects.
    let parsed = match t.as_bytes().get(10) {
        Some(b' ') => format!("{}T{}", &t[..10], &t[11..]).parse::<NaiveDateTime>(),
        _ => t.parse::<NaiveDateTime>(),
    };
    parsed.map_err(|e| format!("timestamp {t:?}: {e}"))
}

pub fn opt_time(t: Option<&str>) -> Result<Option<NaiveDateTime>, String> {
    t.map(time).transpose()
}

/// A boolean as either database writes it into JSON (`true`, or 1).
pub fn flag(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => Ok(n.as_i64() != Some(0)),
        other => Err(format!("not a boolean: {other}")),
    }
}

/// A nullable JSON column: in an array, a JSON `null` and SQL NULL look the
/// same; both read as NULL (no writer stores a JSON `null` in these).
pub fn json(v: Option<Value>) -> Option<Value> {
    v.filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Timelike;

    #[test]
    fn timestamps_as_either_database_writes_them() {
        let want = chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_micro_opt(10, 0, 0, 123_456)
            .unwrap();
        assert_eq!(time("2026-12-01T10:00:00.123456"), Ok(want));
        assert_eq!(time("2026-12-01 10:00:00.123456"), Ok(want));
        assert_eq!(time("2026-12-01 10:00:00"), Ok(want.with_nanosecond(0).unwrap()));
        assert!(time("2026-12-01").is_err());
        assert!(time("yesterday").is_err());
        assert_eq!(opt_time(None), Ok(None));
    }

    #[test]
    fn booleans_as_either_database_writes_them() {
        assert_eq!(flag(&serde_json::json!(true)), Ok(true));
        assert_eq!(flag(&serde_json::json!(0)), Ok(false));
        assert_eq!(flag(&serde_json::json!(1)), Ok(true));
        assert!(flag(&serde_json::json!("yes")).is_err());
    }
}
