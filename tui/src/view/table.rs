//! The jobs table: only the rows that fit are built.

use std::time::SystemTime;

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Row, Table};
use retouch_api::v1 as pb;

use super::format;
use crate::state::{BatchGroup, Dashboard, JobRow, Jobs, RowKey, TableLine, api_name};

/// Draws the table's rows that fit in `rows`.
pub(super) fn draw(frame: &mut Frame, area: Rect, state: &Dashboard, rows: usize) {
    let now = SystemTime::now();
    let table = &state.table;
    let selected = table.selected_row();
    let lines = table.visible(&state.jobs, rows);
    let rows_shown = lines
        .iter()
        .filter(|line| !matches!(line, TableLine::Task { .. }))
        .count();
    let highlight = |row: Row<'static>, key: RowKey| {
        if Some(&key) == selected {
            row.style(Style::default().add_modifier(Modifier::REVERSED))
        } else {
            row
        }
    };
    let rows: Vec<Row> = lines
        .into_iter()
        .map(|line| match line {
            TableLine::Batch(group) => highlight(
                batch_row(group, &state.jobs, table.is_open(&group.id), now),
                RowKey::Batch(group.id.clone()),
            ),
            TableLine::Job { job, in_batch } => highlight(
                row(job, table.is_expanded(&job.key), in_batch, now),
                RowKey::Job(job.key.clone()),
            ),
            TableLine::Task {
                job,
                index,
                in_batch,
            } => task_row(job, index, in_batch, now),
        })
        .collect();
    let title = format!(
        " rows {}–{} of {} ",
        (table.offset() + 1).min(table.len()),
        table.offset() + rows_shown,
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

/// Tasks per status, coloured: waiting, running, success, failed.
fn counts_line([waiting, running, ok, failed]: [usize; 4]) -> Line<'static> {
    Line::from(vec![
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
    ])
}

fn status_style(status: pb::JobStatus, failed: usize) -> Style {
    match status {
        pb::JobStatus::Lost | pb::JobStatus::SubmitOutcomeUnknown => {
            Style::default().fg(Color::Red)
        }
        pb::JobStatus::Completed if failed > 0 => Style::default().fg(Color::Red),
        pb::JobStatus::Completed => Style::default().fg(Color::Green),
        _ => Style::default().fg(Color::Yellow),
    }
}

/// A batch: its jobs' tasks summed, the status that speaks for them, and
/// how many of its jobs have an error.
fn batch_row(group: &BatchGroup, jobs: &Jobs, open: bool, now: SystemTime) -> Row<'static> {
    let counts = group.counts(jobs);
    let status = group.status(jobs);
    let first = group.jobs(jobs).next();
    let accepted = group.jobs(jobs).filter_map(|j| j.accepted_at).min();
    let changed = group.jobs(jobs).filter_map(JobRow::state_since).max();
    let troubled = group.jobs(jobs).filter(|j| j.last_error.is_some()).count();
    let short_id: String = group.id.chars().take(12).collect();
    Row::new(vec![
        Cell::from("batch"),
        Cell::from(first.map(|j| j.submitted_by.clone()).unwrap_or_default()),
        Cell::from(format!(
            "{} {short_id} · {} job{}",
            if open { "▾" } else { "▸" },
            group.len(),
            if group.len() == 1 { "" } else { "s" }
        )),
        Cell::from(counts_line(counts)),
        Cell::from(format::job_status(status)).style(status_style(status, counts[3])),
        Cell::from(format::since(accepted, now)),
        Cell::from(format::since(changed, now)),
        Cell::from(if troubled > 0 {
            format!("{troubled} job(s) with errors")
        } else {
            String::new()
        })
        .style(Style::default().fg(Color::Red)),
    ])
    .style(Style::default().add_modifier(Modifier::BOLD))
}

fn row(job: &JobRow, expanded: bool, in_batch: bool, now: SystemTime) -> Row<'static> {
    let counts = job.counts();
    let failed = counts[3];
    let status_style = status_style(job.status, failed);
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
        Cell::from(format!(
            "{}{marker}{}",
            if in_batch { "  " } else { "" },
            job.key.result_key
        )),
        Cell::from(counts_line(counts)),
        Cell::from(format::job_status(job.status)).style(status_style),
        Cell::from(format::since(job.accepted_at, now)),
        Cell::from(format::since(job.state_since(), now)),
        Cell::from(last_error).style(Style::default().fg(Color::Red)),
    ])
}

/// A task of an expanded job: its status, time in it, and its message.
fn task_row(job: &JobRow, index: usize, in_batch: bool, now: SystemTime) -> Row<'static> {
    let task = &job.tasks[index];
    let last = index + 1 == job.tasks.len();
    Row::new(vec![
        Cell::from(""),
        Cell::from(""),
        Cell::from(format!(
            "{}  {} task {index}",
            if in_batch { "  " } else { "" },
            if last { "└" } else { "├" }
        )),
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
