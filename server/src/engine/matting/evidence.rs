//! What the image says about the mask: how far the mask's outline lies from
//! the image's own edges decides how wide the unknown band must be, and how
//! far a pixel is from the outline decides how much the mask is trusted
//! there.
//!
//! A mask traced along the object (an exact mask) has the image's strongest
//! edges right on its outline; a rough one (blocky, dilated, eroded) has
//! them spread over or shifted to a few pixels beside it. The gradient
//! profile across the outline tells the two apart without being told which
//! kind of mask it is.

use image::{GrayImage, Luma};
use imageproc::distance_transform::euclidean_squared_distance_transform;

use super::trimap::{BACKGROUND, FOREGROUND, Trimap, UNKNOWN};
use crate::engine::planes::ColorPlane;

/// Narrowest band: the outline pixel on each side and one more, room for
/// an anti-aliased edge even when the mask is exact.
pub const MIN_BAND_RADIUS: f32 = 2.5;

/// Signed distance of each pixel to the outline of the mask (binarised at
/// 128), in pixels, positive inside: the pixels either side of the outline
/// are at ±0.5.
pub fn signed_distance(mask: &GrayImage) -> Vec<f32> {
    let inside = GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        Luma([if mask.get_pixel(x, y).0[0] >= 128 {
            255
        } else {
            0
        }])
    });
    let outside = GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        Luma([255 - inside.get_pixel(x, y).0[0]])
    });
    let to_inside = euclidean_squared_distance_transform(&inside);
    let to_outside = euclidean_squared_distance_transform(&outside);
    inside
        .as_raw()
        .iter()
        .zip(to_inside.as_raw().iter().zip(to_outside.as_raw()))
        .map(|(&k, (&d_in, &d_out))| {
            if k != 0 {
                d_out.sqrt() as f32 - 0.5
            } else {
                0.5 - d_in.sqrt() as f32
            }
        })
        .collect()
}

/// Colour gradient magnitude per pixel: central differences, summed in
/// quadrature over the channels (one-sided at the borders).
pub fn gradient_magnitude(image: &ColorPlane) -> Vec<f32> {
    let (w, h) = (image.width, image.height);
    let at = |x: usize, y: usize| image.pixels[y * w + x];
    (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            let (l, r) = (at(x.saturating_sub(1), y), at((x + 1).min(w - 1), y));
            let (u, d) = (at(x, y.saturating_sub(1)), at(x, (y + 1).min(h - 1)));
            let mut sum = 0.0;
            for c in 0..3 {
                let gx = (r[c] - l[c]) * 0.5;
                let gy = (d[c] - u[c]) * 0.5;
                sum += gx * gx + gy * gy;
            }
            sum.sqrt()
        })
        .collect()
}

/// The farthest the band may reach: 3% of the shorter side, at least 12 px.
pub fn max_band_radius(width: usize, height: usize) -> f32 {
    (width.min(height) as f32 * 0.03).max(12.0)
}

/// Half-width of the unknown band the image asks for: the mean gradient is
/// profiled across the outline, one bin per pixel of signed distance out
/// to `max_radius`, and the band covers the bins whose mean stands out at
/// least half as much as the peak's does from the far bins' level, walking
/// out from the peak, plus one pixel of margin.
pub fn edge_band_radius(gradient: &[f32], signed: &[f32], max_radius: f32) -> f32 {
    let reach = max_radius.ceil() as i32;
    let bins = (2 * reach) as usize;
    let mut sums = vec![(0.0f64, 0usize); bins];
    for (&g, &d) in gradient.iter().zip(signed) {
        let k = d.floor() as i32;
        if (-reach..reach).contains(&k) {
            let bin = &mut sums[(k + reach) as usize];
            bin.0 += f64::from(g);
            bin.1 += 1;
        }
    }
    if sums.iter().all(|(_, n)| *n == 0) {
        return MIN_BAND_RADIUS;
    }
    let profile: Vec<Option<f64>> = sums
        .iter()
        .map(|&(s, n)| (n > 0).then(|| s / n as f64))
        .collect();
    let far = |range: std::ops::Range<usize>| profile[range].iter().flatten().copied();
    let outer = (bins / 6).max(1);
    let (level, count) = far(0..outer)
        .chain(far(bins - outer..bins))
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    let level = level / count.max(1) as f64;
    let (peak_bin, peak) = profile
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (i, v)))
        .fold((reach as usize, f64::MIN), |best, (i, v)| {
            if v > best.1 { (i, v) } else { best }
        });
    let half = level + 0.5 * (peak - level);
    let stands_out = |i: usize| profile[i].is_some_and(|v| v >= half);
    let (mut lo, mut hi) = (peak_bin, peak_bin);
    while lo > 0 && stands_out(lo - 1) {
        lo -= 1;
    }
    while hi + 1 < bins && stands_out(hi + 1) {
        hi += 1;
    }
    // Bin i holds signed distances in [i − reach, i − reach + 1).
    let extent = |i: usize| {
        let d = i as f32 - reach as f32;
        d.abs().max((d + 1.0).abs())
    };
    (extent(lo).max(extent(hi)) + 1.0).clamp(MIN_BAND_RADIUS, max_radius)
}

/// The trimap of pixels within `radius` of the outline.
pub fn band_trimap(signed: &[f32], width: usize, height: usize, radius: f32) -> Trimap {
    Trimap {
        width,
        height,
        values: signed
            .iter()
            .map(|&d| {
                if d.abs() <= radius {
                    UNKNOWN
                } else if d > 0.0 {
                    FOREGROUND
                } else {
                    BACKGROUND
                }
            })
            .collect(),
    }
}
