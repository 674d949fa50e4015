//! Image engines: the processing interface behind the local backend and a
//! simple, real CPU implementation of it.
//!
//! The interface is deliberately small (one call per API) so that better
//! engines can replace [`SimpleEngine`] without touching the backend.

mod alpha;
mod blur;
mod harmonic;
mod region;
mod removal;
mod simple;
mod texture;

pub use simple::SimpleEngine;

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
    /// Side of the square kernel by which the removal region is grown before
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
