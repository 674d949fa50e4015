//! Floating-point image planes the engines compute on, and conversions from
//! and to the 8-bit images of the API.

use image::RgbImage;
use rayon::prelude::*;

/// An RGB image with channels in `0.0..=1.0`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ColorPlane {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height` pixels.
    pub pixels: Vec<[f32; 3]>,
}

impl ColorPlane {
    /// Converts an 8-bit image.
    pub fn from_rgb(image: &RgbImage) -> Self {
        ColorPlane {
            width: image.width() as usize,
            height: image.height() as usize,
            pixels: image
                .pixels()
                .map(|p| p.0.map(|v| f32::from(v) / 255.0))
                .collect(),
        }
    }

    /// Halves both sides (rounding up) by averaging 2×2 blocks.
    pub fn downsample(&self) -> Self {
        let (pixels, width, height) = halve(&self.pixels, self.width, self.height, average);
        ColorPlane {
            width,
            height,
            pixels,
        }
    }
}

/// The mean of some colours (NaN for none).
pub fn average(colours: &mut dyn Iterator<Item = [f32; 3]>) -> [f32; 3] {
    let mut sum = [0.0f32; 3];
    let mut n = 0.0;
    for p in colours {
        (0..3).for_each(|c| sum[c] += p[c]);
        n += 1.0;
    }
    sum.map(|s| s / n)
}

/// Halves a `width`×`height` plane (sides rounded up): each output pixel is
/// `combine` of its 2×2 children (fewer at odd borders). Returns the plane
/// and its size.
pub fn halve<T: Copy + Send + Sync>(
    plane: &[T],
    width: usize,
    height: usize,
    combine: impl Fn(&mut dyn Iterator<Item = T>) -> T + Sync,
) -> (Vec<T>, usize, usize) {
    let (w, h) = (width.div_ceil(2), height.div_ceil(2));
    let out: Vec<T> = (0..w * h)
        .into_par_iter()
        .map(|i| {
            let (x, y) = (i % w, i / w);
            let mut children = (2 * y..(2 * y + 2).min(height)).flat_map(|fy| {
                (2 * x..(2 * x + 2).min(width)).map(move |fx| plane[fy * width + fx])
            });
            combine(&mut children)
        })
        .collect();
    (out, w, h)
}

/// Bilinear resampling of a `width`×`height` scalar plane to
/// `to_width`×`to_height`, pixel centres aligned.
pub fn resize_bilinear(
    plane: &[f32],
    width: usize,
    height: usize,
    to_width: usize,
    to_height: usize,
) -> Vec<f32> {
    let sx = width as f32 / to_width as f32;
    let sy = height as f32 / to_height as f32;
    let mut out = vec![0.0f32; to_width * to_height];
    out.par_chunks_mut(to_width)
        .enumerate()
        .for_each(|(y, row)| {
            let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (height - 1) as f32);
            let y0 = fy as usize;
            let y1 = (y0 + 1).min(height - 1);
            let ty = fy - y0 as f32;
            for (x, out) in row.iter_mut().enumerate() {
                let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (width - 1) as f32);
                let x0 = fx as usize;
                let x1 = (x0 + 1).min(width - 1);
                let tx = fx - x0 as f32;
                let top = plane[y0 * width + x0] * (1.0 - tx) + plane[y0 * width + x1] * tx;
                let bottom = plane[y1 * width + x0] * (1.0 - tx) + plane[y1 * width + x1] * tx;
                *out = top * (1.0 - ty) + bottom * ty;
            }
        });
    out
}

/// A grid of `step`×`step` blocks over a `width`×`height` image. Statistics
/// over windows too wide to filter at full size are gathered per block and
/// box-filtered at block scale: a `step²`-th of the work.
#[derive(Debug, Clone, Copy)]
pub struct Blocks {
    /// The image's width in pixels.
    pub width: usize,
    /// Side of a block in pixels.
    pub step: usize,
    /// Blocks per row.
    pub columns: usize,
    /// Rows of blocks.
    pub rows: usize,
}

impl Blocks {
    /// The blocks of `step` pixels covering a `width`×`height` image (the
    /// last row and column may be partial).
    pub fn new(width: usize, height: usize, step: usize) -> Blocks {
        Blocks {
            width,
            step,
            columns: width.div_ceil(step),
            rows: height.div_ceil(step),
        }
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.columns * self.rows
    }

    /// Whether the grid has no blocks (an empty image).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The block holding pixel `i`.
    pub fn of(&self, i: usize) -> usize {
        (i / self.width / self.step) * self.columns + (i % self.width) / self.step
    }

    /// [`box_mean`] of a per-block plane, `radius` in blocks.
    pub fn box_mean(&self, plane: &[f32], radius: usize) -> Vec<f32> {
        box_mean(plane, self.columns, self.rows, radius)
    }
}

/// The 4-neighbours of pixel `i` of a `w`×`h` grid that lie inside it:
/// left, right, up, down.
pub fn neighbours_4(i: usize, w: usize, h: usize) -> impl Iterator<Item = usize> {
    let (x, y) = (i % w, i / w);
    [
        (x > 0).then(|| i - 1),
        (x + 1 < w).then(|| i + 1),
        (y > 0).then(|| i - w),
        (y + 1 < h).then(|| i + w),
    ]
    .into_iter()
    .flatten()
}

/// The 8-neighbours of pixel `i` of a `w`×`h` grid that lie inside it, row
/// by row from the upper left.
pub fn neighbours_8(i: usize, w: usize, h: usize) -> impl Iterator<Item = usize> {
    let (x, y) = ((i % w) as isize, (i / w) as isize);
    (-1isize..=1)
        .flat_map(move |dy| (-1isize..=1).map(move |dx| (dx, dy)))
        .filter(|&(dx, dy)| dx != 0 || dy != 0)
        .filter_map(move |(dx, dy)| {
            let (nx, ny) = (x + dx, y + dy);
            (nx >= 0 && ny >= 0 && nx < w as isize && ny < h as isize)
                .then(|| ny as usize * w + nx as usize)
        })
}

/// Mean over the `(2r+1)²` window around each pixel, clipped at the
/// borders (dividing by the number of pixels actually inside).
pub fn box_mean(plane: &[f32], width: usize, height: usize, r: usize) -> Vec<f32> {
    let mut rows = vec![0.0f32; plane.len()];
    rows.par_chunks_mut(width)
        .zip(plane.par_chunks(width))
        .for_each(|(out, src)| running_mean(src, out, r));
    // Columns: transpose so the same running sum works on contiguous data.
    let transposed = transpose(&rows, width, height);
    let mut cols = vec![0.0f32; plane.len()];
    cols.par_chunks_mut(height)
        .zip(transposed.par_chunks(height))
        .for_each(|(out, src)| running_mean(src, out, r));
    transpose(&cols, height, width)
}

/// Clipped sliding-window mean of one line, accumulated in f64 so long
/// lines do not drift.
fn running_mean(src: &[f32], out: &mut [f32], r: usize) {
    let n = src.len();
    let mut sum = 0.0f64;
    let mut lo = 0usize;
    let mut hi = 0usize;
    for (x, o) in out.iter_mut().enumerate() {
        let want_hi = (x + r + 1).min(n);
        while hi < want_hi {
            sum += f64::from(src[hi]);
            hi += 1;
        }
        let want_lo = x.saturating_sub(r);
        while lo < want_lo {
            sum -= f64::from(src[lo]);
            lo += 1;
        }
        *o = (sum / (hi - lo) as f64) as f32;
    }
}

fn transpose(plane: &[f32], width: usize, height: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; plane.len()];
    out.par_chunks_mut(height).enumerate().for_each(|(x, col)| {
        for (y, v) in col.iter_mut().enumerate() {
            *v = plane[y * width + x];
        }
    });
    out
}

/// Dot product in `f64`, summed in fixed-size chunks so the result does not
/// depend on how rayon splits the work.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    const CHUNK: usize = 4096;
    let partial: Vec<f64> = a
        .par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum()
        })
        .collect();
    partial.iter().sum()
}

/// Inverse of a symmetric 3×3 matrix given as `[xx, xy, xz, yy, yz, zz]`,
/// in the same layout. The matrices inverted here are covariances plus a
/// positive regulariser, so the determinant is positive.
pub fn invert_symmetric3(m: [f32; 6]) -> [f32; 6] {
    invert_symmetric3_f64(m.map(f64::from)).map(|v| v as f32)
}

/// [`invert_symmetric3`] in `f64`, for nearly singular covariances (grey
/// windows) whose inverse has entries near `1/ε` that `f32` cannot carry.
pub fn invert_symmetric3_f64(m: [f64; 6]) -> [f64; 6] {
    let [a, b, c, d, e, f] = m;
    let (ia, ib, ic) = (d * f - e * e, c * e - b * f, b * e - c * d);
    let det = a * ia + b * ib + c * ic;
    let inv = 1.0 / det;
    [
        ia * inv,
        ib * inv,
        ic * inv,
        (a * f - c * c) * inv,
        (b * c - a * e) * inv,
        (a * d - b * b) * inv,
    ]
}

/// `m · v` for a symmetric 3×3 `m` in the layout of [`invert_symmetric3`].
pub fn mul_symmetric3(m: &[f32; 6], v: [f32; 3]) -> [f32; 3] {
    [
        m[0] * v[0] + m[1] * v[1] + m[2] * v[2],
        m[1] * v[0] + m[3] * v[1] + m[4] * v[2],
        m[2] * v[0] + m[4] * v[1] + m[5] * v[2],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_inverse_inverts() {
        let m = [2.0, 0.5, 0.1, 1.5, 0.2, 1.0];
        let inv = invert_symmetric3(m);
        for v in [[1.0, 0.0, 0.0], [0.3, -2.0, 0.7]] {
            let back = mul_symmetric3(&m, mul_symmetric3(&inv, v));
            for c in 0..3 {
                assert!((back[c] - v[c]).abs() < 1e-5, "{back:?} vs {v:?}");
            }
        }
    }

    #[test]
    fn box_mean_of_a_constant_is_the_constant_and_clips_at_borders() {
        let out = box_mean(&[2.0; 35], 7, 5, 2);
        assert!(out.iter().all(|v| (v - 2.0).abs() < 1e-6));
        let ramp: Vec<f32> = (0..5).map(|x| x as f32).collect();
        let out = box_mean(&ramp, 5, 1, 1);
        assert_eq!(out, vec![0.5, 1.0, 2.0, 3.0, 3.5]);
    }

    #[test]
    fn resize_keeps_constants_and_ramps() {
        let ramp: Vec<f32> = (0..40).map(|i| (i % 8) as f32).collect();
        let up = resize_bilinear(&ramp, 8, 5, 16, 10);
        assert_eq!(up.len(), 160);
        assert!(up[..16].windows(2).all(|w| w[0] <= w[1]));
        let flat = resize_bilinear(&[3.0; 12], 4, 3, 9, 7);
        assert!(flat.iter().all(|v| (v - 3.0).abs() < 1e-6));
    }
}
