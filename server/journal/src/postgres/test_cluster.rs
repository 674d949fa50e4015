//! A throwaway PostgreSQL server for tests: `initdb` into a temporary
//! directory, `pg_ctl start` on a free loopback port with its socket in that
//! directory, `pg_ctl stop` and removal on drop. As root (CI), the server
//! binaries run as the `postgres` user, since PostgreSQL refuses root.
//!
//! The binaries are found through `RETOUCH_PG_BIN`, else the newest
//! `/usr/lib/postgresql/*/bin`, else `PATH`. Missing binaries fail the test
//! with a message saying what to install: these tests are never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running PostgreSQL server owned by a test.
pub(crate) struct TestCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_user: Option<String>,
}

impl TestCluster {
    /// Initialises and starts a server; panics (failing the test) if that
    /// cannot be done.
    pub(crate) fn start() -> TestCluster {
        let bin = binaries();
        let dir = tempfile::tempdir().expect("temporary directory");
        let as_user = is_root().then(|| "postgres".to_owned());
        if let Some(user) = &as_user {
            let ids = |flag: &str| {
                let out = Command::new("id").args([flag, user]).output().expect("id");
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<u32>()
                    .unwrap_or_else(|_| panic!("no user {user}: install postgresql"))
            };
            std::os::unix::fs::chown(dir.path(), Some(ids("-u")), Some(ids("-g")))
                .expect("hand the directory to postgres");
        }
        let port = free_port();
        let cluster = TestCluster {
            dir,
            bin,
            port,
            as_user,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-U",
                "retouch",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
        );
        cluster.pg_ctl("start");
        cluster
    }

    /// A URL for the `postgres` database as the `retouch` superuser.
    pub(crate) fn url(&self) -> String {
        format!("postgres://retouch@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a database of its own for one check; returns its URL.
    pub(crate) async fn database(&self, name: &str) -> String {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(connection);
        client
            .execute(&format!("CREATE DATABASE {name}"), &[])
            .await
            .expect("create a database");
        format!("postgres://retouch@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops and starts the server again (fast shutdown: connections are
    /// cut, as in a real restart).
    pub(crate) fn restart(&self) {
        self.pg_ctl("restart");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().expect("utf-8 path"),
                "-l",
                log.to_str().expect("utf-8 path"),
                "-o",
                &options,
                "-m",
                "fast",
                "-w",
                action,
            ],
        );
    }

    /// A command running one of the server binaries, as `postgres` when
    /// this process is root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.as_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}\nserver log:\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("RETOUCH_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|bin| bin.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(newest) = versions.pop() {
        return newest;
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|dir| dir.join("initdb").exists()));
    on_path.unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql, \
             or set RETOUCH_PG_BIN"
        )
    })
}
