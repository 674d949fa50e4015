//! Render tests: scripted events, drawn into a `TestBackend`, and what the
//! screen shows.

use std::time::SystemTime;

use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use retouch_api::v1 as pb;

use crate::app::App;
use crate::event::Event;
use crate::state::Mode;
use crate::state::Update;
use crate::state::tests::build::*;

use pb::JobStatus::{Active, Completed};
use pb::TaskStatus::{Failed, Running, Success, Waiting};

const M: pb::Api = pb::Api::InstanceMatting;
const R: pb::Api = pb::Api::ObjectRemoval;

fn scripted() -> App {
    let mut app = App::new(None, ".".into());
    let now = SystemTime::now();
    let events = [
        accepted(
            1,
            pb::Job {
                submitted_by: "ci-bot".into(),
                ..job(M, "mat-001", 1)
            },
        ),
        accepted(2, job(R, "rem-002", 2)),
        accepted(3, job(M, "mat-003", 1)),
        transition(4, M, "mat-001", 0, Waiting, Running, Active),
        transition(5, M, "mat-001", 0, Running, Success, Completed),
        upstream_error(6, R, "rem-002", 23500004),
        upstream_error(7, R, "rem-002", 23500004),
        transition(8, R, "rem-002", 0, Waiting, Success, Active),
        transition(9, R, "rem-002", 1, Waiting, Failed, Completed),
    ];
    for e in events {
        app.handle(Event::Update(Box::new(Update::Event(e))), now);
    }
    app
}

fn key(app: &mut App, code: KeyCode) {
    app.handle(
        Event::Terminal(TermEvent::Key(KeyEvent::new(code, KeyModifiers::NONE))),
        SystemTime::now(),
    );
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn render(app: &mut App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(150, 40)).unwrap();
    terminal.draw(|f| app.draw(f)).unwrap();
    let buffer = terminal.backend().buffer();
    let width = buffer.area.width as usize;
    buffer
        .content()
        .chunks(width)
        .map(|row| row.iter().map(|c| c.symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The screen above the error panel.
fn jobs_table(screen: &str) -> String {
    screen
        .lines()
        .take_while(|l| !l.contains("┌ errors"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn line_with<'a>(screen: &'a str, needle: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{screen}"))
}

#[test]
fn table_shows_every_job_with_counts_status_and_last_error() {
    let mut app = scripted();
    let screen = render(&mut app);
    assert!(screen.contains("jobs 3 active 1 done 2 lost 0"), "{screen}");
    let mat = line_with(&screen, "mat-001");
    assert!(mat.contains("matting") && mat.contains("DONE"), "{mat}");
    let rem = line_with(&screen, "rem-002");
    assert!(rem.contains("removal"), "{rem}");
    // Its throttled polls were followed by ones that succeeded, which
    // cleared its last error (the error panel keeps them).
    assert!(!rem.contains("23500004"), "{rem}");
    // WAIT RUN OK FAIL for rem-002: one success, one failure.
    assert!(rem.contains("   0   0  1    1"), "{rem}");
    assert!(line_with(&screen, "mat-003").contains("ACTIVE"));
    assert!(line_with(&screen, "mat-001").contains("ci-bot"), "{screen}");
    assert!(line_with(&screen, "RESULT KEY").contains("BY"), "{screen}");
    // A job whose last poll failed shows the error, code first.
    app.handle(
        Event::Update(Box::new(Update::Event(upstream_error(
            10, M, "mat-003", 23500004,
        )))),
        SystemTime::now(),
    );
    let screen = render(&mut app);
    let mat = line_with(&screen, "mat-003");
    assert!(mat.contains("23500004 Request throttled"), "{mat}");
}

#[test]
fn error_panel_lists_codes_and_counts_per_code() {
    let mut app = scripted();
    let screen = render(&mut app);
    assert!(screen.contains("errors (3)"), "{screen}");
    let throttled = line_with(&screen, "removal:rem-002 Request throttled");
    assert!(throttled.contains("23500004"), "{throttled}");
    assert!(line_with(&screen, "Job execution failed").contains("removal:rem-002"));
    assert!(line_with(&screen, "23500004 ×2").contains("│"), "{screen}");
    assert!(screen.contains("task FAILED ×1"), "{screen}");
}

#[test]
fn detail_view_shows_each_task_with_history_and_results() {
    let mut app = scripted();
    app.state.table.refresh(&app.state.jobs);
    // Sorted newest first: mat-003, rem-002, mat-001. Select mat-001.
    key(&mut app, KeyCode::End);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.screen.mode, Mode::Detail);
    let screen = render(&mut app);
    assert!(screen.contains("matting mat-001"), "{screen}");
    let history = line_with(&screen, "history");
    assert!(
        history.contains("WAITING")
            && history.contains("→ RUNNING")
            && history.contains("→ SUCCESS"),
        "{history}"
    );
    assert!(screen.contains("result http://results/mat-001/0.png"));
    assert!(screen.contains("image  http://img/mat-001/0.png"));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.screen.mode, Mode::Table);
}

#[test]
fn filters_narrow_the_table_and_show_in_the_header() {
    let mut app = scripted();
    key(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "rem");
    key(&mut app, KeyCode::Enter);
    let screen = render(&mut app);
    assert!(screen.contains("filter \"rem\" (1 shown)"), "{screen}");
    assert!(screen.contains("rem-002"));
    assert!(
        !screen.contains("mat-001") && !screen.contains("mat-003"),
        "{screen}"
    );
    // Esc in the filter line clears it.
    key(&mut app, KeyCode::Char('/'));
    key(&mut app, KeyCode::Esc);
    // API filter: matting only.
    key(&mut app, KeyCode::Char('a'));
    let screen = render(&mut app);
    assert!(screen.contains("mat-001") && screen.contains("mat-003"));
    assert!(!jobs_table(&screen).contains("rem-002"), "{screen}");
}

#[test]
fn help_lists_every_key_and_the_form_reports_invalid_fields() {
    let mut app = scripted();
    key(&mut app, KeyCode::Char('?'));
    let screen = render(&mut app);
    for (k, what) in super::help::KEYS {
        assert!(screen.contains(what), "help lacks {k}: {what}\n{screen}");
    }
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('n'));
    assert_eq!(app.screen.mode, Mode::Form);
    key(&mut app, KeyCode::Enter);
    let screen = render(&mut app);
    assert!(screen.contains("image: must be a URL"), "{screen}");
    assert!(screen.contains("mask: must be a URL"), "{screen}");
    assert_eq!(app.screen.mode, Mode::Form, "an invalid form stays open");
}

#[test]
fn space_expands_a_job_into_one_line_per_task() {
    let mut app = scripted();
    app.state.table.refresh(&app.state.jobs);
    // Newest first: mat-003, rem-002, mat-001. Select rem-002.
    key(&mut app, KeyCode::Down);
    let screen = render(&mut app);
    assert!(
        line_with(&screen, "rem-002").contains("▸ rem-002"),
        "{screen}"
    );
    assert!(!screen.contains("task 0"), "{screen}");
    key(&mut app, KeyCode::Char(' '));
    let screen = render(&mut app);
    assert!(
        line_with(&screen, "rem-002").contains("▾ rem-002"),
        "{screen}"
    );
    assert!(
        line_with(&screen, "├ task 0").contains("SUCCESS"),
        "{screen}"
    );
    let failed = line_with(&screen, "└ task 1");
    assert!(
        failed.contains("FAILED") && failed.contains("Job execution failed"),
        "{failed}"
    );
    // The task lines sit between rem-002 and mat-001.
    let position = |needle: &str| screen.find(needle).unwrap();
    assert!(position("rem-002") < position("task 0") && position("task 1") < position("mat-001"));
    key(&mut app, KeyCode::Char(' '));
    assert!(!render(&mut app).contains("task 0"));
    // `e` expands every job.
    key(&mut app, KeyCode::Char('e'));
    let screen = render(&mut app);
    assert_eq!(screen.matches("└ task 0").count(), 2, "{screen}");
}

#[test]
fn a_shutdown_event_stops_the_dashboard_and_says_why() {
    let mut app = scripted();
    app.handle(
        Event::Shutdown(Some("the watch task panicked".into())),
        SystemTime::now(),
    );
    assert!(app.quit);
    assert_eq!(app.failure.as_deref(), Some("the watch task panicked"));
}

#[test]
fn the_detail_view_scrolls_through_a_job_of_ten_tasks() {
    let mut app = App::new(None, ".".into());
    let now = SystemTime::now();
    app.handle(
        Event::Update(Box::new(Update::Event(accepted(1, job(R, "big", 10))))),
        now,
    );
    app.state.table.refresh(&app.state.jobs);
    key(&mut app, KeyCode::Enter);
    let screen = render(&mut app);
    assert!(
        screen.contains("task 0 WAITING") && !screen.contains("task 9 WAITING"),
        "{screen}"
    );
    key(&mut app, KeyCode::Char('G'));
    let screen = render(&mut app);
    assert!(
        screen.contains("task 9 WAITING") && !screen.contains("task 0 WAITING"),
        "{screen}"
    );
    key(&mut app, KeyCode::Char('g'));
    assert!(render(&mut app).contains("task 0 WAITING"));
    // ] and [ pick the task whose pictures show, within the job.
    assert!(render(&mut app).contains("task 0 of 10"));
    key(&mut app, KeyCode::Char(']'));
    assert!(render(&mut app).contains("task 1 of 10"));
    for _ in 0..12 {
        key(&mut app, KeyCode::Char(']'));
    }
    assert!(render(&mut app).contains("task 9 of 10"));
    key(&mut app, KeyCode::Char('['));
    assert!(render(&mut app).contains("task 8 of 10"));
    // j and k scroll here instead of changing the job.
    key(&mut app, KeyCode::Char('j'));
    assert_eq!(app.screen.detail_scroll, 1);
    assert_eq!(app.screen.mode, Mode::Detail);
}

#[test]
fn a_panic_on_another_thread_is_shown_in_the_error_panel() {
    let mut app = scripted();
    let message = "thread tokio-runtime-worker panicked: boom".to_owned();
    app.handle(
        Event::Update(Box::new(Update::Panic(message))),
        SystemTime::now(),
    );
    let screen = render(&mut app);
    assert!(line_with(&screen, "boom").contains("panic"), "{screen}");
    assert!(line_with(&screen, "panic ×1").contains("│"), "{screen}");
    assert!(!app.quit, "the dashboard carries on");
}

/// A PNG of `width`×`height` coloured by `pixel(x, y)`.
fn png(width: u32, height: u32, pixel: impl Fn(u32, u32) -> image::Rgba<u8>) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(width, height, pixel);
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgba8(image)
        .write_to(&mut bytes, image::ImageFormat::Png)
        .unwrap();
    bytes.into_inner()
}

#[test]
fn the_detail_view_shows_input_mask_and_result_in_half_blocks() {
    use crate::preview::{PreviewKind, compose::prepare};
    use ratatui::style::Color;

    let mut app = scripted();
    app.state.table.refresh(&app.state.jobs);
    key(&mut app, KeyCode::End);
    key(&mut app, KeyCode::Enter);
    let screen = render(&mut app);
    assert!(screen.contains("task 0 · input"), "{screen}");
    assert!(screen.contains("loading…"), "{screen}");

    const RED: image::Rgba<u8> = image::Rgba([255, 0, 0, 255]);
    const BLUE: image::Rgba<u8> = image::Rgba([0, 0, 255, 255]);
    // 40×80 pixels are 4×4 cells of 10×20: 8 rows of half-blocks.
    let input = png(40, 80, |_, y| if y < 40 { RED } else { BLUE });
    let mask = png(40, 80, |_, _| image::Rgba([255, 255, 255, 255]));
    // A cut-out: transparent on the left, opaque green on the right.
    let result = png(40, 80, |x, _| {
        if x < 20 {
            image::Rgba([0, 0, 0, 0])
        } else {
            image::Rgba([0, 255, 0, 255])
        }
    });
    for (url, bytes, kind) in [
        ("http://img/mat-001/0.png", input, PreviewKind::Input),
        ("http://img/mat-001/0-mask.png", mask, PreviewKind::Mask),
        ("http://results/mat-001/0.png", result, PreviewKind::Result),
    ] {
        let image = prepare(&bytes, kind);
        app.handle(
            Event::Update(Box::new(Update::Preview {
                url: url.into(),
                image,
            })),
            SystemTime::now(),
        );
    }
    let mut terminal = Terminal::new(TestBackend::new(150, 40)).unwrap();
    terminal.draw(|f| app.draw(f)).unwrap();
    let buffer = terminal.backend().buffer();
    let cell = |x: u16, y: u16| &buffer[(x, y)];
    // The body starts under the header line; each pane is 50 columns
    // wide and its picture starts inside its border, at (x + 1, 2).
    let top = cell(1, 2);
    assert_eq!(
        (top.symbol(), top.bg),
        (" ", Color::Rgb(255, 0, 0)),
        "all red"
    );
    let bottom = cell(1, 5);
    assert_eq!((bottom.symbol(), bottom.bg), (" ", Color::Rgb(0, 0, 255)));
    // Where red meets blue, one cell holds both: red above, a blend below.
    let edge = cell(1, 3);
    assert_eq!((edge.symbol(), edge.fg), ("▀", Color::Rgb(255, 0, 0)));
    let Color::Rgb(r, g, b) = edge.bg else {
        panic!("{edge:?}")
    };
    assert!(r > 0 && b > 0 && g == 0, "{edge:?}");
    // The mask, white.
    assert_eq!(cell(51, 2).bg, Color::Rgb(255, 255, 255));
    // The matting result: green where opaque, the checkerboard's grey
    // where transparent.
    assert_eq!(cell(104, 2).bg, Color::Rgb(0, 255, 0));
    let checker = cell(101, 2);
    let Color::Rgb(r, g, b) = checker.fg else {
        panic!("{checker:?}")
    };
    assert!(r == g && g == b && r > 100, "grey: {checker:?}");
    // Nothing of the picture leaks past its 4 columns.
    assert_eq!(cell(5, 2).bg, Color::Reset);
}

#[test]
fn failing_webhook_deliveries_are_counted_in_the_header_and_listed_in_the_detail() {
    let mut app = scripted();
    let failing = pb::Delivery {
        delivery_id: "msg_5_ep_hooks".into(),
        endpoint_id: "ep_hooks".into(),
        event_type: "job.completed".into(),
        seq: 5,
        result_key: "mat-001".into(),
        status: pb::DeliveryStatus::Pending as i32,
        attempts: 3,
        last_http_status: 503,
        last_error: "HTTP 503: busy".into(),
        next_attempt_at: Some((SystemTime::now() + std::time::Duration::from_secs(1800)).into()),
        ..Default::default()
    };
    let delivered = pb::Delivery {
        delivery_id: "msg_1_ep_hooks".into(),
        result_key: "mat-001".into(),
        status: pb::DeliveryStatus::Delivered as i32,
        attempts: 1,
        ..Default::default()
    };
    app.handle(
        Event::Update(Box::new(Update::FailingDeliveries(vec![
            failing, delivered,
        ]))),
        SystemTime::now(),
    );
    let screen = render(&mut app);
    assert!(
        screen
            .lines()
            .next()
            .unwrap()
            .contains("webhooks failing 1"),
        "{screen}"
    );
    app.state.table.refresh(&app.state.jobs);
    key(&mut app, KeyCode::End);
    key(&mut app, KeyCode::Enter);
    let screen = render(&mut app);
    assert!(
        screen.contains("webhook deliveries failing (1)"),
        "{screen}"
    );
    let line = line_with(&screen, "msg_5_ep_hooks");
    assert!(
        line.contains("job.completed after 3 tries: HTTP 503: busy; next try in 29m")
            || line.contains("job.completed after 3 tries: HTTP 503: busy; next try in 30m"),
        "{line}"
    );
    assert!(
        !screen.contains("msg_1_ep_hooks"),
        "delivered ones are not failing"
    );
}
