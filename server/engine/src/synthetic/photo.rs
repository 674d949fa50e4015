//! Scenes built from real photographs: a region of one photo cut out along
//! a known alpha and composited over another photo, the masks a user would
//! draw for it, and removal holes (brush strokes, object silhouettes) on a
//! photo whose original content is known.
//!
//! The photographs are public-domain and CC0/CC-BY pictures bundled in
//! `server/engine/testdata/photos` (see its README). Generated scenes alone once
//! made the engine look better than it was on real pictures: real photos
//! bring edges, clutter and colours near the cut that formulas do not.

use std::path::Path;

use image::imageops::{self, FilterType};
use image::{GrayImage, Luma, Rgb, RgbImage};
use imageproc::distance_transform::euclidean_squared_distance_transform;

use super::matting::{MattingScene, MattingStyle, scene_alpha};
use super::noise::hash01;
use crate::planes::neighbours_4;

/// A photograph and its file stem.
#[derive(Debug, Clone)]
pub struct Photo {
    /// File name without extension, e.g. `coffee`.
    pub name: String,
    /// The pixels.
    pub image: RgbImage,
}

/// Loads every colour JPEG of `dir`, sorted by name (greyscale ones, the
/// textures, are skipped).
pub fn load_colour_photos(dir: &Path) -> Result<Vec<Photo>, image::ImageError> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(image::ImageError::IoError)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    paths.sort();
    let mut photos = Vec::new();
    for path in paths {
        let decoded = image::open(&path)?;
        if !decoded.color().has_color() {
            continue;
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        photos.push(Photo {
            name,
            image: decoded.to_rgb8(),
        });
    }
    Ok(photos)
}

/// Loads a silhouette (white = object) as a binary image.
pub fn load_silhouette(path: &Path) -> Result<GrayImage, image::ImageError> {
    let grey = image::open(path)?.to_luma8();
    Ok(GrayImage::from_fn(grey.width(), grey.height(), |x, y| {
        Luma([if grey.get_pixel(x, y).0[0] >= 128 {
            255
        } else {
            0
        }])
    }))
}

/// `image` scaled to cover `width`×`height` and cropped to it, centred.
pub fn fit(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let scale = (f64::from(width) / f64::from(image.width()))
        .max(f64::from(height) / f64::from(image.height()));
    let (sw, sh) = (
        ((f64::from(image.width()) * scale).ceil() as u32).max(width),
        ((f64::from(image.height()) * scale).ceil() as u32).max(height),
    );
    let scaled = imageops::resize(image, sw, sh, FilterType::CatmullRom);
    imageops::crop_imm(&scaled, (sw - width) / 2, (sh - height) / 2, width, height).to_image()
}

/// The shape along which the foreground photo is cut out.
#[derive(Debug, Clone, Copy)]
pub enum Cutout<'a> {
    /// One of the generated edges: hair-like strands, soft edge and veil,
    /// or a mesh of holes.
    Style(MattingStyle),
    /// A real object's outline (binary, white = object), scaled to fill
    /// about three quarters of the frame, with anti-aliased edges; thin
    /// parts such as legs stay thin.
    Silhouette(&'a GrayImage),
}

/// A `width`×`height` composite: `foreground` (fitted to the frame) cut
/// along `cutout` and laid over `background`.
pub fn photo_matting_scene(
    foreground: &RgbImage,
    background: &RgbImage,
    cutout: Cutout<'_>,
    width: u32,
    height: u32,
    seed: u64,
) -> MattingScene {
    let alpha = match cutout {
        Cutout::Style(style) => scene_alpha(style, width, height, seed),
        Cutout::Silhouette(shape) => silhouette_alpha(shape, width, height),
    };
    composite(
        &fit(foreground, width, height),
        &fit(background, width, height),
        alpha,
    )
}

/// `front` laid over `back` (same size) with `alpha`.
fn composite(front: &RgbImage, back: &RgbImage, alpha: Vec<f32>) -> MattingScene {
    let width = front.width();
    let foreground: Vec<[f32; 3]> = front
        .pixels()
        .map(|p| p.0.map(|v| f32::from(v) / 255.0))
        .collect();
    let image = RgbImage::from_fn(width, front.height(), |x, y| {
        let i = (y * width + x) as usize;
        let (f, b, a) = (front.get_pixel(x, y).0, back.get_pixel(x, y).0, alpha[i]);
        Rgb(std::array::from_fn(|c| {
            (a * f32::from(f[c]) + (1.0 - a) * f32::from(b[c]))
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

/// A `width`×`height` composite of hair over `background`: `foreground`
/// (fitted to the frame) is the head, and every strand that grows out of
/// it has the colour of the head where it leaves it, as hair does (in
/// [`photo_matting_scene`] a strand shows whatever the foreground photo
/// holds at its place, which no hair does).
pub fn hair_scene(
    foreground: &RgbImage,
    background: &RgbImage,
    width: u32,
    height: u32,
    seed: u64,
) -> MattingScene {
    let alpha = scene_alpha(MattingStyle::Strands, width, height, seed);
    let front = fit(foreground, width, height);
    let (w, h) = (width as usize, height as usize);
    // Every pixel takes the colour of the nearest pixel of the solid head
    // (alpha 1): a breadth-first flood from the head outwards.
    let mut source: Vec<Option<usize>> = alpha
        .iter()
        .enumerate()
        .map(|(i, &a)| (a >= 0.999).then_some(i))
        .collect();
    let mut queue: std::collections::VecDeque<usize> =
        (0..w * h).filter(|&i| source[i].is_some()).collect();
    while let Some(i) = queue.pop_front() {
        for n in neighbours_4(i, w, h) {
            if source[n].is_none() {
                source[n] = source[i];
                queue.push_back(n);
            }
        }
    }
    let hair = RgbImage::from_fn(width, height, |x, y| {
        let i = (y * width + x) as usize;
        let s = source[i].unwrap_or(i);
        *front.get_pixel((s % w) as u32, (s / w) as u32)
    });
    composite(&hair, &fit(background, width, height), alpha)
}

/// Coverage of each pixel by `shape` scaled into the frame, from 4×4
/// samples per pixel.
fn silhouette_alpha(shape: &GrayImage, width: u32, height: u32) -> Vec<f32> {
    let scale = (0.75 * f64::from(width) / f64::from(shape.width()))
        .min(0.75 * f64::from(height) / f64::from(shape.height()));
    let x0 = (f64::from(width) - f64::from(shape.width()) * scale) / 2.0;
    let y0 = (f64::from(height) - f64::from(shape.height()) * scale) / 2.0;
    let inside = |fx: f64, fy: f64| {
        let (sx, sy) = ((fx - x0) / scale, (fy - y0) / scale);
        sx >= 0.0
            && sy >= 0.0
            && (sx as u32) < shape.width()
            && (sy as u32) < shape.height()
            && shape.get_pixel(sx as u32, sy as u32).0[0] != 0
    };
    (0..width * height)
        .map(|i| {
            let (x, y) = (f64::from(i % width), f64::from(i / width));
            let hits = (0..16)
                .filter(|k| {
                    let (dx, dy) = (f64::from(k % 4), f64::from(k / 4));
                    inside(x + (dx + 0.5) / 4.0, y + (dy + 0.5) / 4.0)
                })
                .count();
            hits as f32 / 16.0
        })
        .collect()
}

/// A rough instance mask: the frame cut into `block`×`block` squares, each
/// kept whole when the true alpha averages at least 0.5 over it.
pub fn blocky_mask(alpha: &[f32], width: u32, height: u32, block: u32) -> GrayImage {
    let (w, h) = (width as usize, height as usize);
    let b = block.max(1) as usize;
    let (bw, bh) = (w.div_ceil(b), h.div_ceil(b));
    let mut sums = vec![(0.0f32, 0usize); bw * bh];
    for (i, a) in alpha.iter().enumerate() {
        let cell = &mut sums[(i / w / b) * bw + (i % w) / b];
        cell.0 += a;
        cell.1 += 1;
    }
    GrayImage::from_fn(width, height, |x, y| {
        let (sum, n) = sums[(y as usize / b) * bw + x as usize / b];
        Luma([if sum >= 0.5 * n as f32 { 255 } else { 0 }])
    })
}

/// The exact mask (alpha ≥ 0.5) grown by `pixels` (shrunk when negative).
pub fn offset_mask(alpha: &[f32], width: u32, height: u32, pixels: f32) -> GrayImage {
    let signed = signed_distance(alpha, width, height);
    GrayImage::from_fn(width, height, |x, y| {
        let d = signed[(y * width + x) as usize];
        Luma([if d + pixels > 0.0 { 255 } else { 0 }])
    })
}

/// Distance in pixels to the outline of `alpha ≥ 0.5`, positive inside.
fn signed_distance(alpha: &[f32], width: u32, height: u32) -> Vec<f32> {
    let exact = GrayImage::from_fn(width, height, |x, y| {
        Luma([if alpha[(y * width + x) as usize] >= 0.5 {
            255
        } else {
            0
        }])
    });
    // The engine's distance puts the pixels either side of the outline at
    // ±0.5; whole pixels here, so that "grown by n" means n pixels.
    crate::matting::signed_distance(&exact)
        .into_iter()
        .map(|d| d + 0.5f32.copysign(d))
        .collect()
}

/// Free-form brush strokes as inpainting benchmarks draw them: random
/// polylines 10–40 px wide with round joints, added until they cover
/// `coverage` of the frame.
pub fn brush_mask(width: u32, height: u32, coverage: f32, seed: u64) -> GrayImage {
    scaled_brush_mask(width, height, coverage, seed, 1.0)
}

/// [`brush_mask`] with strokes `scale` times as wide and as long, as a
/// benchmark's masks scaled to a larger photo are.
pub fn scaled_brush_mask(
    width: u32,
    height: u32,
    coverage: f32,
    seed: u64,
    scale: f32,
) -> GrayImage {
    let mut mask = GrayImage::new(width, height);
    let target = (coverage.clamp(0.0, 0.95) * (width * height) as f32) as usize;
    let (w, h) = (width as f32, height as f32);
    let mut covered = 0usize;
    let mut stroke = 0i64;
    while covered < target {
        let r = |k: i64| hash01(stroke, k, seed + 29);
        let radius = (5.0 + 15.0 * r(0)) * scale;
        let (mut x, mut y) = (r(1) * w, r(2) * h);
        let mut angle = r(3) * std::f32::consts::TAU;
        let vertices = 3 + (r(4) * 8.0) as i64;
        for v in 0..vertices {
            let rv = |k: i64| hash01(stroke * 64 + v, k, seed + 31);
            angle += (rv(0) - 0.5) * 2.4;
            let length = (20.0 + 60.0 * rv(1)) * scale;
            let (nx, ny) = (
                (x + angle.cos() * length).clamp(0.0, w - 1.0),
                (y + angle.sin() * length).clamp(0.0, h - 1.0),
            );
            covered += paint_capsule(&mut mask, (x, y), (nx, ny), radius);
            (x, y) = (nx, ny);
            if covered >= target {
                break;
            }
        }
        stroke += 1;
    }
    mask
}

/// Paints a segment with round ends; returns how many pixels became set.
fn paint_capsule(mask: &mut GrayImage, a: (f32, f32), b: (f32, f32), radius: f32) -> usize {
    let (w, h) = (mask.width() as f32, mask.height() as f32);
    let x0 = (a.0.min(b.0) - radius).max(0.0) as u32;
    let x1 = ((a.0.max(b.0) + radius).min(w - 1.0)) as u32;
    let y0 = (a.1.min(b.1) - radius).max(0.0) as u32;
    let y1 = ((a.1.max(b.1) + radius).min(h - 1.0)) as u32;
    let (abx, aby) = (b.0 - a.0, b.1 - a.1);
    let len2 = abx * abx + aby * aby;
    let mut added = 0;
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (px, py) = (x as f32 + 0.5 - a.0, y as f32 + 0.5 - a.1);
            let t = if len2 > 0.0 {
                ((px * abx + py * aby) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (dx, dy) = (px - t * abx, py - t * aby);
            if dx * dx + dy * dy <= radius * radius && mask.get_pixel(x, y).0[0] == 0 {
                mask.put_pixel(x, y, Luma([255]));
                added += 1;
            }
        }
    }
    added
}

/// An object-shaped hole: `shape` (white = object) scaled to cover `area`
/// of the frame, placed and mirrored by `seed`, then grown by `grow` px,
/// as a user's "remove this thing" mask is drawn a little wide.
pub fn object_hole(
    shape: &GrayImage,
    width: u32,
    height: u32,
    area: f32,
    grow: f32,
    seed: u64,
) -> GrayImage {
    let shape_area = shape.pixels().filter(|p| p.0[0] != 0).count().max(1) as f32;
    let scale = ((area * (width * height) as f32) / shape_area).sqrt();
    let (sw, sh) = (
        ((shape.width() as f32 * scale).round() as u32).clamp(1, width),
        ((shape.height() as f32 * scale).round() as u32).clamp(1, height),
    );
    let scaled = imageops::resize(shape, sw, sh, FilterType::Triangle);
    let mirrored = hash01(0, 1, seed + 37) < 0.5;
    let ox = ((width - sw) as f32 * hash01(0, 2, seed + 37)) as u32;
    let oy = ((height - sh) as f32 * hash01(0, 3, seed + 37)) as u32;
    let mut placed = GrayImage::new(width, height);
    for (x, y, p) in scaled.enumerate_pixels() {
        if p.0[0] >= 128 {
            let sx = if mirrored { sw - 1 - x } else { x };
            placed.put_pixel(ox + sx, oy + y, Luma([255]));
        }
    }
    let to_object = euclidean_squared_distance_transform(&placed);
    let limit = f64::from(grow * grow);
    GrayImage::from_fn(width, height, |x, y| {
        Luma([if to_object.get_pixel(x, y).0[0] <= limit {
            255
        } else {
            0
        }])
    })
}
