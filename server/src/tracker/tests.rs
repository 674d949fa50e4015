//! The tracker when the journal fails under it: a step that cannot be made
//! durable is seen by nobody, its callers are told why, and the tracker
//! carries on from what is durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_api::v1::watch_response::Kind as WatchKind;
use secrecy::SecretString;

use super::*;
use crate::upstream::UpstreamConfig;
use retouch_journal::UploadRecord;
use retouch_journal::{
    Attempt, DeliveryKey, DeliveryQuery, DeliveryRecord, DueDelivery, EndpointChange,
    EndpointRecord, OutboxCounts, WebhookOutbox,
};
use retouch_journal::{
    Began, Compacted, MirrorRequest, MirrorState, NewSubmission, Recovered, SoleWriterStep,
    SqliteStore, StepTransaction, StepWrites,
};
use retouch_journal::{JobJournal, MirrorRecords, Retention, Submissions, UploadRecords};

/// The real SQLite journal, whose commits fail while `full` is set, as on
/// a full disk.
struct FullDisk {
    inner: SqliteStore,
    full: AtomicBool,
}

#[async_trait::async_trait]
impl JobJournal for FullDisk {
    fn store_id(&self) -> &str {
        self.inner.store_id()
    }

    async fn recover(&self) -> Result<Recovered, StoreError> {
        self.inner.recover().await
    }

    async fn commit(&self, writes: StepWrites) -> Result<(), StoreError> {
        if self.full.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("database or disk is full".into()));
        }
        self.inner.commit(writes).await
    }

    async fn begin_step(
        &self,
        _leased: Vec<(String, u64)>,
    ) -> Result<Box<dyn StepTransaction + '_>, StoreError> {
        Ok(Box::new(SoleWriterStep { store: self }))
    }

    async fn job_by_key(&self, key: &str) -> Result<Option<JobRecord>, StoreError> {
        self.inner.job_by_key(key).await
    }

    async fn jobs_by_keys(
        &self,
        keys: Vec<String>,
    ) -> Result<HashMap<String, JobRecord>, StoreError> {
        self.inner.jobs_by_keys(keys).await
    }

    async fn job_by_submission(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        self.inner.job_by_submission(id).await
    }

    async fn list_jobs(
        &self,
        query: &retouch_journal::ListQuery,
    ) -> Result<retouch_journal::ListPage, StoreError> {
        self.inner.list_jobs(query).await
    }

    async fn jobs_after(
        &self,
        after: u64,
        max_accepted_seq: u64,
        limit: usize,
    ) -> Result<Vec<JobRecord>, StoreError> {
        self.inner.jobs_after(after, max_accepted_seq, limit).await
    }

    async fn events(
        &self,
        after: u64,
        upto: u64,
        keys: Option<Vec<String>>,
        limit: usize,
    ) -> Result<Vec<pb::JobEvent>, StoreError> {
        self.inner.events(after, upto, keys, limit).await
    }

    async fn compacted_through(&self) -> Result<u64, StoreError> {
        self.inner.compacted_through().await
    }
}

#[async_trait::async_trait]
impl Submissions for FullDisk {
    async fn begin_submission(&self, new: NewSubmission) -> Result<Began, StoreError> {
        self.inner.begin_submission(new).await
    }

    async fn abandon_submission(&self, id: &str) -> Result<(), StoreError> {
        self.inner.abandon_submission(id).await
    }

    async fn billed_tasks(
        &self,
        token: Option<String>,
        now: std::time::SystemTime,
    ) -> Result<std::collections::BTreeMap<String, retouch_journal::BilledTasks>, StoreError> {
        self.inner.billed_tasks(token, now).await
    }

    async fn submissions_by_request_ids(
        &self,
        request_ids: Vec<String>,
    ) -> Result<HashMap<String, retouch_journal::SubmissionRecord>, StoreError> {
        self.inner.submissions_by_request_ids(request_ids).await
    }

    async fn begin_batch(
        &self,
        new: retouch_journal::BatchRecord,
    ) -> Result<retouch_journal::BeganBatch, StoreError> {
        self.inner.begin_batch(new).await
    }

    async fn batch(&self, id: &str) -> Result<Option<retouch_journal::BatchRecord>, StoreError> {
        self.inner.batch(id).await
    }

    async fn record_batch_submit_error(
        &self,
        batch_id: &str,
        job_index: u32,
        error: &pb::UpstreamError,
    ) -> Result<(), StoreError> {
        self.inner
            .record_batch_submit_error(batch_id, job_index, error)
            .await
    }
}

#[async_trait::async_trait]
impl MirrorRecords for FullDisk {
    async fn mirror_stored(
        &self,
        request: &MirrorRequest,
        sha256: &str,
        content_type: &str,
        size_bytes: u64,
    ) -> Result<(), StoreError> {
        self.inner
            .mirror_stored(request, sha256, content_type, size_bytes)
            .await
    }

    async fn mirror_failed(
        &self,
        request: &MirrorRequest,
        error: &str,
        give_up: bool,
    ) -> Result<(), StoreError> {
        self.inner.mirror_failed(request, error, give_up).await
    }

    async fn mirror_state(
        &self,
        key: &str,
        task: u32,
        result: u32,
    ) -> Result<Option<MirrorState>, StoreError> {
        self.inner.mirror_state(key, task, result).await
    }

    async fn mirror_references(&self, sha256: &str) -> Result<bool, StoreError> {
        self.inner.mirror_references(sha256).await
    }
}

#[async_trait::async_trait]
impl UploadRecords for FullDisk {
    async fn record_upload(&self, upload: UploadRecord) -> Result<(), StoreError> {
        self.inner.record_upload(upload).await
    }

    async fn upload(&self, sha256: &str) -> Result<Option<UploadRecord>, StoreError> {
        self.inner.upload(sha256).await
    }
}

/// The outbox is the inner journal's, unchanged: these tests fail
/// commits only.
#[async_trait::async_trait]
impl WebhookOutbox for FullDisk {
    async fn create_endpoint(&self, endpoint: EndpointRecord) -> Result<(), StoreError> {
        self.inner.create_endpoint(endpoint).await
    }

    async fn endpoint(&self, id: &str) -> Result<Option<EndpointRecord>, StoreError> {
        self.inner.endpoint(id).await
    }

    async fn endpoints(&self, owner: Option<String>) -> Result<Vec<EndpointRecord>, StoreError> {
        self.inner.endpoints(owner).await
    }

    async fn update_endpoint(
        &self,
        id: &str,
        change: EndpointChange,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        self.inner.update_endpoint(id, change).await
    }

    async fn delete_endpoint(&self, id: &str) -> Result<Option<u64>, StoreError> {
        self.inner.delete_endpoint(id).await
    }

    async fn claim_deliveries(
        &self,
        max: usize,
        skip_endpoints: Vec<String>,
        now: std::time::SystemTime,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.inner.claim_deliveries(max, skip_endpoints, now).await
    }

    async fn release_deliveries(&self, keys: Vec<DeliveryKey>) -> Result<(), StoreError> {
        self.inner.release_deliveries(keys).await
    }

    async fn record_attempt(&self, attempt: Attempt) -> Result<bool, StoreError> {
        self.inner.record_attempt(attempt).await
    }

    async fn deliveries(&self, query: DeliveryQuery) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.inner.deliveries(query).await
    }

    async fn delivery(&self, key: &DeliveryKey) -> Result<Option<DeliveryRecord>, StoreError> {
        self.inner.delivery(key).await
    }

    async fn redeliver(
        &self,
        key: &DeliveryKey,
        now: std::time::SystemTime,
    ) -> Result<bool, StoreError> {
        self.inner.redeliver(key, now).await
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        self.inner.outbox_counts().await
    }

    async fn wait_for_deliveries(&self, fallback: Duration) {
        self.inner.wait_for_deliveries(fallback).await
    }
}

#[async_trait::async_trait]
impl Retention for FullDisk {
    async fn compact(&self, compaction: Compaction) -> Result<Compacted, StoreError> {
        self.inner.compact(compaction).await
    }
}

fn finished(key: &str) -> pb::Job {
    pb::Job {
        api: pb::Api::InstanceMatting as i32,
        result_key: key.into(),
        tasks: vec![pb::Task {
            status: pb::TaskStatus::Success as i32,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_step_the_journal_refuses_is_seen_by_nobody_and_tracking_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FullDisk {
        inner: SqliteStore::open(dir.path()).unwrap(),
        full: AtomicBool::new(false),
    });
    // Jobs are tracked already finished: nothing is ever polled.
    let client = UpstreamClient::new(UpstreamConfig::new(
        "http://127.0.0.1:9".parse().unwrap(),
        SecretString::from("unused"),
    ))
    .unwrap();
    let tracker = Tracker::start(client, TrackerConfig::default(), store.clone(), None)
        .await
        .unwrap();
    let watcher = tracker.subscribe(JobFilter::All, None).await.unwrap();
    let mut stream = Box::pin(
        watcher
            .into_stream(false)
            .map(|frame| frame.map(|frame| frame.to_message())),
    );
    assert!(matches!(
        stream.next().await.unwrap().unwrap().kind,
        Some(WatchKind::Synced(_))
    ));

    store.full.store(true, Ordering::SeqCst);
    let refused = tracker.track(finished("lost-to-a-full-disk"), None).await;
    let Err(ServiceError::Store(StoreError::Unavailable(cause))) = refused else {
        panic!("the caller is told: {refused:?}");
    };
    assert!(cause.contains("full"), "{cause}");
    assert!(
        store
            .job_by_key("lost-to-a-full-disk")
            .await
            .unwrap()
            .is_none()
    );

    store.full.store(false, Ordering::SeqCst);
    let (_, seq) = tracker.track(finished("after"), None).await.unwrap();
    let item = stream.next().await.unwrap().unwrap();
    let Some(WatchKind::Event(event)) = item.kind else {
        panic!("{item:?}");
    };
    assert_eq!(
        (event.result_key.as_str(), event.seq),
        ("after", seq),
        "the watcher never saw the refused step"
    );
    assert_eq!(seq, 1, "the refused step's seq was never durable, nor seen");
    tracker.shutdown();
    tracker.stopped().await;
}

#[tokio::test]
async fn a_snapshot_merges_polled_and_journaled_jobs_in_order_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let client = UpstreamClient::new(UpstreamConfig::new(
        "http://127.0.0.1:9".parse().unwrap(),
        SecretString::from("unused"),
    ))
    .unwrap();
    let tracker = Tracker::start(client, TrackerConfig::default(), store, None)
        .await
        .unwrap();
    // More than two pages of finished jobs, with jobs still being polled
    // (they stay in memory) among them.
    const JOBS: usize = 2_500;
    for i in 0..JOBS {
        let mut job = finished(&format!("job-{i:05}"));
        if i % 700 == 3 {
            job.tasks[0].status = pb::TaskStatus::Waiting as i32;
        }
        tracker.track(job, None).await.unwrap();
    }
    let watcher = tracker.subscribe(JobFilter::All, None).await.unwrap();
    let mut stream = Box::pin(
        watcher
            .into_stream(false)
            .map(|frame| frame.map(|frame| frame.to_message())),
    );
    let mut keys = Vec::new();
    loop {
        match stream.next().await.unwrap().unwrap().kind {
            Some(WatchKind::Snapshot(job)) => keys.push(job.result_key),
            Some(WatchKind::Synced(_)) => break,
            other => panic!("{other:?}"),
        }
    }
    let expected: Vec<String> = (0..JOBS).map(|i| format!("job-{i:05}")).collect();
    assert_eq!(keys, expected, "every job once, oldest first");
    tracker.shutdown();
    tracker.stopped().await;
}
