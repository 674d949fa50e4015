//! Named tokens: the `--tokens-file` format, its parser, and new tokens.
//!
//! One token per line: `<name> <role> sha256:<hex> [<limit>=<value> ...]`.
//! `#` starts a comment. Only the SHA-256 of a token is stored: tokens are
//! 256 random bits, so a fast hash gives nothing to guess from, and a leaked
//! file grants nothing.

use std::collections::HashSet;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::limits::LimitSettings;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything: submit, upload, watch, read, and its own webhook
    /// endpoints.
    Submit,
    /// Watch, GetJob, ListJobs and downloads of mirrored results only.
    Watch,
    /// What `submit` may, and every token's webhook endpoints and
    /// deliveries besides its own.
    Admin,
}

impl Role {
    /// The role's name in the tokens file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submit => "submit",
            Role::Watch => "watch",
            Role::Admin => "admin",
        }
    }

    /// The role named `value` in a tokens file or on the command line.
    pub fn parse(value: &str) -> Result<Role, String> {
        match value {
            "submit" => Ok(Role::Submit),
            "watch" => Ok(Role::Watch),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "role must be submit, watch or admin, got {other:?}"
            )),
        }
    }
}

/// One line of the tokens file.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEntry {
    /// Shown in `Job.submitted_by`, logs and quota errors.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// This token's own limits (on top of the server's).
    pub limits: LimitSettings,
}

/// Every token of a tokens file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenSet {
    entries: Vec<TokenEntry>,
}

/// Longest token name.
const MAX_NAME_LEN: usize = 64;
/// What every generated token starts with (recognisable in a secret
/// scanner).
const TOKEN_PREFIX: &str = "rt_";

impl TokenSet {
    /// A set of `entries` (names must be unique).
    pub fn new(entries: Vec<TokenEntry>) -> Result<TokenSet, String> {
        let mut names = HashSet::new();
        for entry in &entries {
            if !names.insert(entry.name.as_str()) {
                return Err(format!("token name {:?} appears twice", entry.name));
            }
        }
        Ok(TokenSet { entries })
    }

    /// Parses a tokens file. Errors name the line and the rule, never a
    /// hash.
    pub fn parse(text: &str) -> Result<TokenSet, String> {
        let mut entries = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let entry = parse_line(line).map_err(|rule| format!("line {}: {rule}", number + 1))?;
            entries.push(entry);
        }
        TokenSet::new(entries)
    }

    /// The entry `presented` is the token of. Every entry is compared, in
    /// constant time, whatever matches.
    pub fn find(&self, presented: &str) -> Option<&TokenEntry> {
        let digest = sha256(presented);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.sha256.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        found
    }

    /// The entries.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_line(line: &str) -> Result<TokenEntry, String> {
    let mut fields = line.split_whitespace();
    let (Some(name), Some(role), Some(hash)) = (fields.next(), fields.next(), fields.next()) else {
        return Err("expected `<name> <role> sha256:<hex> [limit=value ...]`".into());
    };
    check_name(name)?;
    let role = Role::parse(role)?;
    let mut bytes = [0u8; 32];
    hash.strip_prefix("sha256:")
        .and_then(|digits| hex::decode_to_slice(digits, &mut bytes).ok())
        .ok_or("the hash must be written sha256:<64 hex digits>")?;
    let mut limits = LimitSettings::default();
    for option in fields {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| format!("expected limit=value, got {option:?}"))?;
        limits.set(key, value)?;
    }
    Ok(TokenEntry {
        name: name.to_owned(),
        role,
        sha256: bytes,
        limits,
    })
}

/// Names are shown in jobs, logs and metrics: short, printable, no spaces.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        return Err(format!(
            "a token name is 1 to {MAX_NAME_LEN} letters, digits, '-', '_', '.' or '@', got {name:?}"
        ));
    }
    Ok(())
}

/// SHA-256 of a token.
pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token and its tokens-file line.
pub fn generate(
    name: &str,
    role: Role,
    limits: &LimitSettings,
) -> Result<(String, String), String> {
    check_name(name)?;
    let mut secret = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from the operating system.
    rand::Rng::fill(&mut rand::rng(), &mut secret);
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let hash = hex::encode(sha256(&token));
    let mut line = format!("{name} {} sha256:{hash}", role.as_str());
    for (key, value) in limits.pairs() {
        line.push_str(&format!(" {key}={value}"));
    }
    Ok((token, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_line_parses_back_and_finds_only_its_token() {
        let limits = LimitSettings {
            tasks_per_hour: Some(100),
            ..LimitSettings::default()
        };
        let (token, line) = generate("ci-bot", Role::Watch, &limits).unwrap();
        assert!(token.starts_with("rt_") && token.len() > 40);
        assert!(!line.contains(&token));
        let set = TokenSet::parse(&format!("# tokens\n\n{line}   # the CI\n")).unwrap();
        let entry = set.find(&token).unwrap();
        assert_eq!((entry.name.as_str(), entry.role), ("ci-bot", Role::Watch));
        assert_eq!(entry.limits.tasks_per_hour, Some(100));
        assert!(set.find(&token[..token.len() - 1]).is_none());
        assert!(set.find("").is_none());
        let (other, _) = generate("ci-bot", Role::Watch, &limits).unwrap();
        assert_ne!(token, other);
    }

    #[test]
    fn errors_name_the_line_and_the_rule() {
        let hash = format!("sha256:{}", "ab".repeat(32));
        for (text, rule) in [
            ("a submit".to_owned(), "line 1: expected"),
            (
                format!("a owner {hash}"),
                "role must be submit, watch or admin",
            ),
            (format!("a submit {}", "ab".repeat(32)), "sha256:<64 hex"),
            (
                format!("a submit sha256:{}", "zz".repeat(32)),
                "sha256:<64 hex",
            ),
            (format!("has space? submit {hash}"), "line 1"),
            (format!("a submit {hash}\na watch {hash}"), "appears twice"),
            (format!("\n\na submit {hash} streams=x"), "line 3: streams"),
            (format!("a submit {hash} colour=blue"), "unknown limit"),
        ] {
            let error = TokenSet::parse(&text).unwrap_err();
            assert!(error.contains(rule), "{text:?}: {error}");
            assert!(!error.contains("abab"), "a hash was echoed: {error}");
        }
    }
}
