//! `retouch webhook-listen`: a small webhook receiver for trying retouchd's
//! webhooks out. It verifies each delivery's signature with the
//! `standardwebhooks` library, as a real receiver should, answers 204 (or
//! 401 when the signature does not verify), and prints what it got.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use secrecy::ExposeSecret;

use crate::cli::ListenArgs;

/// Runs the receiver until Ctrl-C.
pub async fn run(args: &ListenArgs) -> Result<(), String> {
    let verifier = Arc::new(
        standardwebhooks::Webhook::new(args.secret.expose_secret())
            .map_err(|e| format!("--secret: not a whsec_ secret: {e}"))?,
    );
    let json = args.json;
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let verifier = verifier.clone();
        async move {
            let (status, line) = receive(&verifier, &headers, &body, json);
            println!("{line}");
            status
        }
    });
    let listener = tokio::net::TcpListener::bind((args.bind, args.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.bind, args.port))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("cannot listen: {e}"))?;
    eprintln!("listening on http://{address}/ for webhook deliveries (Ctrl-C to stop)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| format!("the receiver failed: {e}"))
}

/// The answer to one delivery and the line printed for it.
fn receive(
    verifier: &standardwebhooks::Webhook,
    headers: &HeaderMap,
    body: &[u8],
    json: bool,
) -> (StatusCode, String) {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(no webhook-id)")
        .to_owned();
    let mut signed = http::HeaderMap::new();
    for (name, value) in headers {
        signed.insert(name.clone(), value.clone());
    }
    if let Err(e) = verifier.verify(body, &signed) {
        return (
            StatusCode::UNAUTHORIZED,
            format!("REJECTED {id}: the signature does not verify ({e})"),
        );
    }
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (
            StatusCode::BAD_REQUEST,
            format!("REJECTED {id}: the body is not JSON"),
        );
    };
    let line = if json {
        serde_json::json!({"webhook_id": id, "payload": payload}).to_string()
    } else {
        let data = &payload["data"];
        let task = match &data["transition"] {
            serde_json::Value::Null => String::new(),
            t => format!(
                " task {} {}",
                t["task_index"],
                t["current"].as_str().unwrap_or_default()
            ),
        };
        format!(
            "{} {} seq {} job {} ({}){task}",
            id,
            payload["type"].as_str().unwrap_or("?"),
            data["seq"],
            data["result_key"].as_str().unwrap_or_default(),
            data["job"]["status"].as_str().unwrap_or_default(),
        )
    };
    (StatusCode::NO_CONTENT, line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &str, id: &str, body: &[u8]) -> HeaderMap {
        let signer = standardwebhooks::Webhook::new(secret).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let signature = signer.sign(id, now, body).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", id.parse().unwrap());
        headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        headers
    }

    #[test]
    fn verified_deliveries_are_printed_and_others_refused() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let verifier = standardwebhooks::Webhook::new(secret).unwrap();
        let body = br#"{"type":"task.succeeded","timestamp":"2026-12-06T00:00:00Z","data":{"seq":12,"result_key":"k1","transition":{"task_index":0,"current":"TASK_STATUS_SUCCESS"},"job":{"status":"JOB_STATUS_ACTIVE"}}}"#;
        let (status, line) = receive(&verifier, &signed(secret, "msg_12_ep_a", body), body, false);
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            line,
            "msg_12_ep_a task.succeeded seq 12 job k1 (JOB_STATUS_ACTIVE) task 0 TASK_STATUS_SUCCESS"
        );
        let other = "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldCBhdCBhbGw=";
        let (status, line) = receive(&verifier, &signed(other, "msg_12_ep_a", body), body, false);
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(line.starts_with("REJECTED msg_12_ep_a"), "{line}");
    }
}
