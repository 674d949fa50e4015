//! The guided filter of He, Sun and Tang (2013) with a colour guide: an
//! edge-preserving smoothing whose output is locally an affine function of
//! the guide's colours. Used to refine an alpha upsampled from a coarse
//! solve (the fast path) and, on its own, as a baseline matte.

use rayon::prelude::*;

use crate::planes::{
    ColorPlane, box_mean, halve, invert_symmetric3, mul_symmetric3, resize_bilinear,
};

/// Filters `input` (one value per pixel of `guide`) over square windows of
/// the given `radius`, with regulariser `epsilon` on `0..=1` colours.
///
/// Coefficients are computed at 1/2^`halvings` of the resolution and
/// upsampled (the "fast guided filter"), which keeps memory and time
/// proportional to the reduced image; the output keeps full-resolution
/// edges because the final `a·I + b` uses the full-resolution guide.
pub fn guided_filter(
    guide: &ColorPlane,
    input: &[f32],
    radius: usize,
    epsilon: f32,
    halvings: u32,
) -> Vec<f32> {
    let (w, h) = (guide.width, guide.height);
    let mut small_guide = guide.clone();
    let mut small_input = input.to_vec();
    for _ in 0..halvings {
        small_input = downsample_scalar(&small_input, small_guide.width, small_guide.height);
        small_guide = small_guide.downsample();
    }
    let r = (radius >> halvings).max(1);
    let (sw, sh) = (small_guide.width, small_guide.height);
    let n = sw * sh;

    // The thirteen window means the coefficients need: I, p, I·p, I·Iᵀ.
    let channel = |f: &(dyn Fn(usize) -> f32 + Sync)| {
        let plane: Vec<f32> = (0..n).into_par_iter().map(f).collect();
        box_mean(&plane, sw, sh, r)
    };
    let px = &small_guide.pixels;
    let p = &small_input;
    let mean_i: [Vec<f32>; 3] = std::array::from_fn(|c| channel(&|i| px[i][c]));
    let mean_p = channel(&|i| p[i]);
    let mean_ip: [Vec<f32>; 3] = std::array::from_fn(|c| channel(&|i| px[i][c] * p[i]));
    const PAIRS: [(usize, usize); 6] = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)];
    let mean_ii: [Vec<f32>; 6] =
        std::array::from_fn(|k| channel(&|i| px[i][PAIRS[k].0] * px[i][PAIRS[k].1]));

    let coefficients: Vec<[f32; 4]> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mu = [mean_i[0][i], mean_i[1][i], mean_i[2][i]];
            let mut sigma: [f32; 6] =
                std::array::from_fn(|k| mean_ii[k][i] - mu[PAIRS[k].0] * mu[PAIRS[k].1]);
            sigma[0] += epsilon;
            sigma[3] += epsilon;
            sigma[5] += epsilon;
            let cov_ip: [f32; 3] = std::array::from_fn(|c| mean_ip[c][i] - mu[c] * mean_p[i]);
            let a = mul_symmetric3(&invert_symmetric3(sigma), cov_ip);
            let b = mean_p[i] - a[0] * mu[0] - a[1] * mu[1] - a[2] * mu[2];
            [a[0], a[1], a[2], b]
        })
        .collect();
    let smoothed: [Vec<f32>; 4] = std::array::from_fn(|c| {
        let plane: Vec<f32> = coefficients.iter().map(|v| v[c]).collect();
        let mean = box_mean(&plane, sw, sh, r);
        if halvings == 0 {
            mean
        } else {
            resize_bilinear(&mean, sw, sh, w, h)
        }
    });
    guide
        .pixels
        .par_iter()
        .enumerate()
        .map(|(i, c)| {
            smoothed[0][i] * c[0] + smoothed[1][i] * c[1] + smoothed[2][i] * c[2] + smoothed[3][i]
        })
        .collect()
}

/// Halves a scalar plane (rounding up) by averaging 2×2 blocks.
fn downsample_scalar(plane: &[f32], width: usize, height: usize) -> Vec<f32> {
    halve(plane, width, height, |children| {
        let (sum, n) = children.fold((0.0, 0.0), |(s, n), v| (s + v, n + 1.0));
        sum / n
    })
    .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guided_filter_keeps_an_edge_the_guide_has() {
        let (w, h) = (40, 20);
        let guide = ColorPlane {
            width: w,
            height: h,
            pixels: (0..w * h)
                .map(|i| if i % w < 20 { [0.1; 3] } else { [0.9; 3] })
                .collect(),
        };
        let input: Vec<f32> = (0..w * h)
            .map(|i| if i % w < 23 { 0.0 } else { 1.0 })
            .collect();
        let out = guided_filter(&guide, &input, 4, 1e-4, 0);
        let row = &out[10 * w..11 * w];
        // The step moves to where the guide has its edge, and stays sharp.
        assert!(row[19] < 0.05 && row[20] - row[19] > 0.25, "{row:?}");
    }
}
