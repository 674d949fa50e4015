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
use crate::engine::planes::{ColorPlane, invert_symmetric3, mul_symmetric3};

/// Regulariser of the window covariances (Levin et al. use 1e-7 on
/// `0..=1` colours; larger values smooth the matte).
const EPSILON: f32 = 1e-7;

/// One 3×3 window: its centre, mean colour and regularised inverse
/// covariance.
#[derive(Debug, Clone, Copy)]
struct Window {
    centre: u32,
    mean: [f32; 3],
    inverse: [f32; 6],
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
                let p = self.image.pixels[i];
                for cy in (y - 1).max(0)..=(y + 1).min(h as isize - 1) {
                    for cx in (x - 1).max(0)..=(x + 1).min(w as isize - 1) {
                        let k = self.window_at[cy as usize * w + cx as usize];
                        if k == NONE {
                            continue;
                        }
                        let win = &self.windows[k as usize];
                        let d = [p[0] - win.mean[0], p[1] - win.mean[1], p[2] - win.mean[2]];
                        let q = mul_symmetric3(&win.inverse, d);
                        for j in neighbourhood(win.centre as usize, w) {
                            let pj = self.image.pixels[j];
                            let dj = [
                                pj[0] - win.mean[0],
                                pj[1] - win.mean[1],
                                pj[2] - win.mean[2],
                            ];
                            let delta = if j == i { 1.0 } else { 0.0 };
                            let coefficient =
                                delta - (1.0 + q[0] * dj[0] + q[1] * dj[1] + q[2] * dj[2]) / 9.0;
                            if row_of[j] != NONE {
                                let (jx, jy) = ((j % w) as isize, (j / w) as isize);
                                let slot = offset_slot(jx - x, jy - y).expect("within the stencil");
                                values[slot] += coefficient;
                            } else {
                                *b -= coefficient * alpha[j];
                            }
                        }
                    }
                }
            });
        (StencilMatrix { values, neighbours }, rhs)
    }
}

/// Mean and regularised inverse covariance of the 3×3 window centred at `c`.
fn window_stats(image: &ColorPlane, c: usize) -> Window {
    let mut mean = [0.0f32; 3];
    for j in neighbourhood(c, image.width) {
        let p = image.pixels[j];
        (0..3).for_each(|ch| mean[ch] += p[ch]);
    }
    let mean = mean.map(|m| m / 9.0);
    // Centred second moments: E[x²] − μ² would cancel catastrophically in
    // f32 against a regulariser of 1e-8.
    let mut covariance = [0.0f32; 6];
    for j in neighbourhood(c, image.width) {
        let p = image.pixels[j];
        let d = [p[0] - mean[0], p[1] - mean[1], p[2] - mean[2]];
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
        inverse: invert_symmetric3(covariance),
    }
}

/// The nine pixels of the 3×3 window centred at interior pixel `c`.
fn neighbourhood(c: usize, width: usize) -> impl Iterator<Item = usize> {
    let top = c - width - 1;
    (0..3).flat_map(move |dy| (0..3).map(move |dx| top + dy * width + dx))
}
