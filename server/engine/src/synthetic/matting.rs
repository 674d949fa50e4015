//! Matting composites: a foreground with known alpha over a textured
//! background, and keep-masks derived from the truth and then coarsened.

use image::{GrayImage, Luma, Rgb, RgbImage};
use imageproc::distance_transform::euclidean_squared_distance_transform;

use super::noise::{fractal_noise, hash01, value_noise};

/// What the foreground's edge looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MattingStyle {
    /// A body with hundreds of thin, partly transparent hair-like strands.
    Strands,
    /// A body with a wide soft edge of varying width and a semi-transparent
    /// veil.
    Soft,
    /// A body perforated by a grid of round holes, like a mesh or a
    /// lattice: background shows through inside the outline.
    Mesh,
}

/// A composite `image = α·F + (1−α)·B` with its ground truth.
#[derive(Debug, Clone)]
pub struct MattingScene {
    /// The composite.
    pub image: RgbImage,
    /// True alpha, `0..=1`, row-major.
    pub alpha: Vec<f32>,
    /// True foreground colours, `0..=1`.
    pub foreground: Vec<[f32; 3]>,
}

/// Generates a `width`×`height` scene.
pub fn matting_scene(style: MattingStyle, width: u32, height: u32, seed: u64) -> MattingScene {
    let (w, h) = (width as usize, height as usize);
    let alpha = scene_alpha(style, width, height, seed);
    let foreground: Vec<[f32; 3]> = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let n = fractal_noise(x, y, 24.0, seed + 3);
            match style {
                MattingStyle::Strands => [0.55 + 0.35 * n, 0.38 + 0.25 * n, 0.18 + 0.1 * n],
                MattingStyle::Soft | MattingStyle::Mesh => {
                    [0.85 - 0.2 * n, 0.82 - 0.1 * n, 0.9 - 0.3 * n]
                }
            }
        })
        .collect();
    let image = RgbImage::from_fn(width, height, |x, y| {
        let i = y as usize * w + x as usize;
        let b = background(x as f32, y as f32, w as f32, seed);
        let a = alpha[i];
        Rgb(std::array::from_fn(|c| {
            ((a * foreground[i][c] + (1.0 - a) * b[c]) * 255.0)
                .round()
                .clamp(0.0, 255.0) as u8
        }))
    });
    MattingScene {
        image,
        alpha,
        foreground,
    }
}

/// True alpha of a `width`×`height` scene of the given style: an elliptic
/// body slightly below the centre with the style's edge.
pub fn scene_alpha(style: MattingStyle, width: u32, height: u32, seed: u64) -> Vec<f32> {
    let (w, h) = (width as usize, height as usize);
    let (cx, cy) = (w as f32 * 0.5, h as f32 * 0.55);
    let (rx, ry) = (w as f32 * 0.2, h as f32 * 0.28);
    // Signed distance (approximate, in pixels; positive inside) to the body.
    let body = |x: f32, y: f32| {
        let (dx, dy) = ((x - cx) / rx, (y - cy) / ry);
        let r = (dx * dx + dy * dy).sqrt();
        (1.0 - r) * rx.min(ry)
    };
    let mut alpha: Vec<f32> = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f32 + 0.5, (i / w) as f32 + 0.5);
            match style {
                MattingStyle::Strands => (body(x, y) + 0.5).clamp(0.0, 1.0),
                MattingStyle::Mesh => (body(x, y) + 0.5).clamp(0.0, 1.0),
                MattingStyle::Soft => {
                    // Edge softness between 3 and 18 px along the outline.
                    let softness = 3.0 + 15.0 * value_noise(x, y, 60.0, seed + 7);
                    let a = ((body(x, y) / softness) + 0.5).clamp(0.0, 1.0);
                    a * a * (3.0 - 2.0 * a)
                }
            }
        })
        .collect();
    match style {
        MattingStyle::Strands => add_strands(&mut alpha, w, h, (cx, cy, rx, ry), seed),
        MattingStyle::Soft => add_veil(&mut alpha, w, h, (cx, cy, rx, ry)),
        MattingStyle::Mesh => add_holes(&mut alpha, w, h),
    }
    alpha
}

/// A busy background: colour gradient, fractal noise and diagonal stripes.
fn background(x: f32, y: f32, width: f32, seed: u64) -> [f32; 3] {
    let n = fractal_noise(x, y, 18.0, seed + 11);
    let stripes = 0.5 + 0.5 * ((x + 0.6 * y) * 0.21).sin();
    let t = x / width;
    [
        (0.15 + 0.4 * t + 0.3 * n).clamp(0.0, 1.0),
        (0.35 + 0.25 * stripes + 0.2 * n).clamp(0.0, 1.0),
        (0.55 - 0.3 * t + 0.25 * (n - 0.5) + 0.1 * stripes).clamp(0.0, 1.0),
    ]
}

/// Thin curved strands growing out of the body's upper half, each an
/// anti-aliased polyline of 0.7–1.8 px width and 0.5–1.0 opacity.
fn add_strands(alpha: &mut [f32], w: usize, h: usize, body: (f32, f32, f32, f32), seed: u64) {
    let (cx, cy, rx, ry) = body;
    let count = (w.min(h) / 3).max(40);
    for s in 0..count as i64 {
        let r = |k: i64| hash01(s, k, seed + 19);
        let angle = std::f32::consts::PI * (1.05 + 0.9 * r(0));
        let (ux, uy) = (angle.cos(), angle.sin());
        let start = (cx + rx * 0.97 * ux, cy + ry * 0.97 * uy);
        let length = (w.min(h) as f32) * (0.05 + 0.12 * r(1));
        let curl = (r(2) - 0.5) * 1.6;
        let width = 0.7 + 1.1 * r(3);
        let opacity = 0.5 + 0.5 * r(4);
        let points: Vec<(f32, f32)> = (0..=16)
            .map(|k| {
                let t = k as f32 / 16.0;
                let a = angle + curl * t;
                let d = length * t;
                (
                    start.0 + d * (angle.cos() * 0.5 + a.cos() * 0.5),
                    start.1 + d * (angle.sin() * 0.5 + a.sin() * 0.5),
                )
            })
            .collect();
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for &(px, py) in &points {
            (x0, y0, x1, y1) = (x0.min(px), y0.min(py), x1.max(px), y1.max(py));
        }
        let pad = width + 2.0;
        let xs = (x0 - pad).max(0.0) as usize..((x1 + pad).max(0.0) as usize).min(w);
        let ys = (y0 - pad).max(0.0) as usize..((y1 + pad).max(0.0) as usize).min(h);
        for y in ys {
            for x in xs.clone() {
                let p = (x as f32 + 0.5, y as f32 + 0.5);
                let d = points
                    .windows(2)
                    .map(|seg| segment_distance(p, seg[0], seg[1]))
                    .fold(f32::MAX, f32::min);
                let coverage = (width / 2.0 + 0.5 - d).clamp(0.0, 1.0) * opacity;
                let a = &mut alpha[y * w + x];
                *a = 1.0 - (1.0 - *a) * (1.0 - coverage);
            }
        }
    }
}

/// A semi-transparent veil (alpha 0.45, soft-edged) beside the body.
fn add_veil(alpha: &mut [f32], w: usize, h: usize, body: (f32, f32, f32, f32)) {
    let (cx, cy, rx, ry) = body;
    let (vx, vy) = (cx + rx * 1.1, cy - ry * 0.4);
    let (hx, hy) = (rx * 0.55, ry * 0.35);
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (((x as f32) - vx) / hx, ((y as f32) - vy) / hy);
            let r = (dx * dx + dy * dy).sqrt();
            let edge = ((1.0 - r) * hx.min(hy) / 4.0).clamp(0.0, 1.0);
            let veil = 0.45 * edge;
            let a = &mut alpha[y * w + x];
            *a = 1.0 - (1.0 - *a) * (1.0 - veil);
        }
    }
}

/// Round holes (radius 5% of the body's smaller axis, anti-aliased) on a
/// square grid spaced three radii apart, over the body's inner part.
fn add_holes(alpha: &mut [f32], w: usize, h: usize) {
    let (cx, cy) = (w as f32 * 0.5, h as f32 * 0.55);
    let (rx, ry) = (w as f32 * 0.2, h as f32 * 0.28);
    let r = rx.min(ry) * 0.1;
    let pitch = 3.0 * r;
    for y in 0..h {
        for x in 0..w {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            let (dx, dy) = ((px - cx) / rx, (py - cy) / ry);
            if dx * dx + dy * dy > 0.6 {
                continue;
            }
            let gx = px - cx - ((px - cx) / pitch).round() * pitch;
            let gy = py - cy - ((py - cy) / pitch).round() * pitch;
            let d = (gx * gx + gy * gy).sqrt();
            let open = (r + 0.5 - d).clamp(0.0, 1.0);
            alpha[y * w + x] *= 1.0 - open;
        }
    }
}

fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (abx, aby) = (b.0 - a.0, b.1 - a.1);
    let (apx, apy) = (p.0 - a.0, p.1 - a.1);
    let len2 = abx * abx + aby * aby;
    let t = if len2 > 0.0 {
        ((apx * abx + apy * aby) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (dx, dy) = (apx - t * abx, apy - t * aby);
    (dx * dx + dy * dy).sqrt()
}

/// The keep-mask a user might draw: the truth thresholded at 0.5, with its
/// outline pushed in or out by a smoothly varying amount of up to `pixels`.
/// `pixels = 0` gives the exact mask.
pub fn coarsen_mask(alpha: &[f32], width: u32, height: u32, pixels: f32, seed: u64) -> GrayImage {
    let w = width as usize;
    let exact = GrayImage::from_fn(width, height, |x, y| {
        Luma([if alpha[y as usize * w + x as usize] >= 0.5 {
            255
        } else {
            0
        }])
    });
    if pixels <= 0.0 {
        return exact;
    }
    let inverted = GrayImage::from_fn(width, height, |x, y| {
        Luma([255 - exact.get_pixel(x, y).0[0]])
    });
    let to_inside = euclidean_squared_distance_transform(&exact);
    let to_outside = euclidean_squared_distance_transform(&inverted);
    GrayImage::from_fn(width, height, |x, y| {
        let i = (y * width + x) as usize;
        // Signed distance to the outline, positive inside.
        let signed = if exact.as_raw()[i] != 0 {
            to_outside.as_raw()[i].sqrt() as f32
        } else {
            -(to_inside.as_raw()[i].sqrt() as f32)
        };
        // Value noise clusters around 0.5; stretch it so much of the outline
        // is off by the full amount.
        let n = value_noise(x as f32, y as f32, 45.0, seed + 5);
        let shift = pixels * (4.0 * (n - 0.5)).clamp(-1.0, 1.0);
        Luma([if signed + shift > 0.0 { 255 } else { 0 }])
    })
}
