//! Band pixels the surrounding background explains: the sure background
//! around them is nearly flat, their colour lies within its spread and does
//! not lean towards the sure foreground nearby (if any), which is clearly
//! another colour. They are fixed at alpha 0 before the solve, as boundary
//! values of their own.
//!
//! Without this, a flat background between thin strands is "anything goes"
//! for the matting Laplacian (every alpha fits a flat window), so the mask's
//! pull and the smoothness spread a fog of partial alpha over it: light
//! strands over a flat sky with a mask drawn around them came out worse
//! than the mask itself. A global snap of small alphas did nothing, as the
//! fog is not small; a local test of the colour is what tells sky from
//! strand.

use super::trimap::{BACKGROUND, FOREGROUND, Trimap, UNKNOWN};
use crate::planes::{Blocks, ColorPlane};

/// Mahalanobis distance within which a colour counts as the background's.
const WITHIN: f32 = 2.5;
/// How far (in the background's own spread) the foreground's mean colour
/// must be from the background's for the test to be trusted at all.
const SEPARATED: f32 = 4.0;
/// Share of the window that must be sure background for its statistics to
/// describe this pixel's surroundings.
const MIN_BACKGROUND_SHARE: f32 = 0.2;
/// Share of the window that must be sure foreground for its mean colour to
/// count (else the foreground is not near enough to judge against).
const MIN_FOREGROUND_SHARE: f32 = 0.05;
/// The most the background may vary (the square root of its channels'
/// summed variances, colours in 0..1) for the test to apply. Over a busy background the matting
/// Laplacian has the image's own structure to go by, and a faint strand's
/// colour falls within the background's spread: clearing there lost
/// strands (a hair composite went from 0.83 to 0.90 of the mask's SAD).
const FLAT: f32 = 0.12;
/// The most a cleared pixel may lean from the background's mean colour
/// towards the foreground's, as a fraction of the way: a soft edge's faint
/// alpha is within the background's spread, but leans.
const MAX_ALPHA: f32 = 0.03;
/// Noise floor of the background's spread, per channel (colours in 0..1):
/// about two levels of eight-bit noise, so a perfectly flat background does
/// not make every other colour infinitely far.
const NOISE: f32 = 2.0 / 255.0;

/// Marks as [`BACKGROUND`] the unknown pixels of `trimap` whose colour the
/// sure background within `radius` explains, except those `keep` names.
/// Returns how many were marked.
pub fn clear_confident_background(
    image: &ColorPlane,
    trimap: &mut Trimap,
    radius: usize,
    keep: &dyn Fn(usize) -> bool,
) -> usize {
    let (w, h) = (image.width, image.height);
    // The window's statistics vary slowly: they are gathered on blocks of
    // `step`² pixels and box-filtered at that scale, a sixteenth of the
    // work of filtering every plane at full size (which had doubled the
    // matte's time).
    let step = (radius / 4).clamp(1, 8);
    let blocks = Blocks::new(w, h, step);
    // Per block: shares of background and foreground; the background's
    // sums of each channel and of each product of two; the foreground's
    // sums of each channel.
    const PAIRS: [(usize, usize); 6] = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)];
    let mut planes = vec![vec![0.0f32; blocks.len()]; 14];
    let mut counts = vec![0u32; blocks.len()];
    for (i, (p, &label)) in image.pixels.iter().zip(&trimap.values).enumerate() {
        let block = blocks.of(i);
        counts[block] += 1;
        if label == BACKGROUND {
            planes[0][block] += 1.0;
            for c in 0..3 {
                planes[2 + c][block] += p[c];
            }
            for (k, &(c, d)) in PAIRS.iter().enumerate() {
                planes[5 + k][block] += p[c] * p[d];
            }
        } else if label == FOREGROUND {
            planes[1][block] += 1.0;
            for c in 0..3 {
                planes[11 + c][block] += p[c];
            }
        }
    }
    let local: Vec<Vec<f32>> = planes
        .into_iter()
        .map(|mut plane| {
            for (v, &n) in plane.iter_mut().zip(&counts) {
                *v /= n.max(1) as f32;
            }
            blocks.box_mean(&plane, (radius / step).max(1))
        })
        .collect();
    let (share_b, share_f) = (&local[0], &local[1]);
    let mean_b = &local[2..5];
    let moments_b = &local[5..11];
    let mean_f = &local[11..14];
    let mut cleared = 0;
    for i in 0..w * h {
        let block = blocks.of(i);
        if trimap.values[i] != UNKNOWN || share_b[block] < MIN_BACKGROUND_SHARE || keep(i) {
            continue;
        }
        let n = share_b[block];
        let mu: [f32; 3] = std::array::from_fn(|c| mean_b[c][block] / n);
        let moment = |k: usize| moments_b[k][block] / n;
        let noise = NOISE * NOISE;
        let covariance = [
            [
                moment(0) - mu[0] * mu[0] + noise,
                moment(1) - mu[0] * mu[1],
                moment(2) - mu[0] * mu[2],
            ],
            [
                moment(1) - mu[0] * mu[1],
                moment(3) - mu[1] * mu[1] + noise,
                moment(4) - mu[1] * mu[2],
            ],
            [
                moment(2) - mu[0] * mu[2],
                moment(4) - mu[1] * mu[2],
                moment(5) - mu[2] * mu[2] + noise,
            ],
        ];
        let spread = (covariance[0][0] + covariance[1][1] + covariance[2][2] - 3.0 * noise)
            .max(0.0)
            .sqrt();
        if spread > FLAT {
            continue;
        }
        let Some(inverse) = invert(&covariance) else {
            continue;
        };
        let pixel = image.pixels[i];
        let distance =
            |x: [f32; 3]| mahalanobis(&inverse, [x[0] - mu[0], x[1] - mu[1], x[2] - mu[2]]);
        if distance(pixel) > WITHIN {
            continue;
        }
        if share_f[block] >= MIN_FOREGROUND_SHARE {
            let nf = share_f[block];
            let mu_f: [f32; 3] = std::array::from_fn(|c| mean_f[c][block] / nf);
            if distance(mu_f) < SEPARATED {
                continue;
            }
            // Where the pixel lies between the two: a soft edge's faint
            // alpha is within the background's spread, but not on its side
            // of the line to the foreground.
            let towards: [f32; 3] = std::array::from_fn(|c| mu_f[c] - mu[c]);
            let offset: [f32; 3] = std::array::from_fn(|c| pixel[c] - mu[c]);
            let along = (0..3).map(|c| towards[c] * offset[c]).sum::<f32>()
                / (0..3)
                    .map(|c| towards[c] * towards[c])
                    .sum::<f32>()
                    .max(1e-12);
            if along > MAX_ALPHA {
                continue;
            }
        }
        trimap.values[i] = BACKGROUND;
        cleared += 1;
    }
    cleared
}

/// `sqrt(vᵀ M v)`.
fn mahalanobis(inverse: &[[f32; 3]; 3], v: [f32; 3]) -> f32 {
    let sum: f32 = inverse
        .iter()
        .zip(v)
        .map(|(row, vr)| vr * row.iter().zip(v).map(|(m, vc)| m * vc).sum::<f32>())
        .sum();
    sum.max(0.0).sqrt()
}

/// The inverse of a symmetric 3×3 matrix, if it is not singular.
fn invert(m: &[[f32; 3]; 3]) -> Option<[[f32; 3]; 3]> {
    let cofactor =
        |r0: usize, r1: usize, c0: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    let c00 = cofactor(1, 2, 1, 2);
    let c01 = -cofactor(1, 2, 0, 2);
    let c02 = cofactor(1, 2, 0, 1);
    let det = m[0][0] * c00 + m[0][1] * c01 + m[0][2] * c02;
    if det.abs() < 1e-18 {
        return None;
    }
    let c10 = -cofactor(0, 2, 1, 2);
    let c11 = cofactor(0, 2, 0, 2);
    let c12 = -cofactor(0, 2, 0, 1);
    let c20 = cofactor(0, 1, 1, 2);
    let c21 = -cofactor(0, 1, 0, 2);
    let c22 = cofactor(0, 1, 0, 1);
    // The inverse is the transposed cofactor matrix over the determinant.
    Some([
        [c00 / det, c10 / det, c20 / det],
        [c01 / det, c11 / det, c21 / det],
        [c02 / det, c12 / det, c22 / det],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(width: usize, height: usize, colour: impl Fn(usize, usize) -> [f32; 3]) -> ColorPlane {
        ColorPlane {
            width,
            height,
            pixels: (0..width * height)
                .map(|i| colour(i % width, i / width))
                .collect(),
        }
    }

    /// Foreground in columns left of 20, unknown up to `unknown_end`,
    /// background beyond.
    fn columns(w: usize, h: usize, unknown_end: usize) -> Trimap {
        Trimap {
            width: w,
            height: h,
            values: (0..w * h)
                .map(|i| match i % w {
                    x if x < 20 => FOREGROUND,
                    x if x < unknown_end => UNKNOWN,
                    _ => BACKGROUND,
                })
                .collect(),
        }
    }

    #[test]
    fn the_inverse_times_the_matrix_is_the_identity() {
        let m = [[2.0, 0.5, 0.1], [0.5, 1.5, 0.2], [0.1, 0.2, 1.0]];
        let inv = invert(&m).unwrap();
        for (r, row) in m.iter().enumerate() {
            for c in 0..3 {
                let product: f32 = row.iter().zip(&inv).map(|(a, b)| a * b[c]).sum();
                let expected = if r == c { 1.0 } else { 0.0 };
                assert!((product - expected).abs() < 1e-5, "{r},{c}: {product}");
            }
        }
    }

    /// A flat sky with a one-pixel strand across it: the sky in the band is
    /// cleared, the strand is not, nor the foreground.
    #[test]
    fn flat_background_is_cleared_and_a_strand_over_it_is_not() {
        let (w, h) = (60, 40);
        let sky = [0.80, 0.85, 0.92];
        let strand = [0.85, 0.78, 0.65];
        let body = [0.90, 0.45, 0.20];
        let image = plane(w, h, |x, y| {
            if x < 20 {
                body
            } else if y == 20 {
                strand
            } else {
                sky
            }
        });
        // Foreground left of 20, unknown 20..40, background beyond.
        let mut trimap = columns(w, h, 40);
        let cleared = clear_confident_background(&image, &mut trimap, 12, &|_| false);
        assert!(cleared > 0);
        for x in 20..40 {
            assert_eq!(trimap.values[20 * w + x], UNKNOWN, "the strand at x={x}");
        }
        // Sky within reach of the background's window is cleared.
        assert_eq!(trimap.values[10 * w + 35], BACKGROUND);
    }

    /// Where the foreground is the background's colour, nothing can be told
    /// apart: nothing within the foreground's reach is cleared.
    #[test]
    fn nothing_is_cleared_where_the_foreground_looks_like_the_background() {
        let (w, h) = (60, 40);
        let grey = [0.5, 0.5, 0.5];
        let image = plane(w, h, |_, _| grey);
        let mut trimap = columns(w, h, 40);
        clear_confident_background(&image, &mut trimap, 12, &|_| false);
        // Windows of radius 12 around x < 32 hold some foreground (x < 20).
        for y in 0..h {
            for x in 20..31 {
                assert_eq!(trimap.values[y * w + x], UNKNOWN, "({x}, {y})");
            }
        }
    }

    /// A soft edge's faint alpha over a slightly grainy background is within
    /// the background's spread, but leans towards the foreground: it is
    /// left to the solve.
    #[test]
    fn a_faint_soft_edge_is_not_cleared() {
        let (w, h) = (80, 60);
        let sky = [0.60, 0.65, 0.70];
        let body = [0.05, 0.10, 0.10];
        // Alpha falls from 1 at x = 20 to 0 at x = 60.
        let alpha = |x: usize| (1.0 - (x as f32 - 20.0) / 40.0).clamp(0.0, 1.0);
        // Grain of ±0.08, fixed per pixel: a background within FLAT.
        let grain = |x: usize, y: usize| {
            let n = (x as u32).wrapping_mul(73_856_093) ^ (y as u32).wrapping_mul(19_349_663);
            (n % 1000) as f32 / 1000.0 * 0.16 - 0.08
        };
        let image = plane(w, h, |x, y| {
            let a = alpha(x);
            std::array::from_fn(|c| a * body[c] + (1.0 - a) * (sky[c] + grain(x, y)))
        });
        let mut trimap = columns(w, h, 60);
        clear_confident_background(&image, &mut trimap, 40, &|_| false);
        // Pixels of alpha 0.1 to 0.2, all within the background's reach.
        let faint: Vec<usize> = (0..w * h)
            .filter(|&i| (0.1..=0.2).contains(&alpha(i % w)))
            .collect();
        let cleared = faint
            .iter()
            .filter(|&&i| trimap.values[i] == BACKGROUND)
            .count();
        assert!(
            cleared * 10 < faint.len(),
            "{cleared} of {} faint pixels cleared",
            faint.len()
        );
    }
}
