//! Writes the before/after pictures of the README: for every bundled
//! sample, the input, its mask and the local engine's result side by side
//! (matting results over a checkerboard, so transparency shows).
//!
//! Run: `cargo run --release -p retouch-server --example sample_pictures -- server/samples`

use std::path::PathBuf;
use std::time::Instant;

use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage, RgbaImage};
use retouch_server::aliyun::ApiKind;
use retouch_server::engine::{ClassicEngine, Engine, RemovalParams};
use retouch_server::samples;

/// Width of each of the three panels.
const PANEL_WIDTH: u32 = 320;

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "server/samples".into()),
    );
    std::fs::create_dir_all(&dir).expect("output directory");
    let engine = ClassicEngine::default();
    for sample in samples::all() {
        let image = image::load_from_memory(&sample.image_png)
            .expect("sample image")
            .to_rgb8();
        let mask = image::load_from_memory(&sample.mask_png)
            .expect("sample mask")
            .to_luma8();
        let started = Instant::now();
        let result: RgbImage = match sample.api {
            ApiKind::InstanceMatting => {
                over_checkerboard(&engine.matte(&image, &mask).expect("matting"))
            }
            ApiKind::ObjectRemoval => {
                let params = RemovalParams {
                    seed: 1,
                    kernel_size: 5,
                };
                engine.remove(&image, &mask, &params).expect("removal")
            }
        };
        let elapsed = started.elapsed();
        let mask_rgb = RgbImage::from_fn(mask.width(), mask.height(), |x, y| {
            let v = mask.get_pixel(x, y).0[0];
            Rgb([v, v, v])
        });
        let panels = [image, mask_rgb, result];
        let height = PANEL_WIDTH * panels[0].height() / panels[0].width();
        let gap = 4;
        let mut sheet = RgbImage::from_pixel(3 * PANEL_WIDTH + 2 * gap, height, Rgb([255; 3]));
        for (k, panel) in panels.iter().enumerate() {
            let small = imageops::resize(panel, PANEL_WIDTH, height, FilterType::Triangle);
            imageops::replace(
                &mut sheet,
                &small,
                i64::from(k as u32 * (PANEL_WIDTH + gap)),
                0,
            );
        }
        let path = dir.join(format!("{}.jpg", sample.name));
        image::codecs::jpeg::JpegEncoder::new_with_quality(
            std::fs::File::create(&path).expect("create picture"),
            85,
        )
        .encode_image(&sheet)
        .expect("encode picture");
        println!(
            "{} ({}): {:.2} s -> {}",
            sample.name,
            sample.description,
            elapsed.as_secs_f64(),
            path.display()
        );
    }
}

/// The RGBA result composited over a grey checkerboard.
fn over_checkerboard(rgba: &RgbaImage) -> RgbImage {
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let board = if (x / 16 + y / 16) % 2 == 0 {
            200.0
        } else {
            150.0
        };
        let a = f32::from(p[3]) / 255.0;
        Rgb(std::array::from_fn(|c| {
            (a * f32::from(p[c]) + (1.0 - a) * board).round() as u8
        }))
    })
}
