//! `retouch`: the terminal dashboard and command-line client of retouchd.
//!
//! - [`state`]: what the dashboard knows, as plain data, updated by
//!   [`state::Update`]s (snapshots, events, connection changes).
//! - [`view`]: renders state into ratatui widgets.
//! - [`app`]: key handling and the draw loop, generic over the backend.
//! - [`watch`]: the Watch stream with reconnect and resume.
//! - [`preview`]: image previews of the detail view, loaded in the
//!   background and cached.
//! - [`submit`]: `retouch submit` for scripts; [`verbs`]: `retouch jobs`,
//!   `get`, `watch` and `download`, with the [`exit`] codes they share and
//!   their [`json`] output; [`demo`]: `retouch demo`.
//! - [`trace`]: the W3C trace context sent with every call.

pub mod actions;
pub mod app;
pub mod cli;
pub mod client;
pub mod dashboard;
pub mod demo;
pub mod event;
pub mod exit;
pub mod failing;
pub mod listen;
pub use retouch_api::json;
pub mod preview;
pub mod program;
pub mod request;
pub mod state;
pub mod submit;
pub mod trace;
pub mod verbs;
pub mod view;
pub mod watch;
