//! Instance matting (mask 255 = keep): an unknown band around the mask's
//! outline as wide as the image's edges say the mask is off, a soft alpha
//! in it, and clean foreground colours where alpha is fractional.
//!
//! The default alpha is closed-form matting solved coarse to fine with the
//! mask as a soft prior ([`AlphaMethod::ClosedForm`]): trusted far from its
//! outline, left to the image near it. A guided filter of the mask
//! ([`AlphaMethod::GuidedFilter`]) is kept as the fast baseline it is
//! measured against. `cargo bench --bench engines` compares both with
//! pymatting on composites of real photographs.

mod blocks;
mod closed_form;
mod confidence;
mod evidence;
mod foreground;
mod guided;
mod laplacian;
mod stencil;
mod strands;
mod trimap;

pub use blocks::block_size;
pub use closed_form::{Prior, closed_form_alpha, prior_alpha, refine_region};
pub use confidence::clear_confident_background;
pub use evidence::{
    EdgeBand, MIN_BAND_RADIUS, band_trimap, edge_band, gradient_magnitude, max_band_radius,
    signed_distance,
};
pub use foreground::estimate_foreground;
pub use guided::guided_filter;
pub use strands::{follow_strands, reopen_strands};
pub use trimap::{BACKGROUND, FOREGROUND, Trimap, UNKNOWN, band_radius, derive_trimap};

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

/// How strongly the mask pulls alpha at the band's edge in an image whose
/// shorter side is [`PULL_REFERENCE_SIDE`]; the pull fades quadratically to
/// nothing at the mask's outline.
pub const MASK_PULL: f32 = 0.1;
/// The shorter side at which [`MASK_PULL`] was tuned. The Laplacian's
/// energy does not change with resolution but a per-pixel pull adds up
/// over more pixels, so the pull is scaled by the inverse pixel count to
/// ask the same of a photo at any size.
pub const PULL_REFERENCE_SIDE: f32 = 480.0;

/// How far (in pixels) past a block's width the band reaches outside a mask
/// drawn on a coarse grid ([`block_size`]).
pub const BLOCK_MARGIN: f32 = 2.0;
/// The share of that reach the band is given inside such a mask. The whole
/// of it measured best on blocky masks' SAD (3.24 against 3.48 here, on
/// the bench's 14 composites), but the mask's pull then reached hair roots
/// only weakly and strands past the mask lost their start: 17% kept
/// instead of 24%, and under half on the hair-over-flower test.
pub const BLOCK_INNER_SHARE: f32 = 0.6;

/// How far past the band a strand is followed, as a share of the shorter
/// side.
pub const STRAND_REACH: f32 = 0.25;

/// Band pixels closer than this to the mask's outline (in pixels) are
/// never cleared as confident background.
pub const OUTLINE_TRUSTED_WITHIN: f32 = 3.0;

/// Mattes `image` with the keep-mask `mask` (same size, checked by the
/// caller): straight-alpha RGBA of the same size.
pub fn matte(image: &RgbImage, mask: &GrayImage, options: &MattingOptions) -> RgbaImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let colours = ColorPlane::from_rgb(image);
    let signed = signed_distance(mask);
    let band = options.band_radius.map_or_else(
        || {
            let max_radius = max_band_radius(w, h);
            let band = edge_band(&gradient_magnitude(&colours), &signed, w, h, max_radius);
            // A mask enlarged from a coarse grid can be off by a whole
            // block anywhere along its outline, and the edge profile sees
            // only where the edge is on average: on the bench's 8 px grids
            // it gave ±4 px, so soft edges and strands 4–8 px from the
            // outline were forced to the mask's verdict.
            match block_size(mask) {
                Some(block) => {
                    let outer = (block as f32 + BLOCK_MARGIN).min(max_radius);
                    band.covering(BLOCK_INNER_SHARE * outer, outer)
                }
                None => band,
            }
        },
        EdgeBand::symmetric,
    );
    let mut trimap = band_trimap(&signed, w, h, band);
    let alpha = match options.method {
        AlphaMethod::ClosedForm => {
            // Far enough to reach sure background from anywhere in the band.
            let reach = (band.inner - band.outer).ceil() as usize + 4;
            // Next to the outline the mask is left to the solve: there the
            // background around holds the faint ends of strands the mask
            // left out, so they would look like background (an exact mask
            // lost a fifth of its gain on hair).
            clear_confident_background(&colours, &mut trimap, reach.max(8), &|i| {
                signed[i].abs() < OUTLINE_TRUSTED_WITHIN
            });
            let pull = MASK_PULL * (PULL_REFERENCE_SIDE / w.min(h) as f32).powi(2);
            let mut alpha = prior_alpha(&colours, &trimap, Some(&mask_prior(&signed, band, pull)));
            follow_strands(
                &colours,
                &mut trimap,
                &mut alpha,
                &signed,
                band.outer,
                STRAND_REACH * w.min(h) as f32,
            );
            alpha
        }
        AlphaMethod::GuidedFilter => guided_alpha(&colours, mask, &trimap),
    };
    compose(
        image,
        &trimap,
        &alpha,
        &estimate_foreground(&colours, &alpha),
    )
}

/// The mask as a [`Prior`], its outline moved to where the image puts the
/// edge: that verdict as target, trusted more the farther a pixel is from
/// the edge towards the band's limit, where the weight reaches `pull`.
pub fn mask_prior(signed: &[f32], band: EdgeBand, pull: f32) -> Prior {
    let (inside, outside) = (
        (band.inner - band.edge).max(1.0),
        (band.edge - band.outer).max(1.0),
    );
    Prior {
        target: signed
            .iter()
            .map(|&d| if d > band.edge { 1.0 } else { 0.0 })
            .collect(),
        weight: signed
            .iter()
            .map(|&d| {
                let off = d - band.edge;
                let t = if off > 0.0 {
                    off / inside
                } else {
                    -off / outside
                };
                pull * t.min(1.0).powi(2)
            })
            .collect(),
    }
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
