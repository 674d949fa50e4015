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
use crate::state::{JobRow, TableLine, api_name};

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let now = SystemTime::now();
    let state = &app.state;
    let table = &state.table;
    let selected = table.selected();
    let lines = table.visible(&state.jobs, app.table_height);
    let jobs_shown = lines
        .iter()
        .filter(|line| matches!(line, TableLine::Job(_)))
        .count();
    let rows: Vec<Row> = lines
        .into_iter()
        .map(|line| match line {
            TableLine::Job(job) => {
                let row = row(job, table.is_expanded(&job.key), now);
                if Some(&job.key) == selected {
                    row.style(Style::default().add_modifier(Modifier::REVERSED))
                } else {
                    row
                }
            }
            TableLine::Task { job, index } => task_row(job, index, now),
        })
        .collect();
    let title = format!(
        " jobs {}–{} of {} ",
        (table.offset() + 1).min(table.len()),
        table.offset() + jobs_shown,
        table.len()
    );
    let header = Row::new([
        "API",
        "BY",
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
        Constraint::Length(10),
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

fn row(job: &JobRow, expanded: bool, now: SystemTime) -> Row<'static> {
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
        pb::JobStatus::Lost | pb::JobStatus::SubmitOutcomeUnknown => {
            Style::default().fg(Color::Red)
        }
        pb::JobStatus::Completed if failed > 0 => Style::default().fg(Color::Red),
        pb::JobStatus::Completed => Style::default().fg(Color::Green),
        _ => Style::default().fg(Color::Yellow),
    };
    let last_error = job
        .last_error
        .as_ref()
        .map(|e| format!("{} {}", e.code(), e.message))
        .unwrap_or_default();
    let marker = match (job.tasks.is_empty(), expanded) {
        (true, _) => "  ",
        (false, true) => "▾ ",
        (false, false) => "▸ ",
    };
    Row::new(vec![
        Cell::from(api_name(job.key.api)),
        Cell::from(job.submitted_by.clone()),
        Cell::from(format!("{marker}{}", job.key.result_key)),
        Cell::from(counts),
        Cell::from(format::job_status(job.status)).style(status_style),
        Cell::from(format::since(job.accepted_at, now)),
        Cell::from(format::since(job.state_since(), now)),
        Cell::from(last_error).style(Style::default().fg(Color::Red)),
    ])
}

/// A task of an expanded job: its status, time in it, and its message.
fn task_row(job: &JobRow, index: usize, now: SystemTime) -> Row<'static> {
    let task = &job.tasks[index];
    let last = index + 1 == job.tasks.len();
    Row::new(vec![
        Cell::from(""),
        Cell::from(""),
        Cell::from(format!("  {} task {index}", if last { "└" } else { "├" })),
        Cell::from(format::task_status(task.status)).style(format::task_style(task.status)),
        Cell::from(""),
        Cell::from(""),
        Cell::from(format::since(task.since(), now)),
        Cell::from(task.message.clone()).style(if task.status == pb::TaskStatus::Failed {
            Style::default().fg(Color::Red)
        } else {
            Style::default()
        }),
    ])
    .style(Style::default().add_modifier(Modifier::DIM))
}
