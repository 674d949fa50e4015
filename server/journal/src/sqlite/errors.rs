//! How SQLite's errors become store errors.

use rusqlite::ErrorCode;

use crate::StoreError;

/// A SQLite error as a store error: I/O, full disk and locks are
/// `Unavailable`; anything else means the file is not what we expect.
pub(super) fn io_error(e: rusqlite::Error) -> StoreError {
    let unavailable = matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
        )
    );
    if unavailable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Corrupt(e.to_string())
    }
}
