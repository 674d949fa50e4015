//! Counters clients are judged by, and forgetting old jobs.

use super::*;

#[tokio::test]
async fn queries_are_counted_per_result_key() {
    let h = start(config()).await;
    let kind = ApiKind::InstanceMatting;
    let data = h.submit(kind, vec![h.sample_task("portrait")]).await;
    let key = data["result_key"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(h.query(kind, key).await.code(), 0);
    }
    h.query(kind, "other")
        .await
        .assert_error(AliyunCode::ResultKeyNotFound);
    let stats = h.backend.stats();
    assert_eq!(stats.queries_by_key[key], 3);
    assert_eq!(stats.queries_by_key["other"], 1);
    assert_eq!((stats.query_requests, stats.submit_requests), (4, 1));
}

#[tokio::test]
async fn re_sent_task_lists_are_counted_as_duplicate_submits() {
    let h = start(config()).await;
    let kind = ApiKind::ObjectRemoval;
    let task = h.sample_task("clutter");
    h.submit(kind, vec![task.clone()]).await;
    h.submit(ApiKind::InstanceMatting, vec![task.clone()]).await;
    let mut other = task.clone();
    other["seed"] = json!(5);
    h.submit(kind, vec![other]).await;
    assert_eq!(h.backend.stats().duplicate_submits, 0);
    h.submit(kind, vec![task]).await;
    let stats = h.backend.stats();
    assert_eq!(stats.duplicate_submits, 1);
    assert_eq!((stats.submits_received, stats.jobs_created), (4, 4));
}

#[tokio::test]
async fn jobs_and_results_are_forgotten_after_the_retention_period() {
    let h = start(LocalBackendConfig {
        result_retention: Duration::from_millis(1500),
        ..config()
    })
    .await;
    let kind = ApiKind::InstanceMatting;
    let data = h.submit(kind, vec![h.sample_task("portrait")]).await;
    let key = data["result_key"].as_str().unwrap();
    let tasks = h.wait_done(kind, key).await;
    let url = tasks[0]["results"][0].as_str().unwrap();
    assert_eq!(h.get_bytes(url).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    h.query(kind, key)
        .await
        .assert_error(AliyunCode::ResultKeyNotFound);
    assert_eq!(h.get_bytes(url).await.0, StatusCode::NOT_FOUND);
}
