//! The outbound URL guard: client- and upstream-named URLs never reach
//! loopback, private, link-local or metadata addresses unless allowed, and
//! the refusal comes before any connection. Every destination here is on
//! loopback or refused before anything is sent: no test traffic leaves the
//! machine.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use retouch_api::v1 as pb;
use retouch_server::outbound::{ClientLimits, FetchError, GuardedClient, Origin, OutboundPolicy};
use tonic::Code;

/// A TCP listener on `ip` that counts the connections it accepts.
async fn counting_listener(ip: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, count)
}

/// A resolver hook: names map to chosen addresses, and lookups are counted.
struct MapResolver {
    names: HashMap<&'static str, Vec<SocketAddr>>,
    lookups: AtomicUsize,
}

impl reqwest::dns::Resolve for MapResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let found = self.names.get(name.as_str()).cloned();
        Box::pin(async move {
            let addrs = found.ok_or("no such name in the test's resolver")?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn limits() -> ClientLimits {
    ClientLimits {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        user_agent: "outbound-test".into(),
    }
}

#[tokio::test]
async fn every_non_public_destination_is_refused_before_any_connection() {
    let (target, connections) = counting_listener("127.0.0.1").await;
    let port = target.port();
    let resolver = Arc::new(MapResolver {
        names: HashMap::from([
            ("loopback.test", vec![target]),
            (
                "private.test",
                vec![SocketAddr::from(([10, 0, 0, 1], port))],
            ),
            (
                "metadata.test",
                vec![SocketAddr::from(([169, 254, 169, 254], 80))],
            ),
        ]),
        lookups: AtomicUsize::new(0),
    });
    let client =
        GuardedClient::with_resolver(OutboundPolicy::default(), &limits(), resolver.clone())
            .unwrap();
    for url in [
        format!("http://127.0.0.1:{port}/a.png"),
        format!("http://[::ffff:127.0.0.1]:{port}/a.png"),
        format!("http://2130706433:{port}/a.png"),
        format!("http://0x7f000001:{port}/a.png"),
        format!("http://[::1]:{port}/a.png"),
        format!("http://10.0.0.1:{port}/a.png"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fd00:ec2::254]/latest/meta-data/".to_owned(),
        "http://100.100.100.200/latest/meta-data/".to_owned(),
        format!("http://loopback.test:{port}/a.png"),
        format!("http://private.test:{port}/a.png"),
        "http://metadata.test/latest/meta-data/".to_owned(),
    ] {
        match client.get(&url).await {
            Err(FetchError::Refused(refusal)) => {
                assert!(
                    refusal.to_string().contains("public addresses"),
                    "{url}: {refusal}"
                );
                assert!(!refusal.to_string().contains("meta-data"), "{refusal}");
            }
            other => panic!("{url} was not refused: {other:?}"),
        }
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a connection was made"
    );
    // Names were looked up once each; literals never.
    assert_eq!(resolver.lookups.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_refused_before_it_is_followed() {
    let (elsewhere, connections) = counting_listener("127.0.0.2").await;
    let to = format!("http://{elsewhere}/secret");
    let router = axum::Router::new()
        .route(
            "/to-private",
            axum::routing::get(move || {
                let to = to.clone();
                async move { axum::response::Redirect::temporary(&to) }
            }),
        )
        .route(
            "/to-metadata",
            axum::routing::get(|| async {
                axum::response::Redirect::temporary("http://169.254.169.254/latest/meta-data/")
            }),
        )
        .route("/image.png", axum::routing::get(|| async { "fine" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    // The redirecting server is an allowed origin (as retouchd's own
    // listener is); where it redirects to is not.
    let policy = OutboundPolicy::default().allowing(Some(Origin::parse(&origin).unwrap()));
    let client = GuardedClient::new(policy, &limits()).unwrap();
    let fine = client.get(&format!("{origin}/image.png")).await.unwrap();
    assert_eq!(fine.text().await.unwrap(), "fine");
    for path in ["/to-private", "/to-metadata"] {
        match client.get(&format!("{origin}{path}")).await {
            Err(FetchError::Refused(refusal)) => {
                assert!(refusal.to_string().contains("redirect"), "{refusal}");
            }
            other => panic!("{path} was followed: {other:?}"),
        }
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    // With private addresses allowed, the same redirect is followed.
    let open = GuardedClient::new(
        OutboundPolicy {
            allow_private: true,
            ..OutboundPolicy::default()
        },
        &limits(),
    )
    .unwrap();
    let _ = open.get(&format!("{origin}/to-private")).await;
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_local_backend_refuses_client_urls_on_private_addresses_but_fetches_its_own_samples() {
    let (target, connections) = counting_listener("127.0.0.1").await;
    let server = server(test_config()).await;
    let mut client = matting(&server).await;
    let status = client
        .submit(pb::SubmitMattingRequest {
            tasks: vec![pb::MattingTask {
                image_url: format!("http://{target}/image.png"),
                ..matting_task(&server)
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("23500006"),
        "{}",
        status.message()
    );
    assert_eq!(connections.load(Ordering::SeqCst), 0);
    // Its own sample server is allowed explicitly.
    client
        .submit(pb::SubmitMattingRequest {
            tasks: vec![matting_task(&server)],
            ..Default::default()
        })
        .await
        .unwrap();
    server.shutdown().await;
}
