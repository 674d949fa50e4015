//! The buyer's remaining credit: reserved when a submit is checked, spent
//! when its job is created, given back when the submit fails on the way.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::aliyun::AliyunCode;

/// Remaining credit, or unlimited.
#[derive(Debug)]
pub(super) struct Credits {
    left: Option<AtomicU64>,
}

/// Credit held for a submit being checked; returned on drop unless spent.
#[derive(Debug)]
#[must_use = "dropping a reservation gives the credit back"]
pub(super) struct Reservation<'a> {
    credits: &'a Credits,
    amount: u64,
}

impl Credits {
    /// `None` = unlimited.
    pub fn new(left: Option<u64>) -> Self {
        Credits {
            left: left.map(AtomicU64::new),
        }
    }

    /// Holds `amount` credit; 23500003 when less is left.
    pub fn reserve(&self, amount: u64) -> Result<Reservation<'_>, AliyunCode> {
        if let Some(left) = &self.left {
            left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                n.checked_sub(amount)
            })
            .map_err(|_| AliyunCode::CreditExhausted)?;
        }
        Ok(Reservation {
            credits: self,
            amount,
        })
    }

    /// What is left, `None` if unlimited.
    #[cfg(test)]
    pub fn left(&self) -> Option<u64> {
        self.left.as_ref().map(|n| n.load(Ordering::Acquire))
    }
}

impl Reservation<'_> {
    /// Spends the held credit for good.
    pub fn spend(mut self) {
        self.amount = 0;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(left) = &self.credits.left {
            left.fetch_add(self.amount, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_spent_or_given_back() {
        let credits = Credits::new(Some(3));
        let held = credits.reserve(2).unwrap();
        assert_eq!(credits.reserve(2).unwrap_err(), AliyunCode::CreditExhausted);
        drop(held);
        assert_eq!(credits.left(), Some(3));
        credits.reserve(3).unwrap().spend();
        assert_eq!(credits.left(), Some(0));
        assert!(credits.reserve(1).is_err());
        assert!(Credits::new(None).reserve(u64::MAX).is_ok());
    }
}
