//! The classic engine: the CPU engine of the local backend.

use image::{GrayImage, RgbImage, RgbaImage};

use super::matting::{self, MattingOptions};
use super::removal::{self, FillStrategy};
use super::{Engine, EngineError, RemovalParams, check_sizes};

/// Classical computer vision on the CPU, no model weights: closed-form
/// matting with multi-level foreground estimation, and object removal by
/// multi-scale PatchMatch completion (fast marching for thin strokes).
/// Parallel across cores with rayon; calls block, so async callers run them
/// on a blocking pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassicEngine {
    /// Matting options.
    pub matting: MattingOptions,
    /// How removal holes are filled.
    pub fill: FillStrategy,
}

impl Engine for ClassicEngine {
    fn name(&self) -> &'static str {
        "classic"
    }

    fn matte(&self, image: &RgbImage, mask: &GrayImage) -> Result<RgbaImage, EngineError> {
        check_sizes(image.dimensions(), mask.dimensions())?;
        Ok(matting::matte(image, mask, &self.matting))
    }

    fn remove(
        &self,
        image: &RgbImage,
        mask: &GrayImage,
        params: &RemovalParams,
    ) -> Result<RgbImage, EngineError> {
        check_sizes(image.dimensions(), mask.dimensions())?;
        Ok(removal::remove(image, mask, params, self.fill))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{
        Backdrop, HoleShape, MattingStyle, coarsen_mask, matting_scene, quality, removal_scene,
    };
    use image::{Luma, Rgb};

    fn textured(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            let grain = ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729)) % 41) as u8;
            Rgb([60 + grain, 90 + grain / 2, 120 + (x % 16) as u8 * 3])
        })
    }

    fn rect_mask(width: u32, height: u32, x0: u32, y0: u32, x1: u32, y1: u32) -> GrayImage {
        GrayImage::from_fn(width, height, |x, y| {
            Luma([if (x0..x1).contains(&x) && (y0..y1).contains(&y) {
                255
            } else {
                0
            }])
        })
    }

    fn params(seed: u64, kernel_size: u32) -> RemovalParams {
        RemovalParams { seed, kernel_size }
    }

    #[test]
    fn outputs_have_the_input_size() {
        let image = textured(97, 61);
        let mask = rect_mask(97, 61, 20, 10, 50, 40);
        assert_eq!(
            ClassicEngine::default()
                .matte(&image, &mask)
                .unwrap()
                .dimensions(),
            (97, 61)
        );
        let out = ClassicEngine::default()
            .remove(&image, &mask, &params(1, 5))
            .unwrap();
        assert_eq!(out.dimensions(), (97, 61));
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let image = textured(40, 40);
        let mask = GrayImage::new(40, 41);
        let err = ClassicEngine::default().matte(&image, &mask).unwrap_err();
        assert!(err.message().contains("40x41"), "{err}");
        assert!(
            ClassicEngine::default()
                .remove(&image, &mask, &params(0, 1))
                .is_err()
        );
    }

    #[test]
    fn removal_keeps_pixels_outside_the_grown_mask() {
        let image = textured(120, 90);
        let mask = rect_mask(120, 90, 30, 20, 70, 60);
        let out = ClassicEngine::default()
            .remove(&image, &mask, &params(3, 9))
            .unwrap();
        let grown = crate::removal::grown_mask(&mask, 9);
        // The disk rounds the corners: (26, 16) is 4 px out on both axes,
        // beyond the 4.5 px radius, so it must stay.
        assert_eq!(grown.get_pixel(26, 16).0[0], 0);
        let mut changed = 0;
        for (x, y, p) in out.enumerate_pixels() {
            if grown.get_pixel(x, y).0[0] == 0 {
                assert_eq!(p, image.get_pixel(x, y), "pixel {x},{y} changed");
            } else if p != image.get_pixel(x, y) {
                changed += 1;
            }
        }
        assert!(changed > 1000, "only {changed} pixels filled");
    }

    #[test]
    fn removal_is_deterministic_per_seed() {
        let image = textured(100, 80);
        let mask = rect_mask(100, 80, 25, 20, 75, 60);
        let remove_with_threads = |threads: usize, seed: u64| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    ClassicEngine::default()
                        .remove(&image, &mask, &params(seed, 3))
                        .unwrap()
                })
        };
        // Byte-identical whatever the number of threads (and so whatever
        // their scheduling); another seed, another fill.
        let one = remove_with_threads(1, 42);
        let four = remove_with_threads(4, 42);
        let other = remove_with_threads(4, 43);
        assert_eq!(one.as_raw(), four.as_raw());
        assert_ne!(one.as_raw(), other.as_raw());
    }

    #[test]
    fn matting_alpha_is_opaque_deep_inside_and_transparent_far_outside() {
        let scene = matting_scene(MattingStyle::Soft, 400, 300, 2);
        let mask = coarsen_mask(&scene.alpha, 400, 300, 4.0, 1);
        let out = ClassicEngine::default().matte(&scene.image, &mask).unwrap();
        // The body is centred at (200, 165); the corners are background.
        assert_eq!(out.get_pixel(200, 170).0[3], 255);
        assert_eq!(out.get_pixel(5, 295).0[3], 0);
        assert_eq!(out.get_pixel(395, 5).0[3], 0);
        // Sure pixels keep their colour.
        assert_eq!(
            &out.get_pixel(200, 170).0[..3],
            &scene.image.get_pixel(200, 170).0[..]
        );
    }

    #[test]
    fn matting_beats_the_mask_as_alpha_on_a_coarse_mask() {
        // Measured: 0.75 of the mask's SAD on soft edges, 0.88 on strands.
        // The engine was once tuned on these generated scenes (0.60 and
        // 0.76) and then did worse than the mask on real photos; its
        // figures now come from `engine/tests/photos.rs` and the bench, and
        // these bounds only keep it from sliding back on generated ones.
        for (style, bound) in [(MattingStyle::Soft, 0.8), (MattingStyle::Strands, 0.9)] {
            let scene = matting_scene(style, 480, 360, 4);
            let mask = coarsen_mask(&scene.alpha, 480, 360, 5.0, 6);
            let out = ClassicEngine::default().matte(&scene.image, &mask).unwrap();
            let alpha: Vec<f32> = out.pixels().map(|p| f32::from(p.0[3]) / 255.0).collect();
            let as_alpha: Vec<f32> = mask.pixels().map(|p| f32::from(p.0[0]) / 255.0).collect();
            let ours = quality::alpha_sad(&alpha, &scene.alpha, |_| true);
            let trivial = quality::alpha_sad(&as_alpha, &scene.alpha, |_| true);
            assert!(
                ours < bound * trivial,
                "{style:?}: SAD {ours:.2} vs mask {trivial:.2}"
            );
        }
    }

    /// Removes the object of a 400×400 scene: (our PSNR, flat fill PSNR,
    /// our gradient energy ratio), all inside the hole.
    fn removal_scores(backdrop: Backdrop, shape: HoleShape) -> (f64, f64, f64) {
        let scene = removal_scene(backdrop, shape, 400, 400, 3);
        let out = ClassicEngine::default()
            .remove(&scene.image, &scene.mask, &params(5, 1))
            .unwrap();
        let flat = quality::flat_fill(&scene.image, &scene.mask);
        (
            quality::psnr_in_mask(&out, &scene.original, &scene.mask),
            quality::psnr_in_mask(&flat, &scene.original, &scene.mask),
            quality::gradient_energy_ratio(&out, &scene.original, &scene.mask),
        )
    }

    #[test]
    fn removal_continues_texture_better_than_a_flat_fill() {
        let (ours, flat, texture) = removal_scores(Backdrop::Bricks, HoleShape::Blob);
        assert!(ours > flat + 4.0, "{ours:.1} dB vs flat {flat:.1} dB");
        assert!(texture > 0.6, "gradient energy ratio {texture:.2}");
    }

    #[test]
    fn thin_strokes_are_filled_smoothly_from_both_sides() {
        let (ours, flat, _) = removal_scores(Backdrop::GrainyGradient, HoleShape::Strokes);
        assert!(
            ours > 28.0 && ours > flat + 8.0,
            "{ours:.1} dB vs flat {flat:.1} dB"
        );
    }

    #[test]
    fn a_thin_known_frame_is_extended_and_no_ghost_of_the_object_remains() {
        // Everything but a 2-px frame is to be removed: coarse levels
        // would see no known pixel at all.
        let scene = removal_scene(Backdrop::GrainyGradient, HoleShape::Blob, 400, 400, 3);
        let mut image = scene.original.clone();
        let mask = GrayImage::from_fn(400, 400, |x, y| {
            let inner = (2..398).contains(&x) && (2..398).contains(&y);
            Luma([if inner { 255 } else { 0 }])
        });
        for (x, y, p) in image.enumerate_pixels_mut() {
            if mask.get_pixel(x, y).0[0] != 0 {
                p.0 = [250, 0, 0];
            }
        }
        let out = ClassicEngine::default()
            .remove(&image, &mask, &params(1, 1))
            .unwrap();
        let red = out
            .enumerate_pixels()
            .filter(|(x, y, _)| mask.get_pixel(*x, *y).0[0] != 0)
            .filter(|(_, _, p)| p.0[0] > 200 && p.0[1] < 60)
            .count();
        assert_eq!(red, 0, "{red} pixels still look like the object");
    }

    #[test]
    fn documented_size_limits_are_processed() {
        for (w, h) in [(400, 400), (4096, 400)] {
            let image = textured(w, h);
            let mask = rect_mask(w, h, w / 3, h / 3, w / 2, h / 2);
            let engine = ClassicEngine::default();
            assert_eq!(engine.matte(&image, &mask).unwrap().dimensions(), (w, h));
            assert_eq!(
                engine
                    .remove(&image, &mask, &params(1, 59))
                    .unwrap()
                    .dimensions(),
                (w, h)
            );
        }
    }

    #[test]
    fn a_hole_covering_everything_becomes_grey_and_an_empty_mask_changes_nothing() {
        let image = textured(50, 40);
        let all = rect_mask(50, 40, 0, 0, 50, 40);
        let out = ClassicEngine::default()
            .remove(&image, &all, &params(0, 1))
            .unwrap();
        assert!(out.pixels().all(|p| p.0 == [128; 3]));
        let none = GrayImage::new(50, 40);
        let out = ClassicEngine::default()
            .remove(&image, &none, &params(0, 59))
            .unwrap();
        assert_eq!(out.as_raw(), image.as_raw());
    }
}
