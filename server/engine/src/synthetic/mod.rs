//! Synthetic scenes with known ground truth, for the engines' tests and
//! quality benchmark: matting composites with exact alpha, and object
//! removal scenes with the original background behind the pasted object.
//! Everything is computed from formulas and a seed, so a scene is the same
//! on every run (bit-identical across machines only as far as their `sin`
//! and `exp` agree).

mod matting;
mod noise;
mod photo;
pub mod quality;
mod removal;

pub use matting::{MattingScene, MattingStyle, coarsen_mask, matting_scene, scene_alpha};
pub use photo::{
    Cutout, Photo, blocky_mask, brush_mask, fit, hair_scene, load_colour_photos, load_silhouette,
    object_hole, offset_mask, photo_matting_scene, scaled_brush_mask,
};
pub use removal::{Backdrop, HoleShape, RemovalScene, removal_scene};
