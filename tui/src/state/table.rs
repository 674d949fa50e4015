//! Which jobs the table shows, in what order, and which is selected.

use retouch_api::v1 as pb;

use super::jobs::{JobKey, JobRow, Jobs};

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
                job.status == pb::JobStatus::Lost
                    || job.last_error.is_some()
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
    /// First row shown.
    offset: usize,
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
        if self.selected.is_none() {
            self.selected = self.order.first().map(|&i| jobs.at(i).key.clone());
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

    /// The rows in `offset..offset + height` (after [`TableView::refresh`]).
    pub fn visible<'a>(&self, jobs: &'a Jobs, height: usize) -> Vec<&'a JobRow> {
        self.order
            .iter()
            .skip(self.offset)
            .take(height)
            .map(|&i| jobs.at(i))
            .collect()
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
        self.scroll_to(next, height);
    }

    /// Keeps the selection visible in a window of `height` rows.
    pub fn scroll_to(&mut self, index: usize, height: usize) {
        let height = height.max(1);
        if index < self.offset {
            self.offset = index;
        } else if index >= self.offset + height {
            self.offset = index + 1 - height;
        }
        self.offset = self.offset.min(self.order.len().saturating_sub(1));
    }
}

fn status_rank(job: &JobRow) -> (u8, std::cmp::Reverse<usize>) {
    let failed = job.counts()[3];
    let rank = match job.status {
        pb::JobStatus::Lost => 0,
        pb::JobStatus::Active => 1,
        _ => 2,
    };
    (rank, std::cmp::Reverse(failed))
}
