//! Writes the before/after pictures of the README: for every bundled
//! sample, the input, its mask and the local engine's result side by side
//! (matting results over a checkerboard, so transparency shows), and two
//! sheets from the bundled photographs with the truth beside the result.
//!
//! Run: `cargo run --release -p retouch-server --example sample_pictures -- server/samples`

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::imageops::{self, FilterType};
use image::{GrayImage, Rgb, RgbImage, Rgba, RgbaImage};
use retouch_engine::synthetic::{
    Cutout, MattingStyle, blocky_mask, brush_mask, load_colour_photos, load_silhouette,
    object_hole, photo_matting_scene,
};
use retouch_engine::{ClassicEngine, Engine, RemovalParams};
use retouch_server::aliyun::ApiKind;
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
        let result = run(&engine, sample.api, &image, &mask);
        let elapsed = started.elapsed();
        let path = dir.join(format!("{}.jpg", sample.name));
        save_sheet(&[image, grey_to_rgb(&mask), result], &path);
        println!(
            "{} ({}): {:.2} s -> {}",
            sample.name,
            sample.description,
            elapsed.as_secs_f64(),
            path.display()
        );
    }
    photo_sheets(&engine, &dir);
}

/// Two sheets from the bundled photographs, each row input, mask, result,
/// truth: matting of a cut-out over another photo with a blocky and an
/// exact mask, and removal of brush strokes and of an object-shaped hole.
fn photo_sheets(engine: &ClassicEngine, dir: &Path) {
    let photos_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/testdata/photos");
    let photos = load_colour_photos(&photos_dir).expect("bundled photos");
    let horse = load_silhouette(&photos_dir.join("horse-silhouette.png")).expect("silhouette");
    let by_name = |name: &str| {
        &photos
            .iter()
            .find(|p| p.name == name)
            .expect("bundled photo")
            .image
    };
    let (w, h) = (640, 480);
    let mut rows = Vec::new();
    for (front, back, cutout, seed) in [
        ("chelsea", "coffee", Cutout::Style(MattingStyle::Strands), 0),
        ("grace_hopper", "china", Cutout::Silhouette(&horse), 1),
    ] {
        let scene = photo_matting_scene(by_name(front), by_name(back), cutout, w, h, seed);
        let truth = RgbaImage::from_fn(w, h, |x, y| {
            let i = (y * w + x) as usize;
            let f = scene.foreground[i].map(|v| (v * 255.0).round() as u8);
            Rgba([f[0], f[1], f[2], (scene.alpha[i] * 255.0).round() as u8])
        });
        let mask = blocky_mask(&scene.alpha, w, h, 8);
        let result = run(engine, ApiKind::InstanceMatting, &scene.image, &mask);
        rows.push([
            scene.image.clone(),
            grey_to_rgb(&mask),
            result,
            over_checkerboard(&truth),
        ]);
    }
    save_rows(&rows, &dir.join("photo-matting.jpg"));

    let mut rows = Vec::new();
    for (name, hole) in [
        ("coffee", brush_mask(600, 400, 0.25, 4)),
        ("chelsea", object_hole(&horse, 451, 300, 0.08, 4.0, 2)),
    ] {
        let original = by_name(name);
        let result = run(engine, ApiKind::ObjectRemoval, original, &hole);
        let mut shown = original.clone();
        for (x, y, p) in shown.enumerate_pixels_mut() {
            if hole.get_pixel(x, y).0[0] != 0 {
                p.0 = [255, 0, 255];
            }
        }
        rows.push([shown, grey_to_rgb(&hole), result, original.clone()]);
    }
    save_rows(&rows, &dir.join("photo-removal.jpg"));
    println!("photo sheets -> {}", dir.display());
}

fn run(engine: &ClassicEngine, api: ApiKind, image: &RgbImage, mask: &GrayImage) -> RgbImage {
    match api {
        ApiKind::InstanceMatting => over_checkerboard(&engine.matte(image, mask).expect("matting")),
        ApiKind::ObjectRemoval => {
            let params = RemovalParams {
                seed: 1,
                kernel_size: 5,
            };
            engine.remove(image, mask, &params).expect("removal")
        }
    }
}

fn grey_to_rgb(mask: &GrayImage) -> RgbImage {
    RgbImage::from_fn(mask.width(), mask.height(), |x, y| {
        let v = mask.get_pixel(x, y).0[0];
        Rgb([v, v, v])
    })
}

/// One sheet of panels side by side.
fn save_sheet(panels: &[RgbImage], path: &Path) {
    save_rows(&[panels.to_vec()], path);
}

/// Rows of panels, each panel scaled to `PANEL_WIDTH`, as a JPEG.
fn save_rows<R: AsRef<[RgbImage]>>(rows: &[R], path: &Path) {
    let gap = 4;
    let columns = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0) as u32;
    let heights: Vec<u32> = rows
        .iter()
        .map(|r| {
            let first = &r.as_ref()[0];
            PANEL_WIDTH * first.height() / first.width()
        })
        .collect();
    let total = heights.iter().sum::<u32>() + gap * (rows.len() as u32).saturating_sub(1);
    let mut sheet = RgbImage::from_pixel(
        columns * PANEL_WIDTH + (columns - 1) * gap,
        total,
        Rgb([255; 3]),
    );
    let mut top = 0;
    for (row, height) in rows.iter().zip(&heights) {
        for (k, panel) in row.as_ref().iter().enumerate() {
            let small = imageops::resize(panel, PANEL_WIDTH, *height, FilterType::Triangle);
            imageops::replace(
                &mut sheet,
                &small,
                i64::from(k as u32 * (PANEL_WIDTH + gap)),
                i64::from(top),
            );
        }
        top += height + gap;
    }
    image::codecs::jpeg::JpegEncoder::new_with_quality(
        std::fs::File::create(path).expect("create picture"),
        85,
    )
    .encode_image(&sheet)
    .expect("encode picture");
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
