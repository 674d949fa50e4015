//! One attempt at a delivery: the signed POST, and what its answer means
//! for the delivery, as the Standard Webhooks specification recommends.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use retouch_journal::AttemptOutcome;

use crate::outbound::{FetchError, GuardedClient};

/// Waits after each failed attempt (the first is sent at once): 10
/// attempts over about three days.
pub const RETRY_SCHEDULE: [Duration; 9] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(14 * 3600),
    Duration::from_secs(20 * 3600),
    Duration::from_secs(24 * 3600),
];
/// Limit on one attempt, answer included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Most bytes of an answer read (the rest is dropped with the connection).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// An endpoint whose every attempt has failed for this long is disabled.
pub const FAILING_LIMIT: Duration = Duration::from_secs(5 * 24 * 3600);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Most characters of an answer's body kept in `last_error`.
const ERROR_EXCERPT: usize = 200;

/// What came back from an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP answer.
    Status {
        /// Its status.
        status: u16,
        /// Its `Retry-After`, when it asks to slow down.
        retry_after: Option<Duration>,
        /// The start of its body, or its `Location` for a redirect.
        excerpt: String,
    },
    /// No answer: the guard refused the destination (nothing was sent), or
    /// the connection failed or timed out.
    None {
        /// What happened.
        error: String,
    },
}

/// The headers and body of one attempt.
pub struct SignedMessage<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp`.
    pub timestamp: i64,
    /// `webhook-signature`.
    pub signature: &'a str,
    /// The JSON body.
    pub body: &'a [u8],
}

/// POSTs `message` to `url`, through the guard, following no redirect.
/// What the answer said is kept (for `last_error`, which the endpoint's
/// owner reads) only from public destinations: an origin the operator
/// allowed may be internal, and a webhook must not become a way to read
/// it. `trace_context` (a `traceparent`, or nothing) goes with it, outside
/// the signature.
pub async fn send(
    client: &GuardedClient,
    url: &str,
    message: SignedMessage<'_>,
    trace_context: http::HeaderMap,
) -> Answer {
    let public = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| client.policy().route(&u).ok())
        == Some(crate::outbound::Route::Guarded);
    let sent = client
        .send(reqwest::Method::POST, url, |request| {
            request
                .timeout(ATTEMPT_TIMEOUT)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("webhook-id", message.id)
                .header("webhook-timestamp", message.timestamp.to_string())
                .header("webhook-signature", message.signature)
                .headers(trace_context.clone())
                .body(message.body.to_vec())
        })
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(FetchError::Refused(refusal)) => {
            return Answer::None {
                error: format!("not sent: {refusal}"),
            };
        }
        Err(FetchError::Http(e)) => {
            return Answer::None {
                error: describe_transport(&e),
            };
        }
    };
    let status = response.status();
    let retry_after = matches!(status.as_u16(), 429 | 502 | 503 | 504)
        .then(|| retry_after(response.headers(), SystemTime::now()))
        .flatten();
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_capped(response).await;
    let excerpt = match location {
        _ if status.is_redirection() && !public => "redirects are not followed".to_owned(),
        _ if !public => String::new(),
        Some(location) if status.is_redirection() => {
            format!("redirects are not followed (Location: {location})")
        }
        _ => String::from_utf8_lossy(&body)
            .chars()
            .take(ERROR_EXCERPT)
            .collect::<String>()
            .trim()
            .to_owned(),
    };
    Answer::Status {
        status: status.as_u16(),
        retry_after,
        excerpt,
    }
}

/// At most [`MAX_ANSWER_BYTES`] of the body; an error ends it early.
async fn read_capped(response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        let room = MAX_ANSWER_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    body
}

fn describe_transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs())
    } else if e.is_connect() {
        format!("cannot connect: {}", root_cause(e))
    } else {
        format!("the request failed: {}", root_cause(e))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A `Retry-After` of seconds or an HTTP date, as a wait from `now`.
fn retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// What `answer` to the attempt after `attempts_before` earlier ones,
/// made at `now`, means for the delivery, retried after the waits of
/// `schedule` ([`RETRY_SCHEDULE`] unless the operator set another).
/// `jitter` (0.8 to 1.2) spreads retries out so that a recovering receiver
/// is not hit all at once.
pub fn outcome(
    answer: &Answer,
    attempts_before: u32,
    schedule: &[Duration],
    now: SystemTime,
    jitter: f64,
) -> AttemptOutcome {
    let (status, error, asked_wait) = match answer {
        Answer::Status { status, .. } if (200..300).contains(status) => {
            return AttemptOutcome::Delivered { status: *status };
        }
        Answer::Status { status: 410, .. } => {
            return AttemptOutcome::EndpointGone {
                status: 410,
                reason: format!(
                    "the endpoint answered 410 Gone at {}",
                    humantime::format_rfc3339_seconds(now)
                ),
            };
        }
        Answer::Status {
            status,
            retry_after,
            excerpt,
        } => (
            Some(*status),
            match excerpt.is_empty() {
                true => format!("HTTP {status}"),
                false => format!("HTTP {status}: {excerpt}"),
            },
            *retry_after,
        ),
        Answer::None { error } => (None, error.clone(), None),
    };
    let made = attempts_before as usize + 1;
    let Some(wait) = schedule.get(made - 1) else {
        return AttemptOutcome::Failed { status, error };
    };
    let wait = wait
        .mul_f64(jitter.clamp(0.8, 1.2))
        .max(asked_wait.unwrap_or_default());
    AttemptOutcome::Retry {
        status,
        error,
        next_attempt_at: now + wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> Answer {
        Answer::Status {
            status,
            retry_after: None,
            excerpt: String::new(),
        }
    }

    #[test]
    fn answers_become_outcomes_as_the_specification_says() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            outcome(&status(204), 0, &RETRY_SCHEDULE, now, 1.0),
            AttemptOutcome::Delivered { status: 204 }
        );
        assert!(matches!(
            outcome(&status(410), 3, &RETRY_SCHEDULE, now, 1.0),
            AttemptOutcome::EndpointGone { status: 410, .. }
        ));
        // A redirect is a failure, retried on the schedule.
        let redirect = Answer::Status {
            status: 301,
            retry_after: None,
            excerpt: "redirects are not followed (Location: https://elsewhere.example/)".into(),
        };
        let AttemptOutcome::Retry {
            status,
            error,
            next_attempt_at,
        } = outcome(&redirect, 0, &RETRY_SCHEDULE, now, 1.0)
        else {
            panic!("a 3xx is retried");
        };
        assert_eq!(status, Some(301));
        assert!(error.contains("not followed"), "{error}");
        assert_eq!(next_attempt_at, now + Duration::from_secs(5));
        // The schedule, with jitter bounded.
        let at = |attempts_before, jitter| match outcome(
            &status_500(),
            attempts_before,
            &RETRY_SCHEDULE,
            now,
            jitter,
        ) {
            AttemptOutcome::Retry {
                next_attempt_at, ..
            } => next_attempt_at.duration_since(now).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(at(1, 1.0), Duration::from_secs(300));
        assert_eq!(at(8, 1.0), Duration::from_secs(24 * 3600));
        assert_eq!(
            at(1, 5.0),
            Duration::from_secs(360),
            "jitter is at most 20%"
        );
        // The tenth attempt is the last.
        assert_eq!(
            outcome(&status_500(), 9, &RETRY_SCHEDULE, now, 1.0),
            AttemptOutcome::Failed {
                status: Some(500),
                error: "HTTP 500: boom".into()
            }
        );
        // Retry-After is honoured when it asks for longer.
        let throttled = Answer::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(120)),
            excerpt: String::new(),
        };
        assert!(matches!(
            outcome(&throttled, 0, &RETRY_SCHEDULE, now, 1.0),
            AttemptOutcome::Retry { next_attempt_at, .. } if next_attempt_at == now + Duration::from_secs(120)
        ));
        let timeout = Answer::None {
            error: "no answer within 15s".into(),
        };
        assert!(matches!(
            outcome(&timeout, 0, &RETRY_SCHEDULE, now, 1.0),
            AttemptOutcome::Retry { status: None, .. }
        ));
    }

    fn status_500() -> Answer {
        Answer::Status {
            status: 500,
            retry_after: None,
            excerpt: "boom".into(),
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date_and_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let header = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::RETRY_AFTER, value.parse().unwrap());
            retry_after(&headers, now)
        };
        assert_eq!(header("30"), Some(Duration::from_secs(30)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(header(&date), Some(Duration::from_secs(90)));
        assert_eq!(header("99999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(header("soon"), None);
    }
}
