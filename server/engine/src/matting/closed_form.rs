//! Closed-form matting (Levin et al. 2008): alpha at the unknown pixels
//! minimises `αᵀ L α` with the trimap's sure pixels fixed, i.e. solves
//! `L_uu α_u = −L_uk α_k`, by conjugate gradients preconditioned with an
//! incomplete Cholesky factor, coarse to fine.
//!
//! The solve at each level starts from the bilinearly upsampled solution of
//! the half-resolution problem, so the fine levels only correct details and
//! need few iterations; the coarsest level, small by construction, is
//! solved tightly. Levels whose unknown band is too large to solve
//! affordably take the fast path instead: the upsampled alpha refined by a
//! guided filter.

use rayon::prelude::*;

use super::guided::guided_filter;
use super::laplacian::MattingLaplacian;
use super::stencil::{CENTRE, IncompleteCholesky, SLOTS};
use super::trimap::{Trimap, UNKNOWN};
use crate::planes::{ColorPlane, box_mean, dot, halve, resize_bilinear};

/// Solve without a coarser level below this many unknown pixels.
const DIRECT_UNKNOWN: usize = 6_000;
/// Only halve an image whose shorter side is at least twice this.
const MIN_SIDE: usize = 48;
/// Levels with more unknown pixels than this take the guided-filter path.
const MAX_SOLVED_UNKNOWN: usize = 1_500_000;
/// Upsampled alpha this close to 0 or 1 counts as settled.
const SETTLED: f32 = 0.02;
/// A pixel stays open if any pixel this close has unsettled alpha.
const SETTLED_REACH: usize = 3;
/// Iteration cap and relative tolerance of the coarsest solve.
const COARSEST: Solve = Solve {
    max_iterations: 400,
    tolerance: 1e-4,
};
/// Iteration cap and relative tolerance of the refining solves.
const REFINE: Solve = Solve {
    max_iterations: 300,
    tolerance: 3e-4,
};

/// When a conjugate-gradient solve stops.
#[derive(Debug, Clone, Copy)]
struct Solve {
    max_iterations: usize,
    tolerance: f64,
}

/// A soft pull of each unknown pixel's alpha towards a target: the energy
/// becomes `αᵀ L α + Σ wᵢ (αᵢ − tᵢ)²`. With the user's mask as target and
/// weights growing away from its edge, the mask is trusted where it is
/// probably right and the image decides where it is probably wrong.
#[derive(Debug, Clone)]
pub struct Prior {
    /// Target alpha per pixel.
    pub target: Vec<f32>,
    /// Weight per pixel (0 = no pull).
    pub weight: Vec<f32>,
}

impl Prior {
    /// Halves both sides: targets are averaged over 2×2 blocks and weights
    /// summed, since a coarse pixel stands for four fine ones while the
    /// Laplacian's energy (a squared gradient times an area) is unchanged
    /// by the scale.
    fn downsample(&self, width: usize, height: usize) -> Prior {
        let mean = |children: &mut dyn Iterator<Item = f32>| {
            let (s, n) = children.fold((0.0, 0.0), |(s, n), v| (s + v, n + 1.0));
            s / n
        };
        let sum = |children: &mut dyn Iterator<Item = f32>| children.sum();
        let (target, _, _) = halve(&self.target, width, height, mean);
        let (weight, _, _) = halve(&self.weight, width, height, sum);
        Prior { target, weight }
    }
}

/// Alpha (`0..=1`, one per pixel) for `image` given `trimap`.
pub fn closed_form_alpha(image: &ColorPlane, trimap: &Trimap) -> Vec<f32> {
    prior_alpha(image, trimap, None)
}

/// [`closed_form_alpha`] with an optional [`Prior`] on the unknown pixels.
pub fn prior_alpha(image: &ColorPlane, trimap: &Trimap, prior: Option<&Prior>) -> Vec<f32> {
    let unknown = trimap.unknown_count();
    let mut alpha = trimap.initial_alpha();
    if unknown == 0 {
        return alpha;
    }
    let (w, h) = (image.width, image.height);
    if unknown > DIRECT_UNKNOWN && w.min(h) >= 2 * MIN_SIDE {
        let coarse_image = image.downsample();
        let coarse_prior = prior.map(|p| p.downsample(w, h));
        let coarse = prior_alpha(&coarse_image, &trimap.downsample(), coarse_prior.as_ref());
        let up = resize_bilinear(&coarse, coarse_image.width, coarse_image.height, w, h);
        for (a, (u, t)) in alpha.iter_mut().zip(up.iter().zip(&trimap.values)) {
            if *t == UNKNOWN {
                *a = *u;
            }
        }
        if unknown > MAX_SOLVED_UNKNOWN {
            refine_with_guided_filter(image, trimap, &mut alpha);
            return alpha;
        }
        let open = settled_excluded(&mut alpha, trimap, w, h);
        solve_unknown(image, &open, prior, &mut alpha, REFINE);
    } else {
        let open: Vec<bool> = trimap.values.iter().map(|&t| t == UNKNOWN).collect();
        solve_unknown(image, &open, prior, &mut alpha, COARSEST);
    }
    alpha
}

/// Solves alpha again on the pixels flagged in `region` alone, at full
/// resolution, every other pixel held at its value in `alpha` (which also
/// gives the region's starting values): a narrow second pass over pixels
/// reopened after a first solve.
pub fn refine_region(image: &ColorPlane, region: &[bool], alpha: &mut [f32]) {
    solve_unknown(image, region, None, alpha, REFINE);
}

/// The unknown pixels still worth solving at a fine level: those with some
/// upsampled alpha strictly between [`SETTLED`] and `1 − SETTLED` within
/// [`SETTLED_REACH`] pixels; the others are snapped to 0 or 1. Where the
/// coarse solution is flat 0 or 1 all around, the fine one is too, and fixing those pixels shrinks the system
/// to the actual transition zone, which is what makes the fine solves cheap.
fn settled_excluded(alpha: &mut [f32], trimap: &Trimap, w: usize, h: usize) -> Vec<bool> {
    let fractional: Vec<f32> = alpha
        .iter()
        .map(|&a| {
            if a > SETTLED && a < 1.0 - SETTLED {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let near = box_mean(&fractional, w, h, SETTLED_REACH);
    let open: Vec<bool> = trimap
        .values
        .iter()
        .zip(&near)
        .map(|(&t, &n)| t == UNKNOWN && n > 0.0)
        .collect();
    // Settled pixels are fixed at exactly 0 or 1, not at the upsampled
    // value, which would leave a faint haze of 1–5/255 across the band.
    for ((a, &t), &o) in alpha.iter_mut().zip(&trimap.values).zip(&open) {
        if t == UNKNOWN && !o {
            *a = a.round();
        }
    }
    open
}

/// The fast path: a guided filter turns the upsampled coarse alpha into one
/// that follows the full-resolution edges.
fn refine_with_guided_filter(image: &ColorPlane, trimap: &Trimap, alpha: &mut [f32]) {
    // Above a few megapixels the filter's coefficients are computed at half
    // resolution: a quarter of the memory, and the output still follows
    // full-resolution edges.
    let halvings = u32::from(image.width * image.height > 4_000_000);
    let refined = guided_filter(image, alpha, 4, 1e-5, halvings);
    for (a, (r, t)) in alpha.iter_mut().zip(refined.iter().zip(&trimap.values)) {
        if *t == UNKNOWN {
            *a = r.clamp(0.0, 1.0);
        }
    }
}

/// Conjugate gradients preconditioned by incomplete Cholesky on the
/// `unknown` pixels, starting from the values already in `alpha` (which also
/// holds the fixed values of all others); the result is clamped to `0..=1`.
fn solve_unknown(
    image: &ColorPlane,
    unknown: &[bool],
    prior: Option<&Prior>,
    alpha: &mut [f32],
    solve: Solve,
) {
    let laplacian = MattingLaplacian::new(image, unknown);
    let active = laplacian.active();
    let n = active.len();
    if n == 0 {
        return;
    }
    let (mut a, mut b) = laplacian.assemble(alpha);
    if let Some(prior) = prior {
        for (row, &i) in active.iter().enumerate() {
            let (w, t) = (prior.weight[i as usize], prior.target[i as usize]);
            a.values[row * SLOTS + CENTRE] += w;
            b[row] += w * t;
        }
    }
    let preconditioner = IncompleteCholesky::new(&a);
    let mut x: Vec<f32> = active.iter().map(|&i| alpha[i as usize]).collect();
    let mut r = vec![0.0f32; n];
    a.apply(&x, &mut r);
    r.par_iter_mut()
        .zip(b.par_iter())
        .for_each(|(r, b)| *r = b - *r);
    let norm_b = dot(&b, &b).sqrt().max(1e-30);
    let mut z = vec![0.0f32; n];
    preconditioner.solve(&a, &r, &mut z);
    let mut p = z.clone();
    let mut rz = dot(&r, &z);
    let mut ap = vec![0.0f32; n];
    let mut iterations = 0;
    while iterations < solve.max_iterations && dot(&r, &r).sqrt() > solve.tolerance * norm_b {
        a.apply(&p, &mut ap);
        let pap = dot(&p, &ap);
        if pap <= 0.0 {
            // Only an indefinite system gets here (it should not: L_uu is
            // positive semi-definite); keep the best iterate so far.
            tracing::warn!(iterations, "closed-form solve stopped: p·Ap = {pap}");
            break;
        }
        let step = (rz / pap) as f32;
        x.par_iter_mut()
            .zip(p.par_iter())
            .for_each(|(x, p)| *x += step * p);
        r.par_iter_mut()
            .zip(ap.par_iter())
            .for_each(|(r, ap)| *r -= step * ap);
        preconditioner.solve(&a, &r, &mut z);
        let rz_next = dot(&r, &z);
        let beta = (rz_next / rz) as f32;
        rz = rz_next;
        p.par_iter_mut()
            .zip(z.par_iter())
            .for_each(|(p, z)| *p = z + beta * *p);
        iterations += 1;
    }
    tracing::debug!(
        unknown = n,
        iterations,
        width = image.width,
        "closed-form level solved"
    );
    for (&i, v) in active.iter().zip(&x) {
        alpha[i as usize] = v.clamp(0.0, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matting::trimap::derive_trimap;
    use crate::synthetic::{MattingStyle, coarsen_mask, matting_scene};

    /// SAD of `alpha` and of the mask taken as alpha, against `truth`.
    fn sads(alpha: &[f32], mask: &image::GrayImage, truth: &[f32]) -> (f32, f32) {
        let sad = alpha.iter().zip(truth).map(|(a, b)| (a - b).abs()).sum();
        let mask_sad = mask
            .as_raw()
            .iter()
            .zip(truth)
            .map(|(m, b)| (f32::from(*m) / 255.0 - b).abs())
            .sum();
        (sad, mask_sad)
    }

    #[test]
    fn solves_a_small_scene_to_finite_alpha_close_to_the_truth() {
        let scene = matting_scene(MattingStyle::Soft, 800, 600, 1);
        let mask = coarsen_mask(&scene.alpha, 800, 600, 3.0, 2);
        let trimap = derive_trimap(&mask, 16.0);
        let alpha = closed_form_alpha(&ColorPlane::from_rgb(&scene.image), &trimap);
        assert!(alpha.iter().all(|a| a.is_finite()));
        let (sad, mask_sad) = sads(&alpha, &mask, &scene.alpha);
        assert!(sad < 0.8 * mask_sad, "SAD {sad} vs mask {mask_sad}");
    }

    #[test]
    fn grey_images_are_matted() {
        // R = G = B everywhere: every window covariance is singular but for
        // the regulariser (the coefficients themselves are checked against
        // the formula in laplacian.rs).
        let scene = matting_scene(MattingStyle::Soft, 400, 300, 1);
        let grey = image::RgbImage::from_fn(400, 300, |x, y| {
            let p = scene.image.get_pixel(x, y).0;
            let v = ((u32::from(p[0]) * 3 + u32::from(p[1]) * 6 + u32::from(p[2])) / 10) as u8;
            image::Rgb([v, v, v])
        });
        let mask = coarsen_mask(&scene.alpha, 400, 300, 3.0, 2);
        let trimap = derive_trimap(&mask, 10.0);
        let image = ColorPlane::from_rgb(&grey);
        let alpha = closed_form_alpha(&image, &trimap);
        let (sad, mask_sad) = sads(&alpha, &mask, &scene.alpha);
        assert!(sad < 0.9 * mask_sad, "SAD {sad} vs mask {mask_sad}");
    }
}
