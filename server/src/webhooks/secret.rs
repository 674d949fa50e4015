//! Endpoint secrets: made here, returned once, and kept in the journal only
//! sealed (ChaCha20-Poly1305) under a key that never enters it, so a copy
//! of the journal or a database dump cannot sign a delivery.
//!
//! The key is 32 random bytes in a file: `--webhook-key-file`, or
//! `webhook.key` in the data directory (made on first start, mode 0600).
//! Replicas sharing a PostgreSQL journal must all be given the same file.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// Prefix of a secret as Standard Webhooks writes it.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;
/// Bytes of the sealing key.
const KEY_BYTES: usize = 32;
/// Name of the key file in the data directory.
pub const KEY_FILE: &str = "webhook.key";

/// A signing secret in the clear: its bytes (what HMAC is keyed with).
pub type SecretBytes = SecretBox<Vec<u8>>;

/// Seals and opens endpoint secrets with the key of this deployment.
pub struct SecretSealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for SecretSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretSealer")
    }
}

/// A new secret: as the client is given it, and its bytes.
pub struct NewSecret {
    /// `whsec_` + base64 of the bytes.
    pub text: SecretString,
    /// The bytes.
    pub bytes: SecretBytes,
}

impl SecretSealer {
    /// The sealer of `key` (32 bytes).
    fn new(key: &[u8]) -> Result<SecretSealer, String> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key)
            .map_err(|_| format!("the webhook key must be {KEY_BYTES} bytes"))?;
        Ok(SecretSealer {
            key: LessSafeKey::new(unbound),
            random: SystemRandom::new(),
        })
    }

    /// Reads the key from `path`: base64 of 32 bytes, as written by
    /// [`SecretSealer::create_key_file`]. With `create`, a missing file is
    /// made with a new key (readable by this user only).
    pub fn from_key_file(path: &Path, create: bool) -> Result<SecretSealer, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                Self::create_key_file(path)?;
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the webhook key {}: {e}", path.display()))?
            }
            Err(e) => {
                return Err(format!(
                    "cannot read the webhook key {}: {e}",
                    path.display()
                ));
            }
        };
        let key = BASE64.decode(text.trim()).map_err(|_| {
            format!(
                "the webhook key {} is not base64 of {KEY_BYTES} bytes",
                path.display()
            )
        })?;
        if key.len() != KEY_BYTES {
            return Err(format!(
                "the webhook key {} holds {} bytes, not {KEY_BYTES}",
                path.display(),
                key.len()
            ));
        }
        Self::new(&key)
    }

    /// Writes a new random key to `path`, which must not exist.
    pub fn create_key_file(path: &Path) -> Result<(), String> {
        let mut key = [0u8; KEY_BYTES];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| "the system's random source failed".to_owned())?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(path)
            .map_err(|e| format!("cannot create the webhook key {}: {e}", path.display()))?;
        std::io::Write::write_all(&mut file, format!("{}\n", BASE64.encode(key)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("cannot write the webhook key {}: {e}", path.display()))
    }

    /// A new random secret.
    pub fn new_secret(&self) -> Result<NewSecret, String> {
        let mut bytes = vec![0u8; SECRET_BYTES];
        self.random
            .fill(&mut bytes)
            .map_err(|_| "the system's random source failed".to_owned())?;
        Ok(NewSecret {
            text: format!("{SECRET_PREFIX}{}", BASE64.encode(&bytes)).into(),
            bytes: SecretBox::new(Box::new(bytes)),
        })
    }

    /// `secret` sealed for endpoint `endpoint_id` (which it is bound to: a
    /// sealed secret moved to another endpoint's row does not open).
    pub fn seal(&self, endpoint_id: &str, secret: &SecretBytes) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| "the system's random source failed".to_owned())?;
        let mut sealed = secret.expose_secret().clone();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(endpoint_id.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| "cannot seal the secret".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The secret sealed in `sealed` for `endpoint_id`.
    pub fn open(&self, endpoint_id: &str, sealed: &[u8]) -> Result<SecretBytes, String> {
        let refused = || {
            "cannot open the endpoint's secret: it was sealed with another webhook key (was --webhook-key-file changed?)".to_owned()
        };
        if sealed.len() < NONCE_LEN {
            return Err(refused());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(endpoint_id.as_bytes()), &mut body)
            .map_err(|_| refused())?;
        Ok(SecretBox::new(Box::new(plain.to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let sealer = SecretSealer::from_key_file(&path, true).unwrap();
        let secret = sealer.new_secret().unwrap();
        assert!(secret.text.expose_secret().starts_with("whsec_"));
        assert_eq!(secret.bytes.expose_secret().len(), 32);
        let sealed = sealer.seal("ep_a", &secret.bytes).unwrap();
        assert!(
            !sealed
                .windows(8)
                .any(|w| w == &secret.bytes.expose_secret()[..8]),
            "nothing of the secret is stored in the clear"
        );
        let opened = sealer.open("ep_a", &sealed).unwrap();
        assert_eq!(opened.expose_secret(), secret.bytes.expose_secret());
        assert!(
            sealer.open("ep_b", &sealed).is_err(),
            "bound to its endpoint"
        );
        // The same file gives the same key; another file does not open it.
        let again = SecretSealer::from_key_file(&path, false).unwrap();
        assert!(again.open("ep_a", &sealed).is_ok());
        let other = SecretSealer::from_key_file(&dir.path().join("other.key"), true).unwrap();
        let refused = other.open("ep_a", &sealed).unwrap_err();
        assert!(refused.contains("--webhook-key-file"), "{refused}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(SecretSealer::from_key_file(&dir.path().join("missing"), false).is_err());
    }
}
