//! Plain downloads next to the API: result images and sample inputs.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::Shared;

/// `GET /results/{result_key}/{index}.png`: a successful task's result.
pub(super) async fn result(
    State(shared): State<Arc<Shared>>,
    Path((key, file)): Path<(String, String)>,
) -> Response {
    let png = file
        .strip_suffix(".png")
        .and_then(|index| index.parse::<usize>().ok())
        .and_then(|index| shared.jobs.get(&key)?.tasks.get(index)?.result());
    png_or_404(png)
}

/// `GET /samples/{name}.png` and `GET /samples/{name}-mask.png`.
pub(super) async fn sample(
    State(shared): State<Arc<Shared>>,
    Path(file): Path<String>,
) -> Response {
    let samples = shared.samples().await;
    let png = samples.iter().find_map(|s| {
        if file == format!("{}.png", s.name) {
            Some(s.image_png.clone())
        } else if file == format!("{}-mask.png", s.name) {
            Some(s.mask_png.clone())
        } else {
            None
        }
    });
    png_or_404(png)
}

fn png_or_404(png: Option<Bytes>) -> Response {
    match png {
        Some(png) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
