//! The live error panel: the latest errors with their codes, and counts per
//! code.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::format;
use crate::state::{Dashboard, JobKey};

pub(super) fn draw(frame: &mut Frame, area: Rect, state: &Dashboard) {
    let [list_area, counts_area] =
        Layout::horizontal([Constraint::Fill(3), Constraint::Length(28)]).areas(area);
    let height = usize::from(list_area.height.saturating_sub(2));
    let red = Style::default().fg(Color::Red);
    let lines: Vec<Line> = state
        .errors
        .newest_first()
        .take(height)
        .map(|e| {
            let code = e.label();
            // The gRPC code is shown apart only when the label is not it.
            let grpc = e.grpc_code().filter(|g| *g != code).unwrap_or("");
            let job = e.job.as_ref().map(JobKey::to_string).unwrap_or_default();
            Line::from(vec![
                Span::raw(format!("{} ", format::clock(e.time))),
                Span::styled(format!("{code:>11} "), red),
                Span::styled(
                    if grpc.is_empty() {
                        String::new()
                    } else {
                        format!("{grpc} ")
                    },
                    red,
                ),
                Span::raw(format!("{job} ")),
                Span::raw(e.message.clone()),
            ])
        })
        .collect();
    let title = format!(" errors ({}) ", state.errors.total());
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
        list_area,
    );
    let counts: Vec<Line> = state
        .errors
        .counts()
        .into_iter()
        .take(usize::from(counts_area.height.saturating_sub(2)))
        .map(|(label, n)| {
            Line::from(vec![
                Span::styled(format!("{label:>14}"), red),
                Span::raw(format!(" ×{n}")),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(counts).block(Block::default().borders(Borders::ALL).title(" per code ")),
        counts_area,
    );
}
