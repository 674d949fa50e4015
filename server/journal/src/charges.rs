//! The spending caps, kept in the journal: every submit that may be billed
//! records a charge (its token and task count) in the same transaction that
//! records its intent, after counting the charges already in each capped
//! window. On a journal shared by replicas the count and the insert are
//! serialised by the database, so the cluster as a whole never bills past
//! a cap, and a restart forgets nothing.
//!
//! Each charge is also added to its token's bucket of the minute and of the
//! hour it was made in. A window's count is then the charges of its first,
//! partial minute, the minute buckets up to the next whole hour, and the
//! hour buckets after that ([`window_parts`]): at most one minute of
//! charges and about 85 buckets, however many charges the window holds,
//! and still exact to the millisecond.

use std::time::{Duration, SystemTime};

/// A sliding window over which billed tasks are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CapWindow {
    /// The last 3,600 seconds.
    Hour,
    /// The last 86,400 seconds.
    Day,
}

impl CapWindow {
    /// Every window, shortest first.
    pub const ALL: [CapWindow; 2] = [CapWindow::Hour, CapWindow::Day];

    /// How far back the window reaches.
    pub fn length(self) -> Duration {
        match self {
            CapWindow::Hour => Duration::from_secs(3600),
            CapWindow::Day => Duration::from_secs(24 * 3600),
        }
    }

    /// The limit's name, as in the tokens file and in quota errors.
    pub fn limit_name(self) -> &'static str {
        match self {
            CapWindow::Hour => "tasks_per_hour",
            CapWindow::Day => "tasks_per_day",
        }
    }

    /// `hour` or `day`: the metric label and the JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            CapWindow::Hour => "hour",
            CapWindow::Day => "day",
        }
    }

    /// When the window that ends at `now` begins (charges strictly after
    /// it count).
    pub fn start(self, now: SystemTime) -> SystemTime {
        now.checked_sub(self.length())
            .filter(|start| *start > SystemTime::UNIX_EPOCH)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// Whose billed tasks a cap counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapScope {
    /// The charging token's own.
    Token,
    /// Every token's together (`--limit-tasks-per-hour` and `-per-day`).
    Server,
}

/// One cap a submit must fit under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskCap {
    /// Whose tasks it counts.
    pub scope: CapScope,
    /// Over which window.
    pub window: CapWindow,
    /// At most this many tasks in the window.
    pub limit: u32,
}

/// What a submit will be billed, recorded with its intent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskCharge {
    /// The token's name (empty when retouchd requires no token).
    pub token: String,
    /// Tasks in the submit.
    pub tasks: u32,
    /// The caps in force for this caller now; empty: nothing is checked,
    /// the charge is only recorded (for usage).
    pub caps: Vec<TaskCap>,
}

/// A submit refused because a cap's window is full; nothing was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapRefusal {
    /// The cap that is full.
    pub cap: TaskCap,
    /// Tasks already billed in its window.
    pub counted: u64,
    /// When enough counted tasks have left the window for this submit to
    /// fit; `None` when it never fits (it alone is over the cap).
    pub retry_after: Option<Duration>,
}

/// How many of the counted tasks must leave the window before `tasks` more
/// fit (`None`: they never fit, being more than the cap).
pub(crate) fn must_leave(cap: &TaskCap, counted: u64, tasks: u32) -> Option<u64> {
    (tasks <= cap.limit).then(|| (counted + u64::from(tasks)).saturating_sub(u64::from(cap.limit)))
}

/// A cap whose window has no room for a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FullCap {
    /// The cap.
    pub cap: TaskCap,
    /// Tasks its window holds.
    pub counted: u64,
    /// How many of them must leave before the charge fits (`None`: never).
    pub must_leave: Option<u64>,
}

/// Which windows a store must count for `charge`: the token's, the
/// server's (each only when one of its caps is set).
pub(crate) fn scopes_to_count(charge: &TaskCharge) -> (bool, bool) {
    let has = |scope| charge.caps.iter().any(|c| c.scope == scope);
    (has(CapScope::Token), has(CapScope::Server))
}

/// The first cap of `charge` with no room, given what the store counted
/// for the token and for the server (as [`scopes_to_count`] asked).
pub(crate) fn first_full(
    charge: &TaskCharge,
    token: Option<BilledTasks>,
    server: Option<BilledTasks>,
) -> Option<FullCap> {
    charge.caps.iter().find_map(|cap| {
        let counts = match cap.scope {
            CapScope::Token => token,
            CapScope::Server => server,
        }?;
        let counted = counts.of(cap.window);
        let must_leave = must_leave(cap, counted, charge.tasks);
        (must_leave != Some(0)).then_some(FullCap {
            cap: *cap,
            counted,
            must_leave,
        })
    })
}

/// The refusal for `cap`, whose window holds `counted` tasks, given when
/// the charge that frees enough of them was made (`freed_by`): it leaves
/// the window one window length later.
pub(crate) fn refusal(
    cap: TaskCap,
    counted: u64,
    tasks: u32,
    freed_by: Option<SystemTime>,
    now: SystemTime,
) -> CapRefusal {
    let retry_after = (tasks <= cap.limit)
        .then_some(freed_by)
        .flatten()
        .map(|at| {
            (at + cap.window.length())
                .duration_since(now)
                .unwrap_or_default()
                // Whole milliseconds are what the journal keeps; the next
                // one is the first at which the charge has left.
                + Duration::from_millis(1)
        });
    CapRefusal {
        cap,
        counted,
        retry_after,
    }
}

/// A minute, the narrower bucket width, in milliseconds.
pub(crate) const MINUTE_MS: i64 = 60_000;
/// An hour, the wider bucket width, in milliseconds.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// How to count a window that holds the charges made after `start` (ms):
/// the charges made before `minutes_from`, the minute buckets that start
/// from there up to `hours_from`, and the hour buckets that start there or
/// later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowParts {
    /// Charges made after this count (exclusive).
    pub start: i64,
    /// The first minute bucket wholly inside the window.
    pub minutes_from: i64,
    /// The first hour bucket counted whole (a multiple of an hour).
    pub hours_from: i64,
}

/// The parts of the window that holds the charges made after `start`.
pub(crate) fn window_parts(start: i64) -> WindowParts {
    // A bucket starting at `start` itself holds charges made at `start`,
    // which the window does not: the first whole one starts after it.
    let minutes_from = start.div_euclid(MINUTE_MS) * MINUTE_MS + MINUTE_MS;
    let hours_from = (minutes_from + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS;
    WindowParts {
        start,
        minutes_from,
        hours_from,
    }
}

/// The buckets (width and start, in ms) a charge made at `at` is added to.
pub(crate) fn buckets_of(at: i64) -> [(i64, i64); 2] {
    [
        (MINUTE_MS, at.div_euclid(MINUTE_MS) * MINUTE_MS),
        (HOUR_MS, at.div_euclid(HOUR_MS) * HOUR_MS),
    ]
}

/// Tasks billed by one token within each window, counted from the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BilledTasks {
    /// In the last hour.
    pub hour: u64,
    /// In the last day.
    pub day: u64,
}

impl BilledTasks {
    /// The count for `window`.
    pub fn of(&self, window: CapWindow) -> u64 {
        match window {
            CapWindow::Hour => self.hour,
            CapWindow::Day => self.day,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: TaskCap = TaskCap {
        scope: CapScope::Token,
        window: CapWindow::Hour,
        limit: 10,
    };

    #[test]
    fn room_is_what_the_window_has_left() {
        assert_eq!(must_leave(&CAP, 0, 10), Some(0));
        assert_eq!(must_leave(&CAP, 9, 1), Some(0));
        assert_eq!(must_leave(&CAP, 9, 2), Some(1));
        assert_eq!(must_leave(&CAP, 10, 10), Some(10));
        assert_eq!(must_leave(&CAP, 0, 11), None);
    }

    #[test]
    fn buckets_count_a_window_exactly() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let now = 1_800_000_000_000_i64;
        let charges: Vec<(i64, i64)> = (0..3000)
            .map(|_| {
                (
                    now - rng.random_range(0..2 * 24 * HOUR_MS),
                    rng.random_range(1..=10),
                )
            })
            .collect();
        let mut buckets = std::collections::HashMap::<(i64, i64), i64>::new();
        for (at, tasks) in &charges {
            for bucket in buckets_of(*at) {
                *buckets.entry(bucket).or_default() += tasks;
            }
        }
        let mut starts: Vec<i64> = (0..200)
            .map(|_| now - rng.random_range(0..2 * 24 * HOUR_MS))
            .collect();
        // Boundaries, and charges' own times, are where mistakes hide.
        starts.extend([
            now - 24 * HOUR_MS,
            now - HOUR_MS,
            charges[0].0,
            charges[1].0 - 1,
        ]);
        starts.push((now - HOUR_MS).div_euclid(HOUR_MS) * HOUR_MS);
        starts.push((now - HOUR_MS).div_euclid(MINUTE_MS) * MINUTE_MS);
        for start in starts {
            let parts = window_parts(start);
            let exact: i64 = charges
                .iter()
                .filter(|(at, _)| *at > start)
                .map(|(_, t)| t)
                .sum();
            let raw: i64 = charges
                .iter()
                .filter(|(at, _)| *at > start && *at < parts.minutes_from)
                .map(|(_, t)| t)
                .sum();
            let minutes: i64 = buckets
                .iter()
                .filter(|((w, b), _)| {
                    *w == MINUTE_MS && *b >= parts.minutes_from && *b < parts.hours_from
                })
                .map(|(_, t)| t)
                .sum();
            let hours: i64 = buckets
                .iter()
                .filter(|((w, b), _)| *w == HOUR_MS && *b >= parts.hours_from)
                .map(|(_, t)| t)
                .sum();
            assert_eq!(raw + minutes + hours, exact, "start {start}");
            assert!(parts.minutes_from - start <= MINUTE_MS);
            assert!(parts.hours_from - parts.minutes_from < HOUR_MS);
        }
    }

    #[test]
    fn the_first_full_cap_is_found_from_the_counts() {
        let day = TaskCap {
            scope: CapScope::Server,
            window: CapWindow::Day,
            limit: 100,
        };
        let charge = TaskCharge {
            token: "t".into(),
            tasks: 2,
            caps: vec![CAP, day],
        };
        assert_eq!(scopes_to_count(&charge), (true, true));
        let counts = |hour, day| Some(BilledTasks { hour, day });
        assert_eq!(first_full(&charge, counts(8, 8), counts(8, 98)), None);
        assert_eq!(
            first_full(&charge, counts(9, 9), counts(9, 98)),
            Some(FullCap {
                cap: CAP,
                counted: 9,
                must_leave: Some(1)
            })
        );
        assert_eq!(
            first_full(&charge, counts(0, 0), counts(0, 99)).map(|f| f.cap),
            Some(day)
        );
    }

    #[test]
    fn a_refusal_says_when_the_freeing_charge_leaves_the_window() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let charged = now - Duration::from_secs(600);
        let refused = refusal(CAP, 10, 1, Some(charged), now);
        assert_eq!(
            refused.retry_after,
            Some(Duration::from_secs(3000) + Duration::from_millis(1))
        );
        assert_eq!(refusal(CAP, 0, 11, Some(charged), now).retry_after, None);
        assert_eq!(
            CapWindow::Day.start(now),
            SystemTime::UNIX_EPOCH,
            "a window reaching before the epoch starts there"
        );
    }
}
