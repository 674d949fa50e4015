//! The exit codes of every `retouch` command, documented in `--help` and
//! the README: scripts branch on them.

/// How a command ended; the process exit code is the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done: everything asked for happened.
    Success = 0,
    /// A task FAILED or a job was lost (`submit --wait`, `watch`), or a job
    /// has results missing (`download`).
    TaskFailed = 1,
    /// Invalid input or usage; nothing was sent.
    InvalidInput = 2,
    /// A call to retouchd failed (unreachable, refused, or a submission
    /// failed; with several, the others went through).
    CallFailed = 3,
    /// `--timeout` passed first.
    TimedOut = 4,
    /// The job or batch named is unknown to retouchd.
    NotFound = 5,
}

/// The exit codes as `--help` lists them.
pub const EXIT_CODES_HELP: &str = "Exit codes: 0 done; 1 a task FAILED or a job was lost (submit --wait, watch), or results are missing (download); 2 invalid input or usage (nothing sent); 3 a call to retouchd failed; 4 --timeout passed; 5 no such job or batch.";

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}
