//! Soft alpha from a hard matting mask.

use image::GrayImage;

use super::blur::gaussian_blur;

/// Blurred mask values at or below this become fully transparent, at or above
/// `1 - RAMP_CLIP` fully opaque, so that the interior is exactly 255 and the
/// far background exactly 0 despite floating-point tails of the kernel.
const RAMP_CLIP: f32 = 0.05;

/// Edge softness in pixels for an image whose longer side is `long_side`:
/// about a pixel at 640 px, growing with resolution so edges look alike when
/// viewed at the same size.
pub(super) fn edge_sigma(long_side: u32) -> f32 {
    (long_side as f32 / 600.0).clamp(0.7, 6.0)
}

/// Alpha with smoothed edges from a mask (255 = keep, threshold 128).
pub(super) fn soft_alpha(mask: &GrayImage) -> GrayImage {
    let (width, height) = mask.dimensions();
    let hard: Vec<f32> = mask
        .as_raw()
        .iter()
        .map(|&m| if m >= 128 { 1.0 } else { 0.0 })
        .collect();
    let sigma = edge_sigma(width.max(height));
    let soft = gaussian_blur(&hard, width as usize, height as usize, sigma);
    let alpha = soft
        .into_iter()
        .map(|v| {
            let ramp = ((v - RAMP_CLIP) / (1.0 - 2.0 * RAMP_CLIP)).clamp(0.0, 1.0);
            (ramp * 255.0).round() as u8
        })
        .collect();
    GrayImage::from_raw(width, height, alpha).expect("one alpha value per pixel")
}
