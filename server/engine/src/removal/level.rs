//! What the completion works on: a pyramid level of the hole's window and
//! the square patches compared on it.

use crate::planes::{average, box_mean, halve};

/// Patches are `(2 · RADIUS + 1)²` pixels.
pub(super) const RADIUS: usize = 3;
/// Pixels per patch side.
pub(super) const SIDE: usize = 2 * RADIUS + 1;
/// Pixels per patch.
pub(super) const PATCH_PIXELS: usize = SIDE * SIDE;
/// No match.
pub(super) const NONE: u32 = u32::MAX;

/// One pyramid level: colours in `0..=255` and the hole.
#[derive(Debug, Clone)]
pub(super) struct Level {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<[f32; 3]>,
    pub hole: Vec<bool>,
}

impl Level {
    /// Halves both sides: a coarse pixel is in the hole when any of its
    /// children is, and otherwise averages them.
    pub(super) fn downsample(&self) -> Level {
        let (w, h) = (self.width, self.height);
        let (pixels, width, height) = halve(&self.pixels, w, h, average);
        let (hole, _, _) = halve(&self.hole, w, h, |mut children| {
            Iterator::any(&mut children, |h| h)
        });
        Level {
            width,
            height,
            pixels,
            hole,
        }
    }

    pub(super) fn index(&self, x: usize, y: usize) -> usize {
        y * self.width + x
    }
}

/// Mean colour of the patch centred at every pixel (clipped at borders).
pub(super) fn patch_means(level: &Level) -> Vec<[f32; 3]> {
    let (w, h) = (level.width, level.height);
    let channels: [Vec<f32>; 3] = std::array::from_fn(|c| {
        let plane: Vec<f32> = level.pixels.iter().map(|p| p[c]).collect();
        box_mean(&plane, w, h, RADIUS)
    });
    (0..w * h)
        .map(|i| [channels[0][i], channels[1][i], channels[2][i]])
        .collect()
}
