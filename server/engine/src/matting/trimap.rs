//! Trimaps: which pixels are surely foreground, surely background, or
//! unknown, derived from the user's (possibly coarse) keep-mask.

use image::{GrayImage, Luma};
use imageproc::distance_transform::euclidean_squared_distance_transform;

use crate::planes::halve;

/// Trimap value of sure background.
pub const BACKGROUND: u8 = 0;
/// Trimap value of the unknown band.
pub const UNKNOWN: u8 = 128;
/// Trimap value of sure foreground.
pub const FOREGROUND: u8 = 255;

/// A trimap: one of [`BACKGROUND`], [`UNKNOWN`], [`FOREGROUND`] per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trimap {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major values.
    pub values: Vec<u8>,
}

impl Trimap {
    /// The trimap as an image.
    pub fn to_gray(&self) -> GrayImage {
        GrayImage::from_raw(self.width as u32, self.height as u32, self.values.clone())
            .expect("one value per pixel")
    }

    /// Number of unknown pixels.
    pub fn unknown_count(&self) -> usize {
        self.values.iter().filter(|&&v| v == UNKNOWN).count()
    }

    /// Alpha implied by the trimap: 1 foreground, 0 background, 0.5 unknown.
    pub fn initial_alpha(&self) -> Vec<f32> {
        self.values
            .iter()
            .map(|&v| match v {
                FOREGROUND => 1.0,
                BACKGROUND => 0.0,
                _ => 0.5,
            })
            .collect()
    }

    /// Halves both sides (rounding up): a coarse pixel is sure only when all
    /// its children agree, so the coarse unknown band covers the fine one.
    pub fn downsample(&self) -> Self {
        let (values, width, height) =
            halve(&self.values, self.width, self.height, |mut children| {
                let first = children.next().unwrap_or(UNKNOWN);
                if first != UNKNOWN && Iterator::all(&mut children, |v| v == first) {
                    first
                } else {
                    UNKNOWN
                }
            });
        Trimap {
            width,
            height,
            values,
        }
    }
}

/// Half-width in pixels of the unknown band for an image of the given size:
/// 2% of the shorter side, at least 6 px. A user's mask drawn on a photo is
/// off by a similar fraction of the picture whatever its resolution, and
/// the band must cover that error plus the soft edge itself.
pub fn band_radius(width: usize, height: usize) -> f32 {
    (width.min(height) as f32 * 0.02).max(6.0)
}

/// Derives a trimap from a keep-mask (binarised at 128): pixels within
/// `radius` of the mask's edge, on either side, are unknown; the rest keeps
/// the mask's verdict.
pub fn derive_trimap(mask: &GrayImage, radius: f32) -> Trimap {
    let inside = binarise(mask, true);
    let outside = binarise(mask, false);
    // Squared distance of each pixel to the nearest pixel of the other side.
    let to_inside = euclidean_squared_distance_transform(&inside);
    let to_outside = euclidean_squared_distance_transform(&outside);
    let limit = f64::from(radius * radius);
    let values = mask
        .as_raw()
        .iter()
        .zip(to_inside.as_raw())
        .zip(to_outside.as_raw())
        .map(|((&m, &d_in), &d_out)| {
            let keep = m >= 128;
            let distance = if keep { d_out } else { d_in };
            if distance <= limit {
                UNKNOWN
            } else if keep {
                FOREGROUND
            } else {
                BACKGROUND
            }
        })
        .collect();
    Trimap {
        width: mask.width() as usize,
        height: mask.height() as usize,
        values,
    }
}

/// 255 where the mask says `keep` (threshold 128), else 0.
fn binarise(mask: &GrayImage, keep: bool) -> GrayImage {
    GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        Luma([if (mask.get_pixel(x, y).0[0] >= 128) == keep {
            255
        } else {
            0
        }])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square_mask(n: u32, lo: u32, hi: u32) -> GrayImage {
        GrayImage::from_fn(n, n, |x, y| {
            Luma([if (lo..hi).contains(&x) && (lo..hi).contains(&y) {
                255
            } else {
                0
            }])
        })
    }

    #[test]
    fn band_straddles_the_mask_edge() {
        let trimap = derive_trimap(&square_mask(100, 30, 70), 5.0);
        let at = |x: usize, y: usize| trimap.values[y * 100 + x];
        assert_eq!(at(50, 50), FOREGROUND);
        assert_eq!(at(5, 5), BACKGROUND);
        assert_eq!(at(30, 50), UNKNOWN);
        assert_eq!(at(29, 50), UNKNOWN);
        assert_eq!(at(34, 50), UNKNOWN);
        assert_eq!(at(25, 50), UNKNOWN);
        assert_eq!(at(36, 50), FOREGROUND);
        assert_eq!(at(23, 50), BACKGROUND);
    }

    #[test]
    fn empty_and_full_masks_have_no_band() {
        assert_eq!(
            derive_trimap(&square_mask(20, 0, 0), 4.0).unknown_count(),
            0
        );
        assert!(
            derive_trimap(&square_mask(20, 0, 20), 4.0)
                .values
                .iter()
                .all(|&v| v == FOREGROUND)
        );
    }

    #[test]
    fn downsampling_keeps_the_band_covered() {
        let trimap = derive_trimap(&square_mask(64, 20, 44), 3.0);
        let coarse = trimap.downsample();
        assert_eq!((coarse.width, coarse.height), (32, 32));
        for y in 0..64 {
            for x in 0..64 {
                if trimap.values[y * 64 + x] == UNKNOWN {
                    assert_eq!(coarse.values[(y / 2) * 32 + x / 2], UNKNOWN);
                }
            }
        }
    }
}
