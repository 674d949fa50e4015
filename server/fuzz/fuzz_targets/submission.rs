//! A submission's tasks: the input split at NULs into image and mask URLs.
//! Whatever is accepted is canonical and validates to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retouch_server::aliyun::{ApiKind, WireTask};
use retouch_server::validate::canonical_url;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parts: Vec<&str> = text.split('\u{1}').collect();
    let tasks: Vec<WireTask> = parts
        .chunks(2)
        .map(|pair| WireTask {
            image: pair[0].to_owned(),
            mask: pair.get(1).copied().unwrap_or_default().to_owned(),
            kernel_size: Some(u32::from(data.first().copied().unwrap_or(1))),
            ..WireTask::default()
        })
        .collect();
    if let Ok(sent) = retouch_server::parsers::submission(ApiKind::ObjectRemoval, tasks) {
        for task in sent {
            assert_eq!(
                canonical_url(&task.image).as_deref(),
                Ok(task.image.as_str())
            );
            assert_eq!(canonical_url(&task.mask).as_deref(), Ok(task.mask.as_str()));
        }
    }
});
