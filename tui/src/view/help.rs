//! The key list.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

/// Every key of the dashboard, as shown by `?`.
pub const KEYS: [(&str, &str); 22] = [
    ("↑ ↓  k j", "move the selection"),
    ("PgUp PgDn", "move a page"),
    ("g Home / G End", "first / last job"),
    ("Enter", "details of the selected job; opens a batch"),
    ("↑ ↓ PgUp PgDn g G", "detail: scroll"),
    ("[ ]", "detail: pictures of the previous / next task"),
    ("Esc Backspace", "back to the table"),
    (
        "Space / → l / ← h",
        "toggle / show / hide a job's tasks, or a batch's jobs",
    ),
    ("e", "show / hide every job's tasks"),
    ("/", "filter by text (key, batch, API, error code, message)"),
    ("a", "cycle API filter: all, matting, removal"),
    ("s", "cycle status filter: all, active, done, troubled"),
    ("o", "cycle sort: age, last change, status, key"),
    ("r", "reverse the sort"),
    ("n", "new job (submit form)"),
    ("w", "watch a result key (matting:<key>)"),
    ("d", "download the selected job's results"),
    ("Tab Shift-Tab", "form: next / previous field"),
    ("← →", "form: switch matting / removal"),
    ("Enter (form)", "validate and submit"),
    ("?", "this help (Esc closes)"),
    ("q  Ctrl-C", "quit"),
];

pub(super) fn draw(frame: &mut Frame, area: Rect) {
    super::clear(frame, area);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(format!("{key:>18}  "), bold),
                Span::raw(*what),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" keys ")),
        area,
    );
}
