//! State tests: events in any order, duplicates, resume, and scale.

use std::time::{Duration, SystemTime};

use retouch_api::v1 as pb;

use super::*;

/// Builders of protocol messages for tests and the bench.
pub mod build {
    use super::*;

    /// A job with `tasks` waiting tasks.
    pub fn job(api: pb::Api, key: &str, tasks: usize) -> pb::Job {
        pb::Job {
            api: api as i32,
            result_key: key.into(),
            status: pb::JobStatus::Active as i32,
            tasks: (0..tasks)
                .map(|i| pb::Task {
                    index: i as u32,
                    image_url: format!("http://img/{key}/{i}.png"),
                    mask_url: format!("http://img/{key}/{i}-mask.png"),
                    status: pb::TaskStatus::Waiting as i32,
                    ..pb::Task::default()
                })
                .collect(),
            accepted_at: Some(SystemTime::UNIX_EPOCH.into()),
            ..pb::Job::default()
        }
    }

    /// An `accepted` event (the job accepted at that event's time).
    pub fn accepted(seq: u64, mut job: pb::Job) -> pb::JobEvent {
        job.accepted_at = Some(at(seq));
        pb::JobEvent {
            seq,
            api: job.api,
            result_key: job.result_key.clone(),
            job_status: pb::JobStatus::Active as i32,
            time: Some(at(seq)),
            submission_id: String::new(),
            trace_id: String::new(),
            kind: Some(pb::job_event::Kind::Accepted(pb::JobAccepted {
                job: Some(job),
            })),
        }
    }

    /// A task transition.
    pub fn transition(
        seq: u64,
        api: pb::Api,
        key: &str,
        task: u32,
        from: pb::TaskStatus,
        to: pb::TaskStatus,
        job_status: pb::JobStatus,
    ) -> pb::JobEvent {
        pb::JobEvent {
            seq,
            api: api as i32,
            result_key: key.into(),
            job_status: job_status as i32,
            time: Some(at(seq)),
            submission_id: String::new(),
            trace_id: String::new(),
            kind: Some(pb::job_event::Kind::Transition(pb::TaskTransition {
                task_index: task,
                previous: from as i32,
                current: to as i32,
                result_urls: if to == pb::TaskStatus::Success {
                    vec![format!("http://results/{key}/{task}.png")]
                } else {
                    vec![]
                },
                message: if to == pb::TaskStatus::Failed {
                    "Job execution failed".into()
                } else {
                    String::new()
                },
                mirrored_urls: vec![],
            })),
        }
    }

    /// An upstream error event.
    pub fn upstream_error(seq: u64, api: pb::Api, key: &str, code: i64) -> pb::JobEvent {
        pb::JobEvent {
            seq,
            api: api as i32,
            result_key: key.into(),
            job_status: pb::JobStatus::Active as i32,
            time: Some(at(seq)),
            submission_id: String::new(),
            trace_id: String::new(),
            kind: Some(pb::job_event::Kind::UpstreamError(pb::UpstreamError {
                aliyun_code: code,
                http_status: 200,
                message: "Request throttled".into(),
                attempt: 1,
                ..pb::UpstreamError::default()
            })),
        }
    }

    /// A time `seq` seconds after a fixed start.
    pub fn at(seq: u64) -> prost_types::Timestamp {
        (SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seq)).into()
    }
}

use build::*;

const M: pb::Api = pb::Api::InstanceMatting;
use pb::JobStatus::{Active, Completed};
use pb::TaskStatus::{Failed, Running, Success, Waiting};

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_100)
}

fn key(k: &str) -> JobKey {
    JobKey {
        api: M,
        result_key: k.into(),
    }
}

#[test]
fn events_apply_in_order_and_duplicates_are_ignored() {
    let mut state = Dashboard::default();
    let events = [
        accepted(1, job(M, "a", 2)),
        transition(2, M, "a", 0, Waiting, Running, Active),
        transition(3, M, "a", 0, Running, Success, Active),
        transition(4, M, "a", 1, Waiting, Failed, Completed),
    ];
    for e in events.iter().chain(events.iter()) {
        state.apply(Update::Event(e.clone()), now());
    }
    let job = state.jobs.get(&key("a")).unwrap();
    assert_eq!(job.status, Completed);
    assert_eq!(job.counts(), [0, 0, 1, 1]);
    let history: Vec<_> = job.tasks[0].history.iter().map(|(s, _)| *s).collect();
    assert_eq!(history, [Waiting, Running, Success]);
    assert_eq!(job.tasks[0].result_urls, ["http://results/a/0.png"]);
    // The failure was counted once, though it arrived twice.
    assert_eq!(state.errors.total(), 1);
    assert_eq!(state.head_seq, 4);
}

#[test]
fn out_of_order_events_older_than_what_was_applied_are_dropped() {
    let mut state = Dashboard::default();
    state.apply(Update::Event(accepted(5, job(M, "a", 1))), now());
    state.apply(
        Update::Event(transition(7, M, "a", 0, Running, Success, Completed)),
        now(),
    );
    // A late, older event must not move the task back.
    state.apply(
        Update::Event(transition(6, M, "a", 0, Waiting, Running, Active)),
        now(),
    );
    let job = state.jobs.get(&key("a")).unwrap();
    assert_eq!(job.tasks[0].status, Success);
    assert_eq!(job.status, Completed);
}

#[test]
fn events_of_unknown_jobs_create_them() {
    let mut state = Dashboard::default();
    state.apply(
        Update::Event(transition(3, M, "late", 2, Waiting, Running, Active)),
        now(),
    );
    let job = state.jobs.get(&key("late")).unwrap();
    assert_eq!(job.tasks.len(), 3);
    assert_eq!(job.tasks[2].status, Running);
}

#[test]
fn resume_after_reconnect_keeps_everything_and_applies_only_new_events() {
    let mut state = Dashboard::default();
    state.apply(Update::Snapshot(job(M, "a", 1)), now());
    state.apply(
        Update::Synced {
            head_seq: 10,
            server_id: "s1".into(),
        },
        now(),
    );
    state.apply(
        Update::Event(transition(11, M, "a", 0, Waiting, Running, Active)),
        now(),
    );
    // The connection drops and the watch resumes after seq 11: the server
    // replays from 12, but a replay overlapping what we have is harmless.
    state.apply(
        Update::Connection(Connection::Disconnected {
            reason: "UNAVAILABLE".into(),
            retry_at: now(),
        }),
        now(),
    );
    state.apply(
        Update::Event(transition(11, M, "a", 0, Waiting, Running, Active)),
        now(),
    );
    state.apply(
        Update::Event(transition(12, M, "a", 0, Running, Success, Completed)),
        now(),
    );
    state.apply(
        Update::Synced {
            head_seq: 12,
            server_id: "s1".into(),
        },
        now(),
    );
    let row = state.jobs.get(&key("a")).unwrap();
    let history: Vec<_> = row.tasks[0].history.iter().map(|(s, _)| *s).collect();
    assert_eq!(history, [Waiting, Running, Success]);
    // A restarted server (other id) starts its own numbering: its events
    // are applied, not dropped as "old".
    state.apply(
        Update::Synced {
            head_seq: 2,
            server_id: "s2".into(),
        },
        now(),
    );
    state.apply(Update::Event(accepted(3, job(M, "b", 1))), now());
    assert!(state.jobs.get(&key("b")).is_some());
    assert!(state.jobs.get(&key("a")).is_some(), "what was shown stays");
}

#[test]
fn jobs_in_progress_that_a_restarted_server_does_not_know_are_marked_lost() {
    let mut state = Dashboard::default();
    for name in ["a", "b", "c"] {
        state.apply(Update::Snapshot(job(M, name, 1)), now());
    }
    let synced = |id: &str| Update::Synced {
        head_seq: 3,
        server_id: id.into(),
    };
    state.apply(synced("s1"), now());
    state.apply(
        Update::Event(transition(4, M, "c", 0, Waiting, Success, Completed)),
        now(),
    );
    // The server restarts; its snapshot holds b only (adopted again).
    state.apply(
        Update::Connection(Connection::Connecting { attempt: 1 }),
        now(),
    );
    state.apply(Update::Snapshot(job(M, "b", 1)), now());
    state.apply(synced("s2"), now());
    let a = state.jobs.get(&key("a")).unwrap();
    assert_eq!(a.status, pb::JobStatus::Lost);
    let error = a.last_error.as_ref().unwrap();
    assert!(error.message.contains("restarted"), "{}", error.message);
    assert_eq!(error.code(), "-");
    assert_eq!(state.jobs.get(&key("b")).unwrap().status, Active);
    // Finished jobs keep their outcome.
    assert_eq!(state.jobs.get(&key("c")).unwrap().status, Completed);
    // A reconnect to the same server changes nothing.
    state.apply(synced("s2"), now());
    assert_eq!(state.jobs.get(&key("b")).unwrap().status, Active);
}

#[test]
fn ten_thousand_jobs_filter_and_sort() {
    let mut state = Dashboard::default();
    let mut seq = 0;
    for i in 0..10_000 {
        seq += 1;
        let api = if i % 2 == 0 {
            M
        } else {
            pb::Api::ObjectRemoval
        };
        state.apply(
            Update::Event(accepted(seq, job(api, &format!("k{i:05}"), 2))),
            now(),
        );
        if i % 10 == 0 {
            seq += 1;
            state.apply(
                Update::Event(upstream_error(seq, api, &format!("k{i:05}"), 23500004)),
                now(),
            );
        }
    }
    assert_eq!(state.jobs.len(), 10_000);
    assert_eq!(state.errors.counts(), [("23500004", 1000)]);
    let table = &mut state.table;
    table.set_filter(Filter {
        api: ApiFilter::Removal,
        status: StatusFilter::Troubled,
        ..Filter::default()
    });
    table.refresh(&state.jobs);
    // Odd i with i % 10 == 0 never happens: removal jobs have no errors.
    assert_eq!(table.len(), 0);
    table.set_filter(Filter {
        text: "k0999".into(),
        ..Filter::default()
    });
    table.set_sort(Sort {
        key: SortKey::Key,
        reversed: false,
    });
    table.refresh(&state.jobs);
    assert_eq!(table.len(), 10);
    assert_eq!(shown(table, &state.jobs, 3), ["k09990", "k09991", "k09992"]);
}

/// The table's lines as text: `key` for a job, `key/i` for its task `i`.
fn shown(table: &TableView, jobs: &Jobs, height: usize) -> Vec<String> {
    table
        .visible(jobs, height)
        .iter()
        .map(|line| match line {
            TableLine::Batch(group) => format!("batch {} ({})", group.id, group.len()),
            TableLine::Job { job, in_batch } => {
                format!(
                    "{}{}",
                    if *in_batch { "  " } else { "" },
                    job.key.result_key
                )
            }
            TableLine::Task { job, index, .. } => format!("{}/{index}", job.key.result_key),
        })
        .collect()
}

#[test]
fn a_batch_is_one_row_that_opens_to_its_jobs() {
    let mut state = Dashboard::default();
    for (seq, (name, batch)) in (1..).zip([
        ("solo1", ""),
        ("b-a", "B"),
        ("solo2", ""),
        ("b-b", "B"),
        ("b-c", "B"),
    ]) {
        let mut job = job(M, name, 2);
        job.batch_id = batch.into();
        state.apply(Update::Event(accepted(seq, job)), now());
    }
    let (table, jobs) = (&mut state.table, &state.jobs);
    table.refresh(jobs);
    // Newest first; the batch sits where its newest job (b-c) sorts.
    assert_eq!(shown(table, jobs, 10), ["batch B (3)", "solo2", "solo1"]);
    assert_eq!(table.len(), 3);
    assert_eq!(table.selected_row(), Some(&RowKey::Batch("B".into())));
    assert_eq!(table.selected(), None, "no job is selected");

    table.expand_selected(jobs, true, 10);
    assert!(table.selected_is_expanded());
    assert_eq!(
        shown(table, jobs, 10),
        ["batch B (3)", "  b-c", "  b-b", "  b-a", "solo2", "solo1"]
    );
    // Into the batch, and open a job's tasks.
    table.move_selection(jobs, 2, 10);
    assert_eq!(table.selected(), Some(&key("b-b")));
    table.expand_selected(jobs, true, 10);
    assert_eq!(
        shown(table, jobs, 4),
        ["batch B (3)", "  b-c", "  b-b", "b-b/0"]
    );
    // Tasks summed over the batch's jobs.
    let TableLine::Batch(group) = table.visible(jobs, 1)[0] else {
        panic!("a batch row first")
    };
    assert_eq!(group.counts(jobs), [6, 0, 0, 0]);
    assert_eq!(group.status(jobs), pb::JobStatus::Active);

    // Collapsing a job of the batch hides its tasks; again, closes the
    // batch and selects its row.
    table.expand_selected(jobs, false, 10);
    assert_eq!(table.selected(), Some(&key("b-b")));
    table.expand_selected(jobs, false, 10);
    assert_eq!(shown(table, jobs, 10), ["batch B (3)", "solo2", "solo1"]);
    assert_eq!(table.selected_row(), Some(&RowKey::Batch("B".into())));

    // The filter finds a batch by its id, and shows only matching jobs.
    table.set_filter(Filter {
        text: "b-a".into(),
        ..Filter::default()
    });
    table.refresh(jobs);
    assert_eq!(shown(table, jobs, 10), ["batch B (1)"]);
}

#[test]
fn expanded_jobs_show_their_tasks_and_the_selection_stays_in_view() {
    let mut state = Dashboard::default();
    for (seq, name) in (1..).zip(["a", "b", "c", "d"]) {
        state.apply(Update::Event(accepted(seq, job(M, name, 3))), now());
    }
    let (table, jobs) = (&mut state.table, &state.jobs);
    table.set_sort(Sort {
        key: SortKey::Key,
        reversed: false,
    });
    table.refresh(jobs);
    assert_eq!(table.selected(), Some(&key("a")));
    table.expand_selected(jobs, true, 5);
    assert_eq!(shown(table, jobs, 5), ["a", "a/0", "a/1", "a/2", "b"]);
    // Down to c: a with its tasks would push c out, so the table scrolls
    // by whole jobs.
    table.move_selection(jobs, 2, 5);
    assert_eq!(table.selected(), Some(&key("c")));
    assert_eq!(shown(table, jobs, 5), ["b", "c", "d"]);
    // Expanding c keeps all of it in view.
    table.expand_selected(jobs, true, 5);
    assert_eq!(shown(table, jobs, 5), ["b", "c", "c/0", "c/1", "c/2"]);
    // Everything expanded, then everything collapsed again.
    table.toggle_all(jobs, 5);
    assert!(table.is_expanded(&key("b")) && table.is_expanded(&key("d")));
    table.move_selection(jobs, 1, 5);
    assert_eq!(shown(table, jobs, 5), ["d", "d/0", "d/1", "d/2"]);
    table.toggle_all(jobs, 5);
    assert!(!table.is_expanded(&key("a")) && !table.is_expanded(&key("d")));
    // Back to the top with everything collapsed: one line per job.
    table.move_selection(jobs, -10, 5);
    assert_eq!(shown(table, jobs, 5), ["a", "b", "c", "d"]);
}

#[test]
fn a_reply_overtaken_by_the_stream_does_not_roll_the_job_back() {
    let mut state = Dashboard::default();
    let submitted = job(M, "a", 1);
    state.apply(Update::Event(accepted(5, submitted.clone())), now());
    state.apply(
        Update::Event(transition(6, M, "a", 0, Waiting, Running, Active)),
        now(),
    );
    // The submit's reply (state as of seq 5) arrives after the stream moved on.
    let mut reply = submitted.clone();
    reply.last_seq = 5;
    state.apply(Update::JobState(reply.clone()), now());
    assert_eq!(state.jobs.get(&key("a")).unwrap().tasks[0].status, Running);
    // A reply about a job the stream has not shown yet is applied.
    reply.result_key = "b".into();
    state.apply(Update::JobState(reply), now());
    assert_eq!(state.jobs.get(&key("b")).unwrap().tasks[0].status, Waiting);
    // Transitions of tasks no job can have are dropped, not allocated.
    state.apply(
        Update::Event(transition(
            7,
            M,
            "a",
            4_000_000_000,
            Waiting,
            Running,
            Active,
        )),
        now(),
    );
    assert_eq!(state.jobs.get(&key("a")).unwrap().tasks.len(), 1);
}

#[test]
fn a_selection_the_filter_hides_moves_to_a_job_shown() {
    let mut state = Dashboard::default();
    for (seq, name) in (1..).zip(["x1", "y1", "x2"]) {
        state.apply(Update::Event(accepted(seq, job(M, name, 1))), now());
    }
    let (table, jobs) = (&mut state.table, &state.jobs);
    table.refresh(jobs);
    // Newest first: x2, y1, x1; select y1, then hide it.
    table.move_selection(jobs, 1, 10);
    assert_eq!(table.selected(), Some(&key("y1")));
    table.set_filter(Filter {
        text: "x".into(),
        ..Filter::default()
    });
    table.refresh(jobs);
    assert_eq!(table.selected(), Some(&key("x2")));
    table.move_selection(jobs, 1, 10);
    assert_eq!(table.selected(), Some(&key("x1")));
}

#[test]
fn results_come_from_retouchds_copies_once_it_has_them() {
    let mut state = Dashboard::default();
    state.apply(Update::Event(accepted(1, job(M, "m", 1))), now());
    let mut success = transition(2, M, "m", 0, Waiting, Success, Completed);
    if let Some(pb::job_event::Kind::Transition(t)) = &mut success.kind {
        t.mirrored_urls = vec!["http://retouchd/mirror/m/0/0".into()];
    }
    state.apply(Update::Event(success), now());
    let task = &state.jobs.get(&key("m")).unwrap().tasks[0];
    assert_eq!(task.result_urls, ["http://results/m/0.png"]);
    let (urls, ours) = task.download_urls();
    assert_eq!(
        (urls, ours),
        (&["http://retouchd/mirror/m/0/0".to_owned()][..], true)
    );

    // A record of an unknown submit outcome has no key: its submission id
    // names its row, and it counts as trouble.
    let mut unknown = job(M, "", 1);
    unknown.submission_id = "sub-1".into();
    unknown.status = pb::JobStatus::SubmitOutcomeUnknown as i32;
    state.apply(
        Update::Event(pb::JobEvent {
            seq: 3,
            api: M as i32,
            job_status: unknown.status,
            submission_id: "sub-1".into(),
            time: Some(at(3)),
            kind: Some(pb::job_event::Kind::SubmitOutcomeUnknown(
                pb::SubmitOutcomeUnknown { job: Some(unknown) },
            )),
            ..Default::default()
        }),
        now(),
    );
    let row = state
        .jobs
        .get(&key("sub-1"))
        .expect("keyed by submission id");
    assert_eq!(row.status, pb::JobStatus::SubmitOutcomeUnknown);
}

#[test]
fn a_transition_clears_the_last_error_as_the_server_does() {
    let mut state = Dashboard::default();
    state.apply(Update::Event(accepted(1, job(M, "a", 2))), now());
    state.apply(Update::Event(upstream_error(2, M, "a", 23500004)), now());
    assert!(state.jobs.get(&key("a")).unwrap().last_error.is_some());
    state.apply(
        Update::Event(transition(3, M, "a", 0, Waiting, Running, Active)),
        now(),
    );
    assert!(state.jobs.get(&key("a")).unwrap().last_error.is_none());
}
