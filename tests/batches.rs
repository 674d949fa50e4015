//! Batches beyond ten tasks, end to end against the local backend: split
//! into jobs, every task accounted for, partial failures reported per task,
//! and a batch sent again never billing a job twice.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_api::v1::batches_client::BatchesClient;
use retouch_server::aliyun::AliyunCode;
use retouch_server::app::ServerConfig;
use retouch_server::local::{Endpoint, FaultConfig, InjectedFault};
use tonic::transport::Channel;

async fn batches(server: &retouch_server::app::RunningServer) -> BatchesClient<Channel> {
    BatchesClient::new(channel(server).await)
}

/// 95 tasks: every fifth a removal, the rest matting.
fn ninety_five(server: &retouch_server::app::RunningServer) -> Vec<pb::BatchTask> {
    (0..95)
        .map(|n| {
            let task = if n % 5 == 0 {
                pb::batch_task::Task::Removal(removal_task(server, Some(n), None))
            } else {
                pb::batch_task::Task::Matting(matting_task(server))
            };
            pb::BatchTask { task: Some(task) }
        })
        .collect()
}

/// Quick tasks: 95 of them run through the real engine.
fn quick_config() -> ServerConfig {
    let mut local = local_config(FaultConfig::default());
    local.faults.task_duration = Duration::from_millis(20);
    local.workers = 4;
    let mut config = ServerConfig::local(local);
    config.tracker = fast_tracker();
    config.upstream_qps = 0.0;
    config
}

#[tokio::test]
async fn a_batch_of_95_is_ten_jobs_and_sending_it_again_bills_nothing_twice() {
    let server = server(quick_config()).await;
    let backend = server.local_backend.clone().unwrap();
    let mut client = batches(&server).await;
    let request = pb::SubmitBatchRequest {
        tasks: ninety_five(&server),
        request_id: "photos-2026-11-30".into(),
        ..Default::default()
    };
    // One job's submit is refused for good (nothing billed): the batch
    // reports it, and the rest goes through.
    backend.inject_once(
        Endpoint::Submit,
        InjectedFault::Aliyun(AliyunCode::CreditExhausted),
    );
    let first = client.submit(request.clone()).await.unwrap().into_inner();
    assert_eq!(first.task_count, 95);
    // 76 matting tasks (8 jobs) and 19 removal tasks (2 jobs).
    let sizes: Vec<(pb::Api, usize)> = first
        .jobs
        .iter()
        .map(|j| (j.api(), j.task_indices.len()))
        .collect();
    let mut expected = vec![(pb::Api::InstanceMatting, 10); 7];
    expected.push((pb::Api::InstanceMatting, 6));
    expected.extend([(pb::Api::ObjectRemoval, 10), (pb::Api::ObjectRemoval, 9)]);
    assert_eq!(sizes, expected);
    let mut every: Vec<u32> = first
        .jobs
        .iter()
        .flat_map(|j| j.task_indices.clone())
        .collect();
    every.sort_unstable();
    assert_eq!(every, (0..95).collect::<Vec<_>>(), "every task, once");

    let refused: Vec<&pb::BatchJob> = first
        .jobs
        .iter()
        .filter(|j| j.state() == pb::BatchJobState::NotSubmitted)
        .collect();
    assert_eq!(refused.len(), 1, "{first:?}");
    let error = refused[0].submit_error.as_ref().expect("the refusal");
    assert_eq!(error.aliyun_code, AliyunCode::CreditExhausted.code());
    assert!(refused[0].result_key.is_empty());
    let failed_tasks: Vec<u32> = first
        .failures
        .iter()
        .filter(|f| f.job_index == refused[0].index)
        .map(|f| f.task_index)
        .collect();
    assert_eq!(failed_tasks, refused[0].task_indices, "reported per task");
    assert!(
        first
            .failures
            .iter()
            .all(|f| f.aliyun_code == AliyunCode::CreditExhausted.code())
    );
    let accepted = first
        .jobs
        .iter()
        .filter(|j| j.state() == pb::BatchJobState::Accepted)
        .count();
    assert_eq!(accepted, 9);
    assert_eq!(
        backend.stats().submit_requests,
        10,
        "ten requests, one refused"
    );
    // Read later, the batch still says why.
    let later = client
        .get(pb::GetBatchRequest {
            batch_id: first.batch_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let refused_later = &later.jobs[refused[0].index as usize];
    assert_eq!(refused_later.state(), pb::BatchJobState::NotSubmitted);
    assert_eq!(refused_later.submit_error.as_ref(), Some(error));

    // Each accepted job is an ordinary job that knows its batch.
    let job = first
        .jobs
        .iter()
        .find(|j| j.state() == pb::BatchJobState::Accepted)
        .unwrap();
    let got = jobs(&server)
        .await
        .get_job(pb::GetJobRequest {
            job: Some(pb::JobRef {
                result_key: job.result_key.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.batch_id, first.batch_id);
    assert_eq!(
        got.request_id,
        format!("batch-{}/{}", first.batch_id, job.index)
    );
    assert_eq!(got.tasks.len(), job.task_indices.len());

    // The same batch again: the same batch id and jobs; only the refused
    // job is sent, once, even with two calls at the same time.
    let (mut c1, mut c2) = (client.clone(), client.clone());
    let (a, b) = tokio::join!(c1.submit(request.clone()), c2.submit(request.clone()));
    let (again, twin) = (a.unwrap().into_inner(), b.unwrap().into_inner());
    assert_eq!(again.batch_id, first.batch_id);
    assert_eq!(twin.batch_id, first.batch_id);
    assert_eq!(backend.stats().submit_requests, 11, "only the refused job");
    assert!(
        again
            .jobs
            .iter()
            .all(|j| j.state() == pb::BatchJobState::Accepted),
        "{again:?}"
    );
    for (before, after) in first.jobs.iter().zip(&again.jobs) {
        if before.state() == pb::BatchJobState::Accepted {
            assert_eq!(before.result_key, after.result_key, "the same job");
        }
    }

    // The calls and their jobs, counted.
    let metrics = reqwest::get(format!("{}/metrics", server.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "retouch_batches_total{kind=\"new\"} 1",
        "retouch_batches_total{kind=\"repeated\"} 2",
        "retouch_batch_jobs_total{outcome=\"not_submitted\"} 1",
        "retouch_batch_jobs_total{outcome=\"accepted\"} 29",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    // Other tasks under the same request id are refused, naming the field.
    let mut other = request.clone();
    other.tasks.pop();
    let status = client.submit(other).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("request_id"), "{status:?}");
    assert_eq!(backend.stats().submit_requests, 11);

    // Watch follows the batch to its end: every task SUCCESS.
    let stream = client
        .watch(pb::WatchBatchRequest {
            batch_id: first.batch_id.clone(),
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    let updates: Vec<pb::Batch> = tokio::time::timeout(
        Duration::from_secs(120),
        stream.map(|item| item.expect("watch item")).collect(),
    )
    .await
    .expect("the batch finishes");
    let last = updates.last().unwrap();
    assert!(last.finished, "{last:?}");
    let counts = last.counts.unwrap();
    assert_eq!(counts.success, 95, "{counts:?}");
    assert!(last.failures.is_empty(), "{:?}", last.failures);
    assert!(updates.len() >= 2, "progress came in steps");
    for pair in updates.windows(2) {
        let (a, b) = (pair[0].counts.unwrap(), pair[1].counts.unwrap());
        assert!(b.success >= a.success, "success never goes back");
    }
    let got = client
        .get(pb::GetBatchRequest {
            batch_id: first.batch_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&got, last, "Get agrees with Watch's last word");
    server.shutdown().await;
}

#[tokio::test]
async fn a_bad_batch_sends_nothing_and_names_each_task() {
    let server = server(test_config()).await;
    let backend = server.local_backend.clone().unwrap();
    let mut client = batches(&server).await;
    let mut tasks = ninety_five(&server);
    tasks[40] = pb::BatchTask { task: None };
    if let Some(pb::batch_task::Task::Removal(t)) = &mut tasks[90].task {
        t.kernel_size = Some(8);
    }
    let status = client
        .submit(pb::SubmitBatchRequest {
            tasks,
            request_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("tasks[40]"), "{status:?}");
    assert!(
        status.message().contains("tasks[90].removal.kernel_size"),
        "{status:?}"
    );
    assert_eq!(backend.stats().submit_requests, 0, "nothing was sent");

    let missing = client
        .get(pb::GetBatchRequest {
            batch_id: "no-such-batch".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    server.shutdown().await;
}
