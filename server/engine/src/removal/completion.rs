//! Exemplar-based completion of a hole: multi-scale PatchMatch (Barnes et
//! al. 2009) inside the EM-style iterations of Wexler, Shechtman and Irani
//! (2007).
//!
//! Coarse to fine over a pyramid: at each level, every patch overlapping
//! the hole finds its nearest patch lying wholly in the known region
//! (PatchMatch: propagation from neighbours plus random search), then every
//! hole pixel becomes the similarity-weighted vote of the pixels those
//! patches put on it. The coarsest level starts from a membrane fill; each
//! finer level starts from the coarser nearest-neighbour field, upsampled,
//! so structure found at low resolution carries up.
//!
//! Every random choice comes from generators seeded by the caller's seed and
//! the position in the schedule (level, iteration, band of rows), and the
//! parallel bands never read each other's fresh writes, so the result is
//! the same for the same seed however threads are scheduled.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use rayon::prelude::*;

use super::level::{Level, NONE, PATCH_PIXELS, RADIUS, SIDE, patch_means};
use super::texture::{TextureStrength, fine_variances};

/// Stop halving once the shorter side would fall below this.
const MIN_SIDE: usize = 4 * SIDE;
/// Stop halving once the hole's inscribed radius would fall below this.
const MIN_HOLE_RADIUS: f32 = 2.0;
/// Share of the mean-colour difference that still counts in the patch
/// distance (see [`biased_distance`]).
const BIAS_PENALTY: f32 = 0.25;
/// Rows per parallel PatchMatch band.
const BAND_ROWS: usize = 8;
/// Fills the hole of `level` in place. `hole_radius` is the largest
/// inscribed radius of the hole in pixels, which bounds how coarse the
/// pyramid needs to go.
///
/// Returns, per pixel of `level`, the distance of the final match of the
/// patch centred there (`f32::INFINITY` where there is none): how well the
/// surroundings explain the fill, for the caller to weigh it.
pub(super) fn complete(level: &mut Level, hole_radius: f32, seed: u64) -> Vec<f32> {
    let mut pyramid = vec![level.clone()];
    let mut radius = hole_radius;
    while radius / 2.0 >= MIN_HOLE_RADIUS {
        let top = pyramid.last().expect("never empty");
        if top.width.min(top.height) / 2 < MIN_SIDE {
            break;
        }
        let next = top.downsample();
        // A coarse pixel is in the hole if any child is, so a thin known
        // frame vanishes a few levels down; a level with nothing known would
        // start from the object itself and carry it back up as a ghost.
        if next.hole.iter().all(|&h| h) {
            break;
        }
        pyramid.push(next);
        radius /= 2.0;
    }
    let depth = pyramid.len();
    let fine = fine_variances(&pyramid, &source_centres(&pyramid[0]));
    // The coarsest level starts from the harmonic interpolation of the
    // hole's border: smooth, but with the right colours in the right places.
    let coarsest = pyramid.last_mut().expect("never empty");
    let hole = coarsest.hole.clone();
    super::membrane_fill(coarsest, &hole);

    let mut field: Option<(Vec<u32>, usize, usize)> = None;
    let mut finest_distances = vec![f32::INFINITY; level.pixels.len()];
    for (step, index) in (0..depth).rev().enumerate() {
        // The coarser estimate, upsampled, gives every hole pixel its low
        // frequencies before any patch is compared.
        if index + 1 < depth {
            let (below, above) = pyramid.split_at_mut(index + 1);
            upsample_pixels(&mut below[index], &above[0]);
        }
        let current = &mut pyramid[index];
        let sources = source_centres(current);
        if !sources.iter().any(|&s| s) {
            // No patch of this level is wholly known: keep the coarser
            // estimate and try again one level finer.
            field = None;
            continue;
        }
        let level_seed = mix(seed, index as u64);
        let mut nnf = match field.take() {
            Some((coarse, cw, ch)) => {
                let nnf = upsample_field(current, &sources, &coarse, cw, ch, level_seed);
                let means = patch_means(current);
                vote(current, &nnf, None, &means);
                nnf
            }
            None => random_field(current, &sources, level_seed),
        };
        // The coarsest level settles the layout and is cheap; finer levels
        // start from it and only refine. At the finest, whose pixels then
        // come whole from their matches (`copy_centres`), one round
        // measured the same as two on the bench's photos (PSNR within
        // 0.03 dB, gradient ratio within 0.02) at three quarters of the
        // time, and one PatchMatch pass the same as two (within 0.01 dB
        // and 0.01) at 29% fewer patch comparisons (a 55% hole at
        // 800×600).
        let at_finest = index == 0 && step > 0;
        let em_iterations = if at_finest {
            1
        } else {
            6usize.saturating_sub(2 * step).max(2)
        };
        let pm_iterations = match (step, at_finest) {
            (0, _) => 4,
            (_, true) => 1,
            _ => 2,
        };
        let mut distances = vec![f32::INFINITY; nnf.len()];
        let mut means = patch_means(current);
        let strength = TextureStrength::of(current, &means, &sources, &fine[index]);
        let mut reuse = Vec::new();
        for em in 0..em_iterations {
            let em_seed = mix(level_seed, em as u64 + 1);
            if em > 0 {
                // The vote changed the hole's pixels.
                means = patch_means(current);
            }
            reuse = strength.reuse(current, &nnf);
            let patches = Patches {
                level: current,
                means: &means,
                strength: &strength,
                reuse: &reuse,
            };
            patch_match(
                &patches,
                &mut nnf,
                &mut distances,
                &sources,
                pm_iterations,
                em_seed,
            );
            vote(current, &nnf, Some(&distances), &means);
        }
        if index == 0 {
            // The last vote averaged overlapping patches, which blurs; the
            // final pixels come whole from their best matches instead.
            let means = patch_means(current);
            copy_centres(current, &nnf, &means);
            // The caller trusts a match by how closely it matched in
            // colour; the texture penalties chose it but are not part of
            // that (a brick wall's near-exact repeats lost 3 dB when they
            // were).
            finest_distances = distances
                .iter()
                .zip(&nnf)
                .enumerate()
                .map(|(t, (&d, &s))| {
                    if s == NONE {
                        d
                    } else {
                        let s = s as usize;
                        (d - strength.penalty(t, s) - reuse[s]).max(0.0)
                    }
                })
                .collect();
        }
        field = Some((nnf, current.width, current.height));
    }
    let finest = &pyramid[0];
    for (i, out) in level.pixels.iter_mut().enumerate() {
        if level.hole[i] {
            *out = finest.pixels[i];
        }
    }
    finest_distances
}

/// Sets the hole pixels of `fine` by bilinear interpolation of the coarse
/// level.
fn upsample_pixels(fine: &mut Level, coarse: &Level) {
    let (cw, ch) = (coarse.width, coarse.height);
    for y in 0..fine.height {
        let fy = ((y as f32 + 0.5) / 2.0 - 0.5).clamp(0.0, (ch - 1) as f32);
        let (y0, ty) = (fy as usize, fy.fract());
        let y1 = (y0 + 1).min(ch - 1);
        for x in 0..fine.width {
            let i = fine.index(x, y);
            if !fine.hole[i] {
                continue;
            }
            let fx = ((x as f32 + 0.5) / 2.0 - 0.5).clamp(0.0, (cw - 1) as f32);
            let (x0, tx) = (fx as usize, fx.fract());
            let x1 = (x0 + 1).min(cw - 1);
            let at = |xx: usize, yy: usize| coarse.pixels[yy * cw + xx];
            let (a, b, c, d) = (at(x0, y0), at(x1, y0), at(x0, y1), at(x1, y1));
            fine.pixels[i] = std::array::from_fn(|k| {
                (a[k] * (1.0 - tx) + b[k] * tx) * (1.0 - ty) + (c[k] * (1.0 - tx) + d[k] * tx) * ty
            });
        }
    }
}

/// Flags of the pixels that may be the centre of a source patch: the whole
/// patch inside the image and outside the hole.
fn source_centres(level: &Level) -> Vec<bool> {
    let (w, h) = (level.width, level.height);
    let mut ok = vec![false; w * h];
    if w < SIDE || h < SIDE {
        return ok;
    }
    // Distance along the row to the nearest hole pixel, then the same over
    // columns of that, gives "no hole within RADIUS" without a 2-D scan.
    let mut row_clear = vec![false; w * h];
    for y in 0..h {
        let row = &level.hole[y * w..(y + 1) * w];
        let mut since_hole = usize::MAX / 2;
        let mut clear_left = vec![0usize; w];
        for x in 0..w {
            since_hole = if row[x] { 0 } else { since_hole + 1 };
            clear_left[x] = since_hole;
        }
        let mut until_hole = usize::MAX / 2;
        for x in (0..w).rev() {
            until_hole = if row[x] { 0 } else { until_hole + 1 };
            row_clear[y * w + x] = clear_left[x] > RADIUS && until_hole > RADIUS;
        }
    }
    for y in RADIUS..h - RADIUS {
        for x in RADIUS..w - RADIUS {
            ok[y * w + x] = (y - RADIUS..=y + RADIUS).all(|yy| row_clear[yy * w + x]);
        }
    }
    ok
}

/// Flags of the patch centres whose patch overlaps the hole, restricted to
/// centres whose patch lies inside the image (every hole pixel is still
/// covered by at least one of them).
fn target_centres(level: &Level) -> Vec<bool> {
    let (w, h) = (level.width, level.height);
    let mut target = vec![false; w * h];
    for (i, _) in level.hole.iter().enumerate().filter(|(_, h)| **h) {
        let (x, y) = (i % w, i / w);
        let x0 = x.saturating_sub(RADIUS).max(RADIUS);
        let x1 = (x + RADIUS).min(w - 1 - RADIUS);
        let y0 = y.saturating_sub(RADIUS).max(RADIUS);
        let y1 = (y + RADIUS).min(h - 1 - RADIUS);
        for ty in y0..=y1 {
            for tx in x0..=x1 {
                target[ty * w + tx] = true;
            }
        }
    }
    target
}

/// A field with every target matched to a random source.
fn random_field(level: &Level, sources: &[bool], seed: u64) -> Vec<u32> {
    let list: Vec<u32> = (0..sources.len())
        .filter(|&i| sources[i])
        .map(|i| i as u32)
        .collect();
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    target_centres(level)
        .into_iter()
        .map(|t| {
            if t {
                list[rng.random_range(0..list.len())]
            } else {
                NONE
            }
        })
        .collect()
}

/// The coarser level's field brought to this level: each target inherits
/// its parent's match, doubled and offset; matches that land on an invalid
/// source are redrawn at random.
fn upsample_field(
    level: &Level,
    sources: &[bool],
    coarse: &[u32],
    cw: usize,
    ch: usize,
    seed: u64,
) -> Vec<u32> {
    let (w, h) = (level.width, level.height);
    let list: Vec<u32> = (0..sources.len())
        .filter(|&i| sources[i])
        .map(|i| i as u32)
        .collect();
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let targets = target_centres(level);
    let mut nnf = vec![NONE; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if !targets[i] {
                continue;
            }
            let parent = coarse[(y / 2).min(ch - 1) * cw + (x / 2).min(cw - 1)];
            let inherited = (parent != NONE).then(|| {
                let (px, py) = (parent as usize % cw, parent as usize / cw);
                let sx = (2 * px + x % 2).clamp(RADIUS, w - 1 - RADIUS);
                let sy = (2 * py + y % 2).clamp(RADIUS, h - 1 - RADIUS);
                sy * w + sx
            });
            nnf[i] = match inherited {
                Some(s) if sources[s] => s as u32,
                _ => list[rng.random_range(0..list.len())],
            };
        }
    }
    nnf
}

/// Sum of squared differences between the patches centred at `t` and `s`,
/// abandoned (returning a value above `bound`) once it exceeds `bound`.
fn patch_distance(pixels: &[[f32; 3]], width: usize, t: usize, s: usize, bound: f32) -> f32 {
    /// Values per patch row: `SIDE` pixels of 3 channels.
    const ROW: usize = 3 * SIDE;
    /// Independent partial sums, so the compiler can keep them in vector
    /// registers (a single running sum is a chain it may not reorder).
    const LANES: usize = 8;
    let flat = pixels.as_flattened();
    let mut sum = 0.0f32;
    for dy in 0..SIDE {
        let t_row = 3 * (t + dy * width - RADIUS * width - RADIUS);
        let s_row = 3 * (s + dy * width - RADIUS * width - RADIUS);
        let (a, b) = (&flat[t_row..t_row + ROW], &flat[s_row..s_row + ROW]);
        let mut lanes = [0.0f32; LANES];
        let (a_body, a_tail) = a.split_at(ROW - ROW % LANES);
        let (b_body, b_tail) = b.split_at(ROW - ROW % LANES);
        for (ca, cb) in a_body.chunks_exact(LANES).zip(b_body.chunks_exact(LANES)) {
            for ((lane, p), q) in lanes.iter_mut().zip(ca).zip(cb) {
                let d = p - q;
                *lane += d * d;
            }
        }
        for (p, q) in a_tail.iter().zip(b_tail) {
            let d = p - q;
            sum += d * d;
        }
        sum += lanes.iter().sum::<f32>();
        if sum > bound {
            return sum;
        }
    }
    sum
}

/// What the patch distance compares: the level's pixels, every patch's
/// mean colour, the texture strength expected of every target, and the
/// cost of copying each source once more.
struct Patches<'a> {
    level: &'a Level,
    means: &'a [[f32; 3]],
    strength: &'a TextureStrength,
    reuse: &'a [f32],
}

impl Patches<'_> {
    /// Patch distance with the mean colour difference mostly forgiven: the
    /// SSD minus `(1 − BIAS_PENALTY)` of the part explained by the two
    /// means differing. A patch of the right texture but another brightness
    /// (a gradient further along) then matches, and the vote restores the
    /// brightness; the remaining penalty keeps matches from drifting far in
    /// colour.
    ///
    /// Plus what the source's texture costs against what the target's
    /// surroundings predict ([`TextureStrength::penalty`]): without it a
    /// target still holding the smooth estimate of a coarser level is
    /// closest to the flattest source, and the fill comes out as a wash
    /// wherever the surroundings are textured. And plus what copying the
    /// source once more costs ([`TextureStrength::reuse`]).
    fn distance(&self, t: usize, s: usize, bound: f32) -> f32 {
        let (mt, ms) = (self.means[t], self.means[s]);
        let shift: f32 = (0..3).map(|c| (mt[c] - ms[c]).powi(2)).sum::<f32>()
            * PATCH_PIXELS as f32
            * (1.0 - BIAS_PENALTY);
        let texture = self.strength.penalty(t, s) + self.reuse[s];
        if texture > bound {
            return texture;
        }
        let ssd = patch_distance(
            &self.level.pixels,
            self.level.width,
            t,
            s,
            bound - texture + shift,
        );
        (ssd - shift).max(0.0) + texture
    }
}

/// PatchMatch iterations over the targets of `nnf`, in parallel bands of
/// rows; scan direction alternates per iteration.
fn patch_match(
    patches: &Patches,
    nnf: &mut [u32],
    distances: &mut [f32],
    sources: &[bool],
    iterations: usize,
    seed: u64,
) {
    let (w, h) = (patches.level.width, patches.level.height);
    // Distances of the current matches (the pixels changed since last time).
    distances
        .par_iter_mut()
        .zip(nnf.par_iter())
        .enumerate()
        .for_each(|(t, (d, &s))| {
            *d = if s == NONE {
                f32::INFINITY
            } else {
                patches.distance(t, s as usize, f32::INFINITY)
            };
        });
    let max_radius = w.max(h) as i64;
    for iteration in 0..iterations {
        let forward = iteration % 2 == 0;
        let snapshot = nnf.to_vec();
        nnf.par_chunks_mut(BAND_ROWS * w)
            .zip(distances.par_chunks_mut(BAND_ROWS * w))
            .enumerate()
            .for_each(|(band, (band_nnf, band_dist))| {
                let mut rng =
                    Pcg64Mcg::seed_from_u64(mix(seed, (iteration * 1_000_003 + band) as u64));
                let y_start = band * BAND_ROWS;
                let rows = band_nnf.len() / w;
                let row_order: Vec<usize> = if forward {
                    (0..rows).collect()
                } else {
                    (0..rows).rev().collect()
                };
                let column_order: Vec<usize> = if forward {
                    (0..w).collect()
                } else {
                    (0..w).rev().collect()
                };
                let step: isize = if forward { 1 } else { -1 };
                for &ry in &row_order {
                    let y = y_start + ry;
                    for &x in &column_order {
                        let local = ry * w + x;
                        if band_nnf[local] == NONE {
                            continue;
                        }
                        let t = y * w + x;
                        let mut best = band_nnf[local] as usize;
                        let mut best_d = band_dist[local];
                        let consider = |candidate: usize, best: &mut usize, best_d: &mut f32| {
                            if candidate != *best && sources[candidate] {
                                let d = patches.distance(t, candidate, *best_d);
                                if d < *best_d {
                                    *best = candidate;
                                    *best_d = d;
                                }
                            }
                        };
                        // Propagation: the previous pixel's match, shifted.
                        let px = x as isize - step;
                        if (0..w as isize).contains(&px) {
                            let n = band_nnf[ry * w + px as usize];
                            if n != NONE {
                                let c = (n as isize + step) as usize;
                                consider(c, &mut best, &mut best_d);
                            }
                        }
                        let py = y as isize - step;
                        if (0..h as isize).contains(&py) {
                            let py = py as usize;
                            // Rows of other bands come from the snapshot, so
                            // bands never see each other's fresh writes.
                            let n = if (y_start..y_start + rows).contains(&py) {
                                band_nnf[(py - y_start) * w + x]
                            } else {
                                snapshot[py * w + x]
                            };
                            if n != NONE {
                                let c = (n as isize + step * w as isize) as usize;
                                if c < w * h {
                                    consider(c, &mut best, &mut best_d);
                                }
                            }
                        }
                        // Random search in shrinking windows around the best.
                        let mut radius = max_radius;
                        while radius >= 1 {
                            let (bx, by) = ((best % w) as isize, (best / w) as isize);
                            let cx = (bx + rng.random_range(-radius..=radius) as isize)
                                .clamp(RADIUS as isize, (w - 1 - RADIUS) as isize);
                            let cy = (by + rng.random_range(-radius..=radius) as isize)
                                .clamp(RADIUS as isize, (h - 1 - RADIUS) as isize);
                            consider(cy as usize * w + cx as usize, &mut best, &mut best_d);
                            radius /= 2;
                        }
                        band_nnf[local] = best as u32;
                        band_dist[local] = best_d;
                    }
                }
            });
    }
}

/// Every hole pixel becomes the weighted mean of the source pixels that the
/// patches covering it map onto it, each shifted by the difference of the
/// two patches' mean colours (so texture is copied, brightness is kept). With `distances`, a patch weighs
/// `exp(−d / 2σ²)` with σ² the median patch distance, so good matches
/// dominate; without, all weigh the same.
fn vote(level: &mut Level, nnf: &[u32], distances: Option<&[f32]>, means: &[[f32; 3]]) {
    let (w, h) = (level.width, level.height);
    let scale = distances.map(|d| {
        let mut finite: Vec<f32> = d.iter().copied().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            return 1.0;
        }
        let mid = finite.len() / 2;
        let (_, median, _) = finite.select_nth_unstable_by(mid, f32::total_cmp);
        1.0 / (2.0 * median.max(1.0))
    });
    // One weight per patch, not one per pixel it covers.
    let weights: Vec<f32> = match (distances, scale) {
        (Some(d), Some(k)) => d.par_iter().map(|d| (-d * k).exp().max(1e-6)).collect(),
        _ => vec![1.0; nnf.len()],
    };
    let pixels = &level.pixels;
    let hole = &level.hole;
    let updated: Vec<(usize, [f32; 3])> = (0..w * h)
        .into_par_iter()
        .filter(|&i| hole[i])
        .map(|i| {
            let (x, y) = (i % w, i / w);
            let mut sum = [0.0f32; 3];
            let mut total = 0.0f32;
            for ty in y.saturating_sub(RADIUS)..=(y + RADIUS).min(h - 1) {
                for tx in x.saturating_sub(RADIUS)..=(x + RADIUS).min(w - 1) {
                    let t = ty * w + tx;
                    let s = nnf[t];
                    if s == NONE {
                        continue;
                    }
                    let weight = weights[t];
                    // The pixel at the same offset from the source centre.
                    let source = (s as usize + y * w + x) - t;
                    let p = pixels[source];
                    let (mt, ms) = (means[t], means[s as usize]);
                    (0..3).for_each(|c| sum[c] += weight * (p[c] + mt[c] - ms[c]));
                    total += weight;
                }
            }
            let value = if total > 0.0 {
                sum.map(|v| v / total)
            } else {
                pixels[i]
            };
            (i, value)
        })
        .collect();
    for (i, v) in updated {
        level.pixels[i] = v;
    }
}

/// Sets every hole pixel that is the centre of a matched patch to the
/// centre of its source patch (shifted by the difference of the patches'
/// mean colours): no averaging, so the source's grain survives whole.
fn copy_centres(level: &mut Level, nnf: &[u32], means: &[[f32; 3]]) {
    let copied: Vec<(usize, [f32; 3])> = (0..level.pixels.len())
        .filter(|&i| level.hole[i] && nnf.get(i).is_some_and(|&s| s != NONE))
        .map(|i| {
            let s = nnf[i] as usize;
            let p = level.pixels[s];
            (i, std::array::from_fn(|c| p[c] + means[i][c] - means[s][c]))
        })
        .collect();
    for (i, v) in copied {
        level.pixels[i] = v;
    }
}

/// A well-spread 64-bit mix of a seed and a salt (SplitMix64's finaliser),
/// so neighbouring salts give unrelated generator streams.
fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
