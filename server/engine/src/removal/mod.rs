//! Object removal (mask 255 = remove): grow the mask by `kernel_size`, then
//! fill each connected part of it: thin strokes by membrane (harmonic)
//! interpolation, larger regions by multi-scale exemplar-based completion.
//! Pixels outside the grown mask are returned unchanged.
//!
//! Thin parts are told apart by the radius of the largest circle inscribed
//! in them ([`THIN_RADIUS`]). For them the bench compared our fast-marching
//! fill (Telea's method), the membrane fill and patch-based completion
//! (`cargo bench --bench engines`): the membrane fill beat OpenCV's TELEA
//! on every backdrop, where our fast marching only tied with it; completion
//! was 2–3 dB better still on structured backdrops (bricks, edges) but 0.7
//! dB below the membrane on grainy gradients and 20× slower (1.6 s/MP for
//! 2% of strokes), so the engine takes the membrane fill.

mod completion;
mod fast_march;
mod grow;
mod level;
mod structure;
mod texture;

pub use grow::grown_mask;

use image::{GrayImage, Luma, Rgb, Rgb32FImage, RgbImage};
use imageproc::distance_transform::euclidean_squared_distance_transform;
use imageproc::filter::gaussian_blur_f32;
use imageproc::region_labelling::{Connectivity, connected_components};

use super::RemovalParams;
use super::harmonic::{self, Field};
use fast_march::fast_march_fill;
use level::Level;

/// Parts of the hole whose largest inscribed circle has at most this radius
/// (in pixels) are thin: strokes and scribbles, too narrow for patches.
pub const THIN_RADIUS: f32 = 4.5;
/// Neighbourhood radius of the fast-marching estimate (as OpenCV's
/// `inpaintRadius` 3 in the bench; 5 measured worse).
const MARCH_RADIUS: f32 = 3.0;
/// Value given to a hole that covers the whole image, which has no
/// surroundings to borrow from.
const NEUTRAL_GREY: u8 = 128;

/// How the hole is filled; [`FillStrategy::Auto`] is what the engine uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FillStrategy {
    /// Thin parts by membrane interpolation, the rest by patch-based
    /// completion.
    #[default]
    Auto,
    /// Everything by fast marching (Telea), for comparison.
    FastMarching,
    /// Everything by membrane (harmonic) interpolation, for comparison.
    Membrane,
    /// Everything by patch-based completion, for comparison.
    Completion,
}

/// Removes the masked region of `image` (mask and image of the same size,
/// checked by the caller).
pub fn remove(
    image: &RgbImage,
    mask: &GrayImage,
    params: &RemovalParams,
    strategy: FillStrategy,
) -> RgbImage {
    let hole = grown_mask(mask, params.kernel_size);
    fill(image, &hole, params.seed, strategy)
}

/// Fills the pixels of `hole` (255 = fill, no further growing).
pub fn fill(image: &RgbImage, hole: &GrayImage, seed: u64, strategy: FillStrategy) -> RgbImage {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let hole_flags: Vec<bool> = hole.as_raw().iter().map(|&v| v != 0).collect();
    let mut out = image.clone();
    let Some(window) = Window::around(&hole_flags, width, height) else {
        return out;
    };
    if hole_flags.iter().all(|&h| h) {
        out.pixels_mut().for_each(|p| p.0 = [NEUTRAL_GREY; 3]);
        return out;
    }
    let mut level = window.crop(image, &hole_flags);
    let parts = Parts::of(&level);
    let (w, h) = (level.width, level.height);

    let quick: Vec<bool> = (0..w * h)
        .map(|i| match strategy {
            FillStrategy::Auto => level.hole[i] && parts.is_thin(i),
            FillStrategy::FastMarching | FillStrategy::Membrane => level.hole[i],
            FillStrategy::Completion => false,
        })
        .collect();
    if quick.iter().any(|&t| t) {
        if strategy == FillStrategy::FastMarching {
            fast_march_fill(&mut level.pixels, &quick, w, h, MARCH_RADIUS);
        } else {
            membrane_fill(&mut level, &quick);
        }
        for (hole, quick) in level.hole.iter_mut().zip(&quick) {
            *hole &= !quick;
        }
    }
    if level.hole.iter().any(|&h| h) {
        let radius = parts.widest_radius(&level.hole);
        if strategy == FillStrategy::Auto {
            structure::continue_edges(&mut level, radius);
            let mut smooth = level.clone();
            let hole = level.hole.clone();
            // The membrane's relaxation runs on one core; beside the
            // completion, which keeps every core busy, it costs no wall
            // time of its own (a quarter of the removal's at 0.5 MP).
            let ((), distances) = rayon::join(
                || membrane_fill(&mut smooth, &hole),
                || completion::complete(&mut level, radius, seed),
            );
            add_detail(&mut smooth, &level, &distances);
            level = smooth;
        } else {
            completion::complete(&mut level, radius, seed);
        }
    }
    window.paste(&level, &hole_flags, &mut out);
    out
}

/// Scale (Gaussian σ, pixels) below which the completion's detail is
/// always kept.
const DETAIL_SIGMA: f32 = 3.0;
/// Root-mean-square colour difference (8-bit levels) between a hole's
/// patch and its match at which the match's coarse content is trusted
/// `1/e` as much as the membrane's. Only near-exact repeats (regular
/// texture) pass: on the bench's photos 1 level kept their figures while
/// bringing a 4096² brick wall back from 20.5 to 24.4 dB (2 levels cost
/// the photos 0.1–0.2 dB; 6 levels, 0.5–0.8 dB).
const MATCH_TOLERANCE: f32 = 1.0;

/// Combines, in the hole of `smooth` (a membrane fill), the membrane with
/// `completed` (the same hole filled by exemplars): the completion's fine
/// detail (itself minus its Gaussian blur) always, and its coarse content
/// only as far as its patches matched their sources well (`distances`, per
/// pixel, from the completion), the membrane's elsewhere.
///
/// Where the surroundings hold the hole's content almost exactly (regular
/// texture, repeated structure) the completion is kept whole; where they do
/// not (most of a real photo), colours and shading come from the smooth
/// interpolation, which never strays far, and only texture from the
/// exemplars, so a patch borrowed from the wrong place shows at worst as
/// wrong grain, never as a blob of the wrong colour. On real photos this
/// beat both parts alone: the completion by 1.4–2.1 dB in the hole, the
/// membrane by 3× in gradient (`cargo bench --bench engines`).
fn add_detail(smooth: &mut Level, completed: &Level, distances: &[f32]) {
    let (w, h) = (completed.width as u32, completed.height as u32);
    let plane = Rgb32FImage::from_fn(w, h, |x, y| Rgb(completed.pixels[(y * w + x) as usize]));
    let blurred = gaussian_blur_f32(&plane, DETAIL_SIGMA);
    let scale = 1.0 / ((3 * level::PATCH_PIXELS) as f32 * MATCH_TOLERANCE * MATCH_TOLERANCE);
    let trust = image::ImageBuffer::<Luma<f32>, Vec<f32>>::from_fn(w, h, |x, y| {
        Luma([(-distances[(y * w + x) as usize] * scale).exp()])
    });
    let trust = gaussian_blur_f32(&trust, DETAIL_SIGMA);
    for (i, ((p, b), t)) in smooth
        .pixels
        .iter_mut()
        .zip(blurred.pixels())
        .zip(trust.pixels())
        .enumerate()
    {
        if smooth.hole[i] {
            let t = t.0[0];
            for ((v, fine), blur) in p.iter_mut().zip(completed.pixels[i]).zip(b.0) {
                *v = (1.0 - t) * *v + t * blur + (fine - blur);
            }
        }
    }
}

/// Fills the flagged pixels with the harmonic interpolation of their
/// surroundings.
fn membrane_fill(level: &mut Level, flags: &[bool]) {
    let mut field = Field::new(level.width, level.height, 3);
    for (i, p) in level.pixels.iter().enumerate() {
        field.known[i] = !flags[i];
        field.values[i * 3..i * 3 + 3].copy_from_slice(p);
    }
    harmonic::fill(&mut field);
    for (i, p) in level.pixels.iter_mut().enumerate() {
        if flags[i] {
            p.copy_from_slice(&field.values[i * 3..i * 3 + 3]);
        }
    }
}

/// The part of the image the fill works on: the hole's bounding box with a
/// margin as wide as the box, so sources come from the hole's surroundings
/// without scanning a whole large photo for a small hole.
#[derive(Debug, Clone, Copy)]
struct Window {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

impl Window {
    fn around(hole: &[bool], width: usize, height: usize) -> Option<Window> {
        let mut bbox: Option<Window> = None;
        for (i, _) in hole.iter().enumerate().filter(|(_, h)| **h) {
            let (x, y) = (i % width, i / width);
            let b = bbox.get_or_insert(Window {
                x0: x,
                y0: y,
                x1: x + 1,
                y1: y + 1,
            });
            b.x0 = b.x0.min(x);
            b.x1 = b.x1.max(x + 1);
            b.y0 = b.y0.min(y);
            b.y1 = b.y1.max(y + 1);
        }
        let b = bbox?;
        let margin = (b.x1 - b.x0).max(b.y1 - b.y0).max(64);
        Some(Window {
            x0: b.x0.saturating_sub(margin),
            y0: b.y0.saturating_sub(margin),
            x1: (b.x1 + margin).min(width),
            y1: (b.y1 + margin).min(height),
        })
    }

    fn crop(&self, image: &RgbImage, hole: &[bool]) -> Level {
        let (w, h) = (self.x1 - self.x0, self.y1 - self.y0);
        let width = image.width() as usize;
        let raw: &[u8] = image.as_raw();
        let mut pixels = Vec::with_capacity(w * h);
        let mut flags = Vec::with_capacity(w * h);
        for y in self.y0..self.y1 {
            for x in self.x0..self.x1 {
                let i = y * width + x;
                // What lies under the hole is being erased: it must not
                // influence the fill, so it never enters the working copy.
                pixels.push(if hole[i] {
                    [0.0; 3]
                } else {
                    [0, 1, 2].map(|c| f32::from(raw[i * 3 + c]))
                });
                flags.push(hole[i]);
            }
        }
        Level {
            width: w,
            height: h,
            pixels,
            hole: flags,
        }
    }

    /// Writes the filled hole pixels back, rounding to 8 bits.
    fn paste(&self, level: &Level, hole: &[bool], out: &mut RgbImage) {
        let width = out.width() as usize;
        let raw: &mut [u8] = out;
        for y in self.y0..self.y1 {
            for x in self.x0..self.x1 {
                let i = y * width + x;
                if hole[i] {
                    let p = level.pixels[(y - self.y0) * level.width + (x - self.x0)];
                    for c in 0..3 {
                        raw[i * 3 + c] = p[c].round().clamp(0.0, 255.0) as u8;
                    }
                }
            }
        }
    }
}

/// `width`×`height` flags as a binary image (255 where `flagged`).
fn flag_image(flagged: impl Fn(usize) -> bool, width: usize, height: usize) -> GrayImage {
    GrayImage::from_fn(width as u32, height as u32, |x, y| {
        Luma([if flagged(y as usize * width + x as usize) {
            255
        } else {
            0
        }])
    })
}

/// Distance (pixels) from every pixel to the nearest `flagged` one.
fn distance_to(flagged: impl Fn(usize) -> bool, width: usize, height: usize) -> Vec<f32> {
    euclidean_squared_distance_transform(&flag_image(flagged, width, height))
        .into_raw()
        .into_iter()
        .map(|d2| d2.sqrt() as f32)
        .collect()
}

/// Labels (1, 2, …) of the 8-connected parts of the `flagged` pixels, 0
/// elsewhere.
fn labels_8(flagged: impl Fn(usize) -> bool, width: usize, height: usize) -> Vec<u32> {
    connected_components(
        &flag_image(flagged, width, height),
        Connectivity::Eight,
        Luma([0u8]),
    )
    .into_raw()
}

/// The connected parts of the hole and the radius of the largest circle
/// inscribed in each.
struct Parts {
    labels: Vec<u32>,
    radius: Vec<f32>,
}

impl Parts {
    fn of(level: &Level) -> Parts {
        let (w, h) = (level.width, level.height);
        let labels = labels_8(|i| level.hole[i], w, h);
        let to_known = distance_to(|i| !level.hole[i], w, h);
        let count = labels.iter().copied().max().unwrap_or(0) as usize;
        let mut radius = vec![0.0f32; count + 1];
        for (label, d) in labels.iter().zip(to_known) {
            let r = &mut radius[*label as usize];
            *r = r.max(d);
        }
        Parts { labels, radius }
    }

    fn is_thin(&self, i: usize) -> bool {
        self.radius[self.labels[i] as usize] <= THIN_RADIUS
    }

    /// The largest inscribed radius among parts still in `hole`.
    fn widest_radius(&self, hole: &[bool]) -> f32 {
        hole.iter()
            .zip(&self.labels)
            .filter(|(h, _)| **h)
            .map(|(_, l)| self.radius[*l as usize])
            .fold(0.0, f32::max)
    }
}
