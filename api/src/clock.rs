//! The time that background work acts on: which schedules are due, whose
//! lease has run out, which finished runs are old enough to delete, and how
//! long to wait before looking again. The server runs on the system clock;
//! tests hand it a `ManualClock` and move time on themselves, instead of
//! waiting for the wall clock. Rows still record when they were written
//! with `now()`.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, NaiveDateTime, Utc};
use tokio::sync::watch;

static LAST_MICROS: AtomicI64 = AtomicI64::new(0);

/// The current time in UTC at microsecond precision, strictly increasing
/// within this process, so "newest first" has no ties among rows one server
/// wrote (and both databases store the same value).
pub fn now() -> NaiveDateTime {
    let wall = Utc::now().timestamp_micros();
    let mut last = LAST_MICROS.load(Ordering::Relaxed);
    loop {
        let next = wall.max(last + 1);
        match LAST_MICROS.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                return DateTime::from_timestamp_micros(next).unwrap_or_default().naive_utc();
            }
            Err(seen) => last = seen,
        }
    }
}

/// The system clock, or a manual one that moves only when told to.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<watch::Sender<NaiveDateTime>>>);

impl Clock {
    pub fn system() -> Self {
        Self(None)
    }

    /// The current time in UTC (the system clock's is `now()`).
    pub fn now(&self) -> NaiveDateTime {
        match &self.0 {
            None => now(),
            Some(manual) => *manual.borrow(),
        }
    }

    /// Waits until this clock has moved on by `d`.
    pub async fn sleep(&self, d: Duration) {
        let Some(manual) = &self.0 else {
            return tokio::time::sleep(d).await;
        };
        let until = chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| manual.borrow().checked_add_signed(d));
        let Some(until) = until else {
            return std::future::pending().await;
        };
        // `wait_for` looks at the current time first: a move made between
        // reading it above and subscribing here is not missed.
        let mut moved = manual.subscribe();
        if moved.wait_for(|now| *now >= until).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A clock for tests: it stands still until `advance` moves it, and wakes
/// whoever sleeps on it (its `clock()`) when their time has come.
#[derive(Clone)]
pub struct ManualClock(Arc<watch::Sender<NaiveDateTime>>);

impl ManualClock {
    pub fn starting_at(start: NaiveDateTime) -> Self {
        Self(Arc::new(watch::Sender::new(start)))
    }

    /// The clock to give the server.
    pub fn clock(&self) -> Clock {
        Clock(Some(self.0.clone()))
    }

    pub fn now(&self) -> NaiveDateTime {
        *self.0.borrow()
    }

    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).expect("a duration chrono can add");
        self.0.send_modify(|now| *now += by);
    }

    /// Moves the clock on to `at`; never back (an earlier `at` changes nothing).
    pub fn advance_to(&self, at: NaiveDateTime) {
        self.0.send_if_modified(|now| {
            let later = at > *now;
            if later {
                *now = at;
            }
            later
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[tokio::test]
    async fn a_sleep_on_a_manual_clock_ends_when_the_clock_has_moved_on_by_its_duration() {
        let manual = ManualClock::starting_at(at("2030-01-01 00:00:00"));
        let clock = manual.clock();
        let sleep = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(10)).await }
        });
        // (One thread: the sleep starts, at 00:00:00, when this task yields.)
        tokio::task::yield_now().await;
        manual.advance(Duration::from_secs(9));
        tokio::task::yield_now().await;
        assert!(!sleep.is_finished(), "woke before its time");
        manual.advance_to(at("2029-01-01 00:00:00"));
        assert_eq!(clock.now(), at("2030-01-01 00:00:09"), "never goes back");
        manual.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(10), sleep)
            .await
            .expect("woken by the move")
            .unwrap();
        assert_eq!(clock.now(), at("2030-01-01 00:00:10"));
    }

    #[tokio::test]
    async fn a_sleep_whose_time_has_already_come_ends_at_once() {
        let manual = ManualClock::starting_at(at("2030-01-01 00:00:00"));
        manual.clock().sleep(Duration::ZERO).await;
    }
}
