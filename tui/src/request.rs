//! A job as the user describes it (dashboard form, `retouch submit`, batch
//! lines), validated with the server's own rules before anything is sent.

use std::path::PathBuf;

use retouch_api::limits::KERNEL_SIZE_RANGE;
use retouch_api::v1 as pb;
use serde::Deserialize;

/// Where an input image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A URL the upstream downloads.
    Url(String),
    /// A local file, uploaded through `UploadImage` first.
    File(PathBuf),
}

impl Input {
    /// `http://` or `https://` is a URL, anything else a path.
    pub fn parse(text: &str) -> Input {
        let text = text.trim();
        if text.starts_with("http://") || text.starts_with("https://") {
            Input::Url(text.to_owned())
        } else {
            Input::File(PathBuf::from(text))
        }
    }
}

/// A field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name as the user typed it (`image`, `kernel_size`, ...).
    pub field: &'static str,
    /// The rule it breaks.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// One single-task job, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// The API.
    pub api: pb::Api,
    /// Input image.
    pub image: Input,
    /// Mask.
    pub mask: Input,
    /// Removal seed.
    pub seed: Option<i64>,
    /// Removal kernel size (odd, 1 to 59).
    pub kernel_size: Option<u32>,
}

/// One line of a batch file: `{"api": "matting"|"removal", "image": ...,
/// "mask": ..., "seed": 1, "kernel_size": 5}`; image and mask are URLs or
/// local paths.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchLine {
    /// `matting` or `removal`.
    pub api: String,
    /// Image URL or path.
    pub image: String,
    /// Mask URL or path.
    pub mask: String,
    /// Removal seed.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Removal kernel size.
    #[serde(default)]
    pub kernel_size: Option<u32>,
}

/// Parses an API name as used on the command line and in batch files.
pub fn parse_api(name: &str) -> Option<pb::Api> {
    match name.trim() {
        "matting" | "instance-matting" => Some(pb::Api::InstanceMatting),
        "removal" | "object-removal" => Some(pb::Api::ObjectRemoval),
        _ => None,
    }
}

impl JobRequest {
    /// Validates user input; every problem is reported, each naming its
    /// field and rule (the server's rules: non-empty inputs, http(s) URLs,
    /// `kernel_size` odd within 1–59 and only for removal).
    pub fn new(
        api: pb::Api,
        image: &str,
        mask: &str,
        seed: Option<i64>,
        kernel_size: Option<u32>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        for (field, value) in [("image", image), ("mask", mask)] {
            if value.trim().is_empty() {
                errors.push(FieldError {
                    field,
                    message: "must be a URL (http:// or https://) or a local file path".into(),
                });
            } else {
                match Input::parse(value) {
                    Input::Url(url) if reqwest::Url::parse(&url).is_err() => {
                        errors.push(FieldError {
                            field,
                            message: format!("is not a valid URL: {url}"),
                        })
                    }
                    Input::File(path) if !path.is_file() => errors.push(FieldError {
                        field,
                        message: format!("no such file: {}", path.display()),
                    }),
                    _ => {}
                }
            }
        }
        if api == pb::Api::InstanceMatting && (seed.is_some() || kernel_size.is_some()) {
            errors.push(FieldError {
                field: if seed.is_some() {
                    "seed"
                } else {
                    "kernel_size"
                },
                message: "is only accepted by object removal".into(),
            });
        }
        if let Some(k) = kernel_size
            && (!KERNEL_SIZE_RANGE.contains(&k) || k % 2 == 0)
        {
            errors.push(FieldError {
                field: "kernel_size",
                message: format!(
                    "must be odd and within [{}, {}], got {k}",
                    KERNEL_SIZE_RANGE.start(),
                    KERNEL_SIZE_RANGE.end()
                ),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(JobRequest {
            api,
            image: Input::parse(image),
            mask: Input::parse(mask),
            seed,
            kernel_size,
        })
    }

    /// The task as sent, with its inputs at `image_url` and `mask_url`.
    pub fn task(&self, image_url: String, mask_url: String) -> pb::batch_task::Task {
        match self.api {
            pb::Api::ObjectRemoval => pb::batch_task::Task::Removal(pb::RemovalTask {
                image_url,
                mask_url,
                seed: self.seed,
                kernel_size: self.kernel_size,
            }),
            _ => pb::batch_task::Task::Matting(pb::MattingTask {
                image_url,
                mask_url,
            }),
        }
    }

    /// Validates a batch line.
    pub fn from_batch_line(line: &BatchLine) -> Result<Self, Vec<FieldError>> {
        let Some(api) = parse_api(&line.api) else {
            return Err(vec![FieldError {
                field: "api",
                message: format!("must be \"matting\" or \"removal\", got {:?}", line.api),
            }]);
        };
        JobRequest::new(api, &line.image, &line.mask, line.seed, line.kernel_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_named_with_its_rule() {
        let errors =
            JobRequest::new(pb::Api::InstanceMatting, "", "http://", None, Some(4)).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["image", "mask", "kernel_size", "kernel_size"]);
        assert!(errors[3].message.contains("odd"), "{errors:?}");
        let missing = JobRequest::new(
            pb::Api::InstanceMatting,
            "no/such.png",
            "https://x/m.png",
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(missing[0].message, "no such file: no/such.png");
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().to_str().unwrap();
        let ok = JobRequest::new(
            pb::Api::ObjectRemoval,
            path,
            "https://x/m.png",
            Some(3),
            Some(5),
        )
        .unwrap();
        assert_eq!(ok.image, Input::File(path.into()));
        assert_eq!(ok.mask, Input::Url("https://x/m.png".into()));
    }
}
