//! `GET /mirror/{result_key}/{task}/{result}` on retouchd's HTTP listener:
//! the mirrored copy of a result. With a bearer token configured, the same
//! `authorization: Bearer <token>` as on gRPC is required, so a result is
//! not readable by whoever guesses its URL.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use object_store::ObjectStore;

use super::object_path;
use crate::access::HttpGate;
use retouch_journal::{MirrorRecords, MirrorState};

/// What the route reads from.
#[derive(Clone)]
pub struct MirrorRoutes {
    /// Where the copies are.
    pub objects: Arc<dyn ObjectStore>,
    /// Where their state is.
    pub store: Arc<dyn MirrorRecords>,
    /// Who may read them.
    pub gate: HttpGate,
}

/// The route, with its state applied.
pub fn router(routes: MirrorRoutes) -> Router {
    Router::new()
        .route("/mirror/{result_key}/{task}/{result}", get(serve))
        .with_state(routes)
}

async fn serve(
    State(routes): State<MirrorRoutes>,
    Path((result_key, task, result)): Path<(String, u32, u32)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = routes.gate.refusal(&headers, "mirrored results") {
        return refused;
    }
    let state = match routes.store.mirror_state(&result_key, task, result).await {
        Ok(state) => state,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    match state {
        None => (StatusCode::NOT_FOUND, "no such mirrored result").into_response(),
        Some(MirrorState::Pending { attempts, error }) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "2")],
            match error {
                Some(error) => {
                    format!("not copied yet ({attempts} failed attempts; last: {error})")
                }
                None => "not copied yet; retry shortly".to_owned(),
            },
        )
            .into_response(),
        Some(MirrorState::GivenUp { error }) => (StatusCode::BAD_GATEWAY, error).into_response(),
        Some(MirrorState::Stored {
            sha256,
            content_type,
            ..
        }) => match routes.objects.get(&object_path(&sha256)).await {
            Ok(object) => match object.bytes().await {
                Ok(bytes) => (
                    [
                        (header::CONTENT_TYPE, content_type),
                        (header::ETAG, format!("\"{sha256}\"")),
                        (
                            header::CACHE_CONTROL,
                            "private, max-age=31536000, immutable".to_owned(),
                        ),
                    ],
                    bytes,
                )
                    .into_response(),
                Err(e) => store_unavailable(e),
            },
            Err(e) => store_unavailable(e),
        },
    }
}

/// A file store that cannot answer: logged with its error (which names the
/// bucket and key), told to the client without it.
fn store_unavailable(error: object_store::Error) -> Response {
    tracing::warn!(%error, "cannot read a mirrored result from the file store");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "2")],
        "the file store cannot be read right now; retry shortly",
    )
        .into_response()
}
