//! Which jobs the table shows, in what order, and which is selected.

use std::collections::{HashMap, HashSet};

use retouch_api::v1 as pb;

use super::jobs::{JobKey, JobRow, Jobs};

/// One line of the table: a batch, a job, or one task of an expanded job.
#[derive(Debug, Clone, Copy)]
pub enum TableLine<'a> {
    /// A batch's summary row; its jobs follow when it is open.
    Batch(&'a BatchGroup),
    /// A job's summary row.
    Job {
        /// The job.
        job: &'a JobRow,
        /// Whether it is shown as one of an open batch's jobs.
        in_batch: bool,
    },
    /// Task `index` of an expanded job, under the job's row.
    Task {
        /// The job.
        job: &'a JobRow,
        /// Position of the task in the job.
        index: usize,
        /// Whether the job is one of an open batch's jobs.
        in_batch: bool,
    },
}

/// What a table row stands for: what the selection and expansion hold on
/// to as rows move.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RowKey {
    /// A job.
    Job(JobKey),
    /// A batch, by id.
    Batch(String),
}

/// A batch as the table shows it: its jobs that pass the filter, in the
/// table's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchGroup {
    /// The batch id.
    pub id: String,
    /// Positions in `Jobs` of its jobs.
    members: Vec<usize>,
}

impl BatchGroup {
    /// Its jobs shown.
    pub fn jobs<'a>(&'a self, jobs: &'a Jobs) -> impl Iterator<Item = &'a JobRow> + 'a {
        self.members.iter().map(|&i| jobs.at(i))
    }

    /// Number of its jobs shown.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether none of its jobs is shown (never, for a group in the table).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Its jobs' tasks per status: (waiting, running, success, failed).
    pub fn counts(&self, jobs: &Jobs) -> [usize; 4] {
        self.jobs(jobs).fold([0; 4], |mut sum, job| {
            for (total, n) in sum.iter_mut().zip(job.counts()) {
                *total += n;
            }
            sum
        })
    }

    /// The status that speaks for the batch: ACTIVE while any job is, then
    /// the worst of its jobs' (lost or unknown before completed).
    pub fn status(&self, jobs: &Jobs) -> pb::JobStatus {
        let statuses: Vec<pb::JobStatus> = self.jobs(jobs).map(|j| j.status).collect();
        [
            pb::JobStatus::Active,
            pb::JobStatus::Lost,
            pb::JobStatus::SubmitOutcomeUnknown,
            pb::JobStatus::Completed,
        ]
        .into_iter()
        .find(|s| statuses.contains(s))
        .unwrap_or(pb::JobStatus::Unspecified)
    }
}

/// One selectable row, in display order.
#[derive(Debug, Clone)]
enum Entry {
    /// A job (position in `Jobs`), on its own or as one of an open batch's.
    Job { position: usize, in_batch: bool },
    /// A batch.
    Batch(BatchGroup),
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
            || job.batch_id.to_lowercase().contains(&needle)
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
/// change), selection and scroll position. A batch's jobs are grouped under
/// one row, placed where its first job sorts; the row opens to show them.
#[derive(Debug, Default)]
pub struct TableView {
    filter: Filter,
    sort: Sort,
    /// The shown rows, in display order.
    order: Vec<Entry>,
    /// Jobs generation and settings `order` was computed for.
    computed_for: Option<u64>,
    settings_changed: bool,
    /// The selected row (kept by key, so it stays put as rows move).
    selected: Option<RowKey>,
    /// First row shown.
    offset: usize,
    /// Whether jobs show their tasks unless listed in `toggled`.
    expand_all: bool,
    /// Jobs whose expansion differs from `expand_all`.
    toggled: HashSet<JobKey>,
    /// Batches showing their jobs.
    open_batches: HashSet<String>,
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
        let mut sorted: Vec<usize> = (0..jobs.len())
            .filter(|&i| self.filter.admits(jobs.at(i)))
            .collect();
        let sort = self.sort;
        sorted.sort_by(|&a, &b| {
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
        self.order = self.grouped(jobs, sorted);
        self.computed_for = Some(jobs.generation());
        self.settings_changed = false;
        // A narrower filter may leave fewer rows than the scroll position.
        self.offset = self.offset.min(self.order.len().saturating_sub(1));
        if self.selected_index(jobs).is_none() {
            self.selected = self.fallback_selection(jobs);
        }
    }

    /// `sorted` job positions as rows: batches' jobs gathered under their
    /// batch's row (at its first job's place), listed when it is open.
    fn grouped(&self, jobs: &Jobs, sorted: Vec<usize>) -> Vec<Entry> {
        let mut groups: Vec<BatchGroup> = Vec::new();
        let mut group_of: HashMap<&str, usize> = HashMap::new();
        // A job on its own, or the index of a group in `groups`.
        let mut slots: Vec<Result<usize, usize>> = Vec::with_capacity(sorted.len());
        for position in sorted {
            let batch = jobs.at(position).batch_id.as_str();
            if batch.is_empty() {
                slots.push(Ok(position));
            } else if let Some(&g) = group_of.get(batch) {
                groups[g].members.push(position);
            } else {
                group_of.insert(batch, groups.len());
                slots.push(Err(groups.len()));
                groups.push(BatchGroup {
                    id: batch.to_owned(),
                    members: vec![position],
                });
            }
        }
        let mut order = Vec::with_capacity(slots.len());
        for slot in slots {
            match slot {
                Ok(position) => order.push(Entry::Job {
                    position,
                    in_batch: false,
                }),
                Err(g) => {
                    let group = std::mem::replace(
                        &mut groups[g],
                        BatchGroup {
                            id: String::new(),
                            members: Vec::new(),
                        },
                    );
                    let open = self.open_batches.contains(&group.id);
                    let members = if open {
                        group.members.clone()
                    } else {
                        Vec::new()
                    };
                    order.push(Entry::Batch(group));
                    order.extend(members.into_iter().map(|position| Entry::Job {
                        position,
                        in_batch: true,
                    }));
                }
            }
        }
        order
    }

    /// Where the selection goes when its row is no longer shown: to its
    /// batch's row if its job is in a closed batch (a filter hiding the
    /// selection would otherwise let Enter and d act unseen), else to the
    /// first row shown.
    fn fallback_selection(&self, jobs: &Jobs) -> Option<RowKey> {
        if let Some(RowKey::Job(key)) = &self.selected
            && let Some(job) = jobs.get(key)
            && !job.batch_id.is_empty()
        {
            let batch = RowKey::Batch(job.batch_id.clone());
            if self.order.iter().any(|e| self.key_of(jobs, e) == batch) {
                return Some(batch);
            }
        }
        let first = self.order.get(self.offset).or(self.order.first());
        first.map(|e| self.key_of(jobs, e))
    }

    fn key_of(&self, jobs: &Jobs, entry: &Entry) -> RowKey {
        match entry {
            Entry::Job { position, .. } => RowKey::Job(jobs.at(*position).key.clone()),
            Entry::Batch(group) => RowKey::Batch(group.id.clone()),
        }
    }

    /// Number of rows shown (batches, jobs on their own, and the jobs of
    /// open batches).
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no row is shown.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The lines that fit in `height`, from the first row shown on: each
    /// row, followed by its tasks when it is an expanded job (after
    /// [`TableView::refresh`]).
    pub fn visible<'a>(&'a self, jobs: &'a Jobs, height: usize) -> Vec<TableLine<'a>> {
        let mut lines = Vec::with_capacity(height);
        for entry in self.order.iter().skip(self.offset) {
            if lines.len() >= height {
                break;
            }
            match entry {
                Entry::Batch(group) => lines.push(TableLine::Batch(group)),
                &Entry::Job { position, in_batch } => {
                    let job = jobs.at(position);
                    lines.push(TableLine::Job { job, in_batch });
                    if self.is_expanded(&job.key) {
                        lines.extend((0..job.tasks.len()).map(|index| TableLine::Task {
                            job,
                            index,
                            in_batch,
                        }));
                    }
                }
            }
        }
        lines.truncate(height);
        lines
    }

    /// Whether `job` shows one line per task under its own.
    pub fn is_expanded(&self, job: &JobKey) -> bool {
        self.expand_all != self.toggled.contains(job)
    }

    /// Whether batch `id` shows its jobs.
    pub fn is_open(&self, id: &str) -> bool {
        self.open_batches.contains(id)
    }

    /// Whether the selected row is expanded: a job showing its tasks, or
    /// a batch showing its jobs.
    pub fn selected_is_expanded(&self) -> bool {
        match &self.selected {
            Some(RowKey::Job(key)) => self.is_expanded(key),
            Some(RowKey::Batch(id)) => self.is_open(id),
            None => false,
        }
    }

    /// Expands (`true`) or collapses the selected row: a job's tasks, or a
    /// batch's jobs. Collapsing a batch's job that shows no tasks closes
    /// the batch and selects its row, as in a tree.
    pub fn expand_selected(&mut self, jobs: &Jobs, expanded: bool, height: usize) {
        if !expanded
            && let Some(RowKey::Job(key)) = &self.selected
            && !self.is_expanded(key)
            && let Some(job) = jobs.get(key)
            && self.open_batches.contains(&job.batch_id)
        {
            self.selected = Some(RowKey::Batch(job.batch_id.clone()));
        }
        match self.selected.clone() {
            None => return,
            Some(RowKey::Job(key)) => {
                if expanded == self.expand_all {
                    self.toggled.remove(&key);
                } else {
                    self.toggled.insert(key);
                }
            }
            Some(RowKey::Batch(id)) => {
                let changed = if expanded {
                    self.open_batches.insert(id)
                } else {
                    self.open_batches.remove(&id)
                };
                if changed {
                    self.settings_changed = true;
                    self.refresh(jobs);
                }
            }
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

    /// Lines the row at display position `index` takes.
    fn lines_of(&self, jobs: &Jobs, index: usize) -> usize {
        match &self.order[index] {
            Entry::Batch(_) => 1,
            Entry::Job { position, .. } => {
                let job = jobs.at(*position);
                if self.is_expanded(&job.key) {
                    1 + job.tasks.len()
                } else {
                    1
                }
            }
        }
    }

    /// Index among shown rows of the selected row.
    pub fn selected_index(&self, jobs: &Jobs) -> Option<usize> {
        let key = self.selected.as_ref()?;
        self.order.iter().position(|entry| match (entry, key) {
            (Entry::Job { position, .. }, RowKey::Job(k)) => &jobs.at(*position).key == k,
            (Entry::Batch(group), RowKey::Batch(id)) => &group.id == id,
            _ => false,
        })
    }

    /// The selected job's key (`None` when a batch row is selected).
    pub fn selected(&self) -> Option<&JobKey> {
        match self.selected.as_ref()? {
            RowKey::Job(key) => Some(key),
            RowKey::Batch(_) => None,
        }
    }

    /// The selected row.
    pub fn selected_row(&self) -> Option<&RowKey> {
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
        self.selected = Some(self.key_of(jobs, &self.order[next]));
        self.scroll_to(jobs, next, height);
    }

    /// Scrolls so that the row at display position `index`, with its tasks
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
        // Walk up from the row towards the current first row while the
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
