//! `retouch usage`: what the caller's token has been billed in the last
//! hour and day, against its caps and the server's.

use retouch_api::v1 as pb;

use super::Output;
use crate::cli::UsageArgs;
use crate::client::{Client, ClientError};
use crate::exit::Exit;

/// Prints the caller's usage.
pub async fn usage(client: &Client, _args: &UsageArgs, output: &mut Output<'_>) -> Exit {
    let request = client.request(pb::GetUsageRequest {});
    let usage = match client.jobs().get_usage(request).await {
        Ok(usage) => usage.into_inner(),
        Err(status) => return output.failed(&ClientError::from_status("get usage", &status)),
    };
    if output.json {
        output.line(crate::json::usage(&usage));
        return Exit::Success;
    }
    for line in text(&usage) {
        output.line(line);
    }
    Exit::Success
}

/// The usage as lines for people.
fn text(usage: &pb::Usage) -> Vec<String> {
    let token = if usage.token.is_empty() {
        "(no token)"
    } else {
        usage.token.as_str()
    };
    let cap = |limit: Option<u32>| limit.map_or_else(|| "none".to_owned(), |l| l.to_string());
    let mut lines = vec![format!(
        "{:<6} {:>8} {:>8} {:>8}  (token {token})",
        "WINDOW", "BILLED", "CAP", "SERVER"
    )];
    for window in &usage.windows {
        lines.push(format!(
            "{:<6} {:>8} {:>8} {:>8}",
            window.window,
            window.billed_tasks,
            cap(window.limit),
            cap(window.server_limit)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_window_is_a_row_with_its_caps() {
        let usage = pb::Usage {
            token: "ci".into(),
            windows: vec![
                pb::UsageWindow {
                    window: "hour".into(),
                    billed_tasks: 7,
                    limit: Some(20),
                    server_limit: None,
                },
                pb::UsageWindow {
                    window: "day".into(),
                    billed_tasks: 31,
                    limit: None,
                    server_limit: Some(1000),
                },
            ],
        };
        let lines = text(&usage);
        assert!(lines[0].ends_with("(token ci)"), "{}", lines[0]);
        let cells = |line: &str| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(cells(&lines[1]), ["hour", "7", "20", "none"]);
        assert_eq!(cells(&lines[2]), ["day", "31", "none", "1000"]);
    }
}
