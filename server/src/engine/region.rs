//! The region an object removal fills: the binarised mask grown by the
//! kernel, and the window of the image that matters for filling it.

use image::GrayImage;
use imageproc::distance_transform::Norm;
use imageproc::morphology::dilate;

/// Binarises `mask` at 128 and grows it with a `kernel_size`×`kernel_size`
/// square kernel (radius `kernel_size / 2`). Returns one flag per pixel,
/// `true` = to be filled.
pub(super) fn grown_hole(mask: &GrayImage, kernel_size: u32) -> Vec<bool> {
    let binary = GrayImage::from_raw(
        mask.width(),
        mask.height(),
        mask.as_raw()
            .iter()
            .map(|&m| if m >= 128 { 255 } else { 0 })
            .collect(),
    )
    .expect("one value per pixel");
    let radius = u8::try_from(kernel_size / 2).unwrap_or(u8::MAX);
    let grown = if radius == 0 {
        binary
    } else {
        dilate(&binary, Norm::LInf, radius)
    };
    grown.as_raw().iter().map(|&m| m != 0).collect()
}

/// A rectangle of pixels, `x0..x1` × `y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl Window {
    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.x1 - self.x0
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.y1 - self.y0
    }
}

/// The bounding box of the hole widened by a margin proportional to its
/// size, clipped to the image; `None` when there is no hole.
///
/// The harmonic fill only depends on the pixels bordering the hole, so any
/// margin of at least one pixel gives the same answer; a wider one gives the
/// coarse levels of the pyramid some context and costs little.
pub(super) fn working_window(hole: &[bool], width: usize, height: usize) -> Option<Window> {
    let mut bbox: Option<Window> = None;
    for (i, _) in hole.iter().enumerate().filter(|(_, h)| **h) {
        let (x, y) = (i % width, i / width);
        let b = bbox.get_or_insert(Window {
            x0: x,
            y0: y,
            x1: x + 1,
            y1: y + 1,
        });
        b.x0 = b.x0.min(x);
        b.x1 = b.x1.max(x + 1);
        b.y0 = b.y0.min(y);
        b.y1 = b.y1.max(y + 1);
    }
    let b = bbox?;
    let margin = 2 + b.width().max(b.height()) / 8;
    Some(Window {
        x0: b.x0.saturating_sub(margin),
        y0: b.y0.saturating_sub(margin),
        x1: (b.x1 + margin).min(width),
        y1: (b.y1 + margin).min(height),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_one_keeps_the_mask_and_larger_kernels_grow_it_squarely() {
        let mut mask = GrayImage::new(9, 9);
        mask.put_pixel(4, 4, image::Luma([200]));
        mask.put_pixel(0, 0, image::Luma([127]));
        let same = grown_hole(&mask, 1);
        assert_eq!(same.iter().filter(|h| **h).count(), 1);
        let grown = grown_hole(&mask, 5);
        assert_eq!(grown.iter().filter(|h| **h).count(), 25);
        assert!(grown[2 * 9 + 2] && grown[6 * 9 + 6] && !grown[9 + 4]);
    }

    #[test]
    fn window_covers_the_hole_with_a_margin_inside_the_image() {
        let mut hole = vec![false; 100 * 50];
        hole[10 * 100 + 20] = true;
        hole[30 * 100 + 60] = true;
        let w = working_window(&hole, 100, 50).unwrap();
        assert_eq!((w.x0, w.y0, w.x1, w.y1), (13, 3, 68, 38));
        assert!(working_window(&[false; 4], 2, 2).is_none());
    }
}
