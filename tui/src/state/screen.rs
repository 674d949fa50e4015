//! What the user is doing with the dashboard: the screen shown, the line
//! being typed, the submit form, and how far each view is scrolled. The app
//! changes it; the views only read it.

use super::SubmitForm;

/// What the dashboard shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The jobs table.
    Table,
    /// One job in detail.
    Detail,
    /// The key list.
    Help,
    /// The submit form.
    Form,
    /// Typing a filter.
    FilterInput,
    /// Typing a job to watch (`api:result_key`).
    WatchInput,
}

/// The dashboard's screen state.
#[derive(Debug)]
pub struct Screen {
    /// Current screen.
    pub mode: Mode,
    /// Screen to return to from help and inputs.
    pub previous: Mode,
    /// The submit form.
    pub form: SubmitForm,
    /// Text being typed in an input line.
    pub input: String,
    /// Rows of the table area at the last draw (for paging).
    pub table_height: usize,
    /// First line shown of the detail view.
    pub detail_scroll: u16,
    /// The task whose pictures the detail view shows.
    pub preview_task: usize,
}

impl Default for Screen {
    fn default() -> Self {
        Screen {
            mode: Mode::Table,
            previous: Mode::Table,
            form: SubmitForm::default(),
            input: String::new(),
            table_height: 20,
            detail_scroll: 0,
            preview_task: 0,
        }
    }
}

/// What a frame found out that only drawing can tell: the app keeps it for
/// the next key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drawn {
    /// Rows the table showed (none when it was not drawn).
    pub table_rows: Option<usize>,
    /// Furthest the detail view can scroll (none when it was not drawn).
    pub detail_last_line: Option<u16>,
}
