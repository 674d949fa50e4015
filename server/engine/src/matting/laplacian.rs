//! The matting Laplacian of Levin, Lischinski and Weiss (2008), assembled
//! only for the rows of unknown pixels, from the 3×3 windows that touch
//! them.
//!
//! `L = Σ_k (δ_ij − (1 + (I_i − μ_k)ᵀ (Σ_k + ε/9 · Id)⁻¹ (I_j − μ_k)) / 9)`
//! over windows `k` holding both `i` and `j`. Rows are assembled in
//! parallel, each gathering from its own nine windows, so nothing is
//! written twice and no locks are needed.

use rayon::prelude::*;

use super::stencil::{NONE, SLOTS, StencilMatrix, offset_slot, slot_offset};
use crate::planes::{ColorPlane, invert_symmetric3_f64};

/// Regulariser of the window covariances (Levin et al. use 1e-7 on
/// `0..=1` colours; larger values smooth the matte).
const EPSILON: f64 = 1e-7;

/// One 3×3 window: its centre, mean colour and regularised inverse
/// covariance. In `f64`: on a grey window (R = G = B) the inverse has
/// entries near `9/ε ≈ 1e8` that cancel down to small coefficients, and in
/// `f32` that cancellation leaves errors large enough to make the system
/// indefinite.
#[derive(Debug, Clone, Copy)]
struct Window {
    centre: u32,
    mean: [f64; 3],
    inverse: [f64; 6],
}

/// The rows of the matting Laplacian belonging to a set of active pixels.
#[derive(Debug)]
pub(super) struct MattingLaplacian<'a> {
    image: &'a ColorPlane,
    windows: Vec<Window>,
    /// For each pixel, the index of the window centred there, or [`NONE`].
    window_at: Vec<u32>,
    /// The active pixels, row-major.
    active: Vec<u32>,
}

impl<'a> MattingLaplacian<'a> {
    /// Prepares the rows of the pixels flagged in `active`.
    pub fn new(image: &'a ColorPlane, active: &[bool]) -> Self {
        let (w, h) = (image.width, image.height);
        let active_list: Vec<u32> = (0..w * h)
            .filter(|&i| active[i])
            .map(|i| i as u32)
            .collect();
        // Window centres: interior pixels with an active pixel in their 3×3.
        let mut is_centre = vec![false; w * h];
        for &i in &active_list {
            let (x, y) = (i as usize % w, i as usize / w);
            for cy in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for cx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    if cx >= 1 && cy >= 1 && cx + 1 < w && cy + 1 < h {
                        is_centre[cy * w + cx] = true;
                    }
                }
            }
        }
        let centres: Vec<u32> = (0..w * h)
            .filter(|&i| is_centre[i])
            .map(|i| i as u32)
            .collect();
        let windows: Vec<Window> = centres
            .par_iter()
            .map(|&c| window_stats(image, c as usize))
            .collect();
        let mut window_at = vec![NONE; w * h];
        for (k, win) in windows.iter().enumerate() {
            window_at[win.centre as usize] = k as u32;
        }
        MattingLaplacian {
            image,
            windows,
            window_at,
            active: active_list,
        }
    }

    /// The active pixels, in the order of the assembled rows.
    pub fn active(&self) -> &[u32] {
        &self.active
    }

    /// Assembles the rows of the active pixels restricted to active
    /// columns, and the right-hand side `−L_uk α_k` that the other pixels'
    /// fixed `alpha` contribute.
    pub fn assemble(&self, alpha: &[f32]) -> (StencilMatrix, Vec<f32>) {
        let (w, h) = (self.image.width, self.image.height);
        let mut row_of = vec![NONE; w * h];
        for (n, &i) in self.active.iter().enumerate() {
            row_of[i as usize] = n as u32;
        }
        let rows = self.active.len();
        let mut values = vec![0.0f32; rows * SLOTS];
        let mut neighbours = vec![NONE; rows * SLOTS];
        let mut rhs = vec![0.0f32; rows];
        values
            .par_chunks_mut(SLOTS)
            .zip(neighbours.par_chunks_mut(SLOTS))
            .zip(rhs.par_iter_mut())
            .zip(self.active.par_iter())
            .for_each(|(((values, neighbours), b), &i)| {
                let i = i as usize;
                let (x, y) = ((i % w) as isize, (i / w) as isize);
                for (slot, n) in neighbours.iter_mut().enumerate() {
                    let (dx, dy) = slot_offset(slot);
                    let (jx, jy) = (x + dx, y + dy);
                    if (0..w as isize).contains(&jx) && (0..h as isize).contains(&jy) {
                        *n = row_of[jy as usize * w + jx as usize];
                    }
                }
                let p = self.image.pixels[i].map(f64::from);
                let mut row = [0.0f64; SLOTS];
                let mut rhs = 0.0f64;
                for cy in (y - 1).max(0)..=(y + 1).min(h as isize - 1) {
                    for cx in (x - 1).max(0)..=(x + 1).min(w as isize - 1) {
                        let k = self.window_at[cy as usize * w + cx as usize];
                        if k == NONE {
                            continue;
                        }
                        let win = &self.windows[k as usize];
                        let d = [p[0] - win.mean[0], p[1] - win.mean[1], p[2] - win.mean[2]];
                        let q = mul_symmetric3_f64(&win.inverse, d);
                        for j in neighbourhood(win.centre as usize, w) {
                            let pj = self.image.pixels[j];
                            let dj = [0, 1, 2].map(|c| f64::from(pj[c]) - win.mean[c]);
                            let delta = if j == i { 1.0 } else { 0.0 };
                            let coefficient =
                                delta - (1.0 + q[0] * dj[0] + q[1] * dj[1] + q[2] * dj[2]) / 9.0;
                            if row_of[j] != NONE {
                                let (jx, jy) = ((j % w) as isize, (j / w) as isize);
                                let slot = offset_slot(jx - x, jy - y).expect("within the stencil");
                                row[slot] += coefficient;
                            } else {
                                rhs -= coefficient * f64::from(alpha[j]);
                            }
                        }
                    }
                }
                for (v, r) in values.iter_mut().zip(row) {
                    *v = r as f32;
                }
                *b = rhs as f32;
            });
        (StencilMatrix { values, neighbours }, rhs)
    }
}

/// Mean and regularised inverse covariance of the 3×3 window centred at `c`.
fn window_stats(image: &ColorPlane, c: usize) -> Window {
    let mut mean = [0.0f64; 3];
    for j in neighbourhood(c, image.width) {
        let p = image.pixels[j];
        (0..3).for_each(|ch| mean[ch] += f64::from(p[ch]));
    }
    let mean = mean.map(|m| m / 9.0);
    let mut covariance = [0.0f64; 6];
    for j in neighbourhood(c, image.width) {
        let p = image.pixels[j];
        let d = [0, 1, 2].map(|ch| f64::from(p[ch]) - mean[ch]);
        covariance[0] += d[0] * d[0];
        covariance[1] += d[0] * d[1];
        covariance[2] += d[0] * d[2];
        covariance[3] += d[1] * d[1];
        covariance[4] += d[1] * d[2];
        covariance[5] += d[2] * d[2];
    }
    let reg = EPSILON / 9.0;
    let mut covariance = covariance.map(|v| v / 9.0);
    covariance[0] += reg;
    covariance[3] += reg;
    covariance[5] += reg;
    Window {
        centre: c as u32,
        mean,
        inverse: invert_symmetric3_f64(covariance),
    }
}

/// `m · v` for a symmetric 3×3 `m` in the layout of `invert_symmetric3`.
fn mul_symmetric3_f64(m: &[f64; 6], v: [f64; 3]) -> [f64; 3] {
    [
        m[0] * v[0] + m[1] * v[1] + m[2] * v[2],
        m[1] * v[0] + m[3] * v[1] + m[4] * v[2],
        m[2] * v[0] + m[4] * v[1] + m[5] * v[2],
    ]
}

/// The nine pixels of the 3×3 window centred at interior pixel `c`.
fn neighbourhood(c: usize, width: usize) -> impl Iterator<Item = usize> {
    let top = c - width - 1;
    (0..3).flat_map(move |dy| (0..3).map(move |dx| top + dy * width + dx))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matting Laplacian of a small image, dense, straight from the
    /// formula in `f64`.
    fn reference(image: &ColorPlane) -> Vec<Vec<f64>> {
        let (w, h) = (image.width, image.height);
        let n = w * h;
        let mut l = vec![vec![0.0; n]; n];
        for cy in 1..h - 1 {
            for cx in 1..w - 1 {
                let win = window_stats(image, cy * w + cx);
                let members: Vec<usize> = neighbourhood(cy * w + cx, w).collect();
                let d = |j: usize| [0, 1, 2].map(|c| f64::from(image.pixels[j][c]) - win.mean[c]);
                for &i in &members {
                    let q = mul_symmetric3_f64(&win.inverse, d(i));
                    for &j in &members {
                        let dj = d(j);
                        let delta = if i == j { 1.0 } else { 0.0 };
                        l[i][j] += delta - (1.0 + q[0] * dj[0] + q[1] * dj[1] + q[2] * dj[2]) / 9.0;
                    }
                }
            }
        }
        l
    }

    #[test]
    fn assembled_rows_match_the_formula_on_a_grey_texture() {
        // Grey (R = G = B) texture: every window covariance is singular but
        // for the regulariser, where f32 arithmetic went wrong by ~0.4.
        let (w, h) = (8, 8);
        let pixels = (0..w * h)
            .map(|i| {
                let v = ((i * 7919 % 97) as f32 / 97.0 * 200.0).round() / 255.0;
                [v, v, v]
            })
            .collect();
        let image = ColorPlane {
            width: w,
            height: h,
            pixels,
        };
        let active = vec![true; w * h];
        let laplacian = MattingLaplacian::new(&image, &active);
        let (a, _) = laplacian.assemble(&vec![0.0; w * h]);
        let l = reference(&image);
        for (row, &i) in laplacian.active().iter().enumerate() {
            for slot in 0..SLOTS {
                let j = a.neighbours[row * SLOTS + slot];
                if j == NONE {
                    continue;
                }
                let j = laplacian.active()[j as usize] as usize;
                let got = f64::from(a.values[row * SLOTS + slot]);
                let want = l[i as usize][j];
                assert!(
                    (got - want).abs() <= 1e-3 * want.abs().max(1.0),
                    "L[{i}][{j}] = {got}, want {want}"
                );
            }
        }
    }
}
