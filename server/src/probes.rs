//! `GET /healthz` and `GET /readyz` on the HTTP listener, for probes that
//! do not speak gRPC (gRPC clients have `grpc.health.v1`).
//!
//! - `/healthz`: the process answers (liveness). Always 200 while it does.
//! - `/readyz`: it can take work now (readiness): 503 with the reason while
//!   it shuts down or while its journal cannot be reached, so a load
//!   balancer sends calls elsewhere instead of into UNAVAILABLE.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use std::sync::{Arc, OnceLock};

use crate::service::Retouch;

/// The service the probes report on, set once it has started (the HTTP
/// listener serves before: the tracker's recovery may poll the embedded
/// backend on it).
pub type Started = Arc<OnceLock<Retouch>>;

/// The probe routes; `/readyz` says "starting" until `started` is set.
pub fn router(started: Started) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(started)
}

async fn ready(State(started): State<Started>) -> Response {
    let readiness = match started.get() {
        Some(retouch) => retouch.readiness(),
        None => Err("retouchd is starting"),
    };
    match readiness {
        Ok(()) => "ready\n".into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "2")],
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}
