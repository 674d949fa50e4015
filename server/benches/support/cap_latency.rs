//! What the spending caps' window check adds to recording a submit's
//! intent (`Store::begin_submission`): the same store, the same prefilled
//! charges, submits alternating between "no caps set" and "every cap set"
//! (a token's and the server's, per hour and per day, never reached), so
//! that drift in the machine's speed falls on both alike.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use retouch_api::v1 as pb;
use retouch_journal::{CapScope, CapWindow, NewSubmission, Store, TaskCap, TaskCharge};

/// Charges already in the windows when measuring: a busy token's day.
pub const PREFILLED: usize = 5_000;
/// Submits measured per variant.
pub const SUBMITS: usize = 2_000;

/// p50 and p99 (ms) without caps and with them.
pub struct CapLatency {
    pub uncapped: (f64, f64),
    pub capped: (f64, f64),
}

fn intent(n: usize, caps: Vec<TaskCap>, at: SystemTime) -> NewSubmission {
    let id = format!("bench-{n}");
    NewSubmission {
        id: id.clone(),
        request_id: Some(id.clone()),
        fingerprint: [(n % 251) as u8; 32],
        draft: pb::Job {
            submission_id: id,
            ..Default::default()
        },
        created_at: at,
        charge: TaskCharge {
            token: "bench".into(),
            tasks: 1,
            caps,
        },
    }
}

/// Measures `store` (fresh).
pub async fn measure(store: Arc<dyn Store>) -> CapLatency {
    let now = SystemTime::now();
    // Spread over the last 23 hours: in the day window, some in the hour.
    for n in 0..PREFILLED {
        let at = now - Duration::from_secs((n as u64 * 23 * 3600) / PREFILLED as u64);
        store
            .begin_submission(intent(n, Vec::new(), at))
            .await
            .unwrap();
    }
    let caps: Vec<TaskCap> = [CapScope::Token, CapScope::Server]
        .into_iter()
        .flat_map(|scope| {
            CapWindow::ALL.into_iter().map(move |window| TaskCap {
                scope,
                window,
                limit: u32::MAX,
            })
        })
        .collect();
    let mut uncapped = Vec::with_capacity(SUBMITS);
    let mut capped = Vec::with_capacity(SUBMITS);
    for i in 0..SUBMITS * 2 {
        let with_caps = i % 2 == 1;
        let new = intent(
            PREFILLED + i,
            if with_caps { caps.clone() } else { Vec::new() },
            SystemTime::now(),
        );
        let started = Instant::now();
        store.begin_submission(new).await.unwrap();
        let took = started.elapsed();
        if with_caps {
            capped.push(took);
        } else {
            uncapped.push(took);
        }
    }
    uncapped.sort();
    capped.sort();
    let p = |sorted: &[Duration]| {
        (
            super::instant_upstream::percentile(sorted, 0.5),
            super::instant_upstream::percentile(sorted, 0.99),
        )
    };
    CapLatency {
        uncapped: p(&uncapped),
        capped: p(&capped),
    }
}

/// The figures as one line.
pub fn report(journal: &str, measured: &CapLatency) -> String {
    let (u50, u99) = measured.uncapped;
    let (c50, c99) = measured.capped;
    format!(
        "{journal}: recording a submit's intent with every cap checked (4 windows, {PREFILLED} charges in the day) p50 {c50:.3} ms / p99 {c99:.3} ms, against no caps p50 {u50:.3} ms / p99 {u99:.3} ms in the same run: +{:.3} ms at p50, +{:.3} ms at p99 ({:.2}x at p99)",
        c50 - u50,
        c99 - u99,
        c99 / u99.max(1e-9)
    )
}
