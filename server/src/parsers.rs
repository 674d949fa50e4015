//! Every parser of untrusted input, behind one door: the cargo-fuzz targets
//! in `server/fuzz/` and the property tests call these. Each must return an
//! error, never panic, hang or allocate without bound, whatever the bytes.

use crate::aliyun::{AliyunCode, ApiKind, QueryData, SubmitData, WireTask};

/// An upstream answer (status, gateway headers, body) as the upstream
/// client reads a submit's and a query's; the submit's result key, or the
/// error.
pub fn upstream_answer(
    status: u16,
    gateway_code: Option<&str>,
    body: &[u8],
) -> Result<String, crate::upstream::UpstreamError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(code) = gateway_code.and_then(|c| c.parse().ok()) {
        headers.insert(crate::aliyun::GATEWAY_ERROR_CODE_HEADER, code);
    }
    crate::upstream::interpret::<QueryData>(status, &headers, body)?;
    crate::upstream::interpret::<SubmitData>(status, &headers, body)
        .map(|(data, _)| data.result_key)
}

/// A submission's tasks, validated; the canonical tasks or the violations.
pub fn submission(
    api: ApiKind,
    tasks: Vec<WireTask>,
) -> Result<Vec<WireTask>, Vec<crate::validate::Violation>> {
    crate::validate::validate_submission(api, tasks)
}

/// An uploaded file's header.
pub fn upload(bytes: &[u8]) -> Result<crate::uploads::InspectedImage, String> {
    crate::uploads::inspect(bytes)
}

/// The local backend's check and decode of a downloaded image and mask.
pub fn input_pair(image: &[u8], mask: &[u8]) -> Result<(), AliyunCode> {
    crate::local::check_input_pair(image, mask)
}

/// A request body of the local backend: as a submit of `api` (the number
/// of tasks) and as a query (the result key).
pub fn local_request(
    api: ApiKind,
    body: &[u8],
) -> (Result<usize, AliyunCode>, Result<String, AliyunCode>) {
    crate::local::parse_request(api, body)
}

/// A tokens file.
pub fn tokens_file(text: &str) -> Result<usize, String> {
    crate::access::TokenSet::parse(text).map(|set| set.entries().len())
}
