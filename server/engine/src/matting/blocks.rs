//! Masks drawn on a coarse grid: a mask made at low resolution and
//! enlarged by repeating pixels (a segmentation model's output, a mask
//! painted on a thumbnail) changes only on the lines of a `k`-pixel grid,
//! and its outline can be anywhere up to `k` pixels from the object's
//! edge. Telling that from the mask alone lets the band cover the whole
//! of that uncertainty without widening it for masks drawn at full
//! resolution, which a wider band only harms.

use image::GrayImage;

/// Largest grid spacing looked for.
const LARGEST_BLOCK: usize = 32;
/// Fewest outline crossings, along rows and along columns each, on which a
/// grid is believed: a small mask lands on some grid by chance.
const MIN_CROSSINGS: usize = 16;
/// Fewest distinct grid lines the crossings must lie on, along rows and
/// along columns each: a drawn rectangle's two sides lie on some grid
/// whatever their spacing, which says nothing of a block size.
const MIN_LINES: usize = 4;
/// Share of the crossings that must lie on the grid's lines; a little
/// slack lets a few hand touch-ups through.
const ON_GRID: f64 = 0.98;

/// The spacing `k` (2–32 px) of the grid whose lines carry the mask's
/// outline, with the grid free to start anywhere, or `None` when the mask
/// changes between arbitrary pixels, as one drawn at full resolution does.
/// The mask is binarised at 128.
pub fn block_size(mask: &GrayImage) -> Option<usize> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let inside: Vec<bool> = mask.as_raw().iter().map(|&v| v >= 128).collect();
    // A crossing between columns x−1 and x is recorded as x; between rows
    // y−1 and y as y.
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let here = inside[y * w + x];
            if x > 0 && inside[y * w + x - 1] != here {
                columns.push(x);
            }
            if y > 0 && inside[(y - 1) * w + x] != here {
                rows.push(y);
            }
        }
    }
    if columns.len() < MIN_CROSSINGS || rows.len() < MIN_CROSSINGS {
        return None;
    }
    if distinct(&columns) < MIN_LINES || distinct(&rows) < MIN_LINES {
        return None;
    }
    (2..=LARGEST_BLOCK)
        .rev()
        .find(|&k| on_one_grid(&columns, k) && on_one_grid(&rows, k))
}

/// How many different values `positions` holds.
fn distinct(positions: &[usize]) -> usize {
    let mut sorted = positions.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.len()
}

/// Whether nearly all `positions` share one remainder modulo `k`.
fn on_one_grid(positions: &[usize], k: usize) -> bool {
    let mut counts = vec![0usize; k];
    for &p in positions {
        counts[p % k] += 1;
    }
    let most = counts.into_iter().max().unwrap_or(0);
    most as f64 >= ON_GRID * positions.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    /// A disc of radius 60 centred at (100, 90), with every pixel taking the
    /// value of the `k`-block it falls in, the blocks starting at `offset`.
    fn disc(k: u32, offset: u32) -> GrayImage {
        GrayImage::from_fn(200, 180, |x, y| {
            let snap = |v: u32| {
                if k <= 1 {
                    v as f32
                } else {
                    (((v + k - offset) / k) * k) as f32 - (k - offset) as f32 + k as f32 / 2.0
                }
            };
            let (dx, dy) = (snap(x) - 100.0, snap(y) - 90.0);
            Luma([if dx * dx + dy * dy <= 3600.0 { 255 } else { 0 }])
        })
    }

    #[test]
    fn a_mask_enlarged_from_a_coarse_grid_is_told_by_its_spacing() {
        assert_eq!(block_size(&disc(8, 0)), Some(8));
        assert_eq!(block_size(&disc(8, 3)), Some(8));
        assert_eq!(block_size(&disc(4, 1)), Some(4));
        assert_eq!(block_size(&disc(16, 5)), Some(16));
    }

    #[test]
    fn a_mask_drawn_at_full_resolution_has_no_grid() {
        assert_eq!(block_size(&disc(1, 0)), None);
        assert_eq!(block_size(&GrayImage::new(50, 50)), None);
        // A drawn box: its sides are 200 and 120 px apart, multiples of 8,
        // 10, 20 and 25, and still no grid.
        let boxed = GrayImage::from_fn(400, 300, |x, y| {
            Luma([if (100..300).contains(&x) && (90..210).contains(&y) {
                255
            } else {
                0
            }])
        });
        assert_eq!(block_size(&boxed), None);
    }
}
