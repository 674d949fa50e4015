//! The Python interpreter of the tests that run Python (a grpcio client, an
//! S3-compatible server): `$RETOUCH_PYTHON` when set, otherwise a
//! virtualenv under target/ with tests/python/requirements.txt, created
//! here when missing or out of date.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The interpreter, with the requirements installed.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("RETOUCH_PYTHON") {
        return PathBuf::from(python);
    }
    // The workspace root, from the root crate or a member.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("tests/python/requirements.txt").is_file())
        .expect("the workspace's tests/python");
    let venv = root.join("target").join("python-venv");
    let python = venv.join("bin").join("python");
    let requirements = root.join("tests/python/requirements.txt");
    let marker = venv.join(".requirements-installed");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(
            status.success(),
            "python3 -m venv failed (apt-get install python3-venv)"
        );
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(&requirements)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "pip install -r tests/python/requirements.txt failed"
        );
        std::fs::write(&marker, wanted).unwrap();
    }
    python
}
