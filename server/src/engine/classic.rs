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
    use image::{Luma, Rgb};

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            Rgb([
                (x * 255 / width) as u8,
                (y * 255 / height) as u8,
                ((x + y) * 127 / (width + height)) as u8 + 64,
            ])
        })
    }

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
            ClassicEngine::default().matte(&image, &mask).unwrap().dimensions(),
            (97, 61)
        );
        let out = ClassicEngine::default().remove(&image, &mask, &params(1, 5)).unwrap();
        assert_eq!(out.dimensions(), (97, 61));
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let image = textured(40, 40);
        let mask = GrayImage::new(40, 41);
        let err = ClassicEngine::default().matte(&image, &mask).unwrap_err();
        assert!(err.message().contains("40x41"), "{err}");
        assert!(ClassicEngine::default().remove(&image, &mask, &params(0, 1)).is_err());
    }

    #[test]
    fn removal_keeps_pixels_outside_the_grown_mask() {
        let image = textured(120, 90);
        let mask = rect_mask(120, 90, 30, 20, 70, 60);
        let out = ClassicEngine::default().remove(&image, &mask, &params(3, 9)).unwrap();
        let mut changed = 0;
        for (x, y, p) in out.enumerate_pixels() {
            let inside_grown = (26..74).contains(&x) && (16..64).contains(&y);
            if !inside_grown {
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
        let a = ClassicEngine::default().remove(&image, &mask, &params(42, 3)).unwrap();
        let b = ClassicEngine::default().remove(&image, &mask, &params(42, 3)).unwrap();
        let c = ClassicEngine::default().remove(&image, &mask, &params(43, 3)).unwrap();
        assert_eq!(a.as_raw(), b.as_raw());
        assert_ne!(a.as_raw(), c.as_raw());
    }

    #[test]
    fn matting_alpha_is_opaque_inside_and_transparent_far_outside() {
        let image = textured(200, 150);
        let mask = rect_mask(200, 150, 50, 40, 150, 110);
        let out = ClassicEngine::default().matte(&image, &mask).unwrap();
        assert_eq!(out.get_pixel(100, 75).0[3], 255);
        assert_eq!(out.get_pixel(56, 46).0[3], 255);
        assert_eq!(out.get_pixel(10, 10).0[3], 0);
        assert_eq!(out.get_pixel(44, 75).0[3], 0);
        let (outer, inner) = (out.get_pixel(49, 75).0[3], out.get_pixel(50, 75).0[3]);
        assert!(
            0 < outer && outer < inner && inner < 255,
            "edge alpha {outer}, {inner}"
        );
        for (o, p) in out.pixels().zip(image.pixels()) {
            assert_eq!(&o.0[..3], &p.0[..]);
        }
    }

    #[test]
    fn removal_on_a_gradient_beats_a_flat_fill() {
        let (w, h) = (240, 180);
        let image = gradient(w, h);
        let mask = rect_mask(w, h, 70, 50, 170, 130);
        let out = ClassicEngine::default().remove(&image, &mask, &params(7, 1)).unwrap();

        let hole: Vec<(u32, u32)> = (50..130)
            .flat_map(|y| (70..170).map(move |x| (x, y)))
            .collect();
        let mut ring_mean = [0.0f64; 3];
        let mut ring_count = 0.0;
        for (x, y, p) in image.enumerate_pixels() {
            let near = (66..174).contains(&x) && (46..134).contains(&y);
            let inside = (70..170).contains(&x) && (50..130).contains(&y);
            if near && !inside {
                for (sum, v) in ring_mean.iter_mut().zip(p.0) {
                    *sum += f64::from(v);
                }
                ring_count += 1.0;
            }
        }
        let flat = ring_mean.map(|s| s / ring_count);
        let psnr = |fill: &dyn Fn(u32, u32, usize) -> f64| {
            let mse = hole
                .iter()
                .flat_map(|&(x, y)| (0..3).map(move |ch| (x, y, ch)))
                .map(|(x, y, ch)| (fill(x, y, ch) - f64::from(image.get_pixel(x, y).0[ch])).powi(2))
                .sum::<f64>()
                / (hole.len() * 3) as f64;
            10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
        };
        let ours = psnr(&|x, y, ch| f64::from(out.get_pixel(x, y).0[ch]));
        let baseline = psnr(&|_, _, ch| flat[ch]);
        assert!(ours > 40.0, "harmonic fill PSNR {ours:.1} dB");
        assert!(
            ours > baseline + 15.0,
            "{ours:.1} dB vs flat {baseline:.1} dB"
        );
    }

    #[test]
    fn a_hole_covering_everything_becomes_grey_and_an_empty_mask_changes_nothing() {
        let image = textured(50, 40);
        let all = rect_mask(50, 40, 0, 0, 50, 40);
        let out = ClassicEngine::default().remove(&image, &all, &params(0, 1)).unwrap();
        assert!(out.pixels().all(|p| p.0 == [128; 3]));
        let none = GrayImage::new(50, 40);
        let out = ClassicEngine::default().remove(&image, &none, &params(0, 59)).unwrap();
        assert_eq!(out.as_raw(), image.as_raw());
    }
}

#[cfg(test)]
mod large {
    use super::*;
    use image::{Luma, Rgb};

    /// Slow without optimisation: `cargo test -p retouch-server --lib large -- --ignored`.
    #[test]
    #[ignore]
    fn removal_converges_on_4096_squared() {
        let n = 4096u32;
        let image = RgbImage::from_fn(n, n, |x, y| {
            Rgb([(x / 17) as u8, (y / 17) as u8, ((x + y) / 40) as u8 + 30])
        });
        let mask = GrayImage::from_fn(n, n, |x, y| {
            let (dx, dy) = (x as f32 - 2000.0, y as f32 - 2100.0);
            Luma([if dx * dx + dy * dy < 1500.0 * 1500.0 {
                255
            } else {
                0
            }])
        });
        let started = std::time::Instant::now();
        let out = ClassicEngine::default()
            .remove(
                &image,
                &mask,
                &RemovalParams {
                    seed: 1,
                    kernel_size: 31,
                },
            )
            .unwrap();
        let elapsed = started.elapsed();
        let worst = out
            .as_raw()
            .iter()
            .zip(image.as_raw())
            .map(|(a, b)| (i16::from(*a) - i16::from(*b)).abs())
            .max()
            .unwrap();
        eprintln!("4096² removal took {elapsed:?}, worst error {worst}");
        assert!(worst <= 4, "worst error {worst}");
    }
}
