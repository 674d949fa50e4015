//! Strands that reach past the unknown band: hair and fur the mask left
//! out, followed from where they leave the mask along the image's own thin
//! lines, and given alpha by a second, narrow closed-form solve.
//!
//! The band is as wide as the mask is likely to be off, at most 3% of the
//! shorter side; a strand that reaches farther is sure background to the
//! first solve and comes out cut at the band's limit (and the mask's pull,
//! strongest there, fades it before). Widening the band for everything
//! would hand the solve every textured background pixel within reach.
//!
//! So only thin lines are reopened: pixels on a ridge of the image's
//! second derivatives, reached from a band pixel outside the mask that the
//! first solve made at least [`ROOT_ALPHA`] opaque, moving away from the
//! mask, and (past the band) leaning from the local background's colour
//! towards that root's. With their 1 px surroundings they are solved again
//! without the mask's pull, every other pixel held at its first alpha, and
//! the matting Laplacian carries alpha along them.
//!
//! Measured on composites of the bundled photos (`cargo bench --bench
//! engines`, hair rows): it keeps two to three times as many strand pixels
//! past the mask on the easier backgrounds and next to none on busy fur,
//! where a strand's line is no stronger than the texture's.

use std::collections::VecDeque;

use image::{ImageBuffer, Luma};
use imageproc::filter::gaussian_blur_f32;
use rayon::prelude::*;

use super::closed_form::refine_region;
use super::trimap::{BACKGROUND, Trimap, UNKNOWN};
use crate::planes::{Blocks, ColorPlane, neighbours_8};

/// Scale (Gaussian σ, pixels) at which thin lines are looked for: strands
/// of 1–3 px.
const LINE_SCALE: f32 = 1.0;
/// A pixel is on a line when its line strength exceeds this multiple of
/// the median over the background next to the band, so a busy background
/// asks more of a strand than a clean one.
const NOISE_MULTIPLE: f32 = 3.0;
/// …and this much in any case (second derivative of colours in `0..=1`).
const MIN_LINE_STRENGTH: f32 = 0.03;
/// A band pixel starts a strand when the first solve gave it at least this
/// alpha.
const ROOT_ALPHA: f32 = 0.5;
/// Background pixels within this distance of the band give the median line
/// strength.
const NOISE_RING: f32 = 12.0;
/// Side of the blocks [`background_means`] gathers its means on.
const LEAN_BLOCK: usize = 4;
/// Least distance between a strand's and the background's colours for a
/// lean to be told (colours in `0..=1`).
const MIN_CONTRAST: f32 = 0.08;
/// Least lean towards the strand's colour (see [`lean`]) of a background
/// pixel a strand is followed through.
const MIN_LEAN: f32 = 0.15;
/// Alpha below which a reopened pixel's second solve is not trusted.
const FAINT: f32 = 0.3;
/// How far (pixels) a strand may turn back towards the object per step
/// while it is followed.
const INWARD_STEP: f32 = 0.5;
/// At most this share of the image is reopened; a background that is lines
/// everywhere (a mesh fence, say) would otherwise be reopened whole.
const MAX_SHARE: f32 = 0.04;

/// The second pass: reopens the strands that leave the band (see
/// [`reopen_strands`]) and solves alpha on them alone. A reopened pixel
/// that comes out fainter than [`FAINT`] gets its first alpha back (and
/// its trimap label): a line that the solve does not carry alpha along is
/// haze more often than strand. `alpha` holds the first solve's alpha and
/// receives the result.
pub fn follow_strands(
    image: &ColorPlane,
    trimap: &mut Trimap,
    alpha: &mut [f32],
    signed: &[f32],
    band_outer: f32,
    reach: f32,
) {
    let before: Vec<u8> = trimap.values.clone();
    let first = alpha.to_vec();
    let reopened = reopen_strands(image, trimap, alpha, signed, band_outer, reach);
    if !reopened.iter().any(|&r| r) {
        return;
    }
    refine_region(image, &reopened, alpha);
    for i in 0..alpha.len() {
        if reopened[i] && alpha[i] < FAINT {
            alpha[i] = first[i];
            trimap.values[i] = before[i];
        }
    }
}

/// Reopens the strands that leave the band, as unknown pixels of `trimap`,
/// reaching at most `reach` pixels past it. `alpha` is the first solve's,
/// `signed` every pixel's signed distance from the mask's outline
/// (positive inside) and `band_outer` the band's outer limit in it.
/// Returns the reopened pixels' flags.
pub fn reopen_strands(
    image: &ColorPlane,
    trimap: &mut Trimap,
    alpha: &[f32],
    signed: &[f32],
    band_outer: f32,
    reach: f32,
) -> Vec<bool> {
    let (w, h) = (image.width, image.height);
    let outside: Vec<f32> = signed.iter().map(|&d| band_outer - d).collect();
    let strength = line_strength(image);
    let mut noise: Vec<f32> = (0..w * h)
        .filter(|&i| trimap.values[i] == BACKGROUND && outside[i] <= NOISE_RING)
        .map(|i| strength[i])
        .collect();
    let mut reopened = vec![false; w * h];
    if noise.is_empty() {
        return reopened;
    }
    let middle = noise.len() / 2;
    let (_, median, _) = noise.select_nth_unstable_by(middle, f32::total_cmp);
    let threshold = MIN_LINE_STRENGTH.max(NOISE_MULTIPLE * *median);
    let on_line = |i: usize| strength[i] >= threshold;
    let background = background_means(image, trimap, &|i| on_line(i), reach.ceil() as usize);

    // Roots: band pixels on a line that the first solve found part of the
    // foreground. Towards the band's limit the mask's pull takes a strand's
    // alpha to 0, so the strand is followed back into the band as well as
    // out of it, and re-solved along its whole length without that pull.
    // Only strands the first solve found outside the mask start one: inside
    // it, lines are as likely the object's own texture or outline.
    // Each pixel reached remembers the root it was reached from, whose
    // colour is the strand's.
    let mut queue: VecDeque<(usize, usize)> = (0..w * h)
        .filter(|&i| {
            trimap.values[i] == UNKNOWN && signed[i] < 0.0 && alpha[i] >= ROOT_ALPHA && on_line(i)
        })
        .map(|i| (i, i))
        .collect();
    for &(i, _) in &queue {
        reopened[i] = true;
    }
    let budget = (MAX_SHARE * (w * h) as f32) as usize;
    // Only pixels taken from the background count against the budget: band
    // pixels were unknown already.
    let mut grown = 0usize;
    while let Some((i, root)) = queue.pop_front() {
        if grown >= budget {
            break;
        }
        for n in neighbours_8(i, w, h) {
            // Strands lead away from the object: a line followed back
            // inwards is the object's own texture.
            if reopened[n]
                || signed[n] >= 0.0
                || outside[n] > reach
                || outside[n] < outside[i] - INWARD_STEP
                || !on_line(n)
                || (trimap.values[n] == BACKGROUND
                    && lean(image.pixels[n], image.pixels[root], background[n]) < MIN_LEAN)
            {
                continue;
            }
            reopened[n] = true;
            grown += usize::from(trimap.values[n] == BACKGROUND);
            queue.push_back((n, root));
        }
    }
    // The line's own pixels and the 1 px around them, where the strand's
    // soft edge lies.
    let core = reopened.clone();
    for i in (0..w * h).filter(|&i| core[i]) {
        for n in neighbours_8(i, w, h) {
            if signed[n] < 0.0 {
                reopened[n] = true;
            }
        }
    }
    for (t, &r) in trimap.values.iter_mut().zip(&reopened) {
        if r {
            *t = UNKNOWN;
        }
    }
    reopened
}

/// How far `colour` lies from `background` towards `strand`, along the
/// line between them (0 = background, 1 = strand); 0 where the two are too
/// alike to tell apart or the background is unknown.
fn lean(colour: [f32; 3], strand: [f32; 3], background: Option<[f32; 3]>) -> f32 {
    let Some(background) = background else {
        return 0.0;
    };
    let span: [f32; 3] = std::array::from_fn(|c| strand[c] - background[c]);
    let length2: f32 = span.iter().map(|v| v * v).sum();
    if length2 < MIN_CONTRAST * MIN_CONTRAST {
        return 0.0;
    }
    let along: f32 = (0..3).map(|c| (colour[c] - background[c]) * span[c]).sum();
    (along / length2).clamp(0.0, 1.0)
}

/// The mean colour of the sure background off lines within `radius` of
/// every pixel (`None` where there is none).
fn background_means(
    image: &ColorPlane,
    trimap: &Trimap,
    on_line: &dyn Fn(usize) -> bool,
    radius: usize,
) -> Vec<Option<[f32; 3]>> {
    let (w, h) = (image.width, image.height);
    // The means vary slowly over so wide a window: they are gathered on
    // blocks of LEAN_BLOCK² pixels, a sixteenth of the work.
    let blocks = Blocks::new(w, h, LEAN_BLOCK);
    // Per block: count and channel sums.
    let mut sums = vec![vec![0.0f32; blocks.len()]; 4];
    for i in (0..w * h).filter(|&i| trimap.values[i] == BACKGROUND && !on_line(i)) {
        let b = blocks.of(i);
        sums[0][b] += 1.0;
        for c in 0..3 {
            sums[1 + c][b] += image.pixels[i][c];
        }
    }
    let reach = radius.div_ceil(LEAN_BLOCK);
    let means: Vec<Vec<f32>> = sums.iter().map(|p| blocks.box_mean(p, reach)).collect();
    (0..w * h)
        .map(|i| {
            let b = blocks.of(i);
            (means[0][b] > 0.0).then(|| std::array::from_fn(|c| means[1 + c][b] / means[0][b]))
        })
        .collect()
}

/// How much every pixel lies on a thin line: per channel, the larger
/// minus the smaller absolute eigenvalue of the Hessian of the image
/// blurred at [`LINE_SCALE`] (large across a line, small along it, small
/// on flat areas, edges and blobs alike), summed over channels.
fn line_strength(image: &ColorPlane) -> Vec<f32> {
    let (w, h) = (image.width, image.height);
    let mut strength = vec![0.0f32; w * h];
    if w < 3 || h < 3 {
        return strength;
    }
    // The channels in parallel, summed in channel order afterwards, so the
    // result does not depend on the threads.
    let channels: Vec<Vec<f32>> = (0..3)
        .into_par_iter()
        .map(|c| channel_line_strength(image, c))
        .collect();
    for channel in &channels {
        for (s, v) in strength.iter_mut().zip(channel) {
            *s += v;
        }
    }
    strength
}

/// [`line_strength`] of channel `c` alone.
fn channel_line_strength(image: &ColorPlane, c: usize) -> Vec<f32> {
    let (w, h) = (image.width, image.height);
    let plane = ImageBuffer::<Luma<f32>, Vec<f32>>::from_fn(w as u32, h as u32, |x, y| {
        Luma([image.pixels[y as usize * w + x as usize][c]])
    });
    let blurred = gaussian_blur_f32(&plane, LINE_SCALE).into_raw();
    let mut strength = vec![0.0f32; w * h];
    strength
        .par_chunks_mut(w)
        .enumerate()
        .filter(|(y, _)| *y >= 1 && *y + 1 < h)
        .for_each(|(y, row)| {
            for (x, out) in row.iter_mut().enumerate().take(w - 1).skip(1) {
                let at = |dx: isize, dy: isize| {
                    blurred[(y as isize + dy) as usize * w + (x as isize + dx) as usize]
                };
                let dxx = at(1, 0) - 2.0 * at(0, 0) + at(-1, 0);
                let dyy = at(0, 1) - 2.0 * at(0, 0) + at(0, -1);
                let dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1));
                let mean = 0.5 * (dxx + dyy);
                let spread = (0.25 * (dxx - dyy).powi(2) + dxy * dxy).sqrt();
                let (a, b) = ((mean + spread).abs(), (mean - spread).abs());
                *out = a.max(b) - a.min(b);
            }
        });
    strength
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matting::{AlphaMethod, MattingOptions, matte};

    /// A disc (the object, the mask's shape) on a dark ground with a thin
    /// light line growing out of it to the right, 45 px long, and another
    /// lying apart from it below.
    fn disc_with_a_strand() -> (image::RgbImage, image::GrayImage) {
        let (w, h) = (200u32, 160u32);
        let (cx, cy, r) = (70.0f32, 70.0f32, 30.0f32);
        let image = image::RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32, y as f32);
            let inside = (fx - cx).hypot(fy - cy) <= r;
            let strand = y == 70 && fx > cx && fx <= cx + r + 45.0;
            let apart = y == 140 && (60..160).contains(&x);
            image::Rgb(if inside || strand || apart {
                [220, 200, 170]
            } else {
                [30, 40, 60]
            })
        });
        let mask = image::GrayImage::from_fn(w, h, |x, y| {
            let inside = (x as f32 - cx).hypot(y as f32 - cy) <= r;
            image::Luma([if inside { 255 } else { 0 }])
        });
        (image, mask)
    }

    #[test]
    fn a_strand_past_the_band_is_followed_and_a_line_apart_is_not() {
        let (image, mask) = disc_with_a_strand();
        let options = MattingOptions {
            method: AlphaMethod::ClosedForm,
            band_radius: Some(5.0),
        };
        let out = matte(&image, &mask, &options);
        let alpha = |x: u32, y: u32| f32::from(out.get_pixel(x, y).0[3]) / 255.0;
        eprintln!(
            "{:?}",
            (95..150)
                .step_by(3)
                .map(|x| (x, alpha(x, 70), alpha(x, 69)))
                .collect::<Vec<_>>()
        );
        // 20 and 35 px past the disc, far past the 5 px band.
        for x in [120, 135] {
            assert!(
                alpha(x, 70) > 0.5,
                "strand at x {x}: alpha {}",
                alpha(x, 70)
            );
            assert!(
                alpha(x, 66) < 0.05,
                "beside the strand at x {x}: {}",
                alpha(x, 66)
            );
        }
        assert!((60..160).all(|x| alpha(x, 140) == 0.0), "the line apart");
    }

    #[test]
    fn a_thin_line_is_stronger_than_an_edge_or_a_flat_area() {
        let (w, h) = (40usize, 40usize);
        let pixels = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                if x == 10 {
                    [0.9; 3]
                } else if y >= 30 {
                    [0.6; 3]
                } else {
                    [0.2; 3]
                }
            })
            .collect();
        let image = ColorPlane {
            width: w,
            height: h,
            pixels,
        };
        let strength = line_strength(&image);
        let line = strength[15 * w + 10];
        let edge = strength[30 * w + 25];
        let flat = strength[15 * w + 25];
        assert!(line > 3.0 * edge, "line {line}, edge {edge}");
        assert!(flat < 1e-6, "flat {flat}");
    }
}
