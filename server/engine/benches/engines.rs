//! Quality and speed of the local engines on real photographs, against
//! reference implementations run on the same inputs in the same run:
//! pymatting's closed-form matting with its multi-level foreground
//! estimation, and OpenCV's `cv2.inpaint` (TELEA and NS), driven by
//! `benches/reference/reference.py`. Prints ratios against those
//! references, never pass/fail times.
//!
//! The cases come from the photographs in `server/engine/testdata/photos`
//! (`retouch_engine::synthetic::photo`): for matting, one photo cut out
//! along a known alpha (hair, soft edge and veil, mesh of holes, a horse's
//! outline) over another, with the masks a user would give (blocky 8 px,
//! exact, dilated, eroded, wandering in and out); for removal, the photos themselves with
//! free-form brush strokes or object-shaped holes, scored against the
//! original pixels.
//!
//! Run: `cargo bench -p retouch-server --bench engines` (add `-- --keep DIR`
//! to keep every input and output, and `RETOUCH_BENCH_REFERENCE=reuse` to
//! reuse the reference outputs already in DIR while tuning). The references
//! need a Python venv: `python3 -m venv target/bench-venv &&
//! target/bench-venv/bin/pip install -r
//! server/engine/benches/reference/requirements.txt` (or set
//! `RETOUCH_BENCH_PYTHON`); without it only our own rows are printed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use image::{GrayImage, RgbImage};
use retouch_engine::matting::derive_trimap;
use retouch_engine::removal::{self, FillStrategy};
use retouch_engine::synthetic::quality::{
    alpha_sad, gradient_energy_ratio, gradient_ratio, psnr_in_mask, share_kept, strands_past_mask,
};
use retouch_engine::synthetic::{
    Backdrop, Cutout, HoleShape, MattingScene, MattingStyle, Photo, blocky_mask, brush_mask,
    coarsen_mask, fit, hair_scene, load_colour_photos, load_silhouette, matting_scene, object_hole,
    offset_mask, photo_matting_scene, removal_scene, scaled_brush_mask, scene_alpha,
};
use retouch_engine::{ClassicEngine, Engine, RemovalParams};
use serde_json::{Value, json};

/// Size of the matting composites (the photos are 451–640 px wide).
const MATTING_SIZE: (u32, u32) = (640, 480);
/// The size the speed target is stated for.
const TARGET_PIXELS: f64 = 800.0 * 600.0;
/// Half-width of the reference's trimap band around the mask's edge.
const REFERENCE_BAND: f32 = 12.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--large") {
        large(args.get(i + 1).map(String::as_str).unwrap_or("removal"));
        return;
    }
    let kept = args
        .iter()
        .position(|a| a == "--keep")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let temp = tempfile::tempdir().expect("temporary directory");
    let dir = kept.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("case directory");
    println!("engine bench: cases in {}", dir.display());

    let photos_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/photos");
    let photos = load_colour_photos(&photos_dir).expect("bundled photos");
    let horse = load_silhouette(&photos_dir.join("horse-silhouette.png")).expect("silhouette");
    let matting_cases = write_matting_cases(&dir, &photos, &horse);
    let mut removal_cases = write_removal_cases(&dir, &photos, &horse);
    removal_cases.extend(write_unseen_removal_cases(&dir, &horse));
    std::fs::write(
        dir.join("cases.json"),
        serde_json::to_vec_pretty(&json!({
            "matting": matting_cases.iter().map(|c| json!({
                "name": c.name, "image": format!("{}.png", c.scene),
                "trimap": format!("{}-trimap.png", c.name)})).collect::<Vec<_>>(),
            "removal": removal_cases.iter().map(|c| json!({
                "name": c.name, "image": format!("{}.png", c.name),
                "mask": format!("{}-mask.png", c.name)})).collect::<Vec<_>>(),
        }))
        .expect("json"),
    )
    .expect("write cases.json");
    let reuse = std::env::var("RETOUCH_BENCH_REFERENCE").is_ok_and(|v| v == "reuse");
    let reference = if reuse {
        std::fs::read(dir.join("reference.json"))
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok())
    } else {
        run_reference(&dir)
    };

    // RETOUCH_BENCH_ONLY=matting|removal narrows a run while tuning.
    let only = std::env::var("RETOUCH_BENCH_ONLY").unwrap_or_default();
    if only != "removal" {
        report_matting(&dir, &matting_cases, reference.as_ref());
        time_at_target_size(&photos, &horse);
    }
    if only != "matting" {
        report_removal(&dir, &removal_cases, reference.as_ref());
    }
    for which in ["matting", "removal"] {
        if !only.is_empty() {
            continue;
        }
        let exe = std::env::current_exe().expect("own path");
        let status = Command::new(exe).args(["--large", which]).status();
        if !status.map(|s| s.success()).unwrap_or(false) {
            println!("large {which} case failed");
        }
    }
}

/// The kinds of keep-mask a user gives.
const MASK_KINDS: [&str; 5] = ["blocky8", "exact", "dilated6", "eroded6", "wavy5"];
/// Hair-coloured strands over another photo, with a blocky mask (see
/// [`hair_scene`]).
const HAIR_KIND: &str = "hair-blocky8";

struct MattingCase {
    /// `scene-maskkind`.
    name: String,
    /// The composite's name (its image file).
    scene: String,
    kind: &'static str,
    image: RgbImage,
    mask: GrayImage,
    alpha: Vec<f32>,
}

impl MattingCase {
    /// The case of `scene` with `mask`, its mask and the reference's trimap
    /// written to `dir` as `{scene_name}-{kind}-mask.png` and `-trimap.png`.
    fn written(
        dir: &Path,
        scene_name: &str,
        kind: &'static str,
        scene: &MattingScene,
        mask: GrayImage,
    ) -> MattingCase {
        let name = format!("{scene_name}-{kind}");
        derive_trimap(&mask, REFERENCE_BAND)
            .to_gray()
            .save(dir.join(format!("{name}-trimap.png")))
            .unwrap();
        mask.save(dir.join(format!("{name}-mask.png"))).unwrap();
        MattingCase {
            name,
            scene: scene_name.to_string(),
            kind,
            image: scene.image.clone(),
            mask,
            alpha: scene.alpha.clone(),
        }
    }
}

/// Two composites per photo: the photo cut out along two of the cutouts,
/// over the photo two places further in the list.
fn write_matting_cases(dir: &Path, photos: &[Photo], horse: &GrayImage) -> Vec<MattingCase> {
    let (w, h) = MATTING_SIZE;
    let cutouts = [
        ("hair", Cutout::Style(MattingStyle::Strands)),
        ("soft", Cutout::Style(MattingStyle::Soft)),
        ("mesh", Cutout::Style(MattingStyle::Mesh)),
        ("horse", Cutout::Silhouette(horse)),
    ];
    let mut cases = Vec::new();
    for (i, front) in photos.iter().enumerate() {
        let back = &photos[(i + 2) % photos.len()];
        for k in [i, i + 1] {
            let (label, cutout) = cutouts[k % cutouts.len()];
            let scene_name = format!("{}-over-{}-{label}", front.name, back.name);
            let scene = photo_matting_scene(&front.image, &back.image, cutout, w, h, k as u64);
            scene
                .image
                .save(dir.join(format!("{scene_name}.png")))
                .unwrap();
            for kind in MASK_KINDS {
                let mask = match kind {
                    "blocky8" => blocky_mask(&scene.alpha, w, h, 8),
                    "exact" => offset_mask(&scene.alpha, w, h, 0.0),
                    "dilated6" => offset_mask(&scene.alpha, w, h, 6.0),
                    "eroded6" => offset_mask(&scene.alpha, w, h, -6.0),
                    // Hand-drawn: the outline wanders in and out by up to 5 px.
                    _ => coarsen_mask(&scene.alpha, w, h, 5.0, k as u64),
                };
                cases.push(MattingCase::written(dir, &scene_name, kind, &scene, mask));
            }
        }
    }
    // Hair over the busier photos: each photo's head with strands of its
    // own colour over the photo four further on.
    for (i, front) in photos.iter().enumerate() {
        let back = &photos[(i + 4) % photos.len()];
        let scene_name = format!("{}-hair-over-{}", front.name, back.name);
        let scene = hair_scene(&front.image, &back.image, w, h, 10 + i as u64);
        scene
            .image
            .save(dir.join(format!("{scene_name}.png")))
            .unwrap();
        // The truth, for the picture `reference/sheet.py` makes.
        GrayImage::from_fn(w, h, |x, y| {
            image::Luma([(scene.alpha[(y * w + x) as usize] * 255.0).round() as u8])
        })
        .save(dir.join(format!("{scene_name}-truth.png")))
        .unwrap();
        let mask = blocky_mask(&scene.alpha, w, h, 8);
        cases.push(MattingCase::written(
            dir,
            &scene_name,
            HAIR_KIND,
            &scene,
            mask,
        ));
    }
    cases
}

struct RemovalCase {
    name: String,
    kind: &'static str,
    original: RgbImage,
    mask: GrayImage,
}

/// Four holes per photo: free-form strokes over 10–50% of it, a horse's
/// outline and a hairy head's outline over about 8%, grown 4 px; and the
/// photo at 800×600 with strokes half as wide again over 17–55% of it.
fn write_removal_cases(dir: &Path, photos: &[Photo], horse: &GrayImage) -> Vec<RemovalCase> {
    let head = head_silhouette();
    let mut cases = Vec::new();
    for (i, photo) in photos.iter().enumerate() {
        let (w, h) = photo.image.dimensions();
        let seed = i as u64;
        let coverage = 0.1 + 0.4 * (i as f32 / (photos.len() - 1).max(1) as f32);
        let holes = [
            ("strokes", brush_mask(w, h, coverage, seed)),
            ("horse", object_hole(horse, w, h, 0.08, 4.0, seed)),
            ("head", object_hole(&head, w, h, 0.08, 4.0, seed + 100)),
        ];
        // The held-out set's kind of hole: the photo at 800×600, brush
        // strokes scaled to it and covering 17–55% of it.
        let large = fit(&photo.image, 800, 600);
        let large_coverage = 0.17 + 0.38 * (i as f32 / (photos.len() - 1).max(1) as f32);
        let large_holes = [(
            "strokes 800x600",
            scaled_brush_mask(800, 600, large_coverage, seed + 200, 1.5),
        )];
        for (kind, original, mask) in holes
            .into_iter()
            .map(|(kind, mask)| (kind, &photo.image, mask))
            .chain(
                large_holes
                    .into_iter()
                    .map(|(kind, mask)| (kind, &large, mask)),
            )
        {
            let name = format!("{}-{}", photo.name, kind.replace(' ', "-"));
            original.save(dir.join(format!("{name}.png"))).unwrap();
            mask.save(dir.join(format!("{name}-mask.png"))).unwrap();
            cases.push(RemovalCase {
                name,
                kind,
                original: original.clone(),
                mask,
            });
        }
    }
    cases
}

/// The second set's photos: OpenCV's samples, fetched by
/// `benches/reference/fetch-photos.sh` into `target/bench-photos` (or
/// `RETOUCH_BENCH_PHOTOS`). Empty, with a note, when they are absent.
fn unseen_photos() -> Vec<Photo> {
    let dir = std::env::var_os("RETOUCH_BENCH_PHOTOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-photos"));
    match load_colour_photos(&dir) {
        Ok(photos) if !photos.is_empty() => photos
            .into_iter()
            .map(|p| Photo {
                image: shrink_to_fit(&p.image, 800, 600),
                ..p
            })
            .collect(),
        _ => {
            println!(
                "no photos in {} (run benches/reference/fetch-photos.sh): the unseen set is skipped",
                dir.display()
            );
            Vec::new()
        }
    }
}

/// `image` shrunk, keeping its proportions, until it fits `width`×`height`;
/// never enlarged, so no photo's texture is smoothed by upscaling.
fn shrink_to_fit(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let scale = (f64::from(width) / f64::from(image.width()))
        .min(f64::from(height) / f64::from(image.height()));
    if scale >= 1.0 {
        return image.clone();
    }
    let (w, h) = (
        (f64::from(image.width()) * scale).round() as u32,
        (f64::from(image.height()) * scale).round() as u32,
    );
    image::imageops::resize(image, w, h, image::imageops::FilterType::Lanczos3)
}

/// Two holes per photo of the unseen set, at its own resolution: brush
/// strokes over 17–55% of it, as wide relative to the photo as the
/// 800×600 strokes, and a horse's or a hairy head's outline over about 8%,
/// grown 4 px.
fn write_unseen_removal_cases(dir: &Path, horse: &GrayImage) -> Vec<RemovalCase> {
    let photos = unseen_photos();
    let head = head_silhouette();
    let mut cases = Vec::new();
    for (i, photo) in photos.iter().enumerate() {
        let (w, h) = photo.image.dimensions();
        let seed = 500 + i as u64;
        let share = i as f32 / (photos.len() - 1).max(1) as f32;
        let scale = 1.5 * ((w * h) as f32 / TARGET_PIXELS as f32).sqrt();
        let shape = if i % 2 == 0 { horse } else { &head };
        let holes = [
            (
                "strokes (unseen photos)",
                scaled_brush_mask(w, h, 0.17 + 0.38 * share, seed, scale),
            ),
            (
                "object (unseen photos)",
                object_hole(shape, w, h, 0.08, 4.0, seed),
            ),
        ];
        for (kind, mask) in holes {
            let name = format!(
                "unseen-{}-{}",
                photo.name,
                kind.split(' ').next().unwrap_or(kind)
            );
            photo.image.save(dir.join(format!("{name}.png"))).unwrap();
            mask.save(dir.join(format!("{name}-mask.png"))).unwrap();
            cases.push(RemovalCase {
                name,
                kind,
                original: photo.image.clone(),
                mask,
            });
        }
    }
    cases
}

/// A hairy head's outline (the strands cutout at α ≥ 0.5), as an object
/// shape for holes.
fn head_silhouette() -> GrayImage {
    let alpha = scene_alpha(MattingStyle::Strands, 400, 300, 3);
    GrayImage::from_fn(400, 300, |x, y| {
        image::Luma([if alpha[(y * 400 + x) as usize] >= 0.5 {
            255
        } else {
            0
        }])
    })
}

/// Runs the Python references; `None` (with a note) when no interpreter
/// with them is available.
fn run_reference(dir: &Path) -> Option<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var_os("RETOUCH_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/bench-venv/bin/python"));
    if !python.exists() {
        println!(
            "no reference interpreter at {} (see the header of benches/engines.rs): ours only",
            python.display()
        );
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference/reference.py");
    let status = Command::new(&python).arg(script).arg(dir).status();
    match status {
        Ok(s) if s.success() => {
            let text = std::fs::read(dir.join("reference.json")).ok()?;
            serde_json::from_slice(&text).ok()
        }
        other => {
            println!("reference script failed: {other:?}");
            None
        }
    }
}

/// One method's scores on one matting case.
#[derive(Debug, Clone, Copy, Default)]
struct MattingScore {
    sad: f64,
    /// Share of true background (α = 0) given α > 0.1.
    background_bleed: f64,
    /// Share of true foreground (α = 1) given α < 0.9.
    soft_interior: f64,
    /// Share of pixels with 0.02 < α < 0.98.
    fractional: f64,
    seconds: f64,
}

fn score_matting(alpha: &[f32], truth: &[f32], seconds: f64) -> MattingScore {
    let (mut bg, mut bleed, mut fg, mut soft, mut fractional) = (0usize, 0usize, 0usize, 0usize, 0);
    for (&a, &t) in alpha.iter().zip(truth) {
        if t <= 0.0 {
            bg += 1;
            bleed += usize::from(a > 0.1);
        } else if t >= 1.0 {
            fg += 1;
            soft += usize::from(a < 0.9);
        }
        fractional += usize::from(a > 0.02 && a < 0.98);
    }
    MattingScore {
        sad: alpha_sad(alpha, truth, |_| true),
        background_bleed: bleed as f64 / bg.max(1) as f64,
        soft_interior: soft as f64 / fg.max(1) as f64,
        fractional: fractional as f64 / alpha.len() as f64,
        seconds,
    }
}

/// Scores of every method on every case of one mask kind.
#[derive(Default)]
struct KindScores {
    ours: Vec<MattingScore>,
    reference: Vec<MattingScore>,
    mask: Vec<MattingScore>,
    truth_fractional: Vec<f64>,
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n.max(1) as f64
}

fn report_matting(dir: &Path, cases: &[MattingCase], reference: Option<&Value>) {
    let engine = ClassicEngine::default();
    let mut per_case = String::from(
        "case,kind,ours_sad,pymatting_sad,mask_sad,ours_bleed,ours_soft,ours_fractional,ours_s,pymatting_s\n",
    );
    let mut kinds: Vec<(&str, KindScores)> = MASK_KINDS
        .iter()
        .chain([&HAIR_KIND])
        .map(|k| (*k, KindScores::default()))
        .collect();
    // Strands past the mask kept, ours and pymatting's, on the hair cases.
    let mut kept: (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for case in cases {
        let started = Instant::now();
        let out = engine.matte(&case.image, &case.mask).expect("matte");
        let seconds = started.elapsed().as_secs_f64();
        let alpha: Vec<f32> = out.pixels().map(|p| f32::from(p.0[3]) / 255.0).collect();
        let ours = score_matting(&alpha, &case.alpha, seconds);
        let as_alpha: Vec<f32> = case
            .mask
            .as_raw()
            .iter()
            .map(|&m| f32::from(m) / 255.0)
            .collect();
        let mask = score_matting(&as_alpha, &case.alpha, 0.0);
        // The hair cases' strand pixels past the mask, for the share kept.
        let strands = (case.kind == HAIR_KIND).then(|| strands_past_mask(&case.alpha, &case.mask));
        let reference = reference.and_then(|r| {
            let timing = &r["matting"][&case.name];
            let seconds =
                timing["alpha_seconds"].as_f64()? + timing["foreground_seconds"].as_f64()?;
            let png = image::open(dir.join(format!("{}.pymatting-alpha.png", case.name)))
                .ok()?
                .to_luma16();
            let alpha: Vec<f32> = png
                .as_raw()
                .iter()
                .map(|&v| f32::from(v) / 65535.0)
                .collect();
            if let Some(strands) = &strands {
                kept.1.push(share_kept(&alpha, strands));
            }
            Some(score_matting(&alpha, &case.alpha, seconds))
        });
        if let Some(strands) = &strands {
            kept.0.push(share_kept(&alpha, strands));
        }
        let truth_fractional = case.alpha.iter().filter(|&&a| a > 0.02 && a < 0.98).count() as f64
            / case.alpha.len() as f64;
        let _ = writeln!(
            per_case,
            "{},{},{:.3},{},{:.3},{:.4},{:.4},{:.4},{:.3},{}",
            case.name,
            case.kind,
            ours.sad,
            reference.map_or(String::new(), |r| format!("{:.3}", r.sad)),
            mask.sad,
            ours.background_bleed,
            ours.soft_interior,
            ours.fractional,
            ours.seconds,
            reference.map_or(String::new(), |r| format!("{:.3}", r.seconds)),
        );
        out.save(dir.join(format!("{}.ours.png", case.name)))
            .expect("save");
        let scores = &mut kinds
            .iter_mut()
            .find(|(k, _)| *k == case.kind)
            .expect("kind")
            .1;
        scores.ours.push(ours);
        scores.mask.push(mask);
        scores.reference.extend(reference);
        scores.truth_fractional.push(truth_fractional);
    }
    std::fs::write(dir.join("matting.csv"), per_case).expect("write matting.csv");

    let (w, h) = MATTING_SIZE;
    println!(
        "\n## Matting: {} composites of real photos at {w}x{h}, pymatting with a {REFERENCE_BAND} px trimap from the same mask\n",
        {
            let mut scenes: Vec<&str> = cases.iter().map(|c| c.scene.as_str()).collect();
            scenes.sort_unstable();
            scenes.dedup();
            scenes.len()
        }
    );
    println!(
        "| mask | method | mean SAD | SAD / pymatting | SAD / mask (mean, worst) | wins vs pymatting | bg α>0.1 | fg α<0.9 | fractional (truth) | s/img | s at 800x600 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let scale = TARGET_PIXELS / f64::from(w * h);
    for (kind, s) in &kinds {
        let reference_sad =
            (s.reference.len() == s.ours.len()).then(|| mean(s.reference.iter().map(|r| r.sad)));
        let mut rows = vec![("ours", &s.ours)];
        if reference_sad.is_some() {
            rows.push(("pymatting", &s.reference));
        }
        rows.push(("mask as alpha", &s.mask));
        for (method, scores) in rows {
            let sad = mean(scores.iter().map(|r| r.sad));
            let ratios: Vec<f64> = scores
                .iter()
                .zip(&s.mask)
                .map(|(r, m)| r.sad / m.sad)
                .collect();
            let worst = ratios.iter().copied().fold(0.0, f64::max);
            let total_ratio = sad / mean(s.mask.iter().map(|m| m.sad));
            let wins = reference_sad.map_or("–".to_string(), |_| {
                let n = scores
                    .iter()
                    .zip(&s.reference)
                    .filter(|(o, r)| o.sad < r.sad)
                    .count();
                format!("{n}/{}", scores.len())
            });
            let seconds = mean(scores.iter().map(|r| r.seconds));
            println!(
                "| {kind} | {method} | {sad:.2} | {} | {total_ratio:.2}, {worst:.2} | {wins} | {:.2}% | {:.2}% | {:.1}% ({:.1}%) | {seconds:.3} | {:.3} |",
                reference_sad.map_or("–".to_string(), |r| format!("{:.2}", sad / r)),
                100.0 * mean(scores.iter().map(|r| r.background_bleed)),
                100.0 * mean(scores.iter().map(|r| r.soft_interior)),
                100.0 * mean(scores.iter().map(|r| r.fractional)),
                100.0 * mean(s.truth_fractional.iter().copied()),
                seconds * scale,
            );
        }
    }
    if !kept.0.is_empty() {
        println!(
            "\n{HAIR_KIND}: strand pixels past the mask kept at alpha > 0.3: ours {:.1}% ({} composites), pymatting {}",
            100.0 * mean(kept.0.iter().copied()),
            kept.0.len(),
            if kept.1.is_empty() {
                "–".to_string()
            } else {
                format!("{:.1}%", 100.0 * mean(kept.1.iter().copied()))
            }
        );
    }
    println!("\nper case: {}", dir.join("matting.csv").display());
}

/// Times ours on composites made at 800×600 itself (the photos upscaled),
/// the size the speed target is stated for: the median of every
/// composite's time with a blocky mask.
fn time_at_target_size(photos: &[Photo], horse: &GrayImage) {
    let (w, h) = (800, 600);
    let engine = ClassicEngine::default();
    let mut seconds: Vec<f64> = photos
        .iter()
        .enumerate()
        .map(|(i, front)| {
            let back = &photos[(i + 2) % photos.len()];
            let cutout = if i % 2 == 0 {
                Cutout::Style(MattingStyle::Strands)
            } else {
                Cutout::Silhouette(horse)
            };
            let scene = photo_matting_scene(&front.image, &back.image, cutout, w, h, i as u64);
            let mask = blocky_mask(&scene.alpha, w, h, 8);
            let started = Instant::now();
            engine.matte(&scene.image, &mask).expect("matte");
            started.elapsed().as_secs_f64()
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    println!(
        "\nmatting at {w}x{h} (blocky masks, {} composites): median {:.3} s, max {:.3} s",
        seconds.len(),
        seconds[seconds.len() / 2],
        seconds[seconds.len() - 1]
    );
}

/// One method's scores on one removal case.
#[derive(Debug, Clone, Copy)]
struct RemovalScore {
    psnr: f64,
    /// Mean gradient magnitude ratio.
    gradient: f64,
    /// Gradient energy ratio.
    energy: f64,
    seconds: f64,
}

fn report_removal(dir: &Path, cases: &[RemovalCase], reference: Option<&Value>) {
    let mut per_case =
        String::from("case,kind,hole_pct,method,psnr,gradient_ratio,energy_ratio,seconds\n");
    // (kind, method) -> scores, in first-seen order.
    let mut table: Vec<((&str, String), Vec<RemovalScore>)> = Vec::new();
    for case in cases {
        let (w, h) = case.original.dimensions();
        let hole = case.mask.as_raw().iter().filter(|&&m| m != 0).count() as f64 / f64::from(w * h);
        let mut rows: Vec<(String, RgbImage, f64)> = Vec::new();
        for (label, strategy) in [
            ("ours", FillStrategy::Auto),
            ("ours: membrane only", FillStrategy::Membrane),
        ] {
            let started = Instant::now();
            let out = removal::fill(&case.original, &case.mask, 1, strategy);
            rows.push((label.into(), out, started.elapsed().as_secs_f64()));
        }
        if let Some(r) = reference {
            for (suffix, label) in [("telea", "OpenCV TELEA"), ("ns", "OpenCV NS")] {
                let seconds = r["removal"][&case.name][format!("{suffix}_seconds")].as_f64();
                let out = image::open(dir.join(format!("{}.{suffix}.png", case.name)));
                if let (Some(seconds), Ok(out)) = (seconds, out) {
                    rows.push((label.into(), out.to_rgb8(), seconds));
                }
            }
        }
        for (method, out, seconds) in rows {
            let score = RemovalScore {
                psnr: psnr_in_mask(&out, &case.original, &case.mask),
                gradient: gradient_ratio(&out, &case.original, &case.mask),
                energy: gradient_energy_ratio(&out, &case.original, &case.mask),
                seconds,
            };
            let _ = writeln!(
                per_case,
                "{},{},{:.1},{method},{:.2},{:.3},{:.3},{:.3}",
                case.name,
                case.kind,
                hole * 100.0,
                score.psnr,
                score.gradient,
                score.energy,
                score.seconds
            );
            let saved = match method.as_str() {
                "ours" => "ours",
                "ours: membrane only" => "membrane",
                _ => "",
            };
            if !saved.is_empty() {
                out.save(dir.join(format!("{}.{saved}.png", case.name)))
                    .expect("save");
            }
            let key = (case.kind, method);
            match table.iter_mut().find(|(k, _)| *k == key) {
                Some((_, scores)) => scores.push(score),
                None => table.push((key, vec![score])),
            }
        }
    }
    std::fs::write(dir.join("removal.csv"), per_case).expect("write removal.csv");
    println!(
        "\n## Object removal: {} holes in real photos, PSNR and gradient ratios inside the hole\n",
        cases.len()
    );
    println!(
        "| hole | method | mean PSNR dB | Δ vs TELEA dB | wins vs TELEA | gradient ratio | gradient energy ratio | s/img |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for ((kind, method), scores) in &table {
        let telea = table
            .iter()
            .find(|((k, m), _)| k == kind && m == "OpenCV TELEA")
            .map(|(_, s)| s);
        let psnr = mean(scores.iter().map(|s| s.psnr));
        let (delta, wins) = telea.map_or(("–".into(), "–".into()), |t| {
            let wins = scores
                .iter()
                .zip(t)
                .filter(|(s, t)| s.psnr > t.psnr)
                .count();
            (
                format!("{:+.2}", psnr - mean(t.iter().map(|s| s.psnr))),
                format!("{wins}/{}", scores.len()),
            )
        });
        println!(
            "| {kind} | {method} | {psnr:.2} | {delta} | {wins} | {:.2} | {:.2} | {:.2} |",
            mean(scores.iter().map(|s| s.gradient)),
            mean(scores.iter().map(|s| s.energy)),
            mean(scores.iter().map(|s| s.seconds)),
        );
    }
    println!("\nper case: {}", dir.join("removal.csv").display());
}

/// A 4096×4096 case in a process of its own, so its peak memory is its own.
/// The scene (with its ground truth) is built first; the peak before the
/// engine runs is printed too, so the engine's share can be told apart.
fn large(which: &str) {
    let side = 4096;
    let engine = ClassicEngine::default();
    match which {
        "matting" => {
            let scene = matting_scene(MattingStyle::Strands, side, side, 5);
            let mask = coarsen_mask(&scene.alpha, side, side, 8.0, 3);
            let truth = scene.alpha;
            drop(scene.foreground);
            let before = peak_rss_mib();
            let started = Instant::now();
            let out = engine.matte(&scene.image, &mask).expect("matte");
            let seconds = started.elapsed().as_secs_f64();
            let alpha: Vec<f32> = out.pixels().map(|p| f32::from(p.0[3]) / 255.0).collect();
            println!(
                "\nlarge matting 4096x4096 (mask coarse 8 px): {seconds:.2} s, SAD {:.1} (mask as alpha {:.1}), peak RSS {} MiB ({before} MiB before the engine ran)",
                alpha_sad(&alpha, &truth, |_| true),
                alpha_sad(
                    &mask
                        .pixels()
                        .map(|p| f32::from(p.0[0]) / 255.0)
                        .collect::<Vec<_>>(),
                    &truth,
                    |_| true
                ),
                peak_rss_mib()
            );
        }
        _ => {
            let scene = removal_scene(Backdrop::Bricks, HoleShape::Blob, side, side, 5);
            let before = peak_rss_mib();
            let started = Instant::now();
            let params = RemovalParams {
                seed: 1,
                kernel_size: 1,
            };
            let out = engine
                .remove(&scene.image, &scene.mask, &params)
                .expect("remove");
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "large removal 4096x4096 (5% blob): {seconds:.2} s ({:.2} s/MP), PSNR {:.2} dB, grad ratio {:.2}, peak RSS {} MiB ({before} MiB before the engine ran)",
                seconds / 16.777,
                psnr_in_mask(&out, &scene.original, &scene.mask),
                gradient_energy_ratio(&out, &scene.original, &scene.mask),
                peak_rss_mib()
            );
        }
    }
}

/// The process's peak resident set size (VmHWM), in MiB.
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}
