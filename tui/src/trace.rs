//! The W3C trace context `retouch` sends with every call: `--traceparent`
//! continues a caller's trace, `RETOUCH_TRACE=1` (`--trace`) starts a fresh
//! one. retouchd, when it exports traces, makes its spans children of it.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

/// A trace context to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// The `traceparent` header.
    pub traceparent: String,
    /// The `tracestate` header, if there is one.
    pub tracestate: Option<String>,
    /// Its trace id (32 hex digits).
    pub trace_id: String,
}

impl TraceParent {
    /// Continues `traceparent` (and `tracestate`): an error names the flag
    /// and the format when it is not a valid W3C trace context.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<TraceParent, String> {
        let refused = || {
            format!(
                "--traceparent {traceparent:?}: not a W3C traceparent \
                 (00-<32 hex digits of trace id>-<16 hex digits of parent id>-<2 hex digits of flags>, \
                 ids not all zeros)"
            )
        };
        // The propagator is lenient (it pads a short id); a user who typed
        // one wrong should hear so rather than join another trace.
        if !has_traceparent_shape(traceparent.trim()) {
            return Err(refused());
        }
        let mut carrier =
            HashMap::from([("traceparent".to_owned(), traceparent.trim().to_owned())]);
        if let Some(state) = tracestate {
            carrier.insert("tracestate".to_owned(), state.trim().to_owned());
        }
        let context = TraceContextPropagator::new().extract(&carrier);
        let span = context.span();
        let span_context = span.span_context();
        if !span_context.is_valid() {
            return Err(refused());
        }
        // The propagator drops a malformed state without a word.
        if let Some(state) = tracestate.map(str::trim).filter(|s| !s.is_empty())
            && span_context.trace_state().header().is_empty()
        {
            return Err(format!(
                "--tracestate {state:?}: not a W3C tracestate (key=value, comma separated)"
            ));
        }
        Ok(Self::of(span_context))
    }

    /// A fresh, sampled trace.
    pub fn fresh() -> TraceParent {
        let ids = RandomIdGenerator::default();
        let span_context = SpanContext::new(
            ids.new_trace_id(),
            ids.new_span_id(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Self::of(&span_context)
    }

    fn of(span_context: &SpanContext) -> TraceParent {
        let context = opentelemetry::Context::new().with_remote_span_context(span_context.clone());
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        TraceParent {
            traceparent: carrier.remove("traceparent").unwrap_or_default(),
            tracestate: carrier.remove("tracestate").filter(|s| !s.is_empty()),
            trace_id: span_context.trace_id().to_string(),
        }
    }
}

/// Whether `text` has the fields of a W3C `traceparent`: version, trace
/// id, parent id and flags, of 2, 32, 16 and 2 lowercase hex digits.
fn has_traceparent_shape(text: &str) -> bool {
    let fields: Vec<&str> = text.split('-').collect();
    let hex = |field: &str, len: usize| {
        field.len() == len
            && field
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    fields.len() >= 4
        && hex(fields[0], 2)
        && fields[0] != "ff"
        && hex(fields[1], 32)
        && hex(fields[2], 16)
        && hex(fields[3], 2)
}

/// Where a run's trace context comes from.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceSources<'a> {
    /// `--traceparent` and `--tracestate`: a malformed one is an error.
    pub flags: (Option<&'a str>, Option<&'a str>),
    /// The `TRACEPARENT` and `TRACESTATE` variables: a malformed one is
    /// ignored (with a warning), as it may have been set for something
    /// else.
    pub environment: (Option<&'a str>, Option<&'a str>),
    /// `--trace` / `RETOUCH_TRACE`: a fresh trace when nothing is given.
    pub fresh: bool,
}

/// The trace context of this run: the flags', else the environment's,
/// else a fresh one when asked, else none. The second value is a warning
/// to print, about an environment value ignored.
pub fn of_run(sources: TraceSources<'_>) -> Result<(Option<TraceParent>, Option<String>), String> {
    fn given(value: Option<&str>) -> Option<&str> {
        value.filter(|t| !t.trim().is_empty())
    }
    if let Some(flag) = given(sources.flags.0) {
        return TraceParent::parse(flag, sources.flags.1).map(|t| (Some(t), None));
    }
    let mut warning = None;
    if let Some(variable) = given(sources.environment.0) {
        match TraceParent::parse(variable, sources.environment.1) {
            Ok(trace) => return Ok((Some(trace), None)),
            Err(e) => {
                warning = Some(format!(
                    "ignoring the TRACEPARENT variable: {}",
                    e.trim_start_matches("--traceparent ")
                ))
            }
        }
    }
    Ok((sources.fresh.then(TraceParent::fresh), warning))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_traceparent_is_kept_and_its_trace_id_read() {
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = of_run(TraceSources {
            flags: (Some(given), Some("vendor=x")),
            fresh: true,
            ..Default::default()
        })
        .unwrap()
        .0
        .unwrap();
        assert_eq!(trace.traceparent, given);
        assert_eq!(trace.tracestate.as_deref(), Some("vendor=x"));
        assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn a_malformed_traceparent_is_refused_naming_the_flag() {
        for bad in [
            "nonsense",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            let refused = of_run(TraceSources {
                flags: (Some(bad), None),
                ..Default::default()
            })
            .unwrap_err();
            assert!(refused.starts_with("--traceparent"), "{refused}");
        }
    }

    #[test]
    fn a_fresh_trace_is_sampled_and_new_each_time() {
        let one = of_run(TraceSources {
            fresh: true,
            ..Default::default()
        })
        .unwrap()
        .0
        .unwrap();
        let two = TraceParent::fresh();
        assert_ne!(one.trace_id, two.trace_id);
        assert!(
            one.traceparent
                .starts_with(&format!("00-{}-", one.trace_id))
        );
        assert!(one.traceparent.ends_with("-01"), "{}", one.traceparent);
        assert_eq!(TraceParent::parse(&one.traceparent, None).unwrap(), one);
        assert_eq!(of_run(TraceSources::default()).unwrap(), (None, None));
    }

    #[test]
    fn the_flag_wins_and_a_bad_variable_is_ignored_with_a_warning() {
        let flag = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let variable = "00-11111111111111111111111111111111-2222222222222222-01";
        let (trace, warning) = of_run(TraceSources {
            flags: (Some(flag), None),
            environment: (Some(variable), None),
            fresh: false,
        })
        .unwrap();
        assert_eq!(trace.unwrap().traceparent, flag);
        assert_eq!(warning, None);
        let (trace, _) = of_run(TraceSources {
            environment: (Some(variable), None),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(trace.unwrap().traceparent, variable);
        let (trace, warning) = of_run(TraceSources {
            environment: (Some("garbage"), None),
            fresh: true,
            ..Default::default()
        })
        .unwrap();
        assert!(trace.is_some(), "a fresh one, as asked");
        assert!(warning.unwrap().contains("TRACEPARENT"));
    }

    #[test]
    fn a_malformed_tracestate_is_refused() {
        let refused = TraceParent::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("no equals sign"),
        )
        .unwrap_err();
        assert!(refused.starts_with("--tracestate"), "{refused}");
    }
}
