//! The numeric rules the protos state in their comments, for clients that
//! check a request before sending it. retouchd enforces the same constants.

/// Allowed `kernel_size` of an object removal task (odd values only), as the
/// upstream API states it (`RemovalTask.kernel_size`).
pub const KERNEL_SIZE_RANGE: std::ops::RangeInclusive<u32> = 1..=59;

/// Most tasks one batch may hold (`Batches.Submit`).
pub const MAX_BATCH_TASKS: usize = 1000;
