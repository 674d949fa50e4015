//! The submit form overlay.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use crate::state::{FormField, SubmitForm};

pub(super) fn draw(frame: &mut Frame, area: Rect, form: &SubmitForm) {
    super::clear(frame, area);
    let mut lines = Vec::new();
    for &field in form.fields() {
        let focused = field == form.focus;
        let label_style = if focused {
            Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        };
        let mut value = form.value(field);
        if field == FormField::Api {
            value = format!("◀ {value} ▶");
        } else if focused {
            value.push('▏');
        }
        lines.push(Line::from(vec![
            Span::styled(format!("{:>12} ", field.label()), label_style),
            Span::raw(value),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::raw(
        "image/mask: http(s) URL or local file (uploaded). Enter submits, Esc cancels.",
    ));
    for error in &form.errors {
        lines.push(Line::styled(
            error.to_string(),
            Style::default().fg(Color::Red),
        ));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" new job ")),
        area,
    );
}
