//! TLS and mutual TLS on both listeners, with `retouch`'s client, tonic and
//! Python's grpcio; a plaintext client told what is wrong; certificates
//! reloaded with no stream dropped.

mod common;
#[path = "python/venv.rs"]
mod venv;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use retouch_api::v1 as pb;
use retouch_server::app::RunningServer;
use retouch_server::tls::TlsFiles;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A CA and the certificates it issued, as PEM files in a directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA named `name` issuing a server certificate for 127.0.0.1 and
    /// localhost and a client certificate, written under `dir/name/`.
    fn new(dir: &Path, name: &str) -> Pki {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("retouch test CA {name}"));
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issue = |sans: Vec<String>, usage: rcgen::ExtendedKeyUsagePurpose, file: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(sans).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        };
        issue(
            vec!["127.0.0.1".into(), "localhost".into()],
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        issue(
            vec!["client.test".into()],
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        );
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn server_files(&self, mutual: bool) -> TlsFiles {
        TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mutual.then(|| self.path("ca.pem")),
        }
    }

    fn ca(&self) -> Certificate {
        Certificate::from_pem(std::fs::read(self.path("ca.pem")).unwrap())
    }

    /// An HTTP client trusting this CA.
    fn http_client(&self) -> reqwest::Client {
        let ca = std::fs::read(self.path("ca.pem")).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap()
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(
            std::fs::read(self.path("client.pem")).unwrap(),
            std::fs::read(self.path("client.key")).unwrap(),
        )
    }
}

async fn tls_server(files: TlsFiles) -> RunningServer {
    let mut config = test_config();
    config.tls = Some(files);
    server(config).await
}

fn https(server: &RunningServer) -> String {
    format!("https://{}", server.grpc_addr)
}

async fn connect(url: &str, tls: ClientTlsConfig) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

/// Uploads the matting sample with `retouch`'s own client, trusting the
/// CA of `pki` (and presenting its client certificate when `mutual`);
/// returns the upload's URL.
async fn upload_with_retouch(
    server: &RunningServer,
    pki: &Pki,
    mutual: bool,
    dir: &Path,
) -> String {
    let client = retouch_tui::client::Client::new(&retouch_tui::client::ServerAddress {
        url: https(server),
        token: None,
        ca_cert: Some(pki.path("ca.pem")),
        identity: mutual.then(|| (pki.path("client.pem"), pki.path("client.key"))),
        trace: None,
    })
    .unwrap();
    let png = dir.join("sample.png");
    std::fs::write(&png, &retouch_server::samples::matting_sample().image_png).unwrap();
    client.upload(&png).await.unwrap()
}

/// Runs the bundled matting sample over `channel` to the end.
async fn run_sample(server: &RunningServer, channel: Channel) {
    let mut client = retouch_api::v1::instance_matting_client::InstanceMattingClient::new(channel);
    let stream = client
        .run(pb::SubmitMattingRequest {
            tasks: vec![matting_task(server)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (events, status) = collect(stream, Duration::from_secs(60)).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(
        events.last().unwrap().job_status(),
        pb::JobStatus::Completed
    );
}

#[tokio::test]
async fn jobs_run_over_tls_and_a_plaintext_client_is_told_why_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "one");
    let server = tls_server(pki.server_files(false)).await;
    // The embedded backend downloads the samples from the HTTPS listener.
    assert!(matting_task(&server).image_url.starts_with("https://"));
    let channel = connect(
        &https(&server),
        ClientTlsConfig::new().ca_certificate(pki.ca()),
    )
    .await
    .unwrap();
    run_sample(&server, channel).await;

    // retouch's own client.
    let url = upload_with_retouch(&server, &pki, false, dir.path()).await;
    assert!(url.starts_with("https://"), "{url}");

    // A client that does not trust the CA fails the handshake.
    assert!(
        connect(&https(&server), ClientTlsConfig::new())
            .await
            .is_err()
    );

    // A plaintext gRPC client is refused at once, and told why.
    let plain = Endpoint::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let started = std::time::Instant::now();
    let status = retouch_api::v1::jobs_client::JobsClient::new(plain)
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "it hung");
    assert!(format!("{status:?}").contains("requires TLS"), "{status:?}");
    // A plaintext HTTP client of the HTTP listener gets a 400 saying so.
    let http = format!("http://{}/samples/x.png", server.http_addr);
    let response = reqwest::get(&http).await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("requires TLS"));
    // And the HTTPS listener serves with the same certificate.
    let sample = pki
        .http_client()
        .get(matting_task(&server).image_url)
        .send()
        .await
        .unwrap();
    assert_eq!(sample.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "one");
    let stranger = Pki::new(dir.path(), "stranger");
    let server = tls_server(pki.server_files(true)).await;
    let trusting = || ClientTlsConfig::new().ca_certificate(pki.ca());
    // Without a certificate, or with one from another CA: refused.
    for tls in [trusting(), trusting().identity(stranger.identity())] {
        let refused = match connect(&https(&server), tls).await {
            Err(_) => true,
            Ok(channel) => retouch_api::v1::jobs_client::JobsClient::new(channel)
                .list_jobs(pb::ListJobsRequest::default())
                .await
                .is_err(),
        };
        assert!(refused);
    }
    let channel = connect(&https(&server), trusting().identity(pki.identity()))
        .await
        .unwrap();
    run_sample(&server, channel).await;
    upload_with_retouch(&server, &pki, true, dir.path()).await;

    // No tokens: the HTTP listener (which asks for no certificate) serves
    // mirrored results and metrics to nobody.
    let mirror = pki
        .http_client()
        .get(format!("{}/mirror/any-key/0/0", server.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(mirror.status(), 403);
    let metrics = pki
        .http_client()
        .get(format!("{}/metrics", server.http_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 403);

    // Python's grpcio, with and without its certificate.
    let python = tokio::task::spawn_blocking(venv::python).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_test.py");
    let task = matting_task(&server);
    let run_python = |with_identity: bool| {
        let mut command = tokio::process::Command::new(&python);
        command
            .arg(&script)
            .arg(server.grpc_addr.to_string())
            .arg(&task.image_url)
            .arg(&task.mask_url)
            .env("RETOUCH_TLS_CA", pki.path("ca.pem"));
        if with_identity {
            command
                .env("RETOUCH_TLS_CERT", pki.path("client.pem"))
                .env("RETOUCH_TLS_KEY", pki.path("client.key"));
        }
        command.output()
    };
    let output = run_python(true).await.unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let output = run_python(false).await.unwrap();
    assert!(
        !output.status.success(),
        "grpcio got in without a certificate"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_certificate_reload_keeps_open_streams_and_serves_new_handshakes_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let old = Pki::new(dir.path(), "old");
    let new = Pki::new(dir.path(), "new");
    // The server reads its files from one place; the reload swaps them.
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let install = |pki: &Pki| {
        for file in ["server.pem", "server.key"] {
            std::fs::copy(pki.path(file), live.join(file)).unwrap();
        }
    };
    install(&old);
    let server = tls_server(TlsFiles {
        cert: live.join("server.pem"),
        key: live.join("server.key"),
        client_ca: None,
    })
    .await;
    let trusting = |pki: &Pki| ClientTlsConfig::new().ca_certificate(pki.ca());
    let channel = connect(&https(&server), trusting(&old)).await.unwrap();
    let mut watch = retouch_api::v1::jobs_client::JobsClient::new(channel.clone())
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Synced: the stream is live.
    loop {
        let item = watch.next().await.unwrap().unwrap();
        if matches!(item.kind, Some(pb::watch_response::Kind::Synced(_))) {
            break;
        }
    }

    install(&new);
    assert!(server.reload().is_empty());

    // New handshakes get the new certificate.
    connect(&https(&server), trusting(&new)).await.unwrap();
    assert!(connect(&https(&server), trusting(&old)).await.is_err());
    // The old connection and its stream carry on: a job submitted on it
    // shows up on the stream opened before the reload.
    let submitted = retouch_api::v1::instance_matting_client::InstanceMattingClient::new(channel)
        .submit(pb::SubmitMattingRequest {
            tasks: vec![matting_task(&server)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let key = submitted.job.unwrap().result_key;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let item = watch.next().await.unwrap().unwrap();
            if let Some(pb::watch_response::Kind::Event(event)) = item.kind
                && event.result_key == key
            {
                return;
            }
        }
    })
    .await
    .expect("the stream opened before the reload sees the new job");

    // A broken file is refused and the certificate in force stays.
    std::fs::write(live.join("server.pem"), "not a certificate").unwrap();
    assert!(!server.reload().is_empty());
    connect(&https(&server), trusting(&new)).await.unwrap();
    server.shutdown().await;
}
