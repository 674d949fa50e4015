//! What the completion's patch distance weighs besides colour: how much
//! texture a target should get, and how often a source is already copied.
//!
//! Colour alone (the sum of squared differences against the hole's current
//! estimate, which starts as a smooth interpolation) always prefers the
//! flattest source: a grainy patch differs from a smooth estimate by all
//! of its grain. Holes in fur, foliage or print then filled with the calm
//! of whatever flat surface lay nearby, a soft wash.

use crate::harmonic::{self, Field};
use crate::planes::{box_mean, halve};

use super::level::{Level, NONE, PATCH_PIXELS, RADIUS, patch_means};

/// Weight of the strength mismatch, per patch pixel (see
/// [`TextureStrength::penalty`]).
const STRENGTH_WEIGHT: f32 = 0.3;
/// How closely (in levels) the expected texture strength is interpolated:
/// it weighs patches, so a fraction of a level is ample.
const STRENGTH_TOLERANCE: f32 = 0.25;
/// Radius of the quadrant neighbourhoods of [`TextureStrength::of`].
const QUADRANT: usize = 4;
/// Cost of every further copy of a source patch, in units of the hole's
/// typical expected texture energy per patch. Without it the bench's
/// photos lost 0.02–0.1 dB in the hole, the same source region repeated
/// side by side; 0.25 and 0.5 measured alike.
const REUSE_WEIGHT: f32 = 0.25;

/// Per level of `pyramid` (finest first), the summed per-channel variance
/// of the finest level's patches under every pixel, `NaN` where none of
/// them lies wholly outside the hole.
///
/// At coarse levels grain is averaged away: fur and a blurred wall look
/// alike there, so the layout chosen there cannot tell sharp texture from
/// calm. Carrying the finest level's variance down lets it. With the
/// deficit term on each level's own variances, head-shaped holes lost 0.5
/// dB on the bench's photos (coarse layouts took busy structure, such as
/// a launch tower's lattice, for texture); with these, nothing.
/// `sources` flags the finest level's source centres.
pub(super) fn fine_variances(pyramid: &[Level], sources: &[bool]) -> Vec<Vec<f32>> {
    let finest = &pyramid[0];
    let variance = patch_variance(finest, &patch_means(finest));
    let mut levels = vec![
        variance
            .iter()
            .zip(sources)
            .map(|(&v, &s)| if s { v } else { f32::NAN })
            .collect::<Vec<f32>>(),
    ];
    let (mut w, mut h) = (finest.width, finest.height);
    for _ in 1..pyramid.len() {
        let below = levels.last().expect("never empty");
        let (next, nw, nh) = halve(below, w, h, |children| {
            let (sum, count) = children
                .filter(|c| !c.is_nan())
                .fold((0.0f32, 0usize), |(s, n), c| (s + c, n + 1));
            if count > 0 {
                sum / count as f32
            } else {
                f32::NAN
            }
        });
        levels.push(next);
        (w, h) = (nw, nh);
    }
    levels
}

/// The summed per-channel variance of the patch centred at every pixel of
/// `level`, whose patch means are `means`.
fn patch_variance(level: &Level, means: &[[f32; 3]]) -> Vec<f32> {
    let (w, h) = (level.width, level.height);
    let mut variance = vec![0.0f32; w * h];
    for c in 0..3 {
        let squares: Vec<f32> = level.pixels.iter().map(|p| p[c] * p[c]).collect();
        let mean_square = box_mean(&squares, w, h, RADIUS);
        for ((v, m), m2) in variance.iter_mut().zip(means).zip(mean_square) {
            *v += (m2 - m[c] * m[c]).max(0.0);
        }
    }
    variance
}

/// The texture strength of patches: the root of the summed per-channel
/// variance of every patch (`own`), the texture of the region around every
/// source (`robust`), and for targets the strength their surroundings
/// predict (`expected`): the sources' `robust` strength, interpolated
/// smoothly (membrane) across the hole.
///
/// What is interpolated is a source's texture without the edges beside
/// it: the least of its four quadrant neighbourhoods' mean variance. A
/// hole cut along an object's outline is ringed by that edge; counting it
/// as texture made the hole expect busy patches and fill a face with a
/// badge's print.
pub(super) struct TextureStrength {
    own: Vec<f32>,
    robust: Vec<f32>,
    expected: Vec<f32>,
}

impl TextureStrength {
    /// The strengths of `level`'s patches, whose mean colours are `means`,
    /// with a source's own strength taken from the finest level where
    /// `fine` (from [`fine_variances`]) has it.
    pub(super) fn of(
        level: &Level,
        means: &[[f32; 3]],
        sources: &[bool],
        fine: &[f32],
    ) -> TextureStrength {
        let (w, h) = (level.width, level.height);
        let mut variance = patch_variance(level, means);
        for (v, &f) in variance.iter_mut().zip(fine) {
            if !f.is_nan() {
                *v = f;
            }
        }
        let weight: Vec<f32> = sources.iter().map(|&s| f32::from(u8::from(s))).collect();
        let weighted: Vec<f32> = variance.iter().zip(&weight).map(|(v, k)| v * k).collect();
        let (sum, count) = (
            box_mean(&weighted, w, h, QUADRANT),
            box_mean(&weight, w, h, QUADRANT),
        );
        let mut field = Field::new(w, h, 1);
        for i in (0..w * h).filter(|&i| sources[i]) {
            let (x, y) = (i % w, i / w);
            let quadrants = [(-1, -1), (1, -1), (-1, 1), (1, 1)].map(|(dx, dy)| {
                let qx = (x as isize + dx * QUADRANT as isize).clamp(0, w as isize - 1) as usize;
                let qy = (y as isize + dy * QUADRANT as isize).clamp(0, h as isize - 1) as usize;
                let q = qy * w + qx;
                if count[q] > 0.0 {
                    sum[q] / count[q]
                } else {
                    f32::INFINITY
                }
            });
            let least = quadrants.into_iter().fold(f32::INFINITY, f32::min);
            field.values[i] = least.min(variance[i]).sqrt();
        }
        for (known, &source) in field.known.iter_mut().zip(sources) {
            *known = source;
        }
        let robust = field.values.clone();
        if sources.iter().any(|&s| s) {
            harmonic::fill_within(&mut field, STRENGTH_TOLERANCE);
        }
        TextureStrength {
            own: variance.into_iter().map(f32::sqrt).collect(),
            robust,
            expected: field.values,
        }
    }

    /// What matching target `t` to source `s` costs beyond colour:
    ///
    /// - a mismatch, for a source whose strength differs from what the
    ///   target's surroundings predict, either way;
    /// - a deficit, the texture energy predicted for the target that
    ///   neither its current estimate nor the source brings. Against a
    ///   smooth estimate, the colour distance charges a source its whole
    ///   grain; the deficit charges a flat source the grain it lacks, so
    ///   up to the predicted strength grain neither costs nor gains, and
    ///   colour and shape decide. Once the estimate holds the texture, the
    ///   deficit is zero and colour alone compares it.
    ///
    /// What a source brings to the deficit is the texture of its region
    /// (its quadrant-least strength), not its own patch's: a bird in an
    /// empty sky or an antenna against a blurred backdrop is a busy patch
    /// in a calm region, an object, not texture. Crediting the patch's own
    /// strength stamped copies of one bird across a palace's sky and of an
    /// antenna across a butterfly's wing.
    pub(super) fn penalty(&self, t: usize, s: usize) -> f32 {
        let (expected, mine) = (self.expected[t], self.own[t]);
        let mismatch = STRENGTH_WEIGHT * (expected - self.own[s]).powi(2);
        let texture = self.robust[s];
        let deficit = (expected * expected - mine * mine - texture * texture).max(0.0);
        PATCH_PIXELS as f32 * (mismatch + deficit)
    }

    /// Per source pixel, the cost of copying the patch around it once more,
    /// given the matches `nnf` of `level`'s targets: nothing for the first
    /// copy, [`REUSE_WEIGHT`] of a typical patch's expected texture energy
    /// for each further one. A copy counts on every pixel its patch covers
    /// (the box mean of match centres), so a region copied whole, shifted
    /// by one pixel per target, counts once.
    pub(super) fn reuse(&self, level: &Level, nnf: &[u32]) -> Vec<f32> {
        let (w, h) = (level.width, level.height);
        let mut hits = vec![0.0f32; w * h];
        let mut energies = Vec::new();
        for (t, &s) in nnf.iter().enumerate() {
            if s != NONE {
                hits[s as usize] += 1.0;
                if level.hole[t] {
                    energies.push(self.expected[t] * self.expected[t]);
                }
            }
        }
        if energies.is_empty() {
            return vec![0.0; w * h];
        }
        let middle = energies.len() / 2;
        let (_, typical, _) = energies.select_nth_unstable_by(middle, f32::total_cmp);
        let scale = REUSE_WEIGHT * PATCH_PIXELS as f32 * typical.max(1.0);
        box_mean(&hits, w, h, RADIUS)
            .into_iter()
            .map(|copies| scale * (copies - 1.0).max(0.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(width: usize, height: usize, pixel: impl Fn(usize, usize) -> f32) -> Level {
        Level {
            width,
            height,
            pixels: (0..width * height)
                .map(|i| [pixel(i % width, i / width); 3])
                .collect(),
            hole: vec![false; width * height],
        }
    }

    #[test]
    fn a_flat_source_or_a_lone_object_pays_for_the_grain_a_smooth_target_is_expected_to_get() {
        // Left half: a checkerboard of ±20; right half: flat. The hole's
        // estimate is smooth, so its own strength is zero.
        let (w, h) = (60, 30);
        let mut grainy_and_flat = level(w, h, |x, y| {
            if x < w / 2 {
                100.0 + if (x + y) % 2 == 0 { 20.0 } else { -20.0 }
            } else {
                100.0
            }
        });
        // A lone dot in the flat half: a bird in an empty sky.
        let dot = 24 * w + 45;
        grainy_and_flat.pixels[dot] = [200.0; 3];
        let target = 15 * w + 15;
        for y in 12..19 {
            for x in 12..19 {
                grainy_and_flat.hole[y * w + x] = true;
                grainy_and_flat.pixels[y * w + x] = [100.0; 3];
            }
        }
        let sources: Vec<bool> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                (RADIUS..w - RADIUS).contains(&x)
                    && (RADIUS..h - RADIUS).contains(&y)
                    && !(12 - RADIUS..19 + RADIUS).contains(&x)
            })
            .collect();
        let means = patch_means(&grainy_and_flat);
        let fine = vec![f32::NAN; w * h];
        let strength = TextureStrength::of(&grainy_and_flat, &means, &sources, &fine);
        let (grainy, flat) = (15 * w + 5, 15 * w + 50);
        // The flat source pays at least the grain's energy (3 channels of
        // variance 400 over the patch); the grainy one, a fraction of it.
        let energy = PATCH_PIXELS as f32 * 3.0 * 400.0;
        assert!(strength.penalty(target, flat) > 0.9 * energy);
        assert!(strength.penalty(target, grainy) < 0.2 * energy);
        // The dot's patch is busy, but its region is calm: it is credited
        // with the region's texture, not its own, which would have made it
        // pay under half of this.
        assert!(strength.penalty(target, dot) > 0.7 * energy);
    }

    #[test]
    fn a_source_copied_many_times_over_costs_more_than_a_region_copied_once() {
        let (w, h) = (40, 40);
        let mut flat = level(w, h, |_, _| 50.0);
        for i in 0..w * 10 {
            flat.hole[i] = true;
        }
        let sources: Vec<bool> = (0..w * h).map(|i| i / w >= 10 + RADIUS).collect();
        let means = patch_means(&flat);
        let fine = vec![f32::NAN; w * h];
        let strength = TextureStrength {
            expected: vec![10.0; w * h],
            ..TextureStrength::of(&flat, &means, &sources, &fine)
        };
        // A hundred targets on one source: twice a 7×7 patch's worth of
        // copies around it. A 7×7 block of targets copying a 7×7 block of
        // sources whole, one each, as a region copied whole is.
        let (crowded, spread) = (30 * w + 10, 24 * w + 25);
        let mut nnf = vec![NONE; w * h];
        for target in nnf.iter_mut().take(100) {
            *target = crowded as u32;
        }
        for dy in 0..7 {
            for dx in 0..7 {
                nnf[(3 + dy) * w + 20 + dx] = (spread + dy * w + dx) as u32;
            }
        }
        let reuse = strength.reuse(&flat, &nnf);
        assert!(reuse[crowded] > 0.0);
        assert_eq!(reuse[spread + 3 * w + 3], 0.0);
    }
}
