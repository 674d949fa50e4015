//! Rendering: turns the dashboard's state into widgets. Views only read
//! the state; what a frame finds out (rows that fit, how far the detail
//! scrolls) is returned as [`Drawn`] for the app to keep.

mod detail;
mod errors;
mod form;
mod format;
mod header;
mod help;
mod preview;
mod table;
#[cfg(test)]
mod tests;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use crate::preview::Previews;
use crate::state::{Dashboard, Drawn, Mode, Screen};

/// Draws the whole screen. `previews` renders the detail view's pictures
/// (an image protocol keeps its encoding between frames).
pub fn draw(
    frame: &mut Frame,
    state: &Dashboard,
    screen: &Screen,
    previews: &mut Previews,
) -> Drawn {
    let [header_area, body, errors_area, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(8),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let mut drawn = Drawn::default();
    header::draw(frame, header_area, state);
    match screen.mode {
        Mode::Detail => {
            drawn.detail_last_line = detail::draw(frame, body, state, screen, previews);
        }
        _ => {
            // Header row and borders take three lines.
            let rows = usize::from(body.height.saturating_sub(3));
            table::draw(frame, body, state, rows);
            drawn.table_rows = Some(rows);
        }
    }
    errors::draw(frame, errors_area, state);
    draw_footer(frame, footer, state, screen);
    match screen.mode {
        Mode::Help => help::draw(frame, centered(frame.area(), 80, 24)),
        Mode::Form => form::draw(frame, centered(frame.area(), 84, 14), &screen.form),
        _ => {}
    }
    drawn
}

fn draw_footer(frame: &mut Frame, area: Rect, state: &Dashboard, screen: &Screen) {
    let key = Style::default().add_modifier(Modifier::BOLD);
    let line = match screen.mode {
        Mode::FilterInput => Line::from(vec![
            Span::styled("filter: ", key),
            Span::raw(screen.input.as_str()),
            Span::styled("▏", Style::default().fg(Color::Yellow)),
            Span::raw("   Enter keep · Esc clear"),
        ]),
        Mode::WatchInput => Line::from(vec![
            Span::styled("watch (matting:<key> or removal:<key>): ", key),
            Span::raw(screen.input.as_str()),
            Span::styled("▏", Style::default().fg(Color::Yellow)),
        ]),
        _ => {
            let mut spans = vec![];
            for (k, what) in [
                ("↑↓/jk", "move"),
                ("Enter", "detail"),
                ("/", "filter"),
                ("n", "new job"),
                ("d", "download"),
                ("?", "help"),
                ("q", "quit"),
            ] {
                spans.push(Span::styled(k, key));
                spans.push(Span::raw(format!(" {what}  ")));
            }
            if let Some(notice) = &state.notice {
                spans.push(Span::styled(
                    format!("│ {notice}"),
                    Style::default().fg(Color::Cyan),
                ));
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// A `width`×`height` rectangle centred in `area` (clipped to it), cleared.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

/// Clears `area` for an overlay.
fn clear(frame: &mut Frame, area: Rect) {
    frame.render_widget(Clear, area);
}

/// A task status as printed (`SUCCESS`, ...), for the command line too.
pub fn task_status_name(status: retouch_api::v1::TaskStatus) -> &'static str {
    format::task_status(status)
}

/// A job status as printed (`ACTIVE`, `DONE`, `LOST`).
pub fn job_status_name(status: retouch_api::v1::JobStatus) -> &'static str {
    format::job_status(status)
}
