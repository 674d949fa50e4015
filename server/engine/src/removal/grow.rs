//! Growing the removal mask by `kernel_size`.
//!
//! The kernel is a disk of diameter `kernel_size`: every pixel within
//! `kernel_size / 2` of the mask joins it. A disk grows the mask by the same
//! distance in every direction, where a square kernel would reach 41%
//! further along diagonals and cut square corners into the background
//! around round objects; shadows and sloppy mask edges are round-ish, so
//! the disk swallows them with the least background lost.

use image::{GrayImage, Luma};
use imageproc::distance_transform::euclidean_squared_distance_transform;

/// The mask binarised at 128 and grown by a disk of diameter `kernel_size`
/// (odd; 1 leaves it unchanged): 255 = fill.
pub fn grown_mask(mask: &GrayImage, kernel_size: u32) -> GrayImage {
    let binary = GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        Luma([if mask.get_pixel(x, y).0[0] >= 128 {
            255
        } else {
            0
        }])
    });
    if kernel_size <= 1 {
        return binary;
    }
    let reach = f64::from(kernel_size) / 2.0;
    let distance = euclidean_squared_distance_transform(&binary);
    GrayImage::from_raw(
        mask.width(),
        mask.height(),
        distance
            .as_raw()
            .iter()
            .map(|&d2| if d2 <= reach * reach { 255 } else { 0 })
            .collect(),
    )
    .expect("one value per pixel")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_one_keeps_the_mask_and_larger_kernels_grow_a_disk() {
        let mut mask = GrayImage::new(21, 21);
        mask.put_pixel(10, 10, Luma([200]));
        mask.put_pixel(0, 0, Luma([127]));
        let count = |m: &GrayImage| m.as_raw().iter().filter(|&&v| v == 255).count();
        assert_eq!(count(&grown_mask(&mask, 1)), 1);
        assert_eq!(count(&grown_mask(&mask, 3)), 9);
        let grown = grown_mask(&mask, 9);
        // Radius 4.5: the disk reaches 4 px along the axes, not (4, 4).
        assert_eq!(grown.get_pixel(14, 10).0[0], 255);
        assert_eq!(grown.get_pixel(15, 10).0[0], 0);
        assert_eq!(grown.get_pixel(14, 14).0[0], 0);
        assert_eq!(grown.get_pixel(13, 13).0[0], 255);
    }
}
