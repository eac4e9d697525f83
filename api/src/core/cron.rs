//! A schedule's cron expression and time zone, parsed once into a value that
//! computes due times. Parsing and the calendar are `croner`'s (with
//! `chrono-tz` for IANA zones); nothing here reads cron syntax itself.
//!
//! Daylight saving time is handled as croner does it: a fixed time of day
//! that falls in a spring-forward gap runs at the first valid time after the
//! gap; one that occurs twice in a fall-back overlap runs once, at its first
//! occurrence; wildcard and step fields run at every wall-clock match.

use chrono::{NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::error::{ApiError, ApiResult};

/// Longest cron expression accepted (a real one is a few dozen characters).
const MAX_CRON_CHARS: usize = 200;

#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses a cron expression (5 fields, or 6 with seconds first; the
    /// `@daily`-style nicknames too) and an IANA time zone name. Errors name
    /// the field (`cron` or `timezone`, prefixed with `field_prefix`) and
    /// the value.
    pub fn parse(field_prefix: &str, cron: &str, timezone: &str) -> ApiResult<Self> {
        let expr = cron.trim();
        if expr.chars().count() > MAX_CRON_CHARS {
            return Err(ApiError::bad_input(format!(
                "{field_prefix}cron: at most {MAX_CRON_CHARS} characters are allowed"
            )));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let parsed = parser.parse(expr).map_err(|e| {
            ApiError::bad_input(format!(
                "{field_prefix}cron: '{}' is not a valid cron expression (5 fields, or 6 with seconds first): {e}",
                printable(expr)
            ))
        })?;
        let tz: Tz = timezone.trim().parse().map_err(|_| {
            ApiError::bad_input(format!(
                "{field_prefix}timezone: '{}' is not an IANA time zone name (such as UTC or Europe/Paris)",
                printable(timezone)
            ))
        })?;
        let schedule = Self {
            expression: expr.to_owned(),
            cron: parsed,
            tz,
        };
        if schedule.next_after(chrono::Utc::now().naive_utc()).is_none() {
            return Err(ApiError::bad_input(format!(
                "{field_prefix}cron: '{}' never comes due",
                printable(expr)
            )));
        }
        Ok(schedule)
    }

    /// The expression as it will be stored (trimmed).
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The zone's canonical name.
    pub fn timezone(&self) -> &'static str {
        self.tz.name()
    }

    /// The first due time strictly after `t` (UTC), if there is one.
    pub fn next_after(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let local = Utc.from_utc_datetime(&t).with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|n| n.naive_utc())
    }

    /// The next `count` due times after `t`.
    pub fn upcoming(&self, t: NaiveDateTime, count: usize) -> Vec<NaiveDateTime> {
        let mut out = Vec::with_capacity(count);
        let mut at = t;
        while out.len() < count {
            match self.next_after(at) {
                Some(n) => {
                    out.push(n);
                    at = n;
                }
                None => break,
            }
        }
        out
    }
}

/// A value as it can be quoted in an error message: control characters
/// (NUL included) shown escaped, and long values cut.
fn printable(s: &str) -> String {
    let shown: String = s.chars().take(80).flat_map(char::escape_default).collect();
    if s.chars().count() > 80 {
        format!("{shown}…")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, s)
            .unwrap()
    }

    #[test]
    fn five_and_six_fields() {
        let five = Schedule::parse("", "*/15 * * * *", "UTC").unwrap();
        assert_eq!(
            five.next_after(at(2026, 1, 1, 10, 7, 30)),
            Some(at(2026, 1, 1, 10, 15, 0))
        );
        let six = Schedule::parse("", "* * * * * *", "UTC").unwrap();
        assert_eq!(
            six.next_after(at(2026, 1, 1, 10, 7, 30)),
            Some(at(2026, 1, 1, 10, 7, 31))
        );
        assert_eq!(
            six.upcoming(at(2026, 1, 1, 0, 0, 0), 3),
            vec![
                at(2026, 1, 1, 0, 0, 1),
                at(2026, 1, 1, 0, 0, 2),
                at(2026, 1, 1, 0, 0, 3)
            ]
        );
    }

    #[test]
    fn time_zones_shift_the_due_time() {
        // 09:00 in Paris is 08:00 UTC in winter, 07:00 UTC in summer.
        let s = Schedule::parse("", "0 9 * * *", "Europe/Paris").unwrap();
        assert_eq!(s.next_after(at(2026, 1, 10, 0, 0, 0)), Some(at(2026, 1, 10, 8, 0, 0)));
        assert_eq!(s.next_after(at(2026, 7, 10, 0, 0, 0)), Some(at(2026, 7, 10, 7, 0, 0)));
    }

    #[test]
    fn a_time_in_the_spring_gap_runs_after_it_once() {
        // 02:30 does not exist in New York on 2026-03-08 (02:00 -> 03:00 EDT).
        let s = Schedule::parse("", "30 2 * * *", "America/New_York").unwrap();
        let next = s.next_after(at(2026, 3, 8, 5, 0, 0)).unwrap();
        assert_eq!(next.date(), NaiveDate::from_ymd_opt(2026, 3, 8).unwrap());
        assert_eq!(
            next,
            at(2026, 3, 8, 7, 0, 0),
            "the first valid time after the gap, 03:00 EDT"
        );
        assert_eq!(s.next_after(next), Some(at(2026, 3, 9, 6, 30, 0)));
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = Schedule::parse("input.", "61 * * * *", "UTC").unwrap_err();
        assert!(e.message().starts_with("input.cron: '61 * * * *'"), "{}", e.message());
        let e = Schedule::parse("", "* * *", "UTC").unwrap_err();
        assert!(e.message().starts_with("cron:"), "{}", e.message());
        let e = Schedule::parse("", "* * * * * * *", "UTC").unwrap_err();
        assert!(e.message().starts_with("cron:"), "7 fields: {}", e.message());
        let e = Schedule::parse("", "0 0 * * *", "Mars/Olympus").unwrap_err();
        assert!(e.message().starts_with("timezone: 'Mars/Olympus'"), "{}", e.message());
        let e = Schedule::parse("", "0 0 31 2 *", "UTC").unwrap_err();
        assert!(e.message().contains("never comes due"), "{}", e.message());
    }
}
