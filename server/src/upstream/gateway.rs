//! What the API gateway's own refusals mean. The gateway answers for itself
//! in `X-Ca-Error-*` headers, before (or instead of) the backend; its
//! documented messages say whether the call reached the backend, whether
//! sending it again can help, and whose problem it is.

/// A refusal by the gateway, by its documented message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayRefusal {
    /// `Throttled by USER|APP|API|DOMAIN|GROUP Flow Control` (403), or any
    /// 429: not executed; later it may be.
    Throttled,
    /// `Quota Exhausted`: the purchased calls are used up.
    QuotaExhausted,
    /// `Quota Expired` or `User Arrears`: the purchase lapsed, or the
    /// account owes money.
    AccountLapsed,
    /// `Unauthorized`: the app may not call this API.
    Unauthorized,
    /// `Invalid AppCode`, `Invalid AppKey`, `Invalid AppSecret`, `Invalid
    /// Signature`, `Empty Signature`: the credentials are wrong.
    BadCredentials,
    /// `Nonce Used`: the nonce was seen in the last 15 minutes (each
    /// request carries a fresh one, so a retry gets past it).
    NonceUsed,
    /// `Timestamp Expired` or `Invalid Timestamp`: this machine's clock is
    /// more than 15 minutes off the gateway's.
    ClockSkew,
    /// `API Not Found` or `Invalid Url`: the configured path names no API.
    NoSuchApi,
    /// Any 5xx (`Internal Error`, `Failed To Invoke Backend Service`,
    /// `Service Unavailable`, …): the gateway or the backend behind it is
    /// in trouble; whether the backend saw the call is unknown.
    Unavailable,
}

impl GatewayRefusal {
    /// The refusal an answer of the gateway's is, if it is a documented one.
    pub fn of(status: u16, message: &str) -> Option<Self> {
        use GatewayRefusal::*;
        let starts = |prefix: &str| message.starts_with(prefix);
        Some(match status {
            429 => Throttled,
            500..=599 => Unavailable,
            _ if starts("Throttled by ") => Throttled,
            _ if starts("Quota Exhausted") => QuotaExhausted,
            _ if starts("Quota Expired") || starts("User Arrears") => AccountLapsed,
            _ if starts("Unauthorized") => Unauthorized,
            _ if starts("Invalid AppCode")
                || starts("Invalid AppKey")
                || starts("Invalid AppSecret")
                || starts("Invalid Signature")
                || starts("Empty Signature") =>
            {
                BadCredentials
            }
            _ if starts("Nonce Used") => NonceUsed,
            _ if starts("Timestamp Expired") || starts("Invalid Timestamp") => ClockSkew,
            _ if starts("API Not Found") || starts("Invalid Url") => NoSuchApi,
            _ => return None,
        })
    }

    /// Whether sending the same call again may succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            GatewayRefusal::Throttled | GatewayRefusal::NonceUsed | GatewayRefusal::Unavailable
        )
    }

    /// Whether the backend provably never saw the call: the gateway refused
    /// it itself. (Its 5xx may come after the backend took the call.)
    pub fn refused_before_backend(self) -> bool {
        self != GatewayRefusal::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::GatewayRefusal::{self, *};

    #[test]
    fn every_documented_message_is_classified() {
        let cases: &[(u16, &str, GatewayRefusal)] = &[
            (403, "Throttled by USER Flow Control", Throttled),
            (403, "Throttled by APP Flow Control", Throttled),
            (403, "Throttled by API Flow Control", Throttled),
            (403, "Throttled by DOMAIN Flow Control", Throttled),
            (403, "Throttled by GROUP Flow Control", Throttled),
            (429, "Throttled by APP Flow Control", Throttled),
            (429, "", Throttled),
            (403, "Quota Exhausted", QuotaExhausted),
            (403, "Quota Expired", AccountLapsed),
            (403, "User Arrears", AccountLapsed),
            (403, "Unauthorized", Unauthorized),
            (400, "Invalid AppCode `not exists`", BadCredentials),
            (400, "Invalid AppKey", BadCredentials),
            (400, "Invalid AppSecret", BadCredentials),
            (
                400,
                "Invalid Signature, Server StringToSign:`POST#...`",
                BadCredentials,
            ),
            (401, "Empty Signature", BadCredentials),
            (400, "Nonce Used", NonceUsed),
            (400, "Timestamp Expired", ClockSkew),
            (400, "Invalid Timestamp", ClockSkew),
            (404, "API Not Found", NoSuchApi),
            (400, "Invalid Url", NoSuchApi),
            (500, "Internal Error", Unavailable),
            (502, "Failed To Invoke Backend Service", Unavailable),
            (503, "Service Unavailable", Unavailable),
            (504, "Async Service", Unavailable),
        ];
        for &(status, message, expected) in cases {
            assert_eq!(
                GatewayRefusal::of(status, message),
                Some(expected),
                "{status} {message}"
            );
        }
        assert_eq!(GatewayRefusal::of(400, "Invalid Content-MD5"), None);
    }

    #[test]
    fn only_passing_refusals_are_retried_and_only_5xx_may_have_reached_the_backend() {
        for refusal in [Throttled, NonceUsed, Unavailable] {
            assert!(refusal.retryable(), "{refusal:?}");
        }
        for refusal in [
            QuotaExhausted,
            AccountLapsed,
            Unauthorized,
            BadCredentials,
            ClockSkew,
            NoSuchApi,
        ] {
            assert!(!refusal.retryable(), "{refusal:?}");
            assert!(refusal.refused_before_backend(), "{refusal:?}");
        }
        assert!(!Unavailable.refused_before_backend());
    }
}
