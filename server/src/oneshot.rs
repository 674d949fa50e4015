//! One image pair through the local engine from the command line
//! (`retouchd matte` / `retouchd remove`), so people can try the engines
//! on their own photos without running a server.

use std::path::Path;
use std::time::{Duration, Instant};

use image::{DynamicImage, GenericImageView, ImageFormat, ImageReader};

use crate::aliyun::{KERNEL_SIZE_RANGE, MAX_SIDE, MIN_SIDE};
use retouch_engine::{ClassicEngine, Engine, RemovalParams};

/// What to run.
#[derive(Debug, Clone)]
pub enum Job {
    /// Instance matting (mask 255 = keep); writes RGBA PNG.
    Matte,
    /// Object removal (mask 255 = remove).
    Remove(RemovalParams),
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Output size.
    pub dimensions: (u32, u32),
    /// Time spent in the engine.
    pub elapsed: Duration,
}

/// Reads `image` and `mask`, runs `job` with the classic engine and writes
/// `out` (format from its extension; matting needs `.png` for the alpha).
/// Inputs are held to the API's documented limits, so what works here works
/// through retouchd. Blocking. Errors name the flag and the rule.
pub fn run(job: &Job, image: &Path, mask: &Path, out: &Path) -> Result<Outcome, String> {
    if let Some(k) = match job {
        Job::Remove(params) => Some(params.kernel_size),
        Job::Matte => None,
    } && (!KERNEL_SIZE_RANGE.contains(&k) || k % 2 == 0)
    {
        return Err(format!(
            "--kernel-size must be odd and within [{}, {}], got {k}",
            KERNEL_SIZE_RANGE.start(),
            KERNEL_SIZE_RANGE.end()
        ));
    }
    let out_format = ImageFormat::from_path(out).map_err(|_| {
        format!(
            "--out {}: unknown image extension (use .png)",
            out.display()
        )
    })?;
    if matches!(job, Job::Matte) && out_format != ImageFormat::Png {
        return Err(format!(
            "--out {}: matting writes transparency, so the file must be .png",
            out.display()
        ));
    }
    let picture = load("--image", image)?;
    let mask_picture = load("--mask", mask)?;
    let (w, h) = (picture.width(), picture.height());
    let side_ok = |s: u32| (MIN_SIDE..=MAX_SIDE).contains(&s);
    if !side_ok(w) || !side_ok(h) {
        return Err(format!(
            "--image {}: {w}x{h} is outside the documented limits ({MIN_SIDE} to {MAX_SIDE} px per side)",
            image.display()
        ));
    }
    if mask_picture.dimensions() != (w, h) {
        let (mw, mh) = mask_picture.dimensions();
        return Err(format!(
            "--mask {}: {mw}x{mh} differs from the image's {w}x{h}",
            mask.display()
        ));
    }
    let (rgb, gray) = (picture.to_rgb8(), mask_picture.to_luma8());
    let engine = ClassicEngine::default();
    let started = Instant::now();
    let result: DynamicImage = match job {
        Job::Matte => engine.matte(&rgb, &gray).map(DynamicImage::from),
        Job::Remove(params) => engine.remove(&rgb, &gray, params).map(DynamicImage::from),
    }
    .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    result
        .save_with_format(out, out_format)
        .map_err(|e| format!("--out {}: cannot write: {e}", out.display()))?;
    Ok(Outcome {
        dimensions: (w, h),
        elapsed,
    })
}

fn load(flag: &str, path: &Path) -> Result<DynamicImage, String> {
    let mut reader = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| format!("{flag} {}: cannot read: {e}", path.display()))?;
    reader.limits(crate::aliyun::decode_limits());
    if !matches!(reader.format(), Some(ImageFormat::Png | ImageFormat::Jpeg)) {
        return Err(format!(
            "{flag} {}: must be a PNG or JPEG file",
            path.display()
        ));
    }
    reader
        .decode()
        .map_err(|e| format!("{flag} {}: cannot decode: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use retouch_engine::synthetic::{Backdrop, HoleShape, removal_scene};

    #[test]
    fn removes_an_object_from_files_and_names_bad_flags() {
        let dir = tempfile::tempdir().unwrap();
        let scene = removal_scene(Backdrop::Bricks, HoleShape::Blob, 400, 400, 1);
        let (image, mask) = (dir.path().join("in.png"), dir.path().join("mask.png"));
        scene.image.save(&image).unwrap();
        scene.mask.save(&mask).unwrap();
        let out = dir.path().join("out.png");
        let params = RemovalParams {
            seed: 3,
            kernel_size: 5,
        };
        let outcome = run(&Job::Remove(params), &image, &mask, &out).unwrap();
        assert_eq!(outcome.dimensions, (400, 400));
        assert_eq!(image::open(&out).unwrap().dimensions(), (400, 400));

        let even = RemovalParams {
            seed: 0,
            kernel_size: 4,
        };
        let err = run(&Job::Remove(even), &image, &mask, &out).unwrap_err();
        assert!(err.starts_with("--kernel-size must be odd"), "{err}");
        let err = run(&Job::Matte, &image, &mask, &dir.path().join("o.jpg")).unwrap_err();
        assert!(err.contains("must be .png"), "{err}");
        let err = run(&Job::Matte, &dir.path().join("nope.png"), &mask, &out).unwrap_err();
        assert!(
            err.starts_with("--image") && err.contains("cannot read"),
            "{err}"
        );
        image::RgbImage::new(300, 400).save(&image).unwrap();
        let err = run(&Job::Matte, &image, &mask, &out).unwrap_err();
        assert!(err.contains("300x400 is outside"), "{err}");
    }
}
