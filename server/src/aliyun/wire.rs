//! JSON bodies of submit and query. Parsing is tolerant: unknown fields are
//! ignored and optional fields may be missing, because the upstream's
//! documents are loose and gateways add their own fields.

use serde::{Deserialize, Serialize};

/// The response envelope shared by every call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    /// 0 on success, otherwise an error code of the documented table.
    #[serde(default)]
    pub code: i64,
    /// Payload; absent on most errors.
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    /// "success" or the error message.
    #[serde(default)]
    pub message: String,
    /// Unique id of the call.
    #[serde(default)]
    pub request_id: String,
    /// "info" on success, "error" otherwise.
    #[serde(default)]
    pub severity: String,
    /// Whether the call succeeded.
    #[serde(default)]
    pub success: bool,
}

/// Body of a submit request: `{"data": {"task_list": [...]}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// The payload.
    pub data: SubmitRequestData,
}

/// `data` of a submit request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitRequestData {
    /// The tasks, 1 to 10.
    pub task_list: Vec<WireTask>,
}

/// Body of a query request: `{"data": {"result_key": "..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryRequest {
    /// The payload.
    pub data: QueryRequestData,
}

/// `data` of a query request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryRequestData {
    /// Key returned by submit.
    pub result_key: String,
}

/// `data` of a submit response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubmitData {
    /// Unique id of the submission.
    #[serde(default)]
    pub result_key: String,
    /// The tasks with their first status.
    #[serde(default)]
    pub task_list: Vec<WireTask>,
}

/// `data` of a query response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueryData {
    /// Echo of the key, when the upstream sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_key: Option<String>,
    /// The tasks with their current status.
    #[serde(default)]
    pub task_list: Vec<WireTask>,
}

/// One task, in requests (inputs only) and responses (inputs echoed plus
/// status, results and message).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireTask {
    /// Image URL.
    #[serde(default)]
    pub image: String,
    /// Mask URL.
    #[serde(default)]
    pub mask: String,
    /// Object removal only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Object removal only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_size: Option<u32>,
    /// Status; absent in requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<WireTaskStatus>,
    /// Result URLs when SUCCESS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<String>,
    /// Per-task message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A task status as the upstream spells it. Unknown spellings are kept so a
/// new upstream status is reported rather than rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WireTaskStatus {
    /// Waiting to be scheduled.
    Waiting,
    /// Running.
    Running,
    /// Finished.
    Success,
    /// Failed.
    Failed,
    /// Anything else.
    #[serde(untagged)]
    Other(String),
}

impl WireTaskStatus {
    /// Whether the task will not change any more.
    pub fn is_terminal(&self) -> bool {
        matches!(self, WireTaskStatus::Success | WireTaskStatus::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_submit_response_and_ignores_unknown_fields() {
        let body = r#"{"code":0,"data":{"result_key":"189fbf3a","task_list":[
            {"image":"https://a/b.png","mask":"https://a/m.png","status":"WAITING","extra":1}]},
            "message":"success","requestId":"55DF7515","severity":"info","success":true,"x":{}}"#;
        let env: Envelope<SubmitData> = serde_json::from_str(body).unwrap();
        let data = env.data.unwrap();
        assert_eq!(data.result_key, "189fbf3a");
        assert_eq!(data.task_list[0].status, Some(WireTaskStatus::Waiting));
        assert_eq!(env.request_id, "55DF7515");
    }

    #[test]
    fn parses_an_error_envelope_without_data_and_unknown_statuses() {
        let env: Envelope<QueryData> =
            serde_json::from_str(r#"{"code":23500008,"message":"No records"}"#).unwrap();
        assert_eq!(env.code, 23500008);
        assert!(env.data.is_none());
        let task: WireTask = serde_json::from_str(r#"{"status":"PAUSED"}"#).unwrap();
        assert_eq!(task.status, Some(WireTaskStatus::Other("PAUSED".into())));
    }

    #[test]
    fn requests_serialise_like_the_documents() {
        let req = SubmitRequest {
            data: SubmitRequestData {
                task_list: vec![WireTask {
                    image: "https://i".into(),
                    mask: "https://m".into(),
                    seed: Some(2323),
                    kernel_size: Some(37),
                    ..WireTask::default()
                }],
            },
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"data":{"task_list":[{"image":"https://i","mask":"https://m","seed":2323,"kernel_size":37}]}}"#
        );
    }
}
