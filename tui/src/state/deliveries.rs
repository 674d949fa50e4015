//! Webhook deliveries that are failing: still being retried after a
//! failed attempt, or failed for good. The dashboard polls them, counts
//! them in the header and lists a job's in its detail view.

use std::collections::BTreeMap;

use retouch_api::v1 as pb;

/// The failing deliveries of the caller's endpoints, by job.
#[derive(Debug, Default, Clone)]
pub struct FailingDeliveries {
    by_job: BTreeMap<String, Vec<pb::Delivery>>,
    total: usize,
}

impl FailingDeliveries {
    /// Replaces what is known with `deliveries` (those that are not
    /// failing are left out).
    pub fn replace(&mut self, deliveries: Vec<pb::Delivery>) {
        self.by_job.clear();
        self.total = 0;
        for delivery in deliveries.into_iter().filter(is_failing) {
            self.total += 1;
            self.by_job
                .entry(delivery.result_key.clone())
                .or_default()
                .push(delivery);
        }
        for list in self.by_job.values_mut() {
            list.sort_by_key(|d| d.seq);
        }
    }

    /// How many deliveries are failing.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The failing deliveries of one job, oldest event first.
    pub fn of_job(&self, result_key: &str) -> &[pb::Delivery] {
        self.by_job.get(result_key).map_or(&[], Vec::as_slice)
    }
}

/// Failed for good, or waiting for a retry after a failed attempt.
pub fn is_failing(delivery: &pb::Delivery) -> bool {
    match delivery.status() {
        pb::DeliveryStatus::Failed => true,
        pb::DeliveryStatus::Pending => delivery.attempts > 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(seq: u64, key: &str, status: pb::DeliveryStatus, attempts: u32) -> pb::Delivery {
        pb::Delivery {
            delivery_id: format!("msg_{seq}_ep_a"),
            seq,
            result_key: key.into(),
            status: status as i32,
            attempts,
            ..Default::default()
        }
    }

    #[test]
    fn only_retried_and_failed_deliveries_count_grouped_by_job() {
        use pb::DeliveryStatus::{Delivered, Failed, Pending};
        let mut failing = FailingDeliveries::default();
        failing.replace(vec![
            delivery(9, "k1", Failed, 10),
            delivery(3, "k1", Pending, 2),
            delivery(4, "k1", Pending, 0),
            delivery(5, "k2", Delivered, 3),
            delivery(6, "k2", Pending, 1),
        ]);
        assert_eq!(failing.total(), 3);
        let k1: Vec<u64> = failing.of_job("k1").iter().map(|d| d.seq).collect();
        assert_eq!(k1, [3, 9]);
        assert_eq!(failing.of_job("k2").len(), 1);
        assert!(failing.of_job("k3").is_empty());
        failing.replace(Vec::new());
        assert_eq!(failing.total(), 0);
    }
}
