//! Object removal scenes: a known backdrop, an object pasted over part of
//! it, and the object's mask.

use image::{GrayImage, Luma, Rgb, RgbImage};

use super::noise::{fractal_noise, hash01};

/// The picture behind the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backdrop {
    /// Running-bond brickwork: regular texture with straight mortar lines.
    Bricks,
    /// A smooth colour gradient under fine grain.
    GrainyGradient,
    /// Straight edges: a horizon and a diagonal pole between textured
    /// regions.
    Edges,
}

/// The shape of the object to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoleShape {
    /// A blob of about 5% of the picture.
    Blob,
    /// A few wiggly strokes 5 px wide.
    Strokes,
}

/// A removal scene.
#[derive(Debug, Clone)]
pub struct RemovalScene {
    /// The backdrop alone: what a perfect removal returns.
    pub original: RgbImage,
    /// The backdrop with the object pasted in.
    pub image: RgbImage,
    /// The object's mask, 255 = remove.
    pub mask: GrayImage,
}

/// Generates a `width`×`height` scene.
pub fn removal_scene(
    backdrop: Backdrop,
    shape: HoleShape,
    width: u32,
    height: u32,
    seed: u64,
) -> RemovalScene {
    let (w, h) = (width as f32, height as f32);
    let original = RgbImage::from_fn(width, height, |x, y| {
        let c = backdrop_colour(backdrop, x as f32, y as f32, w, h, seed);
        Rgb(c.map(|v| v.round().clamp(0.0, 255.0) as u8))
    });
    let inside = |x: f32, y: f32| -> bool {
        match shape {
            HoleShape::Blob => {
                // Three overlapping ellipses, about 5% of the area together.
                let r = (0.05 * w * h / std::f32::consts::PI).sqrt();
                let ellipses = [
                    (0.5, 0.5, 1.0, 0.8),
                    (0.5 + 0.55 * r / w, 0.5 - 0.45 * r / h, 0.45, 0.45),
                    (0.5 - 0.6 * r / w, 0.5 + 0.35 * r / h, 0.4, 0.35),
                ];
                ellipses.iter().any(|&(ex, ey, sx, sy)| {
                    let dx = (x - ex * w) / (r * sx * 1.05);
                    let dy = (y - ey * h) / (r * sy * 1.05);
                    dx * dx + dy * dy <= 1.0
                })
            }
            HoleShape::Strokes => (0..4).any(|k| {
                let k = k as f32;
                let base = h * (0.2 + 0.2 * k);
                let phase = hash01(k as i64, 0, seed) * 6.0;
                let centre = base + 0.06 * h * (x / w * 9.0 + phase).sin();
                let slope = 0.06 * h * 9.0 / w * (x / w * 9.0 + phase).cos();
                // Vertical distance scaled to the normal distance.
                (y - centre).abs() / (1.0 + slope * slope).sqrt() <= 2.5
            }),
        }
    };
    let mask = GrayImage::from_fn(width, height, |x, y| {
        Luma([if inside(x as f32 + 0.5, y as f32 + 0.5) {
            255
        } else {
            0
        }])
    });
    let mut image = original.clone();
    for (x, y, p) in image.enumerate_pixels_mut() {
        if mask.get_pixel(x, y).0[0] != 0 {
            let stripe = ((x / 6 + y / 6) % 2) as u8;
            *p = Rgb([220, 30 + 40 * stripe, 40]);
        }
    }
    RemovalScene {
        original,
        image,
        mask,
    }
}

fn backdrop_colour(backdrop: Backdrop, x: f32, y: f32, w: f32, h: f32, seed: u64) -> [f32; 3] {
    let grain = fractal_noise(x, y, 3.0, seed + 1) - 0.5;
    match backdrop {
        Backdrop::Bricks => {
            let (bw, bh, mortar) = (64.0, 28.0, 4.0);
            let row = (y / bh).floor();
            let offset = if row as i64 % 2 == 0 { 0.0 } else { bw / 2.0 };
            let col = ((x + offset) / bw).floor();
            let (u, v) = ((x + offset) - col * bw, y - row * bh);
            if u < mortar || v < mortar {
                [
                    190.0 + 30.0 * grain,
                    185.0 + 30.0 * grain,
                    175.0 + 30.0 * grain,
                ]
            } else {
                let tint = hash01(col as i64, row as i64, seed + 2) - 0.5;
                let speckle = 70.0 * grain;
                [
                    150.0 + 40.0 * tint + speckle,
                    70.0 + 20.0 * tint + 0.6 * speckle,
                    50.0 + 10.0 * tint + 0.4 * speckle,
                ]
            }
        }
        Backdrop::GrainyGradient => [
            40.0 + 170.0 * x / w + 50.0 * grain,
            80.0 + 120.0 * y / h + 50.0 * grain,
            200.0 - 120.0 * (x + y) / (w + h) + 50.0 * grain,
        ],
        Backdrop::Edges => {
            let horizon = 0.55 * h + 0.08 * (x - 0.5 * w);
            let pole = (x - (0.35 * w + 0.25 * y)).abs() < 0.02 * w;
            if pole {
                [
                    60.0 + 30.0 * grain,
                    50.0 + 30.0 * grain,
                    45.0 + 30.0 * grain,
                ]
            } else if y < horizon {
                [
                    110.0 + 60.0 * y / h,
                    160.0 + 50.0 * y / h,
                    235.0 + 10.0 * grain,
                ]
            } else {
                let blades = fractal_noise(x * 3.0, y * 0.5, 6.0, seed + 3) - 0.5;
                [
                    70.0 + 60.0 * blades + 30.0 * grain,
                    130.0 + 70.0 * blades + 30.0 * grain,
                    50.0 + 30.0 * blades,
                ]
            }
        }
    }
}
