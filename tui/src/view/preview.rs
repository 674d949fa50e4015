//! The detail view's preview strip: the previewed task's input, mask and
//! result side by side, each fitted into its pane.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui_image::{Resize, StatefulImage};

use crate::preview::{Preview, PreviewSource, Previews};

/// Draws `sources` (input, mask, result) in three panes across `area`;
/// a task without a result yet gets an empty third pane.
pub(super) fn draw(
    frame: &mut Frame,
    area: Rect,
    previews: &mut Previews,
    sources: &[PreviewSource],
    heading: &str,
) {
    let panes = Layout::horizontal([Constraint::Ratio(1, 3); 3]).split(area);
    for (i, pane) in panes.iter().enumerate() {
        let source = sources.get(i);
        let title = match (i, source) {
            (_, Some(source)) if i == 0 => format!(" {heading} · {} ", source.label),
            (_, Some(source)) => format!(" {} ", source.label),
            (_, None) => " result ".to_owned(),
        };
        let block = Block::default().borders(Borders::ALL).title(title);
        let inner = block.inner(*pane);
        frame.render_widget(block, *pane);
        let note = |text: String, style: Style| {
            Paragraph::new(text)
                .style(style)
                .alignment(Alignment::Center)
                .wrap(Wrap { trim: true })
        };
        let Some(source) = source else {
            frame.render_widget(note("no result yet".into(), dim()), inner);
            continue;
        };
        match previews.get(&source.url) {
            Preview::Ready(protocol) => {
                frame.render_stateful_widget(
                    StatefulImage::default().resize(Resize::Fit(None)),
                    inner,
                    protocol,
                );
            }
            Preview::Loading | Preview::Missing => {
                frame.render_widget(note("loading…".into(), dim()), inner)
            }
            Preview::Failed(why) => {
                frame.render_widget(note(why.to_owned(), Style::default().fg(Color::Red)), inner)
            }
        }
    }
}

fn dim() -> Style {
    Style::default().fg(Color::DarkGray)
}
