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

/// Checks a submission; returns every violation, not just the first.
pub fn validate_submission(api: ApiKind, tasks: &[WireTask]) -> Result<(), Vec<Violation>> {
    let mut violations = Vec::new();
    if tasks.is_empty() || tasks.len() > MAX_TASKS {
        violations.push(Violation::new(
            "tasks",
            format!("must hold 1 to {MAX_TASKS} tasks, got {}", tasks.len()),
        ));
    }
    for (i, task) in tasks.iter().enumerate() {
        check_url(
            &mut violations,
            format!("tasks[{i}].image_url"),
            &task.image,
        );
        check_url(&mut violations, format!("tasks[{i}].mask_url"), &task.mask);
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
        Ok(())
    } else {
        Err(violations)
    }
}

fn check_url(violations: &mut Vec<Violation>, field: String, value: &str) {
    if value.trim().is_empty() {
        violations.push(Violation::new(field, "is required"));
        return;
    }
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        Ok(url) => violations.push(Violation::new(
            field,
            format!(
                "must be an http or https URL with a host, got scheme {:?}",
                url.scheme()
            ),
        )),
        Err(e) => violations.push(Violation::new(
            field,
            format!("must be an http or https URL: {e}"),
        )),
    }
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
        assert!(validate_submission(ApiKind::ObjectRemoval, &[t]).is_ok());
    }

    #[test]
    fn names_every_broken_field() {
        let tasks = [
            task("https://a/i.png", "", None),
            task("ftp://a/i.png", "not a url", Some(4)),
            task("https://a/i.png", "https://a/m.png", Some(61)),
        ];
        let v = validate_submission(ApiKind::ObjectRemoval, &tasks).unwrap_err();
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
            validate_submission(ApiKind::InstanceMatting, &[]).unwrap_err()[0].field,
            "tasks"
        );
        let eleven = vec![one; 11];
        let v = validate_submission(ApiKind::InstanceMatting, &eleven).unwrap_err();
        assert_eq!(v[0].description, "must hold 1 to 10 tasks, got 11");
    }
}
