//! Every documented validation code, on submit and query.

use super::*;

const REMOVAL: ApiKind = ApiKind::ObjectRemoval;

fn with(mut task: Value, field: &str, value: Value) -> Value {
    task[field] = value;
    task
}

fn body(tasks: Vec<Value>) -> Value {
    json!({"data": {"task_list": tasks}})
}

#[tokio::test]
async fn malformed_submits_get_their_documented_codes() {
    use AliyunCode::*;
    let h = start(config()).await;
    let good = h.sample_task("clutter");
    let submit = REMOVAL.default_submit_path();

    h.post(submit, "").await.assert_error(BodyMissing);
    h.post(submit, "{\"data\":")
        .await
        .assert_error(ParameterIllegal);
    let cases: Vec<(Value, AliyunCode)> = vec![
        (json!({}), ParameterEmpty),
        (json!({"data": {}}), ParameterEmpty),
        (body(vec![]), ParameterEmpty),
        (
            body(vec![with(good.clone(), "image", json!(""))]),
            ParameterEmpty,
        ),
        (
            body(vec![with(good.clone(), "mask", Value::Null)]),
            ParameterEmpty,
        ),
        (body(vec![good.clone(); 11]), ParameterIllegal),
        (
            body(vec![with(good.clone(), "kernel_size", json!("3"))]),
            ParameterIllegal,
        ),
        (
            body(vec![with(good.clone(), "seed", json!(1.5))]),
            ParameterIllegal,
        ),
        (
            body(vec![with(good.clone(), "kernel_size", json!(4))]),
            ParameterIllegal,
        ),
        (
            body(vec![with(good.clone(), "kernel_size", json!(61))]),
            ParameterIllegal,
        ),
        (
            body(vec![with(good.clone(), "image", json!("ftp://h/x.png"))]),
            ImageUrlInvalid,
        ),
    ];
    for (request, code) in cases {
        let answer = h.post_json(submit, &request).await;
        assert_eq!(answer.code(), code.code(), "{request} -> {}", answer.json);
        answer.assert_error(code);
    }
    let stats = h.backend.stats();
    assert_eq!((stats.submits_received, stats.jobs_created), (13, 0));
}

#[tokio::test]
async fn inputs_that_cannot_be_fetched_or_used_are_refused_before_a_job_exists() {
    use AliyunCode::*;
    let h = start(config()).await;
    let good = h.sample_task("portrait");
    let cases = [
        ("image", "/samples/nope.png", ImageUrlInvalid),
        ("mask", "/web/slow.png", ImageUrlInvalid),
        ("image", "/web/small.png", ImageInvalid),
        ("image", "/web/text.png", ImageInvalid),
        ("mask", "/web/huge.png", ImageInvalid),
        ("mask", "/web/small.png", ImageInvalid),
    ];
    for (field, path, code) in cases {
        let task = with(good.clone(), field, json!(h.url(path)));
        let answer = h
            .post_json(REMOVAL.default_submit_path(), &body(vec![task]))
            .await;
        assert_eq!(
            answer.code(),
            code.code(),
            "{field} {path} -> {}",
            answer.json
        );
        answer.assert_error(code);
    }
    // A refused task spoils the whole submit.
    let bad = with(good.clone(), "image", json!(h.url("/web/small.png")));
    let answer = h
        .post_json(REMOVAL.default_submit_path(), &body(vec![good, bad]))
        .await;
    answer.assert_error(ImageInvalid);
    assert_eq!(h.backend.stats().jobs_created, 0);
    // An unreachable host.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/x.png", closed.local_addr().unwrap());
    drop(closed);
    let task = with(h.sample_task("portrait"), "image", json!(dead));
    h.post_json(REMOVAL.default_submit_path(), &body(vec![task]))
        .await
        .assert_error(ImageUrlInvalid);
}

#[tokio::test]
async fn credits_are_charged_per_task_and_only_for_accepted_submits() {
    let h = start(LocalBackendConfig {
        credits: Some(2),
        ..config()
    })
    .await;
    let good = h.sample_task("portrait");
    let submit = ApiKind::InstanceMatting.default_submit_path();
    h.post_json(submit, &body(vec![good.clone(); 3]))
        .await
        .assert_error(AliyunCode::CreditExhausted);
    let missing = with(good.clone(), "image", json!(h.url("/samples/nope.png")));
    h.post_json(submit, &body(vec![missing]))
        .await
        .assert_error(AliyunCode::ImageUrlInvalid);
    assert_eq!(
        h.post_json(submit, &body(vec![good.clone(); 2]))
            .await
            .code(),
        0
    );
    let answer = h.post_json(submit, &body(vec![good])).await;
    answer.assert_error(AliyunCode::CreditExhausted);
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn malformed_queries_get_their_documented_codes() {
    use AliyunCode::*;
    let h = start(config()).await;
    let query = REMOVAL.default_query_path();
    h.post(query, "").await.assert_error(BodyMissing);
    h.post(query, "result_key=abc")
        .await
        .assert_error(ParameterIllegal);
    h.post_json(query, &json!({"data": {}}))
        .await
        .assert_error(ParameterEmpty);
    h.post_json(query, &json!({"data": {"result_key": ""}}))
        .await
        .assert_error(ParameterEmpty);
    h.query(REMOVAL, "0123456789abcdef0123456789abcdef")
        .await
        .assert_error(ResultKeyNotFound);
    // Keys belong to one product.
    let data = h
        .submit(ApiKind::InstanceMatting, vec![h.sample_task("portrait")])
        .await;
    let key = data["result_key"].as_str().unwrap();
    h.query(REMOVAL, key).await.assert_error(ResultKeyNotFound);
    assert_eq!(h.query(ApiKind::InstanceMatting, key).await.code(), 0);
}
