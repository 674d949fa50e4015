//! Which jobs the table shows, in what order, and which is selected.

use std::collections::HashSet;

use retouch_api::v1 as pb;

use super::jobs::{JobKey, JobRow, Jobs};

/// One line of the table: a job, or one task of an expanded job.
#[derive(Debug, Clone, Copy)]
pub enum TableLine<'a> {
    /// A job's summary row.
    Job(&'a JobRow),
    /// Task `index` of an expanded job, under the job's row.
    Task {
        /// The job.
        job: &'a JobRow,
        /// Position of the task in the job.
        index: usize,
    },
}

/// Filter by API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ApiFilter {
    /// Both APIs.
    #[default]
    All,
    /// Instance matting only.
    Matting,
    /// Object removal only.
    Removal,
}

impl ApiFilter {
    /// The next choice, for a key that cycles.
    pub fn next(self) -> Self {
        match self {
            ApiFilter::All => ApiFilter::Matting,
            ApiFilter::Matting => ApiFilter::Removal,
            ApiFilter::Removal => ApiFilter::All,
        }
    }

    fn admits(self, api: pb::Api) -> bool {
        match self {
            ApiFilter::All => true,
            ApiFilter::Matting => api == pb::Api::InstanceMatting,
            ApiFilter::Removal => api == pb::Api::ObjectRemoval,
        }
    }
}

/// Filter by job status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatusFilter {
    /// Every job.
    #[default]
    All,
    /// Jobs still in progress.
    Active,
    /// Finished jobs.
    Completed,
    /// Jobs with a FAILED task or an upstream error, or lost.
    Troubled,
}

impl StatusFilter {
    /// The next choice, for a key that cycles.
    pub fn next(self) -> Self {
        match self {
            StatusFilter::All => StatusFilter::Active,
            StatusFilter::Active => StatusFilter::Completed,
            StatusFilter::Completed => StatusFilter::Troubled,
            StatusFilter::Troubled => StatusFilter::All,
        }
    }

    fn admits(self, job: &JobRow) -> bool {
        match self {
            StatusFilter::All => true,
            StatusFilter::Active => job.status == pb::JobStatus::Active,
            StatusFilter::Completed => job.status == pb::JobStatus::Completed,
            StatusFilter::Troubled => {
                matches!(
                    job.status,
                    pb::JobStatus::Lost | pb::JobStatus::SubmitOutcomeUnknown
                ) || job.last_error.is_some()
                    || job.tasks.iter().any(|t| t.status == pb::TaskStatus::Failed)
            }
        }
    }
}

/// What the table is sorted by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortKey {
    /// When retouchd accepted the job (default: newest first).
    #[default]
    Age,
    /// When the job last changed state.
    LastChange,
    /// Job status, then failures.
    Status,
    /// Result key.
    Key,
}

impl SortKey {
    /// The next choice, for a key that cycles.
    pub fn next(self) -> Self {
        match self {
            SortKey::Age => SortKey::LastChange,
            SortKey::LastChange => SortKey::Status,
            SortKey::Status => SortKey::Key,
            SortKey::Key => SortKey::Age,
        }
    }

    /// Short name for the header.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Age => "age",
            SortKey::LastChange => "last change",
            SortKey::Status => "status",
            SortKey::Key => "key",
        }
    }
}

/// Sort key and direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sort {
    /// What.
    pub key: SortKey,
    /// Reverse the natural order (newest first for times).
    pub reversed: bool,
}

/// The table's filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Text that must appear in the result key, the API name, a task's
    /// message or the last error code (case-insensitive).
    pub text: String,
    /// API.
    pub api: ApiFilter,
    /// Status.
    pub status: StatusFilter,
}

impl Filter {
    /// Whether the job passes.
    pub fn admits(&self, job: &JobRow) -> bool {
        if !self.api.admits(job.key.api) || !self.status.admits(job) {
            return false;
        }
        if self.text.is_empty() {
            return true;
        }
        let needle = self.text.to_lowercase();
        job.key.result_key.to_lowercase().contains(&needle)
            || api_name(job.key.api).contains(&needle)
            || job
                .last_error
                .as_ref()
                .is_some_and(|e| e.code().to_lowercase().contains(&needle))
            || job
                .tasks
                .iter()
                .any(|t| t.message.to_lowercase().contains(&needle))
    }
}

/// Lower-case API name as shown and filtered on.
pub fn api_name(api: pb::Api) -> &'static str {
    match api {
        pb::Api::InstanceMatting => "matting",
        pb::Api::ObjectRemoval => "removal",
        pb::Api::Unspecified => "?",
    }
}

/// Filter, sort, the resulting row order (cached until jobs or settings
/// change), selection and scroll position.
#[derive(Debug, Default)]
pub struct TableView {
    filter: Filter,
    sort: Sort,
    /// Positions in `Jobs` of the shown rows, in display order.
    order: Vec<usize>,
    /// Jobs generation and settings `order` was computed for.
    computed_for: Option<u64>,
    settings_changed: bool,
    /// The selected job (kept by key, so it stays put as rows move).
    selected: Option<JobKey>,
    /// First job shown.
    offset: usize,
    /// Whether jobs show their tasks unless listed in `toggled`.
    expand_all: bool,
    /// Jobs whose expansion differs from `expand_all`.
    toggled: HashSet<JobKey>,
}

impl TableView {
    /// The filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Changes the filter.
    pub fn set_filter(&mut self, filter: Filter) {
        self.filter = filter;
        self.settings_changed = true;
    }

    /// The sort.
    pub fn sort(&self) -> Sort {
        self.sort
    }

    /// Changes the sort.
    pub fn set_sort(&mut self, sort: Sort) {
        self.sort = sort;
        self.settings_changed = true;
    }

    /// Recomputes the row order if jobs or settings changed since last
    /// time. Cheap when nothing did; `O(n log n)` otherwise, at most once
    /// per frame.
    pub fn refresh(&mut self, jobs: &Jobs) {
        if self.computed_for == Some(jobs.generation()) && !self.settings_changed {
            return;
        }
        self.order.clear();
        self.order
            .extend((0..jobs.len()).filter(|&i| self.filter.admits(jobs.at(i))));
        let sort = self.sort;
        self.order.sort_by(|&a, &b| {
            let (a, b) = (jobs.at(a), jobs.at(b));
            let ordering = match sort.key {
                SortKey::Age => b.accepted_at.cmp(&a.accepted_at),
                SortKey::LastChange => b.state_since().cmp(&a.state_since()),
                SortKey::Status => status_rank(a).cmp(&status_rank(b)),
                SortKey::Key => (&a.key.result_key, a.key.api).cmp(&(&b.key.result_key, b.key.api)),
            }
            .then_with(|| a.key.cmp(&b.key));
            if sort.reversed {
                ordering.reverse()
            } else {
                ordering
            }
        });
        self.computed_for = Some(jobs.generation());
        self.settings_changed = false;
        // A narrower filter may leave fewer jobs than the scroll position.
        self.offset = self.offset.min(self.order.len().saturating_sub(1));
        // A selection the filter hides would act unseen (Enter, d): move it
        // to the first job shown.
        if self.selected_index(jobs).is_none() {
            let first = self.order.get(self.offset).or(self.order.first());
            self.selected = first.map(|&i| jobs.at(i).key.clone());
        }
    }

    /// Number of rows shown.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no row is shown.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The lines that fit in `height`, from the first job shown on: each
    /// job, followed by its tasks when expanded (after
    /// [`TableView::refresh`]).
    pub fn visible<'a>(&self, jobs: &'a Jobs, height: usize) -> Vec<TableLine<'a>> {
        let mut lines = Vec::with_capacity(height);
        for &i in self.order.iter().skip(self.offset) {
            if lines.len() >= height {
                break;
            }
            let job = jobs.at(i);
            lines.push(TableLine::Job(job));
            if self.is_expanded(&job.key) {
                lines.extend((0..job.tasks.len()).map(|index| TableLine::Task { job, index }));
            }
        }
        lines.truncate(height);
        lines
    }

    /// Whether `job` shows one line per task under its own.
    pub fn is_expanded(&self, job: &JobKey) -> bool {
        self.expand_all != self.toggled.contains(job)
    }

    /// Expands (`true`) or collapses the selected job.
    pub fn expand_selected(&mut self, jobs: &Jobs, expanded: bool, height: usize) {
        let Some(key) = self.selected.clone() else {
            return;
        };
        if expanded == self.expand_all {
            self.toggled.remove(&key);
        } else {
            self.toggled.insert(key);
        }
        if let Some(index) = self.selected_index(jobs) {
            self.scroll_to(jobs, index, height);
        }
    }

    /// Expands every job, or collapses every job if all were expanded.
    pub fn toggle_all(&mut self, jobs: &Jobs, height: usize) {
        self.expand_all = !(self.expand_all && self.toggled.is_empty());
        self.toggled.clear();
        if let Some(index) = self.selected_index(jobs) {
            self.scroll_to(jobs, index, height);
        }
    }

    /// Lines the job at display position `index` takes.
    fn lines_of(&self, jobs: &Jobs, index: usize) -> usize {
        let job = jobs.at(self.order[index]);
        if self.is_expanded(&job.key) {
            1 + job.tasks.len()
        } else {
            1
        }
    }

    /// Index among shown rows of the selected job.
    pub fn selected_index(&self, jobs: &Jobs) -> Option<usize> {
        let key = self.selected.as_ref()?;
        self.order.iter().position(|&i| &jobs.at(i).key == key)
    }

    /// The selected job's key.
    pub fn selected(&self) -> Option<&JobKey> {
        self.selected.as_ref()
    }

    /// First row shown.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Moves the selection by `delta` rows and scrolls so that it stays in
    /// a window of `height` rows.
    pub fn move_selection(&mut self, jobs: &Jobs, delta: isize, height: usize) {
        if self.order.is_empty() {
            self.selected = None;
            return;
        }
        let current = self.selected_index(jobs).unwrap_or(0) as isize;
        let last = self.order.len() as isize - 1;
        let next = (current + delta).clamp(0, last) as usize;
        self.selected = Some(jobs.at(self.order[next]).key.clone());
        self.scroll_to(jobs, next, height);
    }

    /// Scrolls so that the job at display position `index`, with its tasks
    /// as far as they fit, is inside a window of `height` lines. Costs at
    /// most `height` steps.
    pub fn scroll_to(&mut self, jobs: &Jobs, index: usize, height: usize) {
        if self.order.is_empty() {
            self.offset = 0;
            return;
        }
        let height = height.max(1);
        let index = index.min(self.order.len() - 1);
        if index <= self.offset {
            self.offset = index;
            return;
        }
        // Walk up from the job towards the current first job while the
        // lines above still fit.
        let mut first = index;
        let mut used = self.lines_of(jobs, index).min(height);
        while first > self.offset {
            let above = self.lines_of(jobs, first - 1);
            if used + above > height {
                break;
            }
            used += above;
            first -= 1;
        }
        self.offset = first;
    }
}

fn status_rank(job: &JobRow) -> (u8, std::cmp::Reverse<usize>) {
    let failed = job.counts()[3];
    let rank = match job.status {
        pb::JobStatus::Lost | pb::JobStatus::SubmitOutcomeUnknown => 0,
        pb::JobStatus::Active => 1,
        _ => 2,
    };
    (rank, std::cmp::Reverse(failed))
}
