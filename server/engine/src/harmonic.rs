//! Multi-scale harmonic inpainting: unknown values become the solution of
//! the Laplace equation with the known values as boundary, solved coarse to
//! fine on a pyramid with successive over-relaxation (SOR).
//!
//! Plain SOR on a large hole needs a number of sweeps proportional to the
//! hole's diameter; starting every level from the interpolated solution of
//! the level below leaves only local corrections, so a bounded number of
//! sweeps per level suffices even at 4096×4096.

/// Levels are halved until the longer side is at most this.
const COARSEST_SIDE: usize = 32;
/// Over-relaxation factor at the coarsest level, near the optimum for a
/// 32×32 grid.
const COARSE_OMEGA: f32 = 1.8;
/// Sweeps at the coarsest level stop when no value moves more than this.
const COARSE_TOLERANCE: f32 = 1e-3;
/// Safety cap on sweeps at the coarsest level.
const COARSE_MAX_SWEEPS: usize = 4000;
/// Over-relaxation factor at finer levels, which start close to the answer.
const FINE_OMEGA: f32 = 1.5;
/// Sweeps at finer levels stop when no value moves more than this.
const FINE_TOLERANCE: f32 = 0.01;
/// Cap on sweeps at finer levels; the interpolated start makes it ample.
const FINE_MAX_SWEEPS: usize = 48;

/// A rectangular field of `channels` interleaved values per pixel, some of
/// them known.
#[derive(Debug, Clone)]
pub(super) struct Field {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Values per pixel.
    pub channels: usize,
    /// `width * height * channels` values, row-major, channels interleaved.
    pub values: Vec<f32>,
    /// One flag per pixel: `true` = boundary value, kept as is.
    pub known: Vec<bool>,
}

impl Field {
    /// A field with every value zero and every pixel known.
    pub fn new(width: usize, height: usize, channels: usize) -> Self {
        Field {
            width,
            height,
            channels,
            values: vec![0.0; width * height * channels],
            known: vec![true; width * height],
        }
    }
}

/// Replaces every unknown value by the harmonic interpolation of the known
/// ones (image borders act as mirrors). A field without known pixels is left
/// unchanged.
pub(super) fn fill(field: &mut Field) {
    fill_within(field, FINE_TOLERANCE);
}

/// [`fill`], with sweeps at the finer levels stopping once no value moves
/// more than `tolerance`: for fields only a rough interpolation is asked of
/// (a texture strength, say), which then costs a fraction of the sweeps.
pub(super) fn fill_within(field: &mut Field, tolerance: f32) {
    if field.known.iter().all(|&k| k) || !field.known.iter().any(|&k| k) {
        return;
    }
    if field.width.max(field.height) > COARSEST_SIDE {
        let mut coarse = downsample(field);
        fill_within(&mut coarse, tolerance);
        upsample_unknown(field, &coarse);
        relax(field, FINE_OMEGA, tolerance, FINE_MAX_SWEEPS);
    } else {
        start_from_mean(field);
        relax(field, COARSE_OMEGA, COARSE_TOLERANCE, COARSE_MAX_SWEEPS);
    }
}

/// Halves the field: a coarse pixel is known when any of its children is,
/// with the mean of its known children as value.
fn downsample(fine: &Field) -> Field {
    let (w, h, c) = (
        fine.width.div_ceil(2),
        fine.height.div_ceil(2),
        fine.channels,
    );
    let mut coarse = Field::new(w, h, c);
    let mut sum = vec![0.0f32; c];
    for y in 0..h {
        for x in 0..w {
            sum.fill(0.0);
            let mut count = 0usize;
            for fy in (2 * y)..(2 * y + 2).min(fine.height) {
                for fx in (2 * x)..(2 * x + 2).min(fine.width) {
                    let i = fy * fine.width + fx;
                    if fine.known[i] {
                        count += 1;
                        for (s, v) in sum.iter_mut().zip(&fine.values[i * c..(i + 1) * c]) {
                            *s += v;
                        }
                    }
                }
            }
            let j = y * w + x;
            coarse.known[j] = count > 0;
            if count > 0 {
                for (v, s) in coarse.values[j * c..(j + 1) * c].iter_mut().zip(&sum) {
                    *v = s / count as f32;
                }
            }
        }
    }
    coarse
}

/// Sets every unknown fine value by bilinear interpolation of the coarse
/// solution.
fn upsample_unknown(fine: &mut Field, coarse: &Field) {
    let c = fine.channels;
    let max_x = coarse.width - 1;
    let max_y = coarse.height - 1;
    for y in 0..fine.height {
        let cy = ((y as f32 + 0.5) / 2.0 - 0.5).max(0.0);
        let y0 = (cy as usize).min(max_y);
        let y1 = (y0 + 1).min(max_y);
        let ty = cy - y0 as f32;
        for x in 0..fine.width {
            let i = y * fine.width + x;
            if fine.known[i] {
                continue;
            }
            let cx = ((x as f32 + 0.5) / 2.0 - 0.5).max(0.0);
            let x0 = (cx as usize).min(max_x);
            let x1 = (x0 + 1).min(max_x);
            let tx = cx - x0 as f32;
            let at =
                |xx: usize, yy: usize, ch: usize| coarse.values[(yy * coarse.width + xx) * c + ch];
            for ch in 0..c {
                let top = at(x0, y0, ch) * (1.0 - tx) + at(x1, y0, ch) * tx;
                let bottom = at(x0, y1, ch) * (1.0 - tx) + at(x1, y1, ch) * tx;
                fine.values[i * c + ch] = top * (1.0 - ty) + bottom * ty;
            }
        }
    }
}

/// Starts every unknown value at the mean of the known ones.
fn start_from_mean(field: &mut Field) {
    let c = field.channels;
    let mut sum = vec![0.0f64; c];
    let mut count = 0usize;
    for (i, _) in field.known.iter().enumerate().filter(|(_, k)| **k) {
        count += 1;
        for (s, v) in sum.iter_mut().zip(&field.values[i * c..(i + 1) * c]) {
            *s += f64::from(*v);
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / count as f64) as f32).collect();
    for i in 0..field.known.len() {
        if !field.known[i] {
            field.values[i * c..(i + 1) * c].copy_from_slice(&mean);
        }
    }
}

/// Gauss–Seidel sweeps with over-relaxation `omega` over the unknown pixels
/// in row-major order, until no value moves more than `tolerance` or
/// `max_sweeps` is reached. The order is fixed, so results are reproducible.
fn relax(field: &mut Field, omega: f32, tolerance: f32, max_sweeps: usize) {
    let (w, h, c) = (field.width, field.height, field.channels);
    let runs = unknown_runs(field);
    let values = &mut field.values;
    for _ in 0..max_sweeps {
        let mut largest_step = 0.0f32;
        for run in &runs {
            let (has_up, has_down) = (run.y > 0, run.y + 1 < h);
            for x in run.x0..run.x1 {
                let i = run.y * w + x;
                let (has_left, has_right) = (x > 0, x + 1 < w);
                if has_up && has_down && has_left && has_right {
                    // Interior: the common case, without per-neighbour tests.
                    for ch in 0..c {
                        let sum = values[(i - 1) * c + ch]
                            + values[(i + 1) * c + ch]
                            + values[(i - w) * c + ch]
                            + values[(i + w) * c + ch];
                        let old = values[i * c + ch];
                        let step = omega * (0.25 * sum - old);
                        values[i * c + ch] = old + step;
                        largest_step = largest_step.max(step.abs());
                    }
                    continue;
                }
                let neighbours = [
                    (has_left, i.wrapping_sub(1)),
                    (has_right, i + 1),
                    (has_up, i.wrapping_sub(w)),
                    (has_down, i + w),
                ];
                let n = neighbours.iter().filter(|(inside, _)| *inside).count();
                let inv = 1.0 / n as f32;
                for ch in 0..c {
                    let sum: f32 = neighbours
                        .iter()
                        .filter(|(inside, _)| *inside)
                        .map(|&(_, j)| values[j * c + ch])
                        .sum();
                    let old = values[i * c + ch];
                    let step = omega * (sum * inv - old);
                    values[i * c + ch] = old + step;
                    largest_step = largest_step.max(step.abs());
                }
            }
        }
        if largest_step <= tolerance {
            break;
        }
    }
}

/// A horizontal run of unknown pixels: row `y`, columns `x0..x1`.
struct Run {
    y: usize,
    x0: usize,
    x1: usize,
}

/// The unknown pixels as runs, in row-major order.
fn unknown_runs(field: &Field) -> Vec<Run> {
    let mut runs = Vec::new();
    for (y, row) in field.known.chunks_exact(field.width).enumerate() {
        let mut x = 0;
        while x < row.len() {
            if row[x] {
                x += 1;
                continue;
            }
            let x0 = x;
            while x < row.len() && !row[x] {
                x += 1;
            }
            runs.push(Run { y, x0, x1: x });
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane_field(width: usize, height: usize, value: impl Fn(usize, usize) -> f32) -> Field {
        let mut field = Field::new(width, height, 1);
        for y in 0..height {
            for x in 0..width {
                field.values[y * width + x] = value(x, y);
            }
        }
        field
    }

    #[test]
    fn reproduces_a_linear_ramp_across_a_large_hole() {
        let ramp = |x: usize, y: usize| 0.3 * x as f32 + 0.1 * y as f32;
        let mut field = plane_field(300, 200, ramp);
        for y in 40..160 {
            for x in 60..240 {
                let i = y * 300 + x;
                field.known[i] = false;
                field.values[i] = 0.0;
            }
        }
        fill(&mut field);
        let worst = (0..200 * 300)
            .map(|i| (field.values[i] - ramp(i % 300, i / 300)).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.5, "largest error {worst}");
    }

    #[test]
    fn known_values_are_never_touched_and_empty_fields_are_left_alone() {
        let mut field = plane_field(50, 40, |x, _| x as f32);
        for i in (0..2000).step_by(3) {
            field.known[i] = false;
        }
        let before = field.clone();
        fill(&mut field);
        for i in 0..2000 {
            if before.known[i] {
                assert_eq!(field.values[i], before.values[i]);
            }
        }
        let mut empty = plane_field(10, 10, |_, _| 7.0);
        empty.known.fill(false);
        fill(&mut empty);
        assert!(empty.values.iter().all(|v| *v == 7.0));
    }
}
