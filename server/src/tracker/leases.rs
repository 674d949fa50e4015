//! The leases this replica holds on a shared journal, and the loop that
//! keeps them: it heartbeats, renews what is held, claims a fair share of
//! the jobs nobody holds (a dead replica's, within its TTL), and takes over
//! the submits dead replicas left unsettled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::command::Command;
use crate::upstream::UpstreamClient;
use retouch_journal::{Cluster, Lease};

/// Longest pause between two rounds of claiming: takeover of a dead
/// replica's jobs comes at most this long after its leases expire.
const CLAIM_EVERY: Duration = Duration::from_secs(1);
/// Rounds in a row a replica must hold clearly more than its share before
/// it hands jobs back.
const HAND_BACK_AFTER_ROUNDS: u32 = 3;

/// Where a job's lease stands for this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseStatus {
    /// Held and valid: poll it.
    Valid,
    /// Held but not renewed in time: do not poll until it is.
    Expired,
    /// Not held (lost, or the job finished): stop.
    Gone,
}

/// The leases held, shared by the aggregator (epochs for fencing), the
/// pollers (whether to query) and the lease loop.
#[derive(Debug, Default)]
pub(crate) struct HeldLeases {
    held: Mutex<HashMap<String, (u64, Instant)>>,
}

impl HeldLeases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Instant)>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a lease taken (claimed, or by a step that tracked the job).
    pub(crate) fn insert(&self, lease: Lease) {
        self.lock()
            .insert(lease.result_key, (lease.epoch, lease.valid_until));
    }

    /// Forgets a job's lease.
    pub(crate) fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    /// The epoch held for `key`.
    pub(crate) fn epoch(&self, key: &str) -> Option<u64> {
        self.lock().get(key).map(|(epoch, _)| *epoch)
    }

    /// Whether a poller may query `key` now.
    pub(crate) fn status(&self, key: &str) -> LeaseStatus {
        match self.lock().get(key) {
            None => LeaseStatus::Gone,
            Some((_, until)) if *until > Instant::now() => LeaseStatus::Valid,
            Some(_) => LeaseStatus::Expired,
        }
    }

    /// How many are held.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Stops holding all but `keep` leases; returns those given up, with
    /// their epochs.
    fn give_up_beyond(&self, keep: usize) -> Vec<(String, u64)> {
        let mut held = self.lock();
        let excess: Vec<String> = held.keys().skip(keep).cloned().collect();
        excess
            .into_iter()
            .filter_map(|key| held.remove(&key).map(|(epoch, _)| (key, epoch)))
            .collect()
    }

    /// The jobs whose lease is held.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Every lease held, with its epoch.
    fn epochs(&self) -> Vec<(String, u64)> {
        self.lock()
            .iter()
            .map(|(key, (epoch, _))| (key.clone(), *epoch))
            .collect()
    }

    /// Applies a renewal of `asked`: renewed leases get their new expiry,
    /// the others are dropped (unless taken anew meanwhile) and returned.
    fn renewed(&self, asked: Vec<(String, u64)>, renewed: Vec<Lease>) -> Vec<String> {
        let mut held = self.lock();
        let renewed: HashMap<String, Lease> = renewed
            .into_iter()
            .map(|l| (l.result_key.clone(), l))
            .collect();
        let mut lost = Vec::new();
        for (key, epoch) in asked {
            match renewed.get(&key) {
                Some(lease) => {
                    if let Some(entry) = held.get_mut(&key)
                        && entry.0 == lease.epoch
                    {
                        entry.1 = lease.valid_until;
                    }
                }
                None => {
                    if held.get(&key).is_some_and(|(e, _)| *e == epoch) {
                        held.remove(&key);
                        lost.push(key);
                    }
                }
            }
        }
        lost
    }
}

/// Keeps this replica's membership and leases until `cancel`.
pub(crate) async fn run(
    cluster: Arc<dyn Cluster>,
    held: Arc<HeldLeases>,
    client: UpstreamClient,
    replicas_seen: tokio::sync::watch::Sender<u64>,
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
) {
    let ttl = cluster.lease_ttl();
    let renew_every = ttl / 3;
    let mut tick = tokio::time::interval(renew_every.min(CLAIM_EVERY));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_renewal: Option<Instant> = None;
    let mut live_replicas = 1;
    let mut active_jobs = 0;
    let mut least_held = 0;
    let mut overloaded_rounds = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if commands.is_closed() {
            // The aggregator is gone, and with it every poller: renewing
            // would keep these jobs from every other replica.
            tracing::error!("the tracker stopped; giving back every lease");
            let _ = cluster.release_leases(held.give_up_beyond(0)).await;
            return;
        }
        // Membership every round: what each replica's share is, and who
        // holds the fewest, must be current for claims and hand-backs.
        match cluster.heartbeat().await {
            Ok(membership) => {
                let live = membership.live_replicas.max(1);
                if live != live_replicas {
                    tracing::info!(
                        replicas = live,
                        "live replicas changed; sharing the upstream request budget and the per-process limits among them"
                    );
                    client.share_budget(live);
                    replicas_seen.send_replace(live);
                }
                live_replicas = live;
                active_jobs = membership.active_jobs;
                least_held = membership.least_held as usize;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
        }
        if last_renewal.is_none_or(|at| at.elapsed() >= renew_every) {
            let started = Instant::now();
            let asked = held.epochs();
            match cluster.renew_leases(asked.clone()).await {
                Ok(renewed) => {
                    last_renewal = Some(started);
                    let lost = held.renewed(asked, renewed);
                    if !lost.is_empty() {
                        tracing::warn!(
                            jobs = lost.len(),
                            "leases lost to other replicas; no longer polling those jobs"
                        );
                        if commands
                            .send(Command::LeasesLost { keys: lost })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing leases failed; will retry (polling pauses when they expire)")
                }
            }
        }
        // A fair share of the active jobs, rounded up so that the shares
        // cover them all; jobs this replica accepted itself count too.
        let share = active_jobs.div_ceil(live_replicas) as usize;
        // Holding more than a share, while another replica holds clearly
        // fewer (two, or a quarter of a share), for several rounds in a
        // row: hand back half the difference, no more than the excess, for
        // the others to claim. A handed-back job waits for a claim round,
        // so passing imbalances (short jobs finishing unevenly) are left
        // alone; moving jobs only from the most loaded towards the least
        // loaded keeps them from going back and forth. Pollers see their
        // lease gone before the journal frees it.
        let holding = held.len();
        let imbalance = (share / 4).max(2);
        let overloaded = live_replicas > 1 && holding > share && holding >= least_held + imbalance;
        overloaded_rounds = if overloaded { overloaded_rounds + 1 } else { 0 };
        if overloaded_rounds >= HAND_BACK_AFTER_ROUNDS {
            overloaded_rounds = 0;
            let give = (holding - share).min((holding - least_held) / 2);
            let excess = held.give_up_beyond(holding - give);
            let keys: Vec<String> = excess.iter().map(|(key, _)| key.clone()).collect();
            tracing::info!(
                jobs = keys.len(),
                share,
                least_held,
                "handing jobs beyond this replica's share to the others"
            );
            if commands.send(Command::LeasesLost { keys }).await.is_err() {
                return;
            }
            if let Err(e) = cluster.release_leases(excess).await {
                tracing::warn!(error = %e, "could not hand jobs back; they return to the others when their leases expire");
            }
        }
        let room = share.saturating_sub(held.len());
        if room > 0 {
            match cluster.claim_jobs(room).await {
                Ok(claimed) if !claimed.is_empty() => {
                    let taken_over = claimed.iter().filter(|c| c.taken_over).count();
                    if taken_over > 0 {
                        tracing::warn!(
                            jobs = taken_over,
                            "took over jobs whose replica stopped renewing its leases"
                        );
                    }
                    if taken_over < claimed.len() {
                        tracing::info!(
                            jobs = claimed.len() - taken_over,
                            "claimed jobs nobody held a lease on"
                        );
                    }
                    let mut records = Vec::with_capacity(claimed.len());
                    for claim in claimed {
                        held.insert(claim.lease);
                        records.push(claim.record);
                    }
                    if commands.send(Command::Adopt { records }).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "claiming jobs failed; will retry"),
            }
        }
        match cluster.claim_orphaned_submissions().await {
            Ok(orphaned) if !orphaned.is_empty() => {
                tracing::warn!(
                    submits = orphaned.len(),
                    "took over submits a stopped replica left without an outcome; recording them as outcome unknown"
                );
                if commands
                    .send(Command::Orphaned {
                        submissions: orphaned,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "looking for orphaned submits failed; will retry"),
        }
    }
}
