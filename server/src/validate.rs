//! Validation of submissions before anything is sent upstream (submit is
//! billed). Every violation names the field and the rule.

use crate::aliyun::{ApiKind, KERNEL_SIZE_RANGE, MAX_TASKS, WireTask};

/// One broken rule: which field, and what the rule is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field in the request, e.g. `tasks[2].mask_url`.
    pub field: String,
    /// The rule and what was found.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Violation {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Longest accepted image or mask URL, in bytes (before and after
/// canonicalisation).
pub const MAX_URL_LEN: usize = 2048;
/// Longest accepted result key, in bytes (Aliyun's are about 40).
pub const MAX_RESULT_KEY_LEN: usize = 256;

/// Checks a submission and returns the tasks exactly as they are to be sent
/// upstream: URLs in the canonical form that was validated. Returns every
/// violation, not just the first.
pub fn validate_submission(
    api: ApiKind,
    mut tasks: Vec<WireTask>,
) -> Result<Vec<WireTask>, Vec<Violation>> {
    let mut violations = Vec::new();
    if tasks.is_empty() || tasks.len() > MAX_TASKS {
        violations.push(Violation::new(
            "tasks",
            format!("must hold 1 to {MAX_TASKS} tasks, got {}", tasks.len()),
        ));
    }
    for (i, task) in tasks.iter_mut().enumerate() {
        for (name, url) in [("image_url", &mut task.image), ("mask_url", &mut task.mask)] {
            match canonical_url(url) {
                Ok(canonical) => *url = canonical,
                Err(rule) => violations.push(Violation::new(format!("tasks[{i}].{name}"), rule)),
            }
        }
        if let Some(k) = task.kernel_size {
            if api != ApiKind::ObjectRemoval {
                violations.push(Violation::new(
                    format!("tasks[{i}].kernel_size"),
                    "is only accepted by object removal",
                ));
            } else if !KERNEL_SIZE_RANGE.contains(&k) || k % 2 == 0 {
                violations.push(Violation::new(
                    format!("tasks[{i}].kernel_size"),
                    format!(
                        "must be odd and within [{}, {}], got {k}",
                        KERNEL_SIZE_RANGE.start(),
                        KERNEL_SIZE_RANGE.end()
                    ),
                ));
            }
        }
    }
    if violations.is_empty() {
        Ok(tasks)
    } else {
        Err(violations)
    }
}

/// The canonical form of an image or mask URL (as the WHATWG URL standard
/// serialises it: percent-encoded, host lower-cased, default port dropped),
/// or the rule it breaks. What a lenient parser would silently strip or
/// repair (surrounding spaces, line breaks, control and bidi characters) is
/// refused rather than guessed at, and so are credentials, which would be
/// handed to the upstream and kept in the journal.
pub fn canonical_url(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("is required".into());
    }
    if value.len() > MAX_URL_LEN {
        return Err(format!(
            "must be at most {MAX_URL_LEN} bytes, got {}",
            value.len()
        ));
    }
    if let Some((at, c)) = value.char_indices().find(|(_, c)| forbidden_in_url(*c)) {
        return Err(format!(
            "must not contain whitespace, control or bidirectional-formatting characters, found U+{:04X} at byte {at}",
            u32::from(c)
        ));
    }
    let url =
        reqwest::Url::parse(value).map_err(|e| format!("must be an http or https URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "must be an http or https URL with a host, got scheme {:?}",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (user:password@)".into());
    }
    let canonical = String::from(url);
    if canonical.len() > MAX_URL_LEN {
        return Err(format!(
            "must be at most {MAX_URL_LEN} bytes once percent-encoded, got {}",
            canonical.len()
        ));
    }
    Ok(canonical)
}

/// Characters refused anywhere in a URL: every Unicode whitespace and
/// control character, and the bidirectional overrides and isolates that make
/// a URL display differently from what it is (U+202E and friends).
fn forbidden_in_url(c: char) -> bool {
    c.is_whitespace() || misleading(c)
}

/// Control characters (they would break a log line) and bidirectional
/// formatting characters (they make text display as something it is not).
fn misleading(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Checks a result key named by a client: present, bounded, and printable
/// ASCII (the upstream's keys are; anything else cannot be one of them).
/// The rule never echoes the key.
pub fn check_result_key(field: &str, key: &str) -> Option<Violation> {
    let rule = if key.is_empty() {
        "is required".to_owned()
    } else if key.len() > MAX_RESULT_KEY_LEN {
        format!(
            "must be at most {MAX_RESULT_KEY_LEN} bytes, got {}",
            key.len()
        )
    } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
        "must be printable ASCII without spaces".to_owned()
    } else {
        return None;
    };
    Some(Violation::new(field, rule))
}

/// Longest accepted upload file name, in bytes.
pub const MAX_FILENAME_LEN: usize = 255;

/// Checks an upload's file name (kept in the journal and logged): bounded,
/// and free of control and bidirectional-formatting characters.
pub fn check_filename(field: &str, name: &str) -> Option<Violation> {
    if name.len() > MAX_FILENAME_LEN {
        return Some(Violation::new(
            field,
            format!(
                "must be at most {MAX_FILENAME_LEN} bytes, got {}",
                name.len()
            ),
        ));
    }
    name.chars().find(|c| misleading(*c)).map(|c| {
        Violation::new(
            field,
            format!(
                "must not contain control or bidirectional-formatting characters, found U+{:04X}",
                u32::from(c)
            ),
        )
    })
}

/// At most `max` bytes of `text` (cut at a character boundary), marked when
/// cut: for echoing client input in messages without echoing megabytes.
pub fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(image: &str, mask: &str, kernel_size: Option<u32>) -> WireTask {
        WireTask {
            image: image.into(),
            mask: mask.into(),
            kernel_size,
            ..WireTask::default()
        }
    }

    #[test]
    fn accepts_a_valid_submission() {
        let t = task("https://a/i.png", "http://a/m.png", Some(37));
        assert!(validate_submission(ApiKind::ObjectRemoval, vec![t]).is_ok());
    }

    #[test]
    fn sends_the_canonical_form_of_what_it_validated() {
        let t = task(
            "HTTPS://Example.COM:443/a<b>/é.png?x=ü",
            "http://example.com:80/./m/../mask.png",
            None,
        );
        let sent = validate_submission(ApiKind::InstanceMatting, vec![t]).unwrap();
        assert_eq!(
            sent[0].image,
            "https://example.com/a%3Cb%3E/%C3%A9.png?x=%C3%BC"
        );
        assert_eq!(sent[0].mask, "http://example.com/mask.png");
        // Canonical input is sent unchanged.
        assert_eq!(canonical_url(&sent[0].image).unwrap(), sent[0].image);
    }

    #[test]
    fn refuses_what_a_lenient_parser_would_repair() {
        for (url, rule) in [
            ("  http://a/i.png\n", "U+0020 at byte 0"),
            ("http://a/i.png\n", "U+000A"),
            ("http://a/i\0.png", "U+0000"),
            ("http://a/\u{202E}gnp.exe", "U+202E"),
            ("http://a/i\u{00A0}.png", "U+00A0"),
            ("http://user:pw@a/i.png", "credentials"),
            ("http://user@a/i.png", "credentials"),
            ("file:///etc/passwd", "http or https"),
            ("", "is required"),
        ] {
            let rule_found = canonical_url(url).unwrap_err();
            assert!(rule_found.contains(rule), "{url:?}: {rule_found}");
        }
        let long = format!("http://a/{}", "x".repeat(MAX_URL_LEN));
        assert!(
            canonical_url(&long)
                .unwrap_err()
                .contains("at most 2048 bytes")
        );
        // Within the limit raw, beyond it once encoded.
        let wide = format!("http://a/{}", "é".repeat(MAX_URL_LEN / 2 - 10));
        assert!(
            canonical_url(&wide)
                .unwrap_err()
                .contains("percent-encoded")
        );
    }

    #[test]
    fn result_keys_are_bounded_and_never_echoed() {
        assert!(check_result_key("job.result_key", "8A5F-22b1_x.y").is_none());
        let v = check_result_key("job.result_key", "").unwrap();
        assert_eq!(
            (v.field.as_str(), v.description.as_str()),
            ("job.result_key", "is required")
        );
        let huge = "k".repeat(1 << 20);
        let v = check_result_key("jobs[0].result_key", &huge).unwrap();
        assert_eq!(v.description, "must be at most 256 bytes, got 1048576");
        assert!(check_result_key("k", "a b").is_some());
        assert!(check_result_key("k", "ключ").is_some());
    }

    #[test]
    fn file_names_are_bounded_and_printable() {
        assert!(check_filename("metadata.filename", "holiday photo (2).png").is_none());
        assert!(check_filename("f", "a\nforged log line").is_some());
        assert!(check_filename("f", "cat\u{202E}gnp.exe").is_some());
        assert!(check_filename("f", &"x".repeat(256)).is_some());
    }

    #[test]
    fn excerpts_cut_at_character_boundaries() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("ééé", 3), "é… (6 bytes)");
    }

    #[test]
    fn names_every_broken_field() {
        let tasks = [
            task("https://a/i.png", "", None),
            task("ftp://a/i.png", "not a url", Some(4)),
            task("https://a/i.png", "https://a/m.png", Some(61)),
        ];
        let v = validate_submission(ApiKind::ObjectRemoval, tasks.to_vec()).unwrap_err();
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "tasks[0].mask_url",
                "tasks[1].image_url",
                "tasks[1].mask_url",
                "tasks[1].kernel_size",
                "tasks[2].kernel_size"
            ]
        );
        assert!(v[3].description.contains("odd"));
    }

    #[test]
    fn counts_tasks() {
        let one = task("https://a/i.png", "https://a/m.png", None);
        assert_eq!(
            validate_submission(ApiKind::InstanceMatting, vec![]).unwrap_err()[0].field,
            "tasks"
        );
        let eleven = vec![one; 11];
        let v = validate_submission(ApiKind::InstanceMatting, eleven).unwrap_err();
        assert_eq!(v[0].description, "must hold 1 to 10 tasks, got 11");
    }
}
