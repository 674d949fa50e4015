//! `/healthz` and `/readyz` on the HTTP listener, for probes that do not
//! speak gRPC.

mod common;

use common::*;

#[tokio::test]
async fn probes_say_live_and_ready_then_not_ready_while_draining() {
    let server = server(test_config()).await;
    let get = |path: &str| reqwest::get(format!("{}{path}", server.http_url()));
    let health = get("/healthz").await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 200);
    // Draining (the first step of a shutdown): still live, no longer ready.
    server.retouch.drain();
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.headers().contains_key("retry-after"));
    assert!(ready.text().await.unwrap().contains("shutting down"));
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    server.shutdown().await;
}
