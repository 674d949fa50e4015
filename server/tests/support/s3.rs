//! An S3-compatible server on loopback for the tests: moto's, from PyPI
//! (tests/python/requirements.txt), in memory and torn down on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running S3-compatible server with one bucket.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

/// The secret key the test servers are given, distinctive enough to look
/// for in logs.
pub const SECRET_ACCESS_KEY: &str = "s3-test-secret-9f2c41d7";

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// Starts the server on a free loopback port (its log in `dir`) and
    /// creates `bucket`.
    pub async fn start(dir: &Path, bucket: &str) -> S3Server {
        let python = tokio::task::spawn_blocking(super::venv::python)
            .await
            .unwrap();
        let log = dir.join("s3.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the S3 server starts");
        let mut server = S3Server {
            child,
            endpoint: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        server.endpoint = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(url) = text
                .lines()
                .find_map(|line| line.split("Running on ").nth(1))
            {
                break url.trim().to_owned();
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the S3 server exited ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "the S3 server did not start:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            server.endpoint.starts_with("http://127.0.0.1:"),
            "{}",
            server.endpoint
        );
        // moto checks no signatures: a plain PUT makes the bucket.
        let created = reqwest::Client::new()
            .put(format!("{}/{bucket}", server.endpoint))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "{created:?}");
        server
    }

    /// The environment that points a retouchd at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "s3-test-key".into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The keys of every object in `bucket`.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let listing = reqwest::get(format!("{}/{bucket}?list-type=2", self.endpoint))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        listing
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }
}
