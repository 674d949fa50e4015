//! Conversions shared by the stores' SQL: times as milliseconds since the
//! Unix epoch, sequence numbers, and stored protobuf messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

use super::StoreError;

/// Milliseconds since the Unix epoch (0 before it).
pub(super) fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

/// The time `ms` milliseconds after the Unix epoch.
pub(super) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// A stored message, or `Corrupt` naming what it was.
pub(super) fn decode<M: Message + Default>(bytes: &[u8], what: &str) -> Result<M, StoreError> {
    M::decode(bytes)
        .map_err(|e| StoreError::Corrupt(format!("a stored {what} does not decode: {e}")))
}

/// A stored (signed) sequence number.
pub(super) fn seq(value: i64) -> u64 {
    value.max(0) as u64
}
