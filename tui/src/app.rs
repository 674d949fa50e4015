//! The dashboard's behaviour: what each key does, and the loop that feeds
//! events in and draws frames, generic over the ratatui `Backend` so tests
//! drive it with a `TestBackend`.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures::{FutureExt, Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui_image::picker::Picker;
use retouch_api::v1 as pb;
use tokio::sync::mpsc;

use crate::event::Event;
use crate::preview::Previews;
use crate::request::JobRequest;
use crate::state::{Dashboard, JobKey, Mode, Screen, Sort, SubmitForm, Update};
use crate::view;

/// Frames are drawn at most this often, however fast events arrive.
pub const FRAME_BUDGET: Duration = Duration::from_millis(33);

/// Something the dashboard asks the outside world to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Upload what needs uploading and submit.
    Submit(JobRequest),
    /// Upload what needs uploading and submit these jobs as one batch.
    SubmitBatch {
        /// One task each.
        jobs: Vec<JobRequest>,
        /// The batch's idempotency key.
        request_id: String,
    },
    /// Watch one more job.
    Watch(pb::JobRef),
    /// Fetch and decode a preview image (answered by `Update::Preview`).
    LoadPreview(crate::preview::PreviewSource),
    /// Save these result URLs into `dir`, named after the job.
    Download {
        /// The job.
        job: JobKey,
        /// (task index, URL, whether the URL is retouchd's own) triples.
        urls: Vec<(usize, String, bool)>,
        /// Target folder.
        dir: PathBuf,
    },
}

/// The dashboard: state plus what the user is doing with it.
#[derive(Debug)]
pub struct App {
    /// Jobs, errors, rates, connection.
    pub state: Dashboard,
    /// What the user is doing: screen, input, form, scroll positions.
    pub screen: Screen,
    /// Where downloads go.
    pub download_dir: PathBuf,
    /// Preview pictures, loaded and loading.
    pub previews: Previews,
    /// Set when the user quits or the dashboard must stop.
    pub quit: bool,
    /// Why the dashboard stopped, when it was not the user's choice.
    pub failure: Option<String>,
    actions: Option<mpsc::UnboundedSender<Action>>,
}

impl App {
    /// A dashboard sending its actions to `actions` (none: actions are
    /// dropped, for tests and benches).
    pub fn new(actions: Option<mpsc::UnboundedSender<Action>>, download_dir: PathBuf) -> Self {
        App {
            state: Dashboard::default(),
            screen: Screen::default(),
            download_dir,
            previews: Previews::new(Picker::halfblocks(), crate::preview::DEFAULT_BUDGET),
            quit: false,
            failure: None,
            actions,
        }
    }

    /// Draws one frame. The views read the state; what only drawing can
    /// tell (rows that fit, how far the detail scrolls) is kept here for
    /// the next key.
    pub fn draw(&mut self, frame: &mut ratatui::Frame) {
        self.state.table.refresh(&self.state.jobs);
        let drawn = view::draw(frame, &self.state, &self.screen, &mut self.previews);
        if let Some(rows) = drawn.table_rows {
            self.screen.table_height = rows;
        }
        if let Some(last) = drawn.detail_last_line {
            self.screen.detail_scroll = self.screen.detail_scroll.min(last);
        }
    }

    /// Reacts to one event at wall-clock time `now`.
    pub fn handle(&mut self, event: Event, now: SystemTime) {
        match event {
            Event::Update(update) => match *update {
                Update::Preview { url, image } => self.previews.loaded(url, image),
                update => self.state.apply(update, now),
            },
            Event::Tick => {}
            Event::Shutdown(reason) => {
                self.quit = true;
                self.failure = reason;
            }
            Event::Terminal(TermEvent::Key(key)) if key.kind != KeyEventKind::Release => {
                self.on_key(key)
            }
            Event::Terminal(_) => {}
        }
        self.request_previews();
    }

    /// In the detail view, asks for the pictures of the previewed task that
    /// are neither loaded nor loading.
    fn request_previews(&mut self) {
        if self.screen.mode != Mode::Detail {
            return;
        }
        let Some(job) = self
            .state
            .table
            .selected()
            .and_then(|key| self.state.jobs.get(key))
        else {
            return;
        };
        self.screen.preview_task = self
            .screen
            .preview_task
            .min(job.tasks.len().saturating_sub(1));
        let Some(task) = job.tasks.get(self.screen.preview_task) else {
            return;
        };
        for source in crate::preview::sources(task) {
            if self.actions.is_some() && self.previews.wants(&source.url) {
                self.send(Action::LoadPreview(source));
            }
        }
    }

    fn on_key(&mut self, key: KeyEvent) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        match self.screen.mode {
            Mode::Form => self.on_form_key(key),
            Mode::FilterInput | Mode::WatchInput => self.on_input_key(key),
            Mode::Help => {
                if matches!(key.code, KeyCode::Esc | KeyCode::Char('?' | 'q')) {
                    self.screen.mode = self.screen.previous;
                }
            }
            Mode::Detail => {
                if !self.on_detail_key(key) {
                    self.on_view_key(key)
                }
            }
            Mode::Table => self.on_view_key(key),
        }
    }

    fn on_view_key(&mut self, key: KeyEvent) {
        let page = self.screen.table_height.max(1) as isize;
        let jobs = &self.state.jobs;
        let table = &mut self.state.table;
        table.refresh(jobs);
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => {
                self.screen.previous = self.screen.mode;
                self.screen.mode = Mode::Help;
            }
            KeyCode::Down | KeyCode::Char('j') => {
                table.move_selection(jobs, 1, self.screen.table_height)
            }
            KeyCode::Up | KeyCode::Char('k') => {
                table.move_selection(jobs, -1, self.screen.table_height)
            }
            KeyCode::PageDown => table.move_selection(jobs, page, self.screen.table_height),
            KeyCode::PageUp => table.move_selection(jobs, -page, self.screen.table_height),
            KeyCode::Home | KeyCode::Char('g') => {
                table.move_selection(jobs, isize::MIN / 2, self.screen.table_height)
            }
            KeyCode::End | KeyCode::Char('G') => {
                table.move_selection(jobs, isize::MAX / 2, self.screen.table_height)
            }
            KeyCode::Enter if self.screen.mode == Mode::Table && table.selected().is_some() => {
                self.screen.detail_scroll = 0;
                self.screen.preview_task = 0;
                self.previews.retry_failed();
                self.screen.mode = Mode::Detail
            }
            // A batch has no detail view of its own: Enter opens it.
            KeyCode::Enter if self.screen.mode == Mode::Table => {
                let open = table.selected_is_expanded();
                table.expand_selected(jobs, !open, self.screen.table_height)
            }
            KeyCode::Esc | KeyCode::Backspace if self.screen.mode == Mode::Detail => {
                self.screen.mode = Mode::Table
            }
            KeyCode::Char('/') => {
                self.screen.previous = self.screen.mode;
                self.screen.input = table.filter().text.clone();
                self.screen.mode = Mode::FilterInput;
            }
            KeyCode::Char('a') => {
                let mut filter = table.filter().clone();
                filter.api = filter.api.next();
                table.set_filter(filter);
            }
            KeyCode::Char('s') => {
                let mut filter = table.filter().clone();
                filter.status = filter.status.next();
                table.set_filter(filter);
            }
            KeyCode::Char('o') => {
                let sort = table.sort();
                table.set_sort(Sort {
                    key: sort.key.next(),
                    ..sort
                });
            }
            KeyCode::Char('r') => {
                let sort = table.sort();
                table.set_sort(Sort {
                    reversed: !sort.reversed,
                    ..sort
                });
            }
            KeyCode::Char('n') => {
                self.screen.previous = self.screen.mode;
                self.screen.mode = Mode::Form;
            }
            KeyCode::Char('w') => {
                self.screen.previous = self.screen.mode;
                self.screen.input.clear();
                self.screen.mode = Mode::WatchInput;
            }
            KeyCode::Char(' ') if self.screen.mode == Mode::Table => {
                let expanded = table.selected_is_expanded();
                table.expand_selected(jobs, !expanded, self.screen.table_height)
            }
            KeyCode::Right | KeyCode::Char('l') if self.screen.mode == Mode::Table => {
                table.expand_selected(jobs, true, self.screen.table_height)
            }
            KeyCode::Left | KeyCode::Char('h') if self.screen.mode == Mode::Table => {
                table.expand_selected(jobs, false, self.screen.table_height)
            }
            KeyCode::Char('e') if self.screen.mode == Mode::Table => {
                table.toggle_all(jobs, self.screen.table_height)
            }
            KeyCode::Char('d') => self.download_selected(),
            _ => {}
        }
    }

    /// Scrolling keys of the detail view; `false` for the keys it shares
    /// with the table.
    fn on_detail_key(&mut self, key: KeyEvent) -> bool {
        let page = u16::try_from(self.screen.table_height.max(1)).unwrap_or(u16::MAX);
        let scroll = &mut self.screen.detail_scroll;
        match key.code {
            KeyCode::Down | KeyCode::Char('j') => *scroll = scroll.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') => *scroll = scroll.saturating_sub(1),
            KeyCode::PageDown => *scroll = scroll.saturating_add(page),
            KeyCode::PageUp => *scroll = scroll.saturating_sub(page),
            KeyCode::Home | KeyCode::Char('g') => *scroll = 0,
            // The view clamps to the last line.
            KeyCode::End | KeyCode::Char('G') => *scroll = u16::MAX,
            // Which task's pictures show (clamped to the job's tasks).
            KeyCode::Char(']') => {
                self.screen.preview_task = self.screen.preview_task.saturating_add(1)
            }
            KeyCode::Char('[') => {
                self.screen.preview_task = self.screen.preview_task.saturating_sub(1)
            }
            _ => return false,
        }
        true
    }

    fn on_input_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Esc => {
                if self.screen.mode == Mode::FilterInput {
                    let mut filter = self.state.table.filter().clone();
                    filter.text.clear();
                    self.state.table.set_filter(filter);
                }
                self.screen.mode = self.screen.previous;
            }
            KeyCode::Enter => {
                let text = self.screen.input.trim().to_owned();
                if self.screen.mode == Mode::FilterInput {
                    let mut filter = self.state.table.filter().clone();
                    filter.text = text;
                    self.state.table.set_filter(filter);
                } else {
                    match parse_job_ref(&text) {
                        Some(job) => {
                            self.send(Action::Watch(job));
                            self.state.notice = Some(format!("looking up {text}..."));
                        }
                        None => {
                            self.state.notice = Some(
                                "watch: type matting:<result_key> or removal:<result_key>".into(),
                            );
                        }
                    }
                }
                self.screen.mode = self.screen.previous;
            }
            KeyCode::Backspace => {
                self.screen.input.pop();
                self.filter_as_typed();
            }
            KeyCode::Char(c) => {
                self.screen.input.push(c);
                self.filter_as_typed();
            }
            _ => {}
        }
    }

    /// While typing a filter, the table follows every keystroke.
    fn filter_as_typed(&mut self) {
        if self.screen.mode == Mode::FilterInput {
            let mut filter = self.state.table.filter().clone();
            filter.text = self.screen.input.clone();
            self.state.table.set_filter(filter);
        }
    }

    fn on_form_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Esc => self.screen.mode = self.screen.previous,
            KeyCode::Tab | KeyCode::Down => self.screen.form.cycle_focus(true),
            KeyCode::BackTab | KeyCode::Up => self.screen.form.cycle_focus(false),
            KeyCode::Left | KeyCode::Right
                if self.screen.form.focus == crate::state::FormField::Api =>
            {
                self.screen.form.toggle_api()
            }
            KeyCode::Backspace => self.screen.form.backspace(),
            KeyCode::Enter => {
                if let Some(request) = self.screen.form.validate() {
                    self.send(Action::Submit(request));
                    self.state.notice = Some("submitting...".into());
                    self.screen.form = SubmitForm {
                        api: self.screen.form.api,
                        ..SubmitForm::default()
                    };
                    self.screen.mode = self.screen.previous;
                }
            }
            KeyCode::Char(c) => self.screen.form.type_char(c),
            _ => {}
        }
    }

    fn download_selected(&mut self) {
        let Some(job) = self
            .state
            .table
            .selected()
            .and_then(|k| self.state.jobs.get(k))
        else {
            return;
        };
        let urls: Vec<(usize, String, bool)> = job
            .tasks
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                let (urls, ours) = t.download_urls();
                urls.iter().map(move |u| (i, u.clone(), ours))
            })
            .collect();
        if urls.is_empty() {
            self.state.notice = Some("no results to download yet".into());
            return;
        }
        let action = Action::Download {
            job: job.key.clone(),
            urls,
            dir: self.download_dir.clone(),
        };
        self.send(action);
        self.state.notice = Some(format!("downloading into {}", self.download_dir.display()));
    }

    fn send(&mut self, action: Action) {
        if let Some(actions) = &self.actions {
            let _ = actions.send(action);
        }
    }
}

/// Parses `matting:<key>` or `removal:<key>`.
pub fn parse_job_ref(text: &str) -> Option<pb::JobRef> {
    let (api, key) = text.split_once(':')?;
    let api = crate::request::parse_api(api)?;
    let key = key.trim();
    (!key.is_empty()).then(|| pb::JobRef {
        api: api as i32,
        result_key: key.to_owned(),
        ..Default::default()
    })
}

/// Runs the dashboard until the user quits or `events` ends: applies every
/// event as it comes, and draws when something changed, at most once per
/// [`FRAME_BUDGET`] (bursts of events cost one frame, not one each).
pub async fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut events: impl Stream<Item = Event> + Unpin,
) -> Result<(), B::Error> {
    let mut dirty = true;
    let mut next_frame = Instant::now();
    loop {
        if dirty && Instant::now() >= next_frame {
            terminal.draw(|frame| app.draw(frame))?;
            dirty = false;
            next_frame = Instant::now() + FRAME_BUDGET;
        }
        let event = if dirty {
            tokio::select! {
                event = events.next() => event,
                _ = tokio::time::sleep_until(next_frame.into()) => continue,
            }
        } else {
            events.next().await
        };
        let Some(event) = event else {
            return Ok(());
        };
        app.handle(event, SystemTime::now());
        // Take whatever else is already waiting before drawing.
        let mut drained = 0;
        while drained < 10_000 {
            match events.next().now_or_never() {
                Some(Some(event)) => app.handle(event, SystemTime::now()),
                _ => break,
            }
            drained += 1;
        }
        dirty = true;
        if app.quit {
            return Ok(());
        }
    }
}
