//! Text for times, durations and statuses.

use std::time::{Duration, SystemTime};

use ratatui::style::{Color, Style};
use retouch_api::v1 as pb;

/// `12s`, `3m04s`, `2h05m`, `3d04h`; `-` for unknown.
pub fn duration(d: Option<Duration>) -> String {
    let Some(d) = d else {
        return "-".into();
    };
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Time since `t`.
pub fn since(t: Option<SystemTime>, now: SystemTime) -> String {
    duration(t.map(|t| now.duration_since(t).unwrap_or_default()))
}

/// `HH:MM:SS` in UTC.
pub fn clock(t: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(t).to_string();
    text.get(11..19).unwrap_or(&text).to_owned()
}

/// Upper-case task status.
pub fn task_status(s: pb::TaskStatus) -> &'static str {
    match s {
        pb::TaskStatus::Waiting => "WAITING",
        pb::TaskStatus::Running => "RUNNING",
        pb::TaskStatus::Success => "SUCCESS",
        pb::TaskStatus::Failed => "FAILED",
        pb::TaskStatus::Unspecified => "?",
    }
}

/// Upper-case job status.
pub fn job_status(s: pb::JobStatus) -> &'static str {
    match s {
        pb::JobStatus::Active => "ACTIVE",
        pb::JobStatus::Completed => "DONE",
        pb::JobStatus::Lost => "LOST",
        pb::JobStatus::SubmitOutcomeUnknown => "UNKNOWN",
        pb::JobStatus::Unspecified => "?",
    }
}

/// Colour of a task status.
pub fn task_style(s: pb::TaskStatus) -> Style {
    Style::default().fg(match s {
        pb::TaskStatus::Waiting => Color::Gray,
        pb::TaskStatus::Running => Color::Yellow,
        pb::TaskStatus::Success => Color::Green,
        pb::TaskStatus::Failed => Color::Red,
        pb::TaskStatus::Unspecified => Color::DarkGray,
    })
}

/// One failing webhook delivery: what it is, how it failed, and what
/// happens next.
pub fn failing_delivery(delivery: &pb::Delivery, now: SystemTime) -> String {
    let what = match (delivery.last_error.as_str(), delivery.last_http_status) {
        ("", 0) => "no answer".to_owned(),
        ("", status) => format!("HTTP {status}"),
        (error, _) => error.to_owned(),
    };
    let next = match crate::state::to_system_time(delivery.next_attempt_at.as_ref()) {
        Some(at) if delivery.status() == pb::DeliveryStatus::Pending => {
            format!("; next try in {}", duration(at.duration_since(now).ok()))
        }
        _ => "; no more tries (retouch redeliver ID)".to_owned(),
    };
    format!(
        "{} {} after {} tries: {what}{next}",
        delivery.delivery_id, delivery.event_type, delivery.attempts
    )
}
