//! The unknown rows of the matting Laplacian assembled as a 5×5 stencil
//! matrix, and its incomplete Cholesky factor (IC(0)) as preconditioner.
//!
//! Two pixels interact in `L` when some 3×3 window holds both, i.e. when
//! they are at most 2 apart on each axis: every row has at most 25 entries
//! at fixed offsets, stored densely per row (slot `(dy+2)·5 + (dx+2)`). The
//! factor keeps the sparsity of the lower half (12 slots plus the
//! diagonal), and its triangular solves cut the conjugate-gradient
//! iterations several-fold against a Jacobi preconditioner on this badly
//! conditioned system.

use rayon::prelude::*;

/// Entries per row.
pub(super) const SLOTS: usize = 25;
/// The diagonal's slot.
pub(super) const CENTRE: usize = 12;
/// No neighbour (outside the image, or not an unknown pixel).
pub(super) const NONE: u32 = u32::MAX;

/// `(dx, dy)` of a slot.
pub(super) fn slot_offset(slot: usize) -> (isize, isize) {
    ((slot % 5) as isize - 2, (slot / 5) as isize - 2)
}

/// Slot of an offset within the stencil.
pub(super) fn offset_slot(dx: isize, dy: isize) -> Option<usize> {
    ((-2..=2).contains(&dx) && (-2..=2).contains(&dy)).then(|| ((dy + 2) * 5 + dx + 2) as usize)
}

/// A symmetric matrix over the unknown pixels with a 5×5 stencil.
#[derive(Debug)]
pub(super) struct StencilMatrix {
    /// `rows * SLOTS` values.
    pub values: Vec<f32>,
    /// `rows * SLOTS` neighbour row indices, [`NONE`] where absent.
    pub neighbours: Vec<u32>,
}

impl StencilMatrix {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.values.len() / SLOTS
    }

    /// `out = A x`.
    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        out.par_iter_mut()
            .zip(self.values.par_chunks(SLOTS))
            .zip(self.neighbours.par_chunks(SLOTS))
            .for_each(|((o, values), neighbours)| {
                let mut sum = 0.0;
                for (v, &j) in values.iter().zip(neighbours) {
                    if j != NONE {
                        sum += v * x[j as usize];
                    }
                }
                *o = sum;
            });
    }
}

/// The incomplete Cholesky factor `A ≈ G Gᵀ`, `G` lower triangular with the
/// pattern of `A`'s lower half.
#[derive(Debug)]
pub(super) struct IncompleteCholesky {
    /// `rows * (CENTRE + 1)` values: the 12 lower slots, then the diagonal.
    factor: Vec<f32>,
}

impl IncompleteCholesky {
    /// Factors `a`. IC(0) can break down (a pivot that is not safely
    /// positive) on matrices this ill-conditioned; then `a` is factored
    /// again with its diagonal scaled up by a growing shift (Manteuffel's
    /// shifted incomplete Cholesky), which only weakens the preconditioner.
    pub fn new(a: &StencilMatrix) -> Self {
        for shift in [0.0, 1e-3, 1e-2, 1e-1, 1.0] {
            if let Some(factor) = factor(a, shift) {
                return IncompleteCholesky { factor };
            }
        }
        // Diagonal scaling (Jacobi) always works.
        let width = CENTRE + 1;
        let mut factor = vec![0.0f32; a.rows() * width];
        for i in 0..a.rows() {
            factor[i * width + CENTRE] = a.values[i * SLOTS + CENTRE].abs().max(1e-12).sqrt();
        }
        IncompleteCholesky { factor }
    }

    /// `z = (G Gᵀ)⁻¹ r`, by a forward and a backward substitution.
    pub fn solve(&self, a: &StencilMatrix, r: &[f32], z: &mut [f32]) {
        let width = CENTRE + 1;
        let rows = r.len();
        // G y = r.
        for i in 0..rows {
            let mut sum = r[i];
            for s in 0..CENTRE {
                let j = a.neighbours[i * SLOTS + s];
                if j != NONE {
                    sum -= self.factor[i * width + s] * z[j as usize];
                }
            }
            z[i] = sum / self.factor[i * width + CENTRE];
        }
        // Gᵀ x = y, column-oriented so it reads G by rows.
        for i in (0..rows).rev() {
            let xi = z[i] / self.factor[i * width + CENTRE];
            z[i] = xi;
            for s in 0..CENTRE {
                let j = a.neighbours[i * SLOTS + s];
                if j != NONE {
                    z[j as usize] -= self.factor[i * width + s] * xi;
                }
            }
        }
    }
}

/// IC(0) of `a` with its diagonal multiplied by `1 + shift`, or `None` on
/// breakdown.
fn factor(a: &StencilMatrix, shift: f64) -> Option<Vec<f32>> {
    let rows = a.rows();
    let width = CENTRE + 1;
    let pairs = fill_pairs();
    let mut factor = vec![0.0f32; rows * width];
    for i in 0..rows {
        let neighbours = &a.neighbours[i * SLOTS..(i + 1) * SLOTS];
        let values = &a.values[i * SLOTS..(i + 1) * SLOTS];
        let mut own = 0.0f64;
        for s in 0..CENTRE {
            let j = neighbours[s];
            if j == NONE {
                continue;
            }
            let j = j as usize;
            let mut sum = f64::from(values[s]);
            for &(si, sj) in &pairs[s] {
                // Both entries exist only if the shared neighbour does.
                if neighbours[si] != NONE {
                    sum -= f64::from(factor[i * width + si]) * f64::from(factor[j * width + sj]);
                }
            }
            let l = sum / f64::from(factor[j * width + CENTRE]);
            factor[i * width + s] = l as f32;
            own += l * l;
        }
        let diagonal = f64::from(values[CENTRE]) * (1.0 + shift);
        let pivot = diagonal - own;
        if !pivot.is_finite() || pivot <= 1e-3 * diagonal {
            return None;
        }
        factor[i * width + CENTRE] = pivot.sqrt() as f32;
    }
    Some(factor)
}

/// For each lower slot `s` (neighbour `j` of row `i`), the pairs of lower
/// slots `(a, b)` through which `i` and `j` share an earlier neighbour `k`:
/// `k = i + off(a) = j + off(b)`.
fn fill_pairs() -> Vec<Vec<(usize, usize)>> {
    (0..CENTRE)
        .map(|s| {
            let (sx, sy) = slot_offset(s);
            (0..CENTRE)
                .filter_map(|b| {
                    let (bx, by) = slot_offset(b);
                    let a = offset_slot(sx + bx, sy + by)?;
                    (a < CENTRE).then_some((a, b))
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1-D Poisson matrix (2 on the diagonal, −1 beside) over `n` pixels
    /// of one row: IC(0) of a tridiagonal matrix is its exact Cholesky.
    fn poisson(n: usize) -> StencilMatrix {
        let mut values = vec![0.0; n * SLOTS];
        let mut neighbours = vec![NONE; n * SLOTS];
        for i in 0..n {
            for (dx, v) in [(-1isize, -1.0f32), (0, 2.0), (1, -1.0)] {
                let j = i as isize + dx;
                if (0..n as isize).contains(&j) {
                    let s = offset_slot(dx, 0).unwrap();
                    values[i * SLOTS + s] = v;
                    neighbours[i * SLOTS + s] = j as u32;
                }
            }
        }
        StencilMatrix { values, neighbours }
    }

    #[test]
    fn factor_of_a_tridiagonal_matrix_solves_exactly() {
        let a = poisson(50);
        let ic = IncompleteCholesky::new(&a);
        let x: Vec<f32> = (0..50).map(|i| (i as f32 * 0.3).sin()).collect();
        let mut b = vec![0.0; 50];
        a.apply(&x, &mut b);
        let mut back = vec![0.0; 50];
        ic.solve(&a, &b, &mut back);
        for (got, want) in back.iter().zip(&x) {
            assert!((got - want).abs() < 1e-3, "{got} vs {want}");
        }
    }
}
