//! Quality measures of the engines' outputs against ground truth.

use image::{GrayImage, RgbImage};

/// Sum of absolute alpha differences over the flagged pixels, in thousands
/// (the unit of the alphamatting.com benchmark).
pub fn alpha_sad(estimate: &[f32], truth: &[f32], region: impl Fn(usize) -> bool) -> f64 {
    (0..truth.len())
        .filter(|&i| region(i))
        .map(|i| f64::from((estimate[i] - truth[i]).abs()))
        .sum::<f64>()
        / 1000.0
}

/// The strand pixels `mask` leaves out: true alpha at least 0.6, 3 px or
/// more outside the mask.
pub fn strands_past_mask(truth: &[f32], mask: &GrayImage) -> Vec<usize> {
    let signed = crate::matting::signed_distance(mask);
    (0..truth.len())
        .filter(|&i| truth[i] >= 0.6 && signed[i] <= -3.0)
        .collect()
}

/// Share of `pixels` that `alpha` keeps, at more than 0.3 (0 for none).
pub fn share_kept(alpha: &[f32], pixels: &[usize]) -> f64 {
    let kept = pixels.iter().filter(|&&i| alpha[i] > 0.3).count();
    kept as f64 / pixels.len().max(1) as f64
}

/// Mean squared alpha difference over the flagged pixels, times 1000.
pub fn alpha_mse(estimate: &[f32], truth: &[f32], region: impl Fn(usize) -> bool) -> f64 {
    let (sum, n) = (0..truth.len())
        .filter(|&i| region(i))
        .map(|i| f64::from(estimate[i] - truth[i]).powi(2))
        .fold((0.0, 0usize), |(s, n), d| (s + d, n + 1));
    1000.0 * sum / n.max(1) as f64
}

/// PSNR in dB of `estimate` against `truth` over the pixels where `mask`
/// is non-zero.
pub fn psnr_in_mask(estimate: &RgbImage, truth: &RgbImage, mask: &GrayImage) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for ((e, t), m) in estimate.pixels().zip(truth.pixels()).zip(mask.pixels()) {
        if m.0[0] != 0 {
            for c in 0..3 {
                sum += (f64::from(e.0[c]) - f64::from(t.0[c])).powi(2);
            }
            n += 3;
        }
    }
    let mse = sum / n.max(1) as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-10)).log10()
}

/// Gradient energy of `estimate` inside the mask divided by that of
/// `truth`: about 1 when the fill is as textured as the original, near 0
/// for a blur. Forward differences, counted where both pixels are inside.
pub fn gradient_energy_ratio(estimate: &RgbImage, truth: &RgbImage, mask: &GrayImage) -> f64 {
    let energy = |image: &RgbImage| squared_gradients(image, mask).sum::<f64>();
    energy(estimate) / energy(truth).max(1e-10)
}

/// Mean gradient magnitude of `estimate` inside the mask divided by that
/// of `truth`: 1 when the fill is as textured as the original, near 0 for
/// a blur. Unlike [`gradient_energy_ratio`] it is not dominated by the few
/// strongest edges. Forward differences, counted where both pixels are
/// inside.
pub fn gradient_ratio(estimate: &RgbImage, truth: &RgbImage, mask: &GrayImage) -> f64 {
    let total = |image: &RgbImage| squared_gradients(image, mask).map(f64::sqrt).sum::<f64>();
    total(estimate) / total(truth).max(1e-10)
}

/// The squared colour gradient (forward differences, summed over the
/// channels) at every pixel whose right and lower neighbours are, like
/// itself, inside the mask.
fn squared_gradients<'a>(
    image: &'a RgbImage,
    mask: &'a GrayImage,
) -> impl Iterator<Item = f64> + 'a {
    let (w, h) = image.dimensions();
    let inside = move |x: u32, y: u32| mask.get_pixel(x, y).0[0] != 0;
    (0..h.saturating_sub(1))
        .flat_map(move |y| (0..w.saturating_sub(1)).map(move |x| (x, y)))
        .filter(move |&(x, y)| inside(x, y) && inside(x + 1, y) && inside(x, y + 1))
        .map(move |(x, y)| {
            let p = image.get_pixel(x, y).0;
            let r = image.get_pixel(x + 1, y).0;
            let d = image.get_pixel(x, y + 1).0;
            (0..3)
                .map(|c| {
                    (f64::from(r[c]) - f64::from(p[c])).powi(2)
                        + (f64::from(d[c]) - f64::from(p[c])).powi(2)
                })
                .sum()
        })
}

/// The image with every masked pixel set to the mean colour of the pixels
/// bordering the mask: the trivial fill any method must beat.
pub fn flat_fill(image: &RgbImage, mask: &GrayImage) -> RgbImage {
    let (w, h) = image.dimensions();
    let mut sum = [0.0f64; 3];
    let mut n = 0.0;
    for (x, y, m) in mask.enumerate_pixels() {
        if m.0[0] != 0 {
            continue;
        }
        let near = [(-1i64, 0i64), (1, 0), (0, -1), (0, 1)]
            .iter()
            .any(|(dx, dy)| {
                let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                (0..w as i64).contains(&nx)
                    && (0..h as i64).contains(&ny)
                    && mask.get_pixel(nx as u32, ny as u32).0[0] != 0
            });
        if near {
            let p = image.get_pixel(x, y).0;
            (0..3).for_each(|c| sum[c] += f64::from(p[c]));
            n += 1.0;
        }
    }
    let mean = sum.map(|s| (s / f64::max(n, 1.0)).round() as u8);
    let mut out = image.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        if mask.get_pixel(x, y).0[0] != 0 {
            p.0 = mean;
        }
    }
    out
}
