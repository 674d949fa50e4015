//! Injected faults: seeded dice for random ones and a queue of scripted
//! one-shot ones.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::aliyun::AliyunCode;

/// The two kinds of API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// Submit (of either API).
    Submit,
    /// Query (of either API).
    Query,
}

impl Endpoint {
    /// `submit` or `query`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Submit => "submit",
            Endpoint::Query => "query",
        }
    }
}

/// A fault answered instead of the real response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectedFault {
    /// The JSON envelope with this code and its documented HTTP status.
    Aliyun(AliyunCode),
    /// The gateway's header-only 403 "Throttled by APP Flow Control".
    GatewayThrottle,
    /// Any other header-only gateway error.
    GatewayError {
        /// HTTP status.
        status: u16,
        /// `X-Ca-Error-Code`, e.g. `"A400MN"`.
        code: &'static str,
        /// `X-Ca-Error-Message`.
        message: &'static str,
    },
}

/// Random decisions of the backend, from one RNG so that a fixed seed
/// reproduces a run (as far as request order does).
#[derive(Debug)]
pub(super) struct Dice {
    rng: Mutex<StdRng>,
}

impl Dice {
    /// Dice seeded with `seed`, or from the operating system.
    pub fn new(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Dice {
            rng: Mutex::new(rng),
        }
    }

    /// `true` with `probability`; certain outcomes do not consume the RNG.
    pub fn roll(&self, probability: f64) -> bool {
        if probability.is_nan() || probability <= 0.0 {
            return false;
        }
        if probability >= 1.0 {
            return true;
        }
        self.rng.lock().expect("dice lock").random::<f64>() < probability
    }

    /// A seed for a task that did not bring one (non-negative, so it
    /// round-trips through any JSON integer type).
    pub fn task_seed(&self) -> i64 {
        self.rng
            .lock()
            .expect("dice lock")
            .random_range(0..=i64::MAX)
    }
}

/// Scripted one-shot faults, per endpoint, answered in the order queued.
#[derive(Debug, Default)]
pub(super) struct Scripted {
    queues: Mutex<HashMap<Endpoint, VecDeque<InjectedFault>>>,
}

impl Scripted {
    /// Queues `fault` for the next request to `endpoint`.
    pub fn push(&self, endpoint: Endpoint, fault: InjectedFault) {
        self.queues
            .lock()
            .expect("fault lock")
            .entry(endpoint)
            .or_default()
            .push_back(fault);
    }

    /// Takes the next fault queued for `endpoint`, if any.
    pub fn take(&self, endpoint: Endpoint) -> Option<InjectedFault> {
        self.queues
            .lock()
            .expect("fault lock")
            .get_mut(&endpoint)
            .and_then(VecDeque::pop_front)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_dice_repeat_and_certainties_hold() {
        let a = Dice::new(Some(5));
        let b = Dice::new(Some(5));
        let rolls_a: Vec<bool> = (0..64).map(|_| a.roll(0.5)).collect();
        let rolls_b: Vec<bool> = (0..64).map(|_| b.roll(0.5)).collect();
        assert_eq!(rolls_a, rolls_b);
        assert!(rolls_a.contains(&true) && rolls_a.contains(&false));
        assert!(!a.roll(0.0) && a.roll(1.0) && !a.roll(f64::NAN));
        assert!(a.task_seed() >= 0);
    }

    #[test]
    fn scripted_faults_are_one_shot_per_endpoint_in_order() {
        let s = Scripted::default();
        s.push(Endpoint::Query, InjectedFault::GatewayThrottle);
        s.push(
            Endpoint::Query,
            InjectedFault::Aliyun(AliyunCode::Throttled),
        );
        assert_eq!(s.take(Endpoint::Submit), None);
        assert_eq!(
            s.take(Endpoint::Query),
            Some(InjectedFault::GatewayThrottle)
        );
        assert_eq!(
            s.take(Endpoint::Query),
            Some(InjectedFault::Aliyun(AliyunCode::Throttled))
        );
        assert_eq!(s.take(Endpoint::Query), None);
    }
}
