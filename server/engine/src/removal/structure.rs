//! Straight edges that cross a hole are drawn across it before anything
//! else fills it: a horizon, a pole's sides, a table's rim.
//!
//! Patches alone do not do it. Coarse to fine, the hole starts as a smooth
//! estimate in which the edge is already a soft ramp, and a patch search
//! that must also match the texture around it finds no reason to bring the
//! step back. A membrane never does. So the edge is found in the known ring
//! around the hole, matched with its continuation on the far side, and its
//! profile painted along the line between them; the painted strip then
//! counts as known for the membrane and the patches.
//!
//! An edge is continued only when both of its ends are seen: a straight
//! run of edge pixels on each side of the hole, on one line, with the same
//! polarity, contrast and side colours. An edge that ends in the hole (an
//! object's corner) is left to the patches, as guessing where it turns
//! costs more than a soft fill does.

use super::level::Level;
use super::{distance_to, labels_8};

/// Edge pixels are looked for within this distance of the hole (pixels).
const RING: f32 = 16.0;
/// A gradient (Sobel, in levels per pixel of luminance) below this is not
/// an edge, however quiet the surroundings.
const MIN_GRADIENT: f32 = 12.0;
/// …and neither is one below this multiple of the ring's median gradient,
/// so texture does not count as edges.
const TEXTURE_MULTIPLE: f32 = 3.0;
/// Fewest edge pixels in a run for it to count as a straight edge.
const MIN_RUN: usize = 7;
/// Largest root-mean-square distance of a run's pixels from its line.
const MAX_RESIDUAL: f32 = 0.8;
/// Largest angle between a run's own direction and the line through both
/// runs of one edge (cosine of 10°).
const MIN_ALIGNMENT: f32 = 0.985;
/// Largest root-mean-square distance of either run's pixels from the line
/// through both (pixels).
const MAX_OFFSET: f32 = 1.5;
/// Largest ratio of the two runs' contrasts.
const MAX_CONTRAST_RATIO: f32 = 2.0;
/// Largest root-mean-square difference of either side's colours between
/// the two ends (levels).
const MAX_SIDE_DIFFERENCE: f32 = 30.0;
/// Longest gap an edge is drawn across, in inscribed radii of the hole.
const MAX_GAP_RADII: f32 = 3.0;
/// Longest gap an edge is drawn across per pixel of its shorter run: a
/// short run is a direction known to a few degrees only.
const GAP_PER_RUN_PIXEL: f32 = 6.0;
/// Half-width of the painted strip, and offset at which side colours are
/// read (pixels).
const STRIP: f32 = 3.0;
/// Samples per pixel of a profile across the edge.
const PROFILE_STEPS: f32 = 2.0;

/// Paints, in `level`'s hole, every straight edge whose two ends are seen
/// on opposite sides of it, and marks the painted pixels known. Returns how
/// many edges were continued.
///
/// `hole_radius` is the largest inscribed radius of the hole's parts: an
/// edge crosses at most [`MAX_GAP_RADII`] of them. Longer gaps are runs on
/// either end of a stroke drawn along an edge, not one edge crossing it.
pub(super) fn continue_edges(level: &mut Level, hole_radius: f32) -> usize {
    let runs = edge_runs(level);
    let pairs = pair_runs(level, &runs, MAX_GAP_RADII * hole_radius);
    for (a, b) in &pairs {
        paint(level, &runs[*a], &runs[*b]);
    }
    pairs.len()
}

/// A straight run of edge pixels near the hole.
#[derive(Debug, Clone)]
struct Run {
    /// Its pixels.
    points: Vec<(f32, f32)>,
    /// A point on its line (the mean of its pixels).
    centre: (f32, f32),
    /// The line's unit direction.
    direction: (f32, f32),
    /// The mean gradient across it (levels per pixel, pointing from dark to
    /// light).
    gradient: (f32, f32),
    /// Its end nearest the hole.
    end: (f32, f32),
}

impl Run {
    /// Signed distance of `p` from the run's line.
    fn offset(&self, p: (f32, f32)) -> f32 {
        let (dx, dy) = (p.0 - self.centre.0, p.1 - self.centre.1);
        let normal = self.normal();
        dx * normal.0 + dy * normal.1
    }

    /// The unit normal of its line (its direction turned a quarter).
    fn normal(&self) -> (f32, f32) {
        (-self.direction.1, self.direction.0)
    }

    fn contrast(&self) -> f32 {
        self.gradient.0.hypot(self.gradient.1)
    }
}

/// Luminance of every pixel.
fn luma(level: &Level) -> Vec<f32> {
    level
        .pixels
        .iter()
        .map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2])
        .collect()
}

/// The straight runs of edge pixels in the ring around the hole: pixels
/// whose gradient is strong and a local maximum across the edge, grouped
/// by 8-connectivity, kept when the group is long and straight.
fn edge_runs(level: &Level) -> Vec<Run> {
    let (w, h) = (level.width, level.height);
    let luma = luma(level);
    let distance = distance_to(|i| level.hole[i], w, h);
    let in_ring = |x: usize, y: usize| {
        let d = distance[y * w + x];
        x > 0 && y > 0 && x + 1 < w && y + 1 < h && d > 1.5 && d <= RING
    };
    let mut gradients = vec![(0.0f32, 0.0f32); w * h];
    let mut ring_magnitudes = Vec::new();
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            if !in_ring(x, y) {
                continue;
            }
            let at = |dx: isize, dy: isize| {
                luma[(y as isize + dy) as usize * w + (x as isize + dx) as usize]
            };
            let gx =
                (at(1, -1) + 2.0 * at(1, 0) + at(1, 1) - at(-1, -1) - 2.0 * at(-1, 0) - at(-1, 1))
                    / 8.0;
            let gy =
                (at(-1, 1) + 2.0 * at(0, 1) + at(1, 1) - at(-1, -1) - 2.0 * at(0, -1) - at(1, -1))
                    / 8.0;
            gradients[y * w + x] = (gx, gy);
            ring_magnitudes.push(gx.hypot(gy));
        }
    }
    if ring_magnitudes.is_empty() {
        return Vec::new();
    }
    let middle = ring_magnitudes.len() / 2;
    let (_, median, _) = ring_magnitudes.select_nth_unstable_by(middle, f32::total_cmp);
    let threshold = MIN_GRADIENT.max(TEXTURE_MULTIPLE * *median);

    let magnitude = |i: usize| gradients[i].0.hypot(gradients[i].1);
    let mut edge = vec![false; w * h];
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            let i = y * w + x;
            let m = magnitude(i);
            if !in_ring(x, y) || m < threshold {
                continue;
            }
            // Non-maximum suppression across the edge.
            let (gx, gy) = gradients[i];
            let (sx, sy) = ((gx / m).round() as isize, (gy / m).round() as isize);
            let ahead = (y as isize + sy) as usize * w + (x as isize + sx) as usize;
            let behind = (y as isize - sy) as usize * w + (x as isize - sx) as usize;
            edge[i] = m >= magnitude(ahead) && m > magnitude(behind);
        }
    }

    // The runs' pixels in raster order, one group per 8-connected part.
    let labels = labels_8(|i| edge[i], w, h);
    let mut groups: Vec<Vec<usize>> =
        vec![Vec::new(); labels.iter().copied().max().unwrap_or(0) as usize];
    for (i, &label) in labels.iter().enumerate().filter(|(_, l)| **l > 0) {
        groups[label as usize - 1].push(i);
    }
    groups
        .iter()
        .filter_map(|group| straight_run(group, w, &gradients, &distance))
        .collect()
}

/// A group of edge pixels as a [`Run`], if it is long and straight and its
/// gradient crosses its line.
fn straight_run(
    group: &[usize],
    width: usize,
    gradients: &[(f32, f32)],
    distance: &[f32],
) -> Option<Run> {
    if group.len() < MIN_RUN {
        return None;
    }
    let n = group.len() as f32;
    let points: Vec<(f32, f32)> = group
        .iter()
        .map(|&i| ((i % width) as f32, (i / width) as f32))
        .collect();
    let (centre, direction) = straight_line(&points)?;
    let gradient = group.iter().fold((0.0, 0.0), |acc, &i| {
        (acc.0 + gradients[i].0 / n, acc.1 + gradients[i].1 / n)
    });
    let mut run = Run {
        points,
        centre,
        direction,
        gradient,
        end: centre,
    };
    let residual = (run
        .points
        .iter()
        .map(|&p| run.offset(p).powi(2))
        .sum::<f32>()
        / n)
        .sqrt();
    let along = (gradient.0 * direction.0 + gradient.1 * direction.1).abs();
    if residual > MAX_RESIDUAL || along > 0.35 * run.contrast() {
        return None;
    }
    let nearest = group
        .iter()
        .zip(&run.points)
        .min_by(|a, b| distance[*a.0].total_cmp(&distance[*b.0]))
        .map(|(_, p)| *p)?;
    run.end = nearest;
    Some(run)
}

/// Pairs of runs that are the two ends of one edge across the hole, each
/// run in at most one pair, best-aligned pairs first.
fn pair_runs(level: &Level, runs: &[Run], max_gap: f32) -> Vec<(usize, usize)> {
    let mut candidates = Vec::new();
    for (a, ra) in runs.iter().enumerate() {
        for (b, rb) in runs.iter().enumerate().skip(a + 1) {
            if let Some(cost) = pairing_cost(level, ra, rb, max_gap) {
                candidates.push((cost, a, b));
            }
        }
    }
    candidates.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut used = vec![false; runs.len()];
    let mut pairs = Vec::new();
    for (_, a, b) in candidates {
        if !used[a] && !used[b] {
            used[a] = true;
            used[b] = true;
            pairs.push((a, b));
        }
    }
    pairs
}

/// How badly two runs fit as the ends of one edge (their offsets from each
/// other's lines), or `None` when they are not one edge.
fn pairing_cost(level: &Level, a: &Run, b: &Run, max_gap: f32) -> Option<f32> {
    // Short runs give their own direction only to a few degrees, which
    // over a wide hole is pixels; what must hold is that both lie on one
    // line.
    let joint = joint_line(a, b)?;
    let aligned = |run: &Run| {
        (run.direction.0 * joint.direction.0 + run.direction.1 * joint.direction.1).abs()
            >= MIN_ALIGNMENT
    };
    if !aligned(a) || !aligned(b) {
        return None;
    }
    let offset = [a, b]
        .map(|run| {
            let squares: f32 = run.points.iter().map(|&p| joint.offset(p).powi(2)).sum();
            (squares / run.points.len() as f32).sqrt()
        })
        .into_iter()
        .fold(0.0f32, f32::max);
    if offset > MAX_OFFSET {
        return None;
    }
    let polarity = a.gradient.0 * b.gradient.0 + a.gradient.1 * b.gradient.1;
    let ratio = a.contrast().max(b.contrast()) / a.contrast().min(b.contrast()).max(1e-3);
    if polarity <= 0.0 || ratio > MAX_CONTRAST_RATIO {
        return None;
    }
    // The gap between the two ends lies in the hole, and each run lies on
    // its own side of it.
    let gap = (b.end.0 - a.end.0, b.end.1 - a.end.1);
    let length = gap.0.hypot(gap.1);
    let evidence = a.points.len().min(b.points.len()) as f32;
    if !(2.0..=max_gap.min(GAP_PER_RUN_PIXEL * evidence)).contains(&length) {
        return None;
    }
    let towards = |run: &Run, sign: f32| {
        let (dx, dy) = (run.end.0 - run.centre.0, run.end.1 - run.centre.1);
        sign * (dx * gap.0 + dy * gap.1) >= 0.0
    };
    if !towards(a, 1.0) || !towards(b, -1.0) {
        return None;
    }
    let steps = length.ceil() as usize;
    let in_hole = (0..=steps)
        .filter(|&k| {
            let t = k as f32 / steps as f32;
            let (x, y) = (a.end.0 + t * gap.0, a.end.1 + t * gap.1);
            let i = y.round() as usize * level.width + x.round() as usize;
            level.hole.get(i).copied().unwrap_or(false)
        })
        .count();
    if in_hole * 5 < (steps + 1) * 3 {
        return None;
    }
    let sides_a = side_colours(level, &a.points, &joint)?;
    let sides_b = side_colours(level, &b.points, &joint)?;
    // Both sides are the same surfaces on both ends. An object's side that
    // passes from sky to grass behind it would pair on one side only, but
    // so do unrelated edges across a wide hole that happen to line up, and
    // wrongly drawn edges cost far more than soft ones.
    let difference = sides_a
        .iter()
        .zip(&sides_b)
        .map(|(p, q)| ((0..3).map(|c| (p[c] - q[c]).powi(2)).sum::<f32>() / 3.0).sqrt())
        .fold(0.0f32, f32::max);
    if difference > MAX_SIDE_DIFFERENCE {
        return None;
    }
    Some(offset)
}

/// The line through both runs' pixels, as a run holding all of them.
fn joint_line(a: &Run, b: &Run) -> Option<Run> {
    let points: Vec<(f32, f32)> = a.points.iter().chain(&b.points).copied().collect();
    let (centre, direction) = straight_line(&points)?;
    Some(Run {
        points,
        centre,
        direction,
        gradient: (0.0, 0.0),
        end: centre,
    })
}

/// Mean colours on the two sides of `line`, [`STRIP`] pixels off it,
/// beside `points`.
fn side_colours(level: &Level, points: &[(f32, f32)], line: &Run) -> Option<[[f32; 3]; 2]> {
    let profile = profile(level, points, line)?;
    Some([profile[0], profile[profile.len() - 1]])
}

/// The colour across `line` beside `points` (one run's pixels), from
/// `-STRIP` to `STRIP` along the line's normal in steps of
/// `1 / PROFILE_STEPS`, averaged over the points (known samples only).
/// `None` if a side has no known sample at all.
fn profile(level: &Level, points: &[(f32, f32)], line: &Run) -> Option<Vec<[f32; 3]>> {
    let normal = line.normal();
    let samples = (2.0 * STRIP * PROFILE_STEPS) as usize + 1;
    let measured: Vec<Option<[f32; 3]>> = (0..samples)
        .map(|k| {
            let s = -STRIP + k as f32 / PROFILE_STEPS;
            let mut sum = [0.0f32; 3];
            let mut count = 0.0f32;
            for &p in points {
                // Sample across the line itself, not across the jagged
                // pixel positions.
                let shift = s - line.offset(p);
                if let Some(c) = sample_known(level, p.0 + shift * normal.0, p.1 + shift * normal.1)
                {
                    (0..3).for_each(|i| sum[i] += c[i]);
                    count += 1.0;
                }
            }
            (count > 0.0).then(|| sum.map(|v| v / count))
        })
        .collect();
    // Both sides must be seen; an unseen sample repeats the one before it
    // (the first seen one, at the start).
    let middle = samples / 2;
    let mut held = measured[..middle].iter().flatten().next().copied()?;
    measured[middle + 1..].iter().flatten().next()?;
    Some(
        measured
            .into_iter()
            .map(|colour| {
                held = colour.unwrap_or(held);
                held
            })
            .collect(),
    )
}

/// Bilinear sample of the known pixels at `(x, y)`; `None` if any of the
/// four is in the hole or outside.
fn sample_known(level: &Level, x: f32, y: f32) -> Option<[f32; 3]> {
    let (w, h) = (level.width, level.height);
    if x < 0.0 || y < 0.0 || x > (w - 1) as f32 || y > (h - 1) as f32 {
        return None;
    }
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (tx, ty) = (x - x0 as f32, y - y0 as f32);
    let corners = [(x0, y0), (x1, y0), (x0, y1), (x1, y1)];
    if corners.iter().any(|&(cx, cy)| level.hole[cy * w + cx]) {
        return None;
    }
    let at = |cx: usize, cy: usize| level.pixels[cy * w + cx];
    let (a, b, c, d) = (at(x0, y0), at(x1, y0), at(x0, y1), at(x1, y1));
    Some(std::array::from_fn(|k| {
        (a[k] * (1.0 - tx) + b[k] * tx) * (1.0 - ty) + (c[k] * (1.0 - tx) + d[k] * tx) * ty
    }))
}

/// Paints the edge from `a`'s end to `b`'s end: every hole pixel within
/// [`STRIP`] of the line through both runs, between the two ends, gets the
/// two runs' profiles blended by where along the gap it lies.
fn paint(level: &mut Level, a: &Run, b: &Run) {
    let Some(line) = joint_line(a, b) else {
        return;
    };
    let (Some(profile_a), Some(profile_b)) = (
        profile(level, &a.points, &line),
        profile(level, &b.points, &line),
    ) else {
        return;
    };
    let along = |p: (f32, f32)| {
        (p.0 - line.centre.0) * line.direction.0 + (p.1 - line.centre.1) * line.direction.1
    };
    let across = |p: (f32, f32)| line.offset(p);
    let (ta, tb) = (along(a.end), along(b.end));
    let (lo, hi) = (ta.min(tb), ta.max(tb));
    let (w, h) = (level.width, level.height);
    let reach = STRIP + 1.0;
    let xs = [a.end.0, b.end.0];
    let ys = [a.end.1, b.end.1];
    let x0 = (xs[0].min(xs[1]) - reach).max(0.0) as usize;
    let x1 = ((xs[0].max(xs[1]) + reach) as usize).min(w - 1);
    let y0 = (ys[0].min(ys[1]) - reach).max(0.0) as usize;
    let y1 = ((ys[0].max(ys[1]) + reach) as usize).min(h - 1);
    let lookup = |profile: &[[f32; 3]], s: f32| {
        let f = ((s + STRIP) * PROFILE_STEPS).clamp(0.0, (profile.len() - 1) as f32);
        let (k, t) = (f.floor() as usize, f.fract());
        let next = (k + 1).min(profile.len() - 1);
        std::array::from_fn::<f32, 3, _>(|c| profile[k][c] * (1.0 - t) + profile[next][c] * t)
    };
    let mut painted = Vec::new();
    for y in y0..=y1 {
        for x in x0..=x1 {
            let i = y * w + x;
            let p = (x as f32, y as f32);
            let (t, s) = (along(p), across(p));
            if !level.hole[i] || s.abs() > STRIP || t < lo || t > hi {
                continue;
            }
            let share = if hi > lo { (t - ta) / (tb - ta) } else { 0.5 };
            let (pa, pb) = (lookup(&profile_a, s), lookup(&profile_b, s));
            painted.push((
                i,
                std::array::from_fn(|c| pa[c] * (1.0 - share) + pb[c] * share),
            ));
        }
    }
    for (i, colour) in painted {
        level.pixels[i] = colour;
        level.hole[i] = false;
    }
}

/// The least-squares line through `points`: a point on it and its unit
/// direction.
fn straight_line(points: &[(f32, f32)]) -> Option<((f32, f32), (f32, f32))> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f32;
    let centre = (
        points.iter().map(|p| p.0).sum::<f32>() / n,
        points.iter().map(|p| p.1).sum::<f32>() / n,
    );
    let (mut sxx, mut sxy, mut syy) = (0.0f32, 0.0f32, 0.0f32);
    for p in points {
        let (dx, dy) = (p.0 - centre.0, p.1 - centre.1);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    let angle = 0.5 * (2.0 * sxy).atan2(sxx - syy);
    Some((centre, (angle.cos(), angle.sin())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = 160;
    const H: usize = 120;

    /// A level split by the line `y = y0 + slope · x` (light above, dark
    /// below, or `right` below it right of the middle), with a disc hole of
    /// radius 30 in the middle.
    fn scene(y0: f32, slope: f32, right: Option<(f32, [f32; 3])>) -> Level {
        let mut pixels = Vec::with_capacity(W * H);
        let mut hole = Vec::with_capacity(W * H);
        for y in 0..H {
            for x in 0..W {
                let (fx, fy) = (x as f32, y as f32);
                let (line, below) = match right {
                    Some((y1, colour)) if x >= W / 2 => (y1 + slope * fx, colour),
                    _ => (y0 + slope * fx, [60.0, 110.0, 40.0]),
                };
                pixels.push(if fy < line {
                    [200.0, 210.0, 240.0]
                } else {
                    below
                });
                let (dx, dy) = (fx - W as f32 / 2.0, fy - H as f32 / 2.0);
                hole.push(dx * dx + dy * dy <= 30.0 * 30.0);
            }
        }
        for (p, h) in pixels.iter_mut().zip(&hole) {
            if *h {
                *p = [0.0; 3];
            }
        }
        Level {
            width: W,
            height: H,
            pixels,
            hole,
        }
    }

    #[test]
    fn an_edge_seen_on_both_sides_is_drawn_across_the_hole() {
        let mut level = scene(50.0, 0.1, None);
        assert_eq!(continue_edges(&mut level, 30.0), 1);
        // At the hole's centre column, the step is where the line is.
        let x = W / 2;
        let line = 50.0 + 0.1 * x as f32;
        let at = |y: f32| level.pixels[y.round() as usize * W + x];
        assert!(
            !level.hole[line.round() as usize * W + x],
            "the line's pixel is painted"
        );
        assert!(at(line - 2.0)[2] > 200.0, "above: {:?}", at(line - 2.0));
        assert!(at(line + 2.0)[2] < 80.0, "below: {:?}", at(line + 2.0));
        // Only a strip is painted; the rest of the hole is left to the fill.
        assert!(level.hole[(H / 2 + 25) * W + x]);
    }

    #[test]
    fn edges_that_do_not_line_up_are_left_alone() {
        // The far side's edge is 15 px lower: a step, not one edge.
        let mut level = scene(50.0, 0.1, Some((65.0, [60.0, 110.0, 40.0])));
        assert_eq!(continue_edges(&mut level, 30.0), 0);
    }

    #[test]
    fn an_edge_between_other_surfaces_on_the_far_side_is_left_alone() {
        // Lined up, but the far side's lower surface is another colour.
        let mut level = scene(50.0, 0.1, Some((50.0, [150.0, 60.0, 40.0])));
        assert_eq!(continue_edges(&mut level, 30.0), 0);
    }

    #[test]
    fn a_gap_wider_than_the_hole_allows_is_not_bridged() {
        // The same edge, but the hole is said to be a thin stroke drawn
        // along it: three radii of 5 px do not reach across 60 px.
        let mut level = scene(50.0, 0.1, None);
        assert_eq!(continue_edges(&mut level, 5.0), 0);
    }
}
