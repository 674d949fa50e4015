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
use crate::planes::ColorPlane;

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

/// Where the image puts the object's edge relative to the mask's outline,
/// in signed distance (positive inside the mask).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeBand {
    /// The band's inner limit (≥ 0): pixels deeper inside are foreground.
    pub inner: f32,
    /// The band's outer limit (≤ 0): pixels farther out are background.
    pub outer: f32,
    /// Where the edge most likely is: 0 unless the image's edges sit
    /// consistently beside the outline, as when a mask was drawn too wide
    /// or too tight.
    pub edge: f32,
}

impl EdgeBand {
    /// A band of `radius` either side of the outline.
    pub fn symmetric(radius: f32) -> Self {
        EdgeBand {
            inner: radius,
            outer: -radius,
            edge: 0.0,
        }
    }

    /// This band, widened where needed to reach at least `inner` inside
    /// the outline and `outer` outside it.
    pub fn covering(self, inner: f32, outer: f32) -> Self {
        EdgeBand {
            inner: self.inner.max(inner),
            outer: self.outer.min(-outer),
            ..self
        }
    }
}

/// The mean gradient across the outline: one bin per pixel of signed
/// distance, bin `i` holding distances in `[i − reach, i − reach + 1)`.
struct Profile {
    reach: i32,
    means: Vec<Option<f64>>,
    /// Pixels per bin.
    counts: Vec<usize>,
}

impl Profile {
    /// The profile of every pixel.
    fn of(gradient: &[f32], signed: &[f32], reach: i32) -> Self {
        Profile::by_group(gradient, signed, reach, 1, |_| 0)
            .pop()
            .expect("one group")
    }

    /// One profile per group, `group_of` naming each pixel's (below
    /// `groups`), in a single pass over the image.
    fn by_group(
        gradient: &[f32],
        signed: &[f32],
        reach: i32,
        groups: usize,
        group_of: impl Fn(usize) -> usize,
    ) -> Vec<Self> {
        let bins = (2 * reach) as usize;
        let mut sums = vec![(0.0f64, 0usize); groups * bins];
        for (i, (&g, &d)) in gradient.iter().zip(signed).enumerate() {
            let k = d.floor() as i32;
            if (-reach..reach).contains(&k) {
                let bin = &mut sums[group_of(i) * bins + (k + reach) as usize];
                bin.0 += f64::from(g);
                bin.1 += 1;
            }
        }
        sums.chunks(bins)
            .map(|group| Profile {
                reach,
                means: group
                    .iter()
                    .map(|&(s, n)| (n > 0).then(|| s / n as f64))
                    .collect(),
                counts: group.iter().map(|&(_, n)| n).collect(),
            })
            .collect()
    }

    /// Pixels next to the outline: those of the two bins either side of it,
    /// signed distances in `[−1, 1)` (which no pixel reaches exactly at −1).
    fn outline_pixels(&self) -> usize {
        let outline = self.reach as usize;
        self.counts[outline - 1] + self.counts[outline]
    }

    /// Start of bin `i`'s distances.
    fn start(&self, i: usize) -> f32 {
        i as f32 - self.reach as f32
    }

    /// The highest bin and its mean.
    fn peak(&self) -> Option<(usize, f64)> {
        self.means
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i, v)))
            .fold(None, |best, (i, v)| match best {
                Some((_, b)) if b >= v => best,
                _ => Some((i, v)),
            })
    }

    /// The level far from the outline: the mean of the outer sixth of bins
    /// on both sides.
    fn level(&self) -> f64 {
        let bins = self.means.len();
        let outer = (bins / 6).max(1);
        let (sum, n) = self.means[..outer]
            .iter()
            .chain(&self.means[bins - outer..])
            .flatten()
            .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
        sum / n.max(1) as f64
    }
}

/// Tiles per side of the grid in which edges are looked for separately.
const TILES: usize = 4;
/// Share of the outline whose own tile must agree before the whole outline
/// is moved.
const SHIFT_CONSENSUS: f64 = 0.6;

/// The unknown band the image asks for. The mean gradient is profiled
/// across the outline out to `max_radius`; the band covers the outline and
/// every bin whose mean stands out at least half as much as the peak's does
/// from the far bins' level, walking out from the peak, plus one pixel of
/// margin.
pub fn edge_band(
    gradient: &[f32],
    signed: &[f32],
    width: usize,
    height: usize,
    max_radius: f32,
) -> EdgeBand {
    let reach = max_radius.ceil() as i32;
    let profile = Profile::of(gradient, signed, reach);
    let Some((peak_bin, peak)) = profile.peak() else {
        return EdgeBand::symmetric(MIN_BAND_RADIUS);
    };
    let level = profile.level();
    let half = level + 0.5 * (peak - level);
    let stands_out = |i: usize| profile.means[i].is_some_and(|v| v >= half);
    // Every bin that stands out, not only those next to the peak: a mask
    // that wanders in and out puts the edge on both sides of its outline.
    let lo = (0..peak_bin).find(|&i| stands_out(i)).unwrap_or(peak_bin);
    let hi = (peak_bin..profile.means.len())
        .rev()
        .find(|&i| stands_out(i))
        .unwrap_or(peak_bin);
    let centre = profile.start(peak_bin) + 0.5;
    let outline = reach as usize;
    let shifted = centre.abs() >= SHIFTED_EDGE
        && !stands_out(outline - 1)
        && !stands_out(outline)
        && tiles_agree(gradient, signed, width, height, reach, centre);
    EdgeBand {
        inner: (profile.start(hi) + 2.0).clamp(MIN_BAND_RADIUS, max_radius),
        outer: (profile.start(lo) - 1.0).clamp(-max_radius, -MIN_BAND_RADIUS),
        edge: if shifted { centre } else { 0.0 },
    }
}

/// Whether most of the outline (by length, in tiles of a `TILES`² grid)
/// has its own strongest edge within 1.5 px of `centre`: a mask drawn too
/// wide or tight is off all around, while one strong line inside an object
/// only shows near part of it.
fn tiles_agree(
    gradient: &[f32],
    signed: &[f32],
    width: usize,
    height: usize,
    reach: i32,
    centre: f32,
) -> bool {
    let tile = |i: usize| (i / width) * TILES / height * TILES + (i % width) * TILES / width;
    let (mut agreeing, mut total) = (0usize, 0usize);
    for profile in Profile::by_group(gradient, signed, reach, TILES * TILES, tile) {
        let outline = profile.outline_pixels();
        if outline == 0 {
            continue;
        }
        let agrees = profile
            .peak()
            .is_some_and(|(bin, _)| (profile.start(bin) + 0.5 - centre).abs() <= 1.5);
        total += outline;
        agreeing += if agrees { outline } else { 0 };
    }
    agreeing as f64 >= SHIFT_CONSENSUS * total as f64
}

/// A profile peak at least this far from the outline, with nothing
/// standing out at the outline itself, means the mask is shifted off the
/// object's edge, not merely imprecise.
const SHIFTED_EDGE: f32 = 2.0;

/// The trimap of `band`: pixels with signed distance within it are unknown.
pub fn band_trimap(signed: &[f32], width: usize, height: usize, band: EdgeBand) -> Trimap {
    Trimap {
        width,
        height,
        values: signed
            .iter()
            .map(|&d| {
                if d > band.inner {
                    FOREGROUND
                } else if d < band.outer {
                    BACKGROUND
                } else {
                    UNKNOWN
                }
            })
            .collect(),
    }
}
