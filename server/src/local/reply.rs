//! The shapes of API responses: the JSON envelope and the gateway's
//! header-only errors, each with a fresh request id.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use super::faults::InjectedFault;
use crate::aliyun::{
    AliyunCode, Envelope, GATEWAY_ERROR_CODE_HEADER, GATEWAY_ERROR_MESSAGE_HEADER,
    GATEWAY_REQUEST_ID_HEADER,
};

/// Gateway code and message of a wrong or missing AppCode.
pub(super) const INVALID_APPCODE: (&str, &str) = ("A401AC", "Invalid AppCode");
/// Gateway code and message of a missing nonce.
pub(super) const MISSING_NONCE: (&str, &str) = ("A400MN", "Header `X-Ca-Nonce` is Required");
/// Gateway code and message of a reused nonce.
pub(super) const USED_NONCE: (&str, &str) = ("A400NU", "Nonce Used");
/// Gateway code and message of throttling.
pub(super) const THROTTLED: (&str, &str) = ("A403FC", "Throttled by APP Flow Control");

/// A request id as the gateway prints them: an uppercase hyphenated UUID.
fn request_id() -> String {
    Uuid::new_v4().hyphenated().to_string().to_uppercase()
}

/// The envelope for `code` (with its documented HTTP status) and `data`.
pub(super) fn envelope<T: Serialize>(code: AliyunCode, data: Option<T>) -> Response {
    let success = code == AliyunCode::Success;
    let request_id = request_id();
    let body = Envelope {
        code: code.code(),
        data,
        message: code.message().to_owned(),
        request_id: request_id.clone(),
        severity: if success { "info" } else { "error" }.to_owned(),
        success,
    };
    let json = serde_json::to_vec(&body).expect("envelopes serialise");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    insert(&mut headers, GATEWAY_REQUEST_ID_HEADER, &request_id);
    (status(code.http_status()), headers, json).into_response()
}

/// The envelope of an error code, without data.
pub(super) fn error(code: AliyunCode) -> Response {
    envelope::<()>(code, None)
}

/// 401 for a missing or wrong AppCode: the 23500001 envelope plus the
/// gateway's error headers.
pub(super) fn unauthorized() -> Response {
    let mut response = error(AliyunCode::AuthorizationRequired);
    let headers = response.headers_mut();
    insert(headers, GATEWAY_ERROR_CODE_HEADER, INVALID_APPCODE.0);
    insert(headers, GATEWAY_ERROR_MESSAGE_HEADER, INVALID_APPCODE.1);
    response
}

/// A gateway error as the Aliyun API gateway sends it: status and headers,
/// empty body.
pub(super) fn gateway(status_code: u16, (code, message): (&str, &str)) -> Response {
    let mut headers = HeaderMap::new();
    insert(&mut headers, GATEWAY_REQUEST_ID_HEADER, &request_id());
    insert(&mut headers, GATEWAY_ERROR_CODE_HEADER, code);
    insert(&mut headers, GATEWAY_ERROR_MESSAGE_HEADER, message);
    (status(status_code), headers).into_response()
}

/// The response of a scripted fault.
pub(super) fn injected(fault: &InjectedFault) -> Response {
    match *fault {
        InjectedFault::Aliyun(code) => error(code),
        InjectedFault::GatewayThrottle => gateway(403, THROTTLED),
        InjectedFault::GatewayError {
            status,
            code,
            message,
        } => gateway(status, (code, message)),
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Sets a header, leaving it out if the value is not a valid header value
/// (only possible for scripted faults with odd texts).
fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}
