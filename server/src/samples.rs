//! Generated sample image/mask pairs, one per API, so demos and tests have
//! inputs without fetching anything. Everything is computed from fixed
//! formulas: the bytes are the same on every run.

use image::{GrayImage, Luma, Rgb, RgbImage};

use crate::local::encode_png;

/// Width of every sample.
const WIDTH: u32 = 640;
/// Height of every sample.
const HEIGHT: u32 = 480;

/// An input image and its mask, PNG-encoded.
#[derive(Debug, Clone)]
pub struct SamplePair {
    /// Name used in URLs: `/samples/{name}.png` and `/samples/{name}-mask.png`.
    pub name: &'static str,
    /// The image (RGB PNG).
    pub image_png: Vec<u8>,
    /// The mask (grayscale PNG, values 0 and 255).
    pub mask_png: Vec<u8>,
}

/// A subject with soft edges in front of a textured gradient, and a mask of
/// the subject (255 = keep) for instance matting.
pub fn matting_sample() -> SamplePair {
    let inside = |x: f32, y: f32| -> f32 {
        let head = circle(x, y, 320.0, 150.0, 62.0);
        let body = ellipse(x, y, 320.0, 350.0, 130.0, 150.0);
        head.min(body)
    };
    let image = RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let background = [
            40.0 + 60.0 * fx / WIDTH as f32,
            90.0 + 50.0 * fy / HEIGHT as f32,
            150.0 + 40.0 * (fx + fy) / (WIDTH + HEIGHT) as f32,
        ];
        let background = add_grain(background, x, y, 1, 14.0);
        let shade = 0.75 + 0.25 * (1.0 - (fx - 290.0).abs() / 160.0).clamp(0.0, 1.0);
        let subject = add_grain([225.0 * shade, 160.0 * shade, 110.0 * shade], x, y, 2, 6.0);
        let coverage = coverage(inside(fx, fy), 1.2);
        Rgb(to_u8(mix(background, subject, coverage)))
    });
    let mask = GrayImage::from_fn(WIDTH, HEIGHT, |x, y| {
        Luma([if inside(x as f32, y as f32) < 0.0 {
            255
        } else {
            0
        }])
    });
    pair("portrait", &image, &mask)
}

/// A ball and a sign pasted over stripes on a gradient, and a mask covering
/// both (255 = remove) for object removal.
pub fn removal_sample() -> SamplePair {
    let ball = |x: f32, y: f32| circle(x, y, 230.0, 260.0, 70.0);
    let sign = |x: f32, y: f32| rectangle(x, y, 400.0, 120.0, 520.0, 200.0);
    let image = RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let stripe = 0.5 + 0.5 * (fx * std::f32::consts::TAU / 24.0).sin();
        let sky = fy / HEIGHT as f32;
        let background = [
            90.0 + 50.0 * stripe + 40.0 * sky,
            120.0 + 30.0 * stripe + 50.0 * sky,
            170.0 + 20.0 * stripe - 60.0 * sky,
        ];
        let background = add_grain(background, x, y, 3, 10.0);
        let light =
            (1.0 - ((fx - 205.0).powi(2) + (fy - 235.0).powi(2)).sqrt() / 110.0).clamp(0.0, 1.0);
        let ball_colour = [
            150.0 + 100.0 * light,
            30.0 + 60.0 * light,
            40.0 + 50.0 * light,
        ];
        let with_ball = mix(background, ball_colour, coverage(ball(fx, fy), 0.8));
        let sign_colour = if ((x / 12) + (y / 12)) % 2 == 0 {
            [30.0; 3]
        } else {
            [235.0; 3]
        };
        Rgb(to_u8(mix(
            with_ball,
            sign_colour,
            coverage(sign(fx, fy), 0.6),
        )))
    });
    // The mask is a little larger than the objects, as a user would paint it.
    let mask = GrayImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        Luma([if ball(fx, fy).min(sign(fx, fy)) < 6.0 {
            255
        } else {
            0
        }])
    });
    pair("clutter", &image, &mask)
}

/// Every sample.
pub fn all() -> Vec<SamplePair> {
    vec![matting_sample(), removal_sample()]
}

fn pair(name: &'static str, image: &RgbImage, mask: &GrayImage) -> SamplePair {
    SamplePair {
        name,
        image_png: encode_png(image).expect("samples are non-empty 8-bit images"),
        mask_png: encode_png(mask).expect("samples are non-empty 8-bit images"),
    }
}

/// Signed distance to a circle (negative inside).
fn circle(x: f32, y: f32, cx: f32, cy: f32, r: f32) -> f32 {
    ((x - cx).powi(2) + (y - cy).powi(2)).sqrt() - r
}

/// Approximate signed distance to an axis-aligned ellipse.
fn ellipse(x: f32, y: f32, cx: f32, cy: f32, rx: f32, ry: f32) -> f32 {
    let d = (((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2)).sqrt();
    (d - 1.0) * rx.min(ry)
}

/// Signed distance to an axis-aligned rectangle.
fn rectangle(x: f32, y: f32, x0: f32, y0: f32, x1: f32, y1: f32) -> f32 {
    let dx = (x0 - x).max(x - x1);
    let dy = (y0 - y).max(y - y1);
    if dx > 0.0 || dy > 0.0 {
        (dx.max(0.0).powi(2) + dy.max(0.0).powi(2)).sqrt()
    } else {
        dx.max(dy)
    }
}

/// How much of a pixel a shape covers, from its signed distance, with an
/// edge `softness` pixels wide.
fn coverage(distance: f32, softness: f32) -> f32 {
    (0.5 - distance / (2.0 * softness)).clamp(0.0, 1.0)
}

/// `over` laid on `under` with opacity `amount`.
fn mix(under: [f32; 3], over: [f32; 3], amount: f32) -> [f32; 3] {
    let mut out = [0.0; 3];
    for ch in 0..3 {
        out[ch] = under[ch] * (1.0 - amount) + over[ch] * amount;
    }
    out
}

/// Rounds a colour to 8 bits.
fn to_u8(colour: [f32; 3]) -> [u8; 3] {
    colour.map(|c| c.round().clamp(0.0, 255.0) as u8)
}

/// Adds deterministic grain of up to ±`amount / 2` per channel.
fn add_grain(colour: [f32; 3], x: u32, y: u32, salt: u32, amount: f32) -> [f32; 3] {
    let mut out = colour;
    for (ch, c) in out.iter_mut().enumerate() {
        let h = hash(x, y, salt * 3 + ch as u32);
        *c += (h as f32 / u32::MAX as f32 - 0.5) * amount;
    }
    out
}

/// Integer hash of a pixel position (an avalanche mix of the inputs).
fn hash(x: u32, y: u32, salt: u32) -> u32 {
    let mut h = x
        .wrapping_mul(0x8da6_b343)
        .wrapping_add(y.wrapping_mul(0xd816_3841))
        .wrapping_add(salt.wrapping_mul(0xcb1a_b31f));
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^ (h >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png: &[u8]) -> image::DynamicImage {
        image::load_from_memory_with_format(png, image::ImageFormat::Png).unwrap()
    }

    #[test]
    fn samples_are_deterministic_pngs_of_640_by_480_with_binary_masks() {
        let first = all();
        let second = all();
        assert_eq!(first.len(), 2);
        for (a, b) in first.iter().zip(&second) {
            assert_eq!(a.image_png, b.image_png);
            assert_eq!(a.mask_png, b.mask_png);
            let image = decode(&a.image_png);
            let mask = decode(&a.mask_png).to_luma8();
            assert_eq!((image.width(), image.height()), (WIDTH, HEIGHT));
            assert_eq!(mask.dimensions(), (WIDTH, HEIGHT));
            assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
            let covered = mask.pixels().filter(|p| p.0[0] == 255).count();
            assert!(
                covered > 10_000 && covered < 150_000,
                "{}: {covered}",
                a.name
            );
        }
        assert_eq!(first[0].name, "portrait");
        assert_eq!(first[1].name, "clutter");
    }
}
