//! The jobs table: only the rows that fit are built.

use std::time::SystemTime;

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Row, Table};
use retouch_api::v1 as pb;

use super::format;
use crate::app::App;
use crate::state::{JobRow, api_name};

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let now = SystemTime::now();
    let state = &app.state;
    let table = &state.table;
    let selected = table.selected();
    let rows: Vec<Row> = table
        .visible(&state.jobs, app.table_height)
        .into_iter()
        .map(|job| {
            let row = row(job, now);
            if Some(&job.key) == selected {
                row.style(Style::default().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        })
        .collect();
    let title = format!(
        " jobs {}–{} of {} ",
        (table.offset() + 1).min(table.len()),
        (table.offset() + app.table_height).min(table.len()),
        table.len()
    );
    let header = Row::new([
        "API",
        "RESULT KEY",
        "WAIT RUN OK FAIL",
        "STATUS",
        "AGE",
        "IN STATE",
        "LAST ERROR",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Length(8),
        Constraint::Min(22),
        Constraint::Length(17),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Fill(1),
    ];
    let widget = Table::new(rows, widths)
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(title));
    frame.render_widget(widget, area);
}

fn row(job: &JobRow, now: SystemTime) -> Row<'static> {
    let [waiting, running, ok, failed] = job.counts();
    let counts = Line::from(vec![
        Span::raw(format!("{waiting:>4} ")),
        Span::styled(
            format!("{running:>3} "),
            format::task_style(pb::TaskStatus::Running),
        ),
        Span::styled(
            format!("{ok:>2} "),
            format::task_style(pb::TaskStatus::Success),
        ),
        Span::styled(
            format!("{failed:>4}"),
            if failed > 0 {
                format::task_style(pb::TaskStatus::Failed)
            } else {
                Style::default()
            },
        ),
    ]);
    let status_style = match job.status {
        pb::JobStatus::Lost => Style::default().fg(Color::Red),
        pb::JobStatus::Completed if failed > 0 => Style::default().fg(Color::Red),
        pb::JobStatus::Completed => Style::default().fg(Color::Green),
        _ => Style::default().fg(Color::Yellow),
    };
    let last_error = job
        .last_error
        .as_ref()
        .map(|e| format!("{} {}", e.code(), e.message))
        .unwrap_or_default();
    Row::new(vec![
        Cell::from(api_name(job.key.api)),
        Cell::from(job.key.result_key.clone()),
        Cell::from(counts),
        Cell::from(format::job_status(job.status)).style(status_style),
        Cell::from(format::since(job.accepted_at, now)),
        Cell::from(format::since(job.state_since(), now)),
        Cell::from(last_error).style(Style::default().fg(Color::Red)),
    ])
}
