//! Image previews of the detail view: input, mask and result side by side.
//! Images are fetched and decoded off the UI loop ([`compose::prepare`]
//! runs in `actions`), then kept here, most recently used first, up to a
//! byte budget. Drawing uses the terminal's graphics protocol (kitty,
//! sixel, iTerm2) when the [`Picker`] found one, Unicode half-blocks
//! otherwise.

pub mod compose;

use std::collections::HashMap;

use image::DynamicImage;
use lru::LruCache;
use ratatui_image::picker::Picker;
use ratatui_image::protocol::StatefulProtocol;

pub use compose::PreviewKind;

/// One picture of a task's preview strip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewSource {
    /// The pane's title.
    pub label: &'static str,
    /// Where the picture is.
    pub url: String,
    /// Whether the URL is on retouchd's own listener (sent the token).
    pub ours: bool,
    /// How to prepare it.
    pub kind: PreviewKind,
}

/// What the preview strip of `task` shows: input, mask, and the first
/// result once there is one (retouchd's copy when it has made it).
pub fn sources(task: &crate::state::TaskRow) -> Vec<PreviewSource> {
    // Inputs are public URLs (the upstream fetches them without a token),
    // so the token never goes along to them.
    let mut sources = vec![
        PreviewSource {
            label: "input",
            url: task.image_url.clone(),
            ours: false,
            kind: PreviewKind::Input,
        },
        PreviewSource {
            label: "mask",
            url: task.mask_url.clone(),
            ours: false,
            kind: PreviewKind::Mask,
        },
    ];
    let (results, ours) = task.download_urls();
    if let Some(url) = results.first() {
        sources.push(PreviewSource {
            label: "result",
            url: url.clone(),
            ours,
            kind: PreviewKind::Result,
        });
    }
    sources
}

/// Default budget of decoded preview pixels kept, in bytes.
pub const DEFAULT_BUDGET: usize = 32 * 1024 * 1024;

/// A preview as a pane finds it.
pub enum Preview<'a> {
    /// Ready to draw.
    Ready(&'a mut StatefulProtocol),
    /// Being fetched and decoded.
    Loading,
    /// Fetching or decoding failed.
    Failed(&'a str),
    /// Never asked for.
    Missing,
}

struct Ready {
    protocol: StatefulProtocol,
    bytes: usize,
}

/// The previews loaded and loading, by URL.
pub struct Previews {
    picker: Picker,
    ready: LruCache<String, Ready>,
    bytes: usize,
    budget: usize,
    /// URLs asked for and not ready: loading (`None`) or failed (why).
    pending: HashMap<String, Option<String>>,
}

impl std::fmt::Debug for Previews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Previews")
            .field("protocol", &self.picker.protocol_type())
            .field("ready", &self.ready.len())
            .field("bytes", &self.bytes)
            .field("budget", &self.budget)
            .finish()
    }
}

impl Previews {
    /// Previews drawn with `picker`, keeping up to `budget` bytes of
    /// decoded images.
    pub fn new(picker: Picker, budget: usize) -> Self {
        Previews {
            picker,
            ready: LruCache::unbounded(),
            bytes: 0,
            budget,
            pending: HashMap::new(),
        }
    }

    /// Whether `url` must be loaded now: neither ready, loading nor failed.
    /// If so it counts as loading from here on.
    pub fn wants(&mut self, url: &str) -> bool {
        if self.ready.contains(url) || self.pending.contains_key(url) {
            return false;
        }
        self.pending.insert(url.to_owned(), None);
        true
    }

    /// Takes the outcome of loading `url`; the least recently shown
    /// previews go while over budget (the newest always stays).
    pub fn loaded(&mut self, url: String, image: Result<DynamicImage, String>) {
        match image {
            Err(why) => {
                self.pending.insert(url, Some(why));
            }
            Ok(image) => {
                self.pending.remove(&url);
                let bytes = image.as_bytes().len();
                let protocol = self.picker.new_resize_protocol(image);
                if let Some(old) = self.ready.put(url, Ready { protocol, bytes }) {
                    self.bytes -= old.bytes;
                }
                self.bytes += bytes;
                while self.bytes > self.budget && self.ready.len() > 1 {
                    if let Some((_, gone)) = self.ready.pop_lru() {
                        self.bytes -= gone.bytes;
                    }
                }
            }
        }
    }

    /// The preview of `url`, marked as just used.
    pub fn get(&mut self, url: &str) -> Preview<'_> {
        if let Some(ready) = self.ready.get_mut(url) {
            return Preview::Ready(&mut ready.protocol);
        }
        match self.pending.get(url) {
            Some(None) => Preview::Loading,
            Some(Some(why)) => Preview::Failed(why),
            None => Preview::Missing,
        }
    }

    /// Bytes of decoded images kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets failures, so that the next look tries again.
    pub fn retry_failed(&mut self) {
        self.pending.retain(|_, failure| failure.is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(side: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::new(side, side))
    }

    #[test]
    fn previews_load_once_and_the_least_recently_shown_go_over_budget() {
        // Room for two 10×10 RGB images (300 bytes each).
        let mut previews = Previews::new(Picker::halfblocks(), 700);
        assert!(previews.wants("a"));
        assert!(!previews.wants("a"), "already loading");
        assert!(matches!(previews.get("a"), Preview::Loading));
        previews.loaded("a".into(), Ok(image(10)));
        assert!(!previews.wants("a"), "ready");
        for url in ["b", "c"] {
            assert!(previews.wants(url));
        }
        previews.loaded("b".into(), Ok(image(10)));
        // "a" is shown again, so "b" is the least recently shown.
        assert!(matches!(previews.get("a"), Preview::Ready(_)));
        previews.loaded("c".into(), Ok(image(10)));
        assert_eq!(previews.bytes(), 600);
        assert!(matches!(previews.get("b"), Preview::Missing));
        assert!(matches!(previews.get("a"), Preview::Ready(_)));
        assert!(previews.wants("b"), "gone, so loaded again when needed");

        assert!(previews.wants("bad"));
        previews.loaded("bad".into(), Err("404".into()));
        assert!(matches!(previews.get("bad"), Preview::Failed("404")));
        assert!(!previews.wants("bad"), "a failure is not retried at once");
        previews.retry_failed();
        assert!(previews.wants("bad"));
    }
}
