//! Texture strength around a hole and seeded grain to put back into it, so a
//! fill in a grainy area is not suspiciously smooth.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Radius of the window over which the grain energy of known pixels is
/// averaged.
const ENERGY_RADIUS: usize = 3;
/// The residual against the mean of four neighbours has 5/4 of the variance
/// of white grain; this undoes that.
const RESIDUAL_TO_GRAIN: f32 = 0.8;
/// Part of the grain shared by the three channels (luminance-like); the rest
/// is per channel. Squares add up to one, so the variance is kept.
const SHARED_WEIGHT: f32 = 0.8;
/// Per-channel part of the grain.
const CHANNEL_WEIGHT: f32 = 0.6;

/// Local grain variance (mean over the RGB channels) of every known pixel
/// of a `width`×`height` window whose pixels are `stride` interleaved values
/// starting with R, G, B; unknown pixels get 0.
///
/// Grain is what a pixel differs from the mean of its known 4-neighbours:
/// zero on linear gradients, small on smooth shading, large on noise-like
/// texture. Its square is averaged over nearby known pixels.
pub(super) fn grain_variance(
    values: &[f32],
    stride: usize,
    known: &[bool],
    width: usize,
    height: usize,
) -> Vec<f32> {
    let mut energy = vec![0.0f32; width * height];
    for y in 0..height {
        for x in 0..width {
            let i = y * width + x;
            if !known[i] {
                continue;
            }
            let mut neighbours = [0usize; 4];
            let mut n = 0;
            for (inside, j) in [
                (x > 0, i.wrapping_sub(1)),
                (x + 1 < width, i + 1),
                (y > 0, i.wrapping_sub(width)),
                (y + 1 < height, i + width),
            ] {
                if inside && known[j] {
                    neighbours[n] = j;
                    n += 1;
                }
            }
            if n == 0 {
                continue;
            }
            let mut e = 0.0;
            for ch in 0..3 {
                let mean = neighbours[..n]
                    .iter()
                    .map(|&j| values[j * stride + ch])
                    .sum::<f32>()
                    / n as f32;
                let r = values[i * stride + ch] - mean;
                e += r * r;
            }
            energy[i] = e / 3.0 * RESIDUAL_TO_GRAIN;
        }
    }
    let weights: Vec<f32> = known.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
    let energy_sum = box_sum(&energy, width, height, ENERGY_RADIUS);
    let weight_sum = box_sum(&weights, width, height, ENERGY_RADIUS);
    energy_sum
        .iter()
        .zip(&weight_sum)
        .zip(known)
        .map(|((e, w), k)| if *k && *w > 0.0 { e / w } else { 0.0 })
        .collect()
}

/// Sum over the `(2 radius + 1)²` window around every pixel, clipped to the
/// plane. Running sums in `f64`, so long lines do not drift; the vertical
/// pass walks whole rows to stay cache-friendly on large planes.
fn box_sum(plane: &[f32], width: usize, height: usize, radius: usize) -> Vec<f32> {
    let mut rows = vec![0.0f32; plane.len()];
    for (src, dst) in plane.chunks_exact(width).zip(rows.chunks_exact_mut(width)) {
        let mut acc = 0.0f64;
        for v in &src[..radius.min(width)] {
            acc += f64::from(*v);
        }
        for x in 0..width {
            if x + radius < width {
                acc += f64::from(src[x + radius]);
            }
            if x > radius {
                acc -= f64::from(src[x - radius - 1]);
            }
            dst[x] = acc as f32;
        }
    }
    let row = |y: usize| &rows[y * width..(y + 1) * width];
    let mut acc = vec![0.0f64; width];
    for y in 0..radius.min(height) {
        acc.iter_mut()
            .zip(row(y))
            .for_each(|(a, v)| *a += f64::from(*v));
    }
    let mut out = vec![0.0f32; plane.len()];
    for (y, dst) in out.chunks_exact_mut(width).enumerate() {
        if y + radius < height {
            acc.iter_mut()
                .zip(row(y + radius))
                .for_each(|(a, v)| *a += f64::from(*v));
        }
        if y > radius {
            acc.iter_mut()
                .zip(row(y - radius - 1))
                .for_each(|(a, v)| *a -= f64::from(*v));
        }
        dst.iter_mut().zip(&acc).for_each(|(d, a)| *d = *a as f32);
    }
    out
}

/// Seeded source of the grain added to filled pixels.
pub(super) struct Grain {
    rng: StdRng,
    spare: Option<f32>,
}

impl Grain {
    /// Grain from `seed`; the same seed gives the same sequence.
    pub fn new(seed: u64) -> Self {
        Grain {
            rng: StdRng::seed_from_u64(seed),
            spare: None,
        }
    }

    /// Offsets for the three channels of one pixel with standard deviation
    /// `std_dev` each, partly shared between channels.
    pub fn next_rgb(&mut self, std_dev: f32) -> [f32; 3] {
        let shared = self.normal() * SHARED_WEIGHT;
        let mut out = [0.0; 3];
        for o in &mut out {
            *o = (shared + self.normal() * CHANNEL_WEIGHT) * std_dev;
        }
        out
    }

    /// A standard normal deviate (Box–Muller, both values used).
    fn normal(&mut self) -> f32 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let u1: f64 = 1.0 - self.rng.random::<f64>();
        let u2: f64 = self.rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare = Some((r * theta.sin()) as f32);
        (r * theta.cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_sum_counts_clipped_windows() {
        let ones = vec![1.0; 5 * 4];
        let sums = box_sum(&ones, 5, 4, 1);
        assert_eq!(sums[0], 4.0);
        assert_eq!(sums[5 + 1], 9.0);
        assert_eq!(sums[19], 4.0);
    }

    #[test]
    fn gradients_have_no_grain_and_noise_has_its_variance() {
        let (w, h) = (64, 64);
        let gradient: Vec<f32> = (0..w * h * 3).map(|i| ((i / 3) % w) as f32 * 2.0).collect();
        let known = vec![true; w * h];
        let var = grain_variance(&gradient, 3, &known, w, h);
        assert!(var[32 * w + 32] < 1e-6);

        let mut grain = Grain::new(9);
        let noisy: Vec<f32> = (0..w * h).flat_map(|_| grain.next_rgb(10.0)).collect();
        let var = grain_variance(&noisy, 3, &known, w, h);
        let mean = var.iter().sum::<f32>() / var.len() as f32;
        assert!((60.0..140.0).contains(&mean), "mean grain variance {mean}");
    }

    #[test]
    fn grain_is_reproducible_per_seed() {
        let a: Vec<[f32; 3]> = {
            let mut g = Grain::new(1);
            (0..10).map(|_| g.next_rgb(1.0)).collect()
        };
        let b: Vec<[f32; 3]> = {
            let mut g = Grain::new(1);
            (0..10).map(|_| g.next_rgb(1.0)).collect()
        };
        let c: Vec<[f32; 3]> = {
            let mut g = Grain::new(2);
            (0..10).map(|_| g.next_rgb(1.0)).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
