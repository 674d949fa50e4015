//! Separable Gaussian blur of a single-channel `f32` plane.

/// Blurs a `width`×`height` row-major plane with a Gaussian of `sigma`
/// pixels; borders repeat the edge pixel.
pub(super) fn gaussian_blur(plane: &[f32], width: usize, height: usize, sigma: f32) -> Vec<f32> {
    debug_assert_eq!(plane.len(), width * height);
    let kernel = kernel(sigma);
    let radius = (kernel.len() / 2) as i64;

    let mut rows = vec![0.0; plane.len()];
    let last_x = width as i64 - 1;
    for (src, dst) in plane.chunks_exact(width).zip(rows.chunks_exact_mut(width)) {
        for (x, d) in dst.iter_mut().enumerate() {
            *d = kernel
                .iter()
                .enumerate()
                .map(|(k, tap)| tap * src[(x as i64 + k as i64 - radius).clamp(0, last_x) as usize])
                .sum();
        }
    }

    // The vertical pass accumulates whole rows, which stays cache-friendly
    // on large planes where walking columns would not.
    let last_y = height as i64 - 1;
    let mut out = vec![0.0; plane.len()];
    for (y, dst) in out.chunks_exact_mut(width).enumerate() {
        for (k, tap) in kernel.iter().enumerate() {
            let sy = (y as i64 + k as i64 - radius).clamp(0, last_y) as usize;
            let src = &rows[sy * width..(sy + 1) * width];
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += tap * s);
        }
    }
    out
}

/// Normalised taps from `-radius` to `radius`, radius = ceil(3 sigma).
fn kernel(sigma: f32) -> Vec<f32> {
    let sigma = sigma.max(1e-3);
    let radius = (3.0 * sigma).ceil() as i64;
    let taps: Vec<f32> = (-radius..=radius)
        .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = taps.iter().sum();
    taps.into_iter().map(|t| t / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_planes_stay_constant_and_steps_are_smoothed() {
        let flat = gaussian_blur(&[0.5; 30], 6, 5, 2.0);
        assert!(flat.iter().all(|v| (v - 0.5).abs() < 1e-5));

        let step: Vec<f32> = (0..40)
            .map(|i| if i % 20 < 10 { 0.0 } else { 1.0 })
            .collect();
        let blurred = gaussian_blur(&step, 20, 2, 1.5);
        assert!(blurred[9] > 0.2 && blurred[9] < 0.5);
        assert!(blurred[10] > 0.5 && blurred[10] < 0.8);
        assert!(blurred[0] < 1e-4 && blurred[19] > 1.0 - 1e-4);
    }
}
