//! Trimaps: which pixels are surely foreground, surely background, or
//! unknown, derived from the user's (possibly coarse) keep-mask.

use image::{GrayImage, Luma};
use imageproc::distance_transform::{Norm, euclidean_squared_distance_transform};
use imageproc::morphology::{close, open};

use crate::engine::planes::{box_mean, halve};

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

/// How far beyond an irregular stretch of outline the band reaches, in
/// multiples of the base radius.
const IRREGULAR_REACH: f32 = 3.0;

/// [`derive_trimap`], with the band widened to `IRREGULAR_REACH × radius`
/// around stretches where the outline is ragged: where the mask differs
/// from its morphological opening or closing by a disk of `radius`. Those
/// remove protrusions and fill gaps narrower than the disk (strands,
/// spikes, scribbled bits: exactly where a hand-drawn mask is least
/// trustworthy and the true edge may be far from the drawn one), while
/// straight edges and curves rounder than the disk are left alone and keep
/// the narrow band.
pub fn adaptive_trimap(mask: &GrayImage, radius: f32) -> Trimap {
    let mut trimap = derive_trimap(mask, radius);
    let (w, h) = (trimap.width, trimap.height);
    let keep = binarise(mask, true);
    let r = radius.round().clamp(1.0, 255.0) as u8;
    let opened = open(&keep, Norm::L2, r);
    let closed = close(&keep, Norm::L2, r);
    let irregular: Vec<f32> = keep
        .as_raw()
        .iter()
        .zip(opened.as_raw())
        .zip(closed.as_raw())
        .map(|((k, o), c)| if k != o || k != c { 1.0 } else { 0.0 })
        .collect();
    let reach = (radius * IRREGULAR_REACH).round() as usize;
    let near = box_mean(&irregular, w, h, reach);
    for (value, n) in trimap.values.iter_mut().zip(&near) {
        if *n > 0.0 {
            *value = UNKNOWN;
        }
    }
    trimap
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
    fn band_widens_around_ragged_outline_only() {
        // A square with a 2-px spike sticking out of its right side.
        let mut mask = square_mask(200, 50, 150);
        for x in 150..175 {
            for y in 99..101 {
                mask.put_pixel(x, y, Luma([255]));
            }
        }
        let plain = derive_trimap(&mask, 4.0);
        let adaptive = adaptive_trimap(&mask, 4.0);
        let at = |t: &Trimap, x: usize, y: usize| t.values[y * 200 + x];
        // Near the spike the band reaches 12 px out; along the left edge,
        // far from it, it stays 4 px.
        assert_eq!(at(&plain, 185, 100), BACKGROUND);
        assert_eq!(at(&adaptive, 185, 100), UNKNOWN);
        assert_eq!(at(&adaptive, 44, 100), BACKGROUND);
        assert_eq!(at(&adaptive, 47, 100), UNKNOWN);
        assert_eq!(at(&adaptive, 100, 100), FOREGROUND);
    }

    #[test]
    fn smooth_large_outlines_keep_the_narrow_band() {
        // A disc of radius 120 in 800×800 with the default radius (16 px):
        // no part of it is ragged.
        let mask = GrayImage::from_fn(800, 800, |x, y| {
            let (dx, dy) = (x as f32 - 400.0, y as f32 - 400.0);
            Luma([if dx * dx + dy * dy <= 120.0 * 120.0 {
                255
            } else {
                0
            }])
        });
        let radius = band_radius(800, 800);
        assert_eq!(
            adaptive_trimap(&mask, radius).unknown_count(),
            derive_trimap(&mask, radius).unknown_count()
        );
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
