//! Validation of submit and query bodies into the documented error codes.
//!
//! Bodies are read as untyped JSON first so that each defect gets its own
//! code: an empty body is 23500012, malformed JSON or a wrong type 23500013,
//! a missing or empty required field 23500009.

use serde_json::{Map, Value};

use crate::aliyun::{AliyunCode, ApiKind, KERNEL_SIZE_RANGE, MAX_TASKS};

/// One task of a valid submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TaskInput {
    /// Image URL (http or https).
    pub image: String,
    /// Mask URL (http or https).
    pub mask: String,
    /// Object removal: the seed, if the client gave one.
    pub seed: Option<i64>,
    /// Object removal: the kernel size, if the client gave one.
    pub kernel_size: Option<u32>,
}

/// The body as JSON; 23500012 when empty, 23500013 when not JSON.
pub(super) fn json_body(body: &[u8]) -> Result<Value, AliyunCode> {
    if body.trim_ascii().is_empty() {
        return Err(AliyunCode::BodyMissing);
    }
    serde_json::from_slice(body).map_err(|_| AliyunCode::ParameterIllegal)
}

/// `data` of a body: 23500009 when missing or null, 23500013 when the body
/// or `data` is not an object.
fn data(body: &Value) -> Result<&Map<String, Value>, AliyunCode> {
    let object = body.as_object().ok_or(AliyunCode::ParameterIllegal)?;
    match object.get("data") {
        None | Some(Value::Null) => Err(AliyunCode::ParameterEmpty),
        Some(Value::Object(data)) => Ok(data),
        Some(_) => Err(AliyunCode::ParameterIllegal),
    }
}

/// Whether a body sent to a query path is really a submit: its `data` has a
/// `task_list` and no `result_key`. The original matting document prints
/// the query path for submit too, so clients following it land here.
pub(super) fn looks_like_submit(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    data(&value).is_ok_and(|d| d.contains_key("task_list") && !d.contains_key("result_key"))
}

/// The `task_list` as canonical JSON (keys sorted), if the body has one;
/// used to recognise re-sent submits.
pub(super) fn canonical_task_list(body: &Value) -> Option<String> {
    data(body).ok()?.get("task_list").map(Value::to_string)
}

/// The tasks of a submit body, validated.
pub(super) fn submit_tasks(kind: ApiKind, body: &Value) -> Result<Vec<TaskInput>, AliyunCode> {
    let list = match data(body)?.get("task_list") {
        None | Some(Value::Null) => return Err(AliyunCode::ParameterEmpty),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(AliyunCode::ParameterIllegal),
    };
    if list.is_empty() {
        return Err(AliyunCode::ParameterEmpty);
    }
    if list.len() > MAX_TASKS {
        return Err(AliyunCode::ParameterIllegal);
    }
    let tasks = list
        .iter()
        .map(|task| task_input(kind, task))
        .collect::<Result<Vec<_>, _>>()?;
    // URLs are judged only once the whole list is well-formed, so a
    // malformed later task is reported as such rather than as a bad URL.
    for task in &tasks {
        check_url(&task.image)?;
        check_url(&task.mask)?;
    }
    Ok(tasks)
}

fn task_input(kind: ApiKind, task: &Value) -> Result<TaskInput, AliyunCode> {
    let task = task.as_object().ok_or(AliyunCode::ParameterIllegal)?;
    let image = required_string(task, "image")?;
    let mask = required_string(task, "mask")?;
    let (seed, kernel_size) = match kind {
        // Matting has no parameters; stray ones are ignored like any
        // unknown field.
        ApiKind::InstanceMatting => (None, None),
        ApiKind::ObjectRemoval => (seed(task)?, kernel_size(task)?),
    };
    Ok(TaskInput {
        image,
        mask,
        seed,
        kernel_size,
    })
}

fn required_string(task: &Map<String, Value>, field: &str) -> Result<String, AliyunCode> {
    match task.get(field) {
        None | Some(Value::Null) => Err(AliyunCode::ParameterEmpty),
        Some(Value::String(s)) if s.trim().is_empty() => Err(AliyunCode::ParameterEmpty),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(AliyunCode::ParameterIllegal),
    }
}

fn seed(task: &Map<String, Value>) -> Result<Option<i64>, AliyunCode> {
    match task.get("seed") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or(AliyunCode::ParameterIllegal),
    }
}

fn kernel_size(task: &Map<String, Value>) -> Result<Option<u32>, AliyunCode> {
    match task.get("kernel_size") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|k| u32::try_from(k).ok())
            .filter(|k| k % 2 == 1 && KERNEL_SIZE_RANGE.contains(k))
            .map(Some)
            .ok_or(AliyunCode::ParameterIllegal),
    }
}

/// 23500006 unless `url` is an absolute http or https URL with a host.
fn check_url(url: &str) -> Result<(), AliyunCode> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(AliyunCode::ImageUrlInvalid),
    }
}

/// The `result_key` of a query body.
pub(super) fn query_key(body: &Value) -> Result<String, AliyunCode> {
    match data(body)?.get("result_key") {
        None | Some(Value::Null) => Err(AliyunCode::ParameterEmpty),
        Some(Value::String(s)) if s.trim().is_empty() => Err(AliyunCode::ParameterEmpty),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(AliyunCode::ParameterIllegal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const REMOVAL: ApiKind = ApiKind::ObjectRemoval;

    fn task(extra: Value) -> Value {
        let mut t = json!({"image": "http://h/i.png", "mask": "https://h/m.png"});
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        t
    }

    fn submit(kind: ApiKind, body: Value) -> Result<Vec<TaskInput>, AliyunCode> {
        submit_tasks(kind, &body)
    }

    #[test]
    fn bodies_that_are_empty_or_not_json_are_told_apart() {
        assert_eq!(json_body(b""), Err(AliyunCode::BodyMissing));
        assert_eq!(json_body(b" \n"), Err(AliyunCode::BodyMissing));
        assert_eq!(json_body(b"{data"), Err(AliyunCode::ParameterIllegal));
        assert!(json_body(b"{}").is_ok());
    }

    #[test]
    fn submit_structure_errors_have_their_codes() {
        use AliyunCode::*;
        assert_eq!(submit(REMOVAL, json!({})), Err(ParameterEmpty));
        assert_eq!(submit(REMOVAL, json!([1])), Err(ParameterIllegal));
        assert_eq!(submit(REMOVAL, json!({"data": 3})), Err(ParameterIllegal));
        assert_eq!(submit(REMOVAL, json!({"data": {}})), Err(ParameterEmpty));
        assert_eq!(
            submit(REMOVAL, json!({"data": {"task_list": []}})),
            Err(ParameterEmpty)
        );
        assert_eq!(
            submit(REMOVAL, json!({"data": {"task_list": {}}})),
            Err(ParameterIllegal)
        );
        let eleven: Vec<Value> = (0..11).map(|_| task(json!({}))).collect();
        assert_eq!(
            submit(REMOVAL, json!({"data": {"task_list": eleven}})),
            Err(ParameterIllegal)
        );
        let ten: Vec<Value> = (0..10).map(|_| task(json!({}))).collect();
        assert_eq!(
            submit(REMOVAL, json!({"data": {"task_list": ten}}))
                .unwrap()
                .len(),
            10
        );
    }

    #[test]
    fn task_field_errors_have_their_codes() {
        use AliyunCode::*;
        let one = |t: Value| submit(REMOVAL, json!({"data": {"task_list": [t]}}));
        assert_eq!(one(json!({"mask": "http://h/m"})), Err(ParameterEmpty));
        assert_eq!(one(task(json!({"image": ""}))), Err(ParameterEmpty));
        assert_eq!(one(task(json!({"mask": 5}))), Err(ParameterIllegal));
        assert_eq!(one(task(json!({"seed": "1"}))), Err(ParameterIllegal));
        assert_eq!(one(task(json!({"seed": 1.5}))), Err(ParameterIllegal));
        assert_eq!(
            one(task(json!({"kernel_size": "3"}))),
            Err(ParameterIllegal)
        );
        assert_eq!(one(task(json!({"kernel_size": 4}))), Err(ParameterIllegal));
        assert_eq!(one(task(json!({"kernel_size": 61}))), Err(ParameterIllegal));
        assert_eq!(one(task(json!({"kernel_size": -1}))), Err(ParameterIllegal));
        assert_eq!(
            one(task(json!({"image": "ftp://h/i.png"}))),
            Err(ImageUrlInvalid)
        );
        assert_eq!(
            one(task(json!({"mask": "not a url"}))),
            Err(ImageUrlInvalid)
        );
        let ok = one(task(json!({"seed": -3, "kernel_size": 59}))).unwrap();
        assert_eq!((ok[0].seed, ok[0].kernel_size), (Some(-3), Some(59)));
    }

    #[test]
    fn matting_ignores_removal_parameters() {
        let t = task(json!({"seed": "x", "kernel_size": 4}));
        let ok = submit(
            ApiKind::InstanceMatting,
            json!({"data": {"task_list": [t]}}),
        )
        .unwrap();
        assert_eq!((ok[0].seed, ok[0].kernel_size), (None, None));
    }

    #[test]
    fn query_keys_and_submits_on_query_paths() {
        use AliyunCode::*;
        assert_eq!(query_key(&json!({"data": {}})), Err(ParameterEmpty));
        assert_eq!(
            query_key(&json!({"data": {"result_key": " "}})),
            Err(ParameterEmpty)
        );
        assert_eq!(
            query_key(&json!({"data": {"result_key": 1}})),
            Err(ParameterIllegal)
        );
        assert_eq!(
            query_key(&json!({"data": {"result_key": "k"}})),
            Ok("k".into())
        );
        assert!(looks_like_submit(br#"{"data":{"task_list":[]}}"#));
        assert!(!looks_like_submit(
            br#"{"data":{"task_list":[],"result_key":"k"}}"#
        ));
        assert!(!looks_like_submit(br#"{"data":{"result_key":"k"}}"#));
        assert!(!looks_like_submit(b"nope"));
    }
}
