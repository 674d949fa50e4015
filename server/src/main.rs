//! `retouchd`: see `retouchd --help`.

use std::process::ExitCode;

// jemalloc: it returns freed memory to the system (glibc's malloc kept
// what 10,000 closed streams had used), and reports the heap for /metrics.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(feature = "jemalloc")]
fn heap_figures() -> Option<retouch_server::telemetry::HeapFigures> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // The statistics are cached until the epoch advances.
    epoch::advance().ok()?;
    Some(retouch_server::telemetry::HeapFigures {
        allocated: stats::allocated::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
    })
}

fn main() -> ExitCode {
    // Purge unused pages from a background thread, so that memory goes
    // back to the system while the process is idle too. (An error means the
    // platform has no such threads; purging then happens as it allocates.)
    #[cfg(feature = "jemalloc")]
    {
        let _ = tikv_jemalloc_ctl::background_thread::write(true);
        retouch_server::telemetry::set_heap_probe(heap_figures);
    }
    retouch_server::program::main()
}
