//! Image engines: the processing interface behind the local backend, and
//! [`ClassicEngine`], its CPU implementation with classical computer vision
//! (closed-form matting, PatchMatch completion, fast marching).
//!
//! The interface is deliberately small (one call per API) so that the
//! server, the local backend and library users all call the same code, and
//! other engines can be plugged in without touching the backend. The
//! building blocks are public in [`matting`] and [`removal`] for benchmarks
//! and for callers that want to choose methods themselves.

mod classic;
mod harmonic;
pub mod matting;
pub mod planes;
pub mod png;
pub mod removal;
pub mod synthetic;

pub use classic::ClassicEngine;

use image::{GrayImage, RgbImage, RgbaImage};

/// An image engine serving both APIs. Calls are CPU-bound and blocking: run
/// them off the async threads.
pub trait Engine: Send + Sync + 'static {
    /// Short name for logs.
    fn name(&self) -> &'static str;

    /// Instance matting: mask 255 = keep. Returns straight-alpha RGBA of the
    /// same size.
    fn matte(&self, image: &RgbImage, mask: &GrayImage) -> Result<RgbaImage, EngineError>;

    /// Object removal: mask 255 = remove. Returns the filled image, same size.
    fn remove(
        &self,
        image: &RgbImage,
        mask: &GrayImage,
        params: &RemovalParams,
    ) -> Result<RgbImage, EngineError>;
}

/// Parameters of an object removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemovalParams {
    /// Seed of everything random in the fill; same seed and input give the
    /// same output.
    pub seed: u64,
    /// Diameter of the disk by which the removal region is grown before
    /// filling (odd; 1 leaves the mask unchanged).
    pub kernel_size: u32,
}

impl Default for RemovalParams {
    fn default() -> Self {
        RemovalParams {
            seed: 0,
            kernel_size: 1,
        }
    }
}

/// Why an engine could not process an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    message: String,
}

impl EngineError {
    /// An error with a human-readable message.
    pub fn new(message: impl Into<String>) -> Self {
        EngineError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Checks that image and mask are non-empty and of the same size.
fn check_sizes(image: (u32, u32), mask: (u32, u32)) -> Result<(), EngineError> {
    if image.0 == 0 || image.1 == 0 {
        return Err(EngineError::new("image is empty"));
    }
    if image != mask {
        return Err(EngineError::new(format!(
            "mask size {}x{} differs from image size {}x{}",
            mask.0, mask.1, image.0, image.1
        )));
    }
    Ok(())
}
