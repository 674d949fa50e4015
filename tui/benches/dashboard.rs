//! Dashboard scaling: applies 100,000 events and renders frames into a
//! `TestBackend`, for 100 jobs (the baseline) and for 10,000 jobs, printing
//! per-event and per-frame times and heap, with ratios against the
//! baseline measured in the same run (never pass/fail times: machines here
//! are shared and noisy).
//!
//! Run: `cargo bench -p retouch-tui --bench dashboard`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use retouch_api::v1 as pb;
use retouch_tui::app::App;
use retouch_tui::event::Event;
use retouch_tui::state::Update;

/// Counts live heap bytes.
struct CountingAllocator;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Events per run.
const EVENTS: usize = 100_000;
/// Frames drawn per run, one after each equal share of the events.
const FRAMES: usize = 200;

struct Figures {
    apply_per_event: Duration,
    frame_mean: Duration,
    frame_max: Duration,
    heap_bytes: usize,
}

fn main() {
    println!("dashboard bench: {EVENTS} events, {FRAMES} frames of 160x50 into TestBackend\n");
    let baseline = run(100);
    let large = run(10_000);
    println!("| jobs | apply per event | frame mean | frame max | heap after |");
    println!("|---|---|---|---|---|");
    for (jobs, f) in [(100, &baseline), (10_000, &large)] {
        println!(
            "| {jobs} | {:.2} µs | {:.2} ms | {:.2} ms | {:.1} MiB |",
            f.apply_per_event.as_secs_f64() * 1e6,
            f.frame_mean.as_secs_f64() * 1e3,
            f.frame_max.as_secs_f64() * 1e3,
            f.heap_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    println!(
        "\nratios 10,000 / 100 jobs: apply {:.2}, frame mean {:.2}, heap {:.1} ({:.0} bytes per job)",
        large.apply_per_event.as_secs_f64() / baseline.apply_per_event.as_secs_f64(),
        large.frame_mean.as_secs_f64() / baseline.frame_mean.as_secs_f64(),
        large.heap_bytes as f64 / baseline.heap_bytes as f64,
        (large.heap_bytes - baseline.heap_bytes) as f64 / 9_900.0
    );
}

fn run(jobs: usize) -> Figures {
    // Heap is counted from before the app exists; events are generated a
    // batch at a time outside the timed part and freed once applied, so
    // what remains is the app's.
    let before = LIVE.load(Ordering::Relaxed);
    let mut app = App::new(None, ".".into());
    let mut terminal = Terminal::new(TestBackend::new(160, 50)).expect("test terminal");
    let now = SystemTime::now();
    let share = EVENTS / FRAMES;
    let mut applying = Duration::ZERO;
    let mut frames = Vec::with_capacity(FRAMES);
    for frame in 0..FRAMES {
        let batch: Vec<pb::JobEvent> = (frame * share..(frame + 1) * share)
            .map(|n| event(jobs, n))
            .collect();
        let started = Instant::now();
        for event in batch {
            app.handle(Event::Update(Box::new(Update::Event(event))), now);
        }
        applying += started.elapsed();
        let started = Instant::now();
        terminal.draw(|frame| app.draw(frame)).expect("draw");
        frames.push(started.elapsed());
    }
    let heap_bytes = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    assert_eq!(app.state.jobs.len(), jobs);
    Figures {
        apply_per_event: applying / EVENTS as u32,
        frame_mean: frames.iter().sum::<Duration>() / FRAMES as u32,
        frame_max: frames.iter().copied().max().unwrap_or_default(),
        heap_bytes,
    }
}

/// Event `n` of `EVENTS` over `jobs` two-task jobs: first each job
/// accepted, then task transitions (WAITING → RUNNING → SUCCESS, some
/// FAILED) with a throttling error every seventh event, interleaved across
/// jobs as a busy server would send them.
fn event(jobs: usize, n: usize) -> pb::JobEvent {
    let (i, kind) = if n < jobs {
        let job = pb::Job {
            api: if n.is_multiple_of(2) { 1 } else { 2 },
            result_key: format!("{n:032x}"),
            status: pb::JobStatus::Active as i32,
            tasks: (0..2)
                .map(|t| pb::Task {
                    index: t,
                    image_url: format!("http://127.0.0.1:50052/uploads/{n:064x}.png"),
                    mask_url: format!("http://127.0.0.1:50052/uploads/{n:063x}m.png"),
                    status: pb::TaskStatus::Waiting as i32,
                    ..pb::Task::default()
                })
                .collect(),
            accepted_at: Some(SystemTime::now().into()),
            ..pb::Job::default()
        };
        (
            n,
            pb::job_event::Kind::Accepted(pb::JobAccepted { job: Some(job) }),
        )
    } else {
        let round = n - jobs;
        let (previous, current) = match (round / jobs) % 3 {
            0 => (pb::TaskStatus::Waiting, pb::TaskStatus::Running),
            1 => (pb::TaskStatus::Running, pb::TaskStatus::Success),
            _ => (pb::TaskStatus::Success, pb::TaskStatus::Failed),
        };
        let kind = if round.is_multiple_of(7) {
            pb::job_event::Kind::UpstreamError(pb::UpstreamError {
                aliyun_code: 23500004,
                http_status: 200,
                message: "Request throttled".into(),
                attempt: 1,
                ..pb::UpstreamError::default()
            })
        } else {
            pb::job_event::Kind::Transition(pb::TaskTransition {
                task_index: (round % 2) as u32,
                previous: previous as i32,
                current: current as i32,
                result_urls: vec![],
                message: String::new(),
                mirrored_urls: vec![],
            })
        };
        (round % jobs, kind)
    };
    pb::JobEvent {
        seq: n as u64 + 1,
        time: Some(SystemTime::now().into()),
        api: if i % 2 == 0 { 1 } else { 2 },
        result_key: format!("{i:032x}"),
        job_status: pb::JobStatus::Active as i32,
        submission_id: String::new(),
        trace_id: String::new(),
        kind: Some(kind),
    }
}
