//! Failures of upstream calls, with everything the API reported kept.

use super::gateway::GatewayRefusal;
use crate::aliyun::AliyunCode;

/// Where an upstream call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// No HTTP answer. `connect` is true when the connection was never made,
    /// so the request provably did not reach the upstream.
    Transport {
        /// The TCP/TLS connection could not be established.
        connect: bool,
        /// The call timed out.
        timeout: bool,
    },
    /// The API gateway answered on its own, in `X-Ca-Error-*` headers.
    Gateway,
    /// The API answered with its JSON envelope and a non-zero code.
    Api,
    /// The answer could not be understood.
    Protocol,
}

/// An upstream call that failed, with the original Aliyun code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct UpstreamError {
    /// Where it failed.
    pub kind: UpstreamErrorKind,
    /// The Aliyun error code from the JSON envelope, if any.
    pub aliyun_code: Option<i64>,
    /// HTTP status of the answer, if there was one.
    pub http_status: Option<u16>,
    /// The upstream's message (or a description of the transport failure).
    pub message: String,
    /// The upstream's `requestId` (or the gateway's `X-Ca-Request-Id`).
    pub request_id: Option<String>,
    /// The gateway's `X-Ca-Error-Code`, if set.
    pub gateway_code: Option<String>,
}

impl UpstreamError {
    /// A transport failure (no HTTP answer).
    pub fn transport(err: &reqwest::Error) -> Self {
        // reqwest's Display names the URL but never headers, so the AppCode
        // cannot leak through it.
        UpstreamError {
            kind: UpstreamErrorKind::Transport {
                connect: err.is_connect(),
                timeout: err.is_timeout(),
            },
            aliyun_code: None,
            http_status: None,
            message: error_chain(err),
            request_id: None,
            gateway_code: None,
        }
    }

    /// The documented code, when the number is in the table.
    pub fn code(&self) -> Option<AliyunCode> {
        self.aliyun_code.and_then(AliyunCode::from_code)
    }

    /// Throttling: 23500004, or the gateway's flow control.
    pub fn is_throttle(&self) -> bool {
        self.code() == Some(AliyunCode::Throttled) || self.is_gateway_throttle()
    }

    /// The gateway's own refusal, when it is a documented one.
    pub fn gateway_refusal(&self) -> Option<GatewayRefusal> {
        match (&self.kind, self.http_status) {
            (UpstreamErrorKind::Gateway, Some(status)) => GatewayRefusal::of(status, &self.message),
            _ => None,
        }
    }

    /// The gateway refused the call for flow control, before the backend saw it.
    pub fn is_gateway_throttle(&self) -> bool {
        self.gateway_refusal() == Some(GatewayRefusal::Throttled)
    }

    /// Whether repeating the same *query* may succeed: throttling, 5xx other
    /// than a definitive "job failed", transport failures, and answers that
    /// could not be understood on a 2xx or 5xx (a truncated or garbled body).
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            UpstreamErrorKind::Transport { .. } => true,
            UpstreamErrorKind::Protocol => {
                !self.http_status.is_some_and(|s| (400..500).contains(&s))
            }
            _ if self.is_throttle() => true,
            _ if self.code() == Some(AliyunCode::JobFailed) => false,
            UpstreamErrorKind::Gateway if let Some(refusal) = self.gateway_refusal() => {
                refusal.retryable()
            }
            _ => self.http_status.is_some_and(|s| s >= 500),
        }
    }

    /// Whether a *submit* that failed like this created no job, so re-sending
    /// it cannot bill twice, and may succeed: the connection was never made,
    /// the gateway throttled it or refused its nonce (every attempt carries a
    /// fresh one), or the API answered 23500004 (throttled: no result key,
    /// no job).
    pub fn provably_not_received(&self) -> bool {
        matches!(
            self.kind,
            UpstreamErrorKind::Transport { connect: true, .. }
        ) || self.code() == Some(AliyunCode::Throttled)
            || self
                .gateway_refusal()
                .is_some_and(|r| r.refused_before_backend() && r.retryable())
    }

    /// Whether a *submit* that failed like this may nevertheless have been
    /// accepted: the request may have arrived, and no definite answer came
    /// back (timeout or reset after connecting, a garbled answer, or a
    /// gateway 5xx such as a backend timeout, behind which the backend may
    /// have taken the job). The backend's own error envelope is definite.
    pub fn outcome_unknown(&self) -> bool {
        match self.kind {
            UpstreamErrorKind::Transport { connect, .. } => !connect,
            UpstreamErrorKind::Protocol => true,
            UpstreamErrorKind::Gateway => self.http_status.is_some_and(|s| s >= 500),
            UpstreamErrorKind::Api => false,
        }
    }

    fn describe(&self) -> String {
        let mut out = String::from("upstream ");
        match (&self.kind, self.aliyun_code, self.http_status) {
            (UpstreamErrorKind::Transport { .. }, _, _) => out.push_str("unreachable"),
            (_, Some(code), Some(status)) => out.push_str(&format!("error {code} (HTTP {status})")),
            (_, Some(code), None) => out.push_str(&format!("error {code}")),
            (_, None, Some(status)) => out.push_str(&format!("HTTP {status}")),
            (_, None, None) => out.push_str("error"),
        }
        if let Some(gw) = &self.gateway_code {
            out.push_str(&format!(" [gateway {gw}]"));
        }
        out.push_str(": ");
        out.push_str(&self.message);
        out
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
        source = cause.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: i64, status: u16) -> UpstreamError {
        UpstreamError {
            kind: UpstreamErrorKind::Api,
            aliyun_code: Some(code),
            http_status: Some(status),
            message: "m".into(),
            request_id: None,
            gateway_code: None,
        }
    }

    #[test]
    fn classifies_retries_and_resubmits() {
        assert!(api(23500004, 403).is_retryable());
        assert!(api(23500004, 403).provably_not_received());
        assert!(!api(23500000, 500).provably_not_received());
        assert!(api(23500000, 500).is_retryable());
        assert!(!api(23500011, 500).is_retryable());
        assert!(!api(23500008, 400).is_retryable());
        assert!(!api(23500001, 401).is_retryable());
        let gateway = UpstreamError {
            kind: UpstreamErrorKind::Gateway,
            aliyun_code: None,
            http_status: Some(403),
            message: "Throttled by APP Flow Control".into(),
            request_id: None,
            gateway_code: Some("A403FC".into()),
        };
        assert!(gateway.is_throttle() && gateway.is_retryable() && gateway.provably_not_received());
        assert_eq!(
            gateway.to_string(),
            "upstream HTTP 403 [gateway A403FC]: Throttled by APP Flow Control"
        );
    }
}
