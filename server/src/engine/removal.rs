//! Object removal: grow the mask, fill the hole harmonically, add grain.

use image::{GrayImage, RgbImage};

use super::RemovalParams;
use super::harmonic::{self, Field};
use super::region::{Window, grown_hole, working_window};
use super::texture::{Grain, grain_variance};

/// Value given to a hole that covers the whole image, which has no
/// surroundings to borrow from.
const NEUTRAL_GREY: u8 = 128;

/// Removes the masked region (255 = remove) of `image`; sizes are checked
/// by the caller. Pixels outside the grown region are returned unchanged.
pub(super) fn remove_object(
    image: &RgbImage,
    mask: &GrayImage,
    params: &RemovalParams,
) -> RgbImage {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let hole = grown_hole(mask, params.kernel_size);
    let Some(window) = working_window(&hole, width, height) else {
        return image.clone();
    };
    let mut out = image.clone();
    if hole.iter().all(|&h| h) {
        out.pixels_mut().for_each(|p| p.0 = [NEUTRAL_GREY; 3]);
        return out;
    }

    let mut field = crop(image, &hole, width, window);
    let variance = grain_variance(
        &field.values,
        4,
        &field.known,
        window.width(),
        window.height(),
    );
    for (i, v) in variance.into_iter().enumerate() {
        field.values[i * 4 + 3] = v;
    }
    harmonic::fill(&mut field);

    // Grain is drawn in row-major order of the hole, so the result depends on
    // nothing but the seed and the input.
    let mut grain = Grain::new(params.seed);
    let raw: &mut [u8] = &mut out;
    for wy in 0..window.height() {
        for wx in 0..window.width() {
            let j = wy * window.width() + wx;
            if field.known[j] {
                continue;
            }
            let v = &field.values[j * 4..j * 4 + 4];
            let offsets = grain.next_rgb(v[3].max(0.0).sqrt());
            let i = ((window.y0 + wy) * width + window.x0 + wx) * 3;
            for ch in 0..3 {
                raw[i + ch] = (v[ch] + offsets[ch]).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// The window of the image as a 4-channel field (RGB and, still zero, grain
/// variance), with the hole unknown.
fn crop(image: &RgbImage, hole: &[bool], width: usize, window: Window) -> Field {
    let mut field = Field::new(window.width(), window.height(), 4);
    let raw: &[u8] = image.as_raw();
    for wy in 0..window.height() {
        for wx in 0..window.width() {
            let i = (window.y0 + wy) * width + window.x0 + wx;
            let j = wy * window.width() + wx;
            field.known[j] = !hole[i];
            for ch in 0..3 {
                field.values[j * 4 + ch] = f32::from(raw[i * 3 + ch]);
            }
        }
    }
    field
}
