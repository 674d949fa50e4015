//! One job in detail: every task with its inputs, status history, results
//! and message.

use std::time::SystemTime;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use super::format;
use crate::preview::Previews;
use crate::state::{Dashboard, Screen, api_name};

/// The preview strip shows when the view has at least this many rows.
const PREVIEW_MIN_HEIGHT: u16 = 20;

/// Draws the selected job; returns the furthest it can scroll (none when
/// no job is selected).
pub(super) fn draw(
    frame: &mut Frame,
    area: Rect,
    state: &Dashboard,
    screen: &Screen,
    previews: &mut Previews,
) -> Option<u16> {
    let now = SystemTime::now();
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let preview_task = &screen.preview_task;
    let Some(job) = state.table.selected().and_then(|key| state.jobs.get(key)) else {
        frame.render_widget(
            Paragraph::new("no job selected").block(Block::default().borders(Borders::ALL)),
            area,
        );
        return None;
    };
    let area = match job.tasks.get(*preview_task) {
        Some(task) if area.height >= PREVIEW_MIN_HEIGHT => {
            let strip = (area.height * 2 / 5).min(18);
            let [top, rest] =
                Layout::vertical([Constraint::Length(strip), Constraint::Min(0)]).areas(area);
            let heading = if job.tasks.len() > 1 {
                format!(
                    "task {preview_task} of {} ([ ] other tasks)",
                    job.tasks.len()
                )
            } else {
                format!("task {preview_task}")
            };
            super::preview::draw(
                frame,
                top,
                previews,
                &crate::preview::sources(task),
                &heading,
            );
            rest
        }
        _ => area,
    };
    let mut lines = vec![Line::from(vec![
        Span::styled("status ", bold),
        Span::raw(format!(
            "{}   origin {:?}   accepted {} ago   last change {} ago",
            format::job_status(job.status),
            job.origin,
            format::since(job.accepted_at, now),
            format::since(job.updated_at, now),
        )),
    ])];
    if let Some(error) = &job.last_error {
        lines.push(Line::from(vec![
            Span::styled("last upstream error ", bold),
            Span::styled(
                format!("{} {}", error.code(), error.message),
                Style::default().fg(Color::Red),
            ),
        ]));
    }
    let failing = state.failing_deliveries.of_job(&job.key.result_key);
    if !failing.is_empty() {
        lines.push(Line::from(Span::styled(
            format!("webhook deliveries failing ({})", failing.len()),
            bold,
        )));
        for delivery in failing {
            lines.push(Line::styled(
                format!("  {}", format::failing_delivery(delivery, now)),
                Style::default().fg(Color::Red),
            ));
        }
    }
    for (i, task) in job.tasks.iter().enumerate() {
        lines.push(Line::raw(""));
        lines.push(Line::from(vec![
            Span::styled(format!("task {i} "), bold),
            Span::styled(
                format::task_status(task.status),
                format::task_style(task.status),
            ),
            Span::raw(format!(" for {}", format::since(task.since(), now))),
        ]));
        lines.push(Line::raw(format!("  image  {}", task.image_url)));
        lines.push(Line::raw(format!("  mask   {}", task.mask_url)));
        if task.seed.is_some() || task.kernel_size.is_some() {
            lines.push(Line::raw(format!(
                "  seed {}  kernel_size {}",
                task.seed.map_or("-".into(), |s| s.to_string()),
                task.kernel_size.map_or("-".into(), |k| k.to_string())
            )));
        }
        let mut history = vec![Span::raw("  history ")];
        for (n, (status, time)) in task.history.iter().enumerate() {
            if n > 0 {
                history.push(Span::raw(" → "));
            }
            history.push(Span::styled(
                format::task_status(*status),
                format::task_style(*status),
            ));
            if let Some(t) = time {
                history.push(Span::raw(format!(" {}", format::clock(*t))));
            }
        }
        lines.push(Line::from(history));
        // retouchd's copies first, when it has made them: they last.
        let (results, ours) = task.download_urls();
        for url in results {
            lines.push(Line::from(vec![
                Span::raw("  result "),
                Span::styled(url.clone(), Style::default().fg(Color::Cyan)),
            ]));
        }
        if ours {
            for url in &task.result_urls {
                lines.push(Line::from(vec![
                    Span::raw("  upstream "),
                    Span::styled(url.clone(), Style::default().fg(Color::DarkGray)),
                ]));
            }
        }
        if !task.message.is_empty() {
            lines.push(Line::from(vec![
                Span::raw("  message "),
                Span::styled(task.message.clone(), Style::default().fg(Color::Red)),
            ]));
        }
    }
    let title = format!(
        " {} {}  (Esc back · ↑↓ PgUp PgDn scroll · d download results) ",
        api_name(job.key.api),
        job.key.result_key
    );
    // At most so far that the last page is full. Lines are counted before
    // wrapping, so a long wrapped URL can keep the very end out of reach.
    let inner = usize::from(area.height.saturating_sub(2));
    let last = u16::try_from(lines.len().saturating_sub(inner)).unwrap_or(u16::MAX);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((screen.detail_scroll.min(last), 0))
            .block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
    Some(last)
}
