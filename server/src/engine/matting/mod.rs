//! Instance matting (mask 255 = keep): a trimap from the user's mask, a soft
//! alpha in its unknown band, and clean foreground colours where alpha is
//! fractional.
//!
//! The default alpha is closed-form matting solved coarse to fine
//! ([`AlphaMethod::ClosedForm`]); a guided filter of the mask
//! ([`AlphaMethod::GuidedFilter`]) is kept as the fast baseline it is
//! measured against. See `cargo bench --bench engines` for the comparison.

mod closed_form;
mod foreground;
mod guided;
mod laplacian;
mod stencil;
mod trimap;

pub use closed_form::closed_form_alpha;
pub use foreground::estimate_foreground;
pub use guided::guided_filter;
pub use trimap::{
    BACKGROUND, FOREGROUND, Trimap, UNKNOWN, adaptive_trimap, band_radius, derive_trimap,
};

use image::{GrayImage, RgbImage, RgbaImage};

use super::planes::ColorPlane;

/// How alpha is estimated inside the unknown band.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AlphaMethod {
    /// Closed-form matting, coarse to fine (the default).
    #[default]
    ClosedForm,
    /// The mask itself smoothed by a guided filter: fast, and only as good
    /// as the mask's edge.
    GuidedFilter,
}

/// Options of [`matte`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MattingOptions {
    /// Alpha estimation method.
    pub method: AlphaMethod,
    /// Half-width of the unknown band in pixels; `None` picks
    /// [`band_radius`] for the image size.
    pub band_radius: Option<f32>,
}

/// Mattes `image` with the keep-mask `mask` (same size, checked by the
/// caller): straight-alpha RGBA of the same size.
pub fn matte(image: &RgbImage, mask: &GrayImage, options: &MattingOptions) -> RgbaImage {
    let radius = options
        .band_radius
        .unwrap_or_else(|| band_radius(image.width() as usize, image.height() as usize));
    let trimap = adaptive_trimap(mask, radius);
    let colours = ColorPlane::from_rgb(image);
    let alpha = match options.method {
        AlphaMethod::ClosedForm => closed_form_alpha(&colours, &trimap),
        AlphaMethod::GuidedFilter => guided_alpha(&colours, mask, &trimap),
    };
    compose(
        image,
        &trimap,
        &alpha,
        &estimate_foreground(&colours, &alpha),
    )
}

/// The guided-filter baseline: the binarised mask filtered with the image as
/// guide, sure pixels kept from the trimap.
pub fn guided_alpha(image: &ColorPlane, mask: &GrayImage, trimap: &Trimap) -> Vec<f32> {
    let input: Vec<f32> = mask
        .as_raw()
        .iter()
        .map(|&m| if m >= 128 { 1.0 } else { 0.0 })
        .collect();
    let radius = (band_radius(image.width, image.height) as usize).max(2);
    let halvings = (image.width.max(image.height) / 1024).max(1).ilog2();
    let filtered = guided_filter(image, &input, radius, 1e-4, halvings);
    filtered
        .into_iter()
        .zip(&trimap.values)
        .map(|(a, &t)| match t {
            FOREGROUND => 1.0,
            BACKGROUND => 0.0,
            _ => a.clamp(0.0, 1.0),
        })
        .collect()
}

/// Straight-alpha RGBA: sure pixels keep their colour, band pixels take the
/// estimated foreground colour.
fn compose(image: &RgbImage, trimap: &Trimap, alpha: &[f32], foreground: &[[f32; 3]]) -> RgbaImage {
    let mut out = RgbaImage::new(image.width(), image.height());
    for (i, (o, p)) in out.pixels_mut().zip(image.pixels()).enumerate() {
        let a = (alpha[i] * 255.0).round() as u8;
        let rgb = if trimap.values[i] == UNKNOWN && a > 0 {
            foreground[i].map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        } else {
            p.0
        };
        o.0 = [rgb[0], rgb[1], rgb[2], a];
    }
    out
}
