//! The script-facing verbs: `retouch jobs`, `get`, `watch`, `download`,
//! `usage`, and the webhooks' `endpoints`, `deliveries` and `redeliver`.
//! Each prints text for people or, with `--json`, one JSON object per line
//! on standard output; problems go to standard error (or, with `--json`,
//! stay on standard output as `{"error": …}`); each ends with an [`Exit`].

mod download;
mod get;
mod list;
mod usage;
mod watch;
mod webhooks;

use std::io::Write;

use retouch_api::v1 as pb;
use serde_json::json;

pub use download::download;
pub use get::get;
pub use list::list;
pub use usage::usage;
pub use watch::watch;
pub use webhooks::{deliveries, endpoints, redeliver};

use crate::client::ClientError;
use crate::exit::Exit;

/// What a verb's argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// A job.
    Job(pb::JobRef),
    /// A batch, by id.
    Batch(String),
}

/// Parses `matting:KEY`, `removal:KEY`, `batch:ID` or a bare `KEY` (whose
/// API retouchd finds out).
pub fn parse_name(text: &str) -> Result<Name, String> {
    let text = text.trim();
    let (prefix, rest) = text.split_once(':').unwrap_or(("", text));
    let job = |api: pb::Api, key: &str| {
        Name::Job(pb::JobRef {
            api: api as i32,
            result_key: key.to_owned(),
            ..Default::default()
        })
    };
    let name = match prefix {
        "batch" => Name::Batch(rest.trim().to_owned()),
        "" => job(pb::Api::Unspecified, rest.trim()),
        api => match crate::request::parse_api(api) {
            Some(api) => job(api, rest.trim()),
            // A key that happens to hold a colon.
            None => job(pb::Api::Unspecified, text),
        },
    };
    let empty = match &name {
        Name::Job(job) => job.result_key.is_empty(),
        Name::Batch(id) => id.is_empty(),
    };
    if empty {
        return Err(format!(
            "{text:?}: expected matting:KEY, removal:KEY, KEY or batch:ID"
        ));
    }
    Ok(name)
}

/// Where a verb writes, and how.
pub struct Output<'a> {
    /// JSON lines instead of text.
    pub json: bool,
    /// Results.
    pub out: &'a mut dyn Write,
    /// Problems and progress notes (text mode).
    pub err: &'a mut dyn Write,
}

impl Output<'_> {
    /// Reports invalid input; nothing was sent.
    pub fn invalid(&mut self, problem: &str) -> Exit {
        if self.json {
            let _ = writeln!(
                self.out,
                "{}",
                json!({"error": "invalid_input", "problems": [problem]})
            );
        } else {
            let _ = writeln!(self.err, "invalid input: {problem}");
        }
        Exit::InvalidInput
    }

    /// Reports a failed call; NOT_FOUND gives [`Exit::NotFound`].
    pub fn failed(&mut self, error: &ClientError) -> Exit {
        if self.json {
            let _ = writeln!(
                self.out,
                "{}",
                json!({"error": {"context": error.context, "grpc_code": error.grpc_code,
                                 "aliyun_code": error.aliyun_code, "message": error.message}})
            );
        } else {
            let _ = writeln!(self.err, "{error}");
        }
        if error.grpc_code == "NOT_FOUND" {
            Exit::NotFound
        } else {
            Exit::CallFailed
        }
    }

    /// Writes one result line.
    pub fn line(&mut self, text: impl std::fmt::Display) {
        let _ = writeln!(self.out, "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_take_an_api_a_batch_or_nothing() {
        let Name::Job(job) = parse_name("removal:k1").unwrap() else {
            panic!()
        };
        assert_eq!(
            (job.api(), job.result_key.as_str()),
            (pb::Api::ObjectRemoval, "k1")
        );
        let Name::Job(job) = parse_name("k2").unwrap() else {
            panic!()
        };
        assert_eq!(
            (job.api(), job.result_key.as_str()),
            (pb::Api::Unspecified, "k2")
        );
        let Name::Job(job) = parse_name("odd:key").unwrap() else {
            panic!()
        };
        assert_eq!(job.result_key, "odd:key");
        assert_eq!(parse_name("batch:b1").unwrap(), Name::Batch("b1".into()));
        assert!(parse_name("matting:").is_err());
        assert!(parse_name(" ").is_err());
    }
}
