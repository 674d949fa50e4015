//! Deterministic value noise.

/// Hash of a lattice point and a seed to `0.0..1.0`.
pub(super) fn hash01(x: i64, y: i64, seed: u64) -> f32 {
    let mut z = (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ seed.wrapping_mul(0x1656_67B1_9E37_79F9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
}

/// Smoothly interpolated value noise with lattice spacing `scale`, in
/// `0.0..1.0`.
pub(super) fn value_noise(x: f32, y: f32, scale: f32, seed: u64) -> f32 {
    let (fx, fy) = (x / scale, y / scale);
    let (x0, y0) = (fx.floor(), fy.floor());
    let (tx, ty) = (smooth(fx - x0), smooth(fy - y0));
    let (ix, iy) = (x0 as i64, y0 as i64);
    let top = lerp(hash01(ix, iy, seed), hash01(ix + 1, iy, seed), tx);
    let bottom = lerp(hash01(ix, iy + 1, seed), hash01(ix + 1, iy + 1, seed), tx);
    lerp(top, bottom, ty)
}

/// Three octaves of value noise, in `0.0..1.0`.
pub(super) fn fractal_noise(x: f32, y: f32, scale: f32, seed: u64) -> f32 {
    (0.5 * value_noise(x, y, scale, seed)
        + 0.3 * value_noise(x, y, scale / 2.0, seed + 1)
        + 0.2 * value_noise(x, y, scale / 4.0, seed + 2))
    .clamp(0.0, 1.0)
}

fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}
