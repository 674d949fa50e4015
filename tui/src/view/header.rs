//! The top line: connection, totals, rates, sort and filter.

use std::time::SystemTime;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::format;
use crate::state::{ApiFilter, Connection, Dashboard, StatusFilter};

pub(super) fn draw(frame: &mut Frame, area: Rect, state: &Dashboard) {
    let now = SystemTime::now();
    let (connection, colour) = match &state.connection {
        Connection::Connecting { attempt } => {
            (format!("connecting (try {attempt})"), Color::Yellow)
        }
        Connection::Connected { server_id, resumed } => (
            format!(
                "connected {}{}",
                short(server_id),
                if *resumed { " (resumed)" } else { "" }
            ),
            Color::Green,
        ),
        Connection::Disconnected { reason, retry_at } => (
            format!(
                "disconnected, retry in {}: {reason}",
                format::duration(retry_at.duration_since(now).ok())
            ),
            Color::Red,
        ),
    };
    let (active, completed, lost) = state.totals();
    let table = &state.table;
    let sort = table.sort();
    let filter = table.filter();
    let mut spans = vec![
        Span::styled(
            " retouch ",
            Style::default().add_modifier(Modifier::REVERSED),
        ),
        Span::raw(" "),
        Span::styled(connection, Style::default().fg(colour)),
        Span::raw(format!(
            " │ jobs {} active {active} done {completed} lost {lost} │ {:.1} ev/s │ upstream errors {}/min │ sort {}{}",
            state.jobs.len(),
            state.throughput.events_per_second(now),
            state.throughput.upstream_errors_per_minute(now),
            sort.key.name(),
            if sort.reversed { " ↑" } else { " ↓" },
        )),
    ];
    let failing = state.failing_deliveries.total();
    if failing > 0 {
        spans.push(Span::styled(
            format!(" │ webhooks failing {failing}"),
            Style::default().fg(Color::Red),
        ));
    }
    let mut filters = Vec::new();
    if filter.api != ApiFilter::All {
        filters.push(format!("{:?}", filter.api).to_lowercase());
    }
    if filter.status != StatusFilter::All {
        filters.push(format!("{:?}", filter.status).to_lowercase());
    }
    if !filter.text.is_empty() {
        filters.push(format!("\"{}\"", filter.text));
    }
    if !filters.is_empty() {
        spans.push(Span::styled(
            format!(" │ filter {} ({} shown)", filters.join(" "), table.len()),
            Style::default().fg(Color::Cyan),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
