//! Quality and speed of the local engines against reference implementations
//! run on the same inputs in the same run: pymatting's closed-form matting
//! with its multi-level foreground estimation, and OpenCV's `cv2.inpaint`
//! (TELEA and NS), driven by `benches/reference/reference.py`. Prints
//! ratios against those references, never pass/fail times.
//!
//! Run: `cargo bench -p retouch-server --bench engines` (add `-- --keep DIR`
//! to keep every input and output). The references need a Python venv:
//! `python3 -m venv target/bench-venv && target/bench-venv/bin/pip install
//! -r server/benches/reference/requirements.txt` (or set
//! `RETOUCH_BENCH_PYTHON`); without it only our own rows are printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use image::{GrayImage, ImageBuffer, Luma, RgbImage};
use retouch_server::engine::matting::{
    self, Trimap, UNKNOWN, adaptive_trimap, band_radius, derive_trimap,
};
use retouch_server::engine::planes::ColorPlane;
use retouch_server::engine::removal::{self, FillStrategy};
use retouch_server::engine::{ClassicEngine, Engine, RemovalParams};
use retouch_server::synthetic::quality::{
    alpha_mse, alpha_sad, flat_fill, gradient_energy_ratio, psnr_in_mask,
};
use retouch_server::synthetic::{
    Backdrop, HoleShape, MattingStyle, coarsen_mask, matting_scene, removal_scene,
};
use serde_json::{Value, json};

/// Side lengths of the matting composites.
const MATTING_SIZE: (u32, u32) = (800, 600);
/// Side of the (square, 1 MP) removal scenes.
const REMOVAL_SIDE: u32 = 1024;

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

    let matting_cases = write_matting_cases(&dir);
    let removal_cases = write_removal_cases(&dir);
    std::fs::write(
        dir.join("cases.json"),
        serde_json::to_vec_pretty(&json!({
            "matting": matting_cases.iter().map(|c| json!({
                "name": c.name, "image": format!("{}.png", c.name),
                "trimap": format!("{}-trimap.png", c.name)})).collect::<Vec<_>>(),
            "removal": removal_cases.iter().map(|c| json!({
                "name": c.name, "image": format!("{}.png", c.name),
                "mask": format!("{}-mask.png", c.name)})).collect::<Vec<_>>(),
        }))
        .expect("json"),
    )
    .expect("write cases.json");
    let reference = run_reference(&dir);

    // RETOUCH_BENCH_ONLY=matting|removal narrows a run while tuning.
    let only = std::env::var("RETOUCH_BENCH_ONLY").unwrap_or_default();
    if only != "removal" {
        report_matting(&dir, &matting_cases, reference.as_ref());
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

struct MattingCase {
    name: String,
    image: RgbImage,
    mask: GrayImage,
    trimap: Trimap,
    alpha: Vec<f32>,
    foreground: Vec<[f32; 3]>,
}

fn write_matting_cases(dir: &Path) -> Vec<MattingCase> {
    let (w, h) = MATTING_SIZE;
    let mut cases = Vec::new();
    for (style, label) in [
        (MattingStyle::Strands, "strands"),
        (MattingStyle::Soft, "soft"),
    ] {
        let scene = matting_scene(style, w, h, 7);
        for coarse in [0.0f32, 4.0, 8.0] {
            let mask = coarsen_mask(&scene.alpha, w, h, coarse, 3);
            let radius = band_radius(w as usize, h as usize);
            // "fixed": a band as wide as the default plus the known
            // coarsening; "adaptive": the trimap the engine itself derives.
            let trimaps = [
                ("fixed", derive_trimap(&mask, radius + coarse)),
                ("adaptive", adaptive_trimap(&mask, radius)),
            ];
            for (kind, trimap) in trimaps {
                let name = format!("{label}-coarse{coarse}-{kind}");
                scene.image.save(dir.join(format!("{name}.png"))).unwrap();
                trimap
                    .to_gray()
                    .save(dir.join(format!("{name}-trimap.png")))
                    .unwrap();
                cases.push(MattingCase {
                    name,
                    image: scene.image.clone(),
                    mask: mask.clone(),
                    trimap,
                    alpha: scene.alpha.clone(),
                    foreground: scene.foreground.clone(),
                });
            }
        }
    }
    cases
}

struct RemovalCase {
    name: String,
    original: RgbImage,
    image: RgbImage,
    mask: GrayImage,
}

fn write_removal_cases(dir: &Path) -> Vec<RemovalCase> {
    let mut cases = Vec::new();
    for (backdrop, label) in [
        (Backdrop::Bricks, "bricks"),
        (Backdrop::GrainyGradient, "gradient"),
        (Backdrop::Edges, "edges"),
    ] {
        for (shape, hole) in [(HoleShape::Blob, "blob"), (HoleShape::Strokes, "strokes")] {
            let name = format!("{label}-{hole}");
            let scene = removal_scene(backdrop, shape, REMOVAL_SIDE, REMOVAL_SIDE, 11);
            scene.image.save(dir.join(format!("{name}.png"))).unwrap();
            scene
                .mask
                .save(dir.join(format!("{name}-mask.png")))
                .unwrap();
            cases.push(RemovalCase {
                name,
                original: scene.original,
                image: scene.image,
                mask: scene.mask,
            });
        }
    }
    cases
}

/// Runs the Python references; `None` (with a note) when no interpreter
/// with them is available.
fn run_reference(dir: &Path) -> Option<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
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

/// One method's result on one matting case.
struct MattingRow {
    method: String,
    alpha: Vec<f32>,
    foreground: Option<Vec<[f32; 3]>>,
    /// Seconds for alpha alone.
    alpha_seconds: f64,
    /// Seconds for alpha and foreground.
    seconds: f64,
}

fn report_matting(dir: &Path, cases: &[MattingCase], reference: Option<&Value>) {
    println!(
        "\n## Matting ({}x{}, band = default + coarsening)\n",
        MATTING_SIZE.0, MATTING_SIZE.1
    );
    println!(
        "| case | method | SAD all | SAD band | MSE×1e3 all | MSE×1e3 band | fg err band | alpha s | total s | SAD ratio | alpha time ratio | total time ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for case in cases {
        let colours = ColorPlane::from_rgb(&case.image);
        let band = |i: usize| case.trimap.values[i] == UNKNOWN;
        let mut rows = Vec::new();

        let started = Instant::now();
        let alpha = matting::closed_form_alpha(&colours, &case.trimap);
        let alpha_seconds = started.elapsed().as_secs_f64();
        let foreground = matting::estimate_foreground(&colours, &alpha);
        rows.push(MattingRow {
            method: "ours: closed-form + fg".into(),
            alpha,
            foreground: Some(foreground),
            alpha_seconds,
            seconds: started.elapsed().as_secs_f64(),
        });

        let started = Instant::now();
        let alpha = matting::guided_alpha(&colours, &case.mask, &case.trimap);
        let seconds = started.elapsed().as_secs_f64();
        rows.push(MattingRow {
            method: "guided filter only".into(),
            alpha,
            foreground: None,
            alpha_seconds: seconds,
            seconds,
        });

        rows.push(MattingRow {
            method: "mask as alpha".into(),
            alpha: case
                .mask
                .as_raw()
                .iter()
                .map(|&m| f32::from(m) / 255.0)
                .collect(),
            foreground: None,
            alpha_seconds: 0.0,
            seconds: 0.0,
        });

        let reference_row = reference.and_then(|r| {
            let timing = &r["matting"][&case.name];
            let alpha_seconds = timing["alpha_seconds"].as_f64()?;
            let seconds = alpha_seconds + timing["foreground_seconds"].as_f64()?;
            let alpha_png = image::open(dir.join(format!("{}.pymatting-alpha.png", case.name)))
                .ok()?
                .to_luma16();
            let fg_png = image::open(dir.join(format!("{}.pymatting-fg.png", case.name)))
                .ok()?
                .to_rgb8();
            Some(MattingRow {
                method: "pymatting closed-form + ml fg".into(),
                alpha: alpha_png
                    .as_raw()
                    .iter()
                    .map(|&v| f32::from(v) / 65535.0)
                    .collect(),
                foreground: Some(
                    fg_png
                        .pixels()
                        .map(|p| p.0.map(|v| f32::from(v) / 255.0))
                        .collect(),
                ),
                alpha_seconds,
                seconds,
            })
        });
        let baseline = reference_row.as_ref().map(|row| {
            (
                alpha_sad(&row.alpha, &case.alpha, |_| true),
                row.alpha_seconds,
                row.seconds,
            )
        });
        rows.extend(reference_row);

        for row in rows {
            let sad_all = alpha_sad(&row.alpha, &case.alpha, |_| true);
            let fg_err = row
                .foreground
                .map(|fg| foreground_error(&fg, &case.foreground, &case.alpha, &band))
                .map_or("–".into(), |e| format!("{e:.2}"));
            let ratios = baseline.map_or(
                ["–".to_string(), "–".into(), "–".into()],
                |(sad, a, t)| {
                    [
                        format!("{:.2}", sad_all / sad),
                        format!("{:.3}", row.alpha_seconds / a),
                        format!("{:.3}", row.seconds / t),
                    ]
                },
            );
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.3} | {:.3} | {} | {} | {} |",
                case.name,
                row.method,
                sad_all,
                alpha_sad(&row.alpha, &case.alpha, band),
                alpha_mse(&row.alpha, &case.alpha, |_| true),
                alpha_mse(&row.alpha, &case.alpha, band),
                fg_err,
                row.alpha_seconds,
                row.seconds,
                ratios[0],
                ratios[1],
                ratios[2]
            );
            if row.method.starts_with("ours") {
                save_alpha(
                    &row.alpha,
                    &case.image,
                    &dir.join(format!("{}.ours-alpha.png", case.name)),
                );
            }
        }
    }
}

/// Mean absolute error of `α·F` against the truth over the band, in 8-bit
/// levels: the colour a composite would show, so errors where alpha is
/// near zero do not count.
fn foreground_error(
    fg: &[[f32; 3]],
    truth: &[[f32; 3]],
    alpha: &[f32],
    band: &dyn Fn(usize) -> bool,
) -> f64 {
    let (sum, n) = (0..alpha.len())
        .filter(|&i| band(i) && alpha[i] > 0.02)
        .map(|i| {
            (0..3)
                .map(|c| f64::from(alpha[i] * (fg[i][c] - truth[i][c])).abs())
                .sum::<f64>()
                / 3.0
        })
        .fold((0.0, 0usize), |(s, n), e| (s + e, n + 1));
    255.0 * sum / n.max(1) as f64
}

fn save_alpha(alpha: &[f32], image: &RgbImage, path: &Path) {
    let out: ImageBuffer<Luma<u8>, Vec<u8>> = GrayImage::from_raw(
        image.width(),
        image.height(),
        alpha.iter().map(|a| (a * 255.0).round() as u8).collect(),
    )
    .expect("one value per pixel");
    out.save(path).expect("save alpha");
}

fn report_removal(dir: &Path, cases: &[RemovalCase], reference: Option<&Value>) {
    println!(
        "\n## Object removal ({0}x{0}, kernel_size 1)\n",
        REMOVAL_SIDE
    );
    println!(
        "| case | hole % | method | PSNR dB | grad ratio | time s | s/MP | ΔPSNR vs TELEA | time vs TELEA |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for case in cases {
        let megapixels = f64::from(case.image.width() * case.image.height()) / 1e6;
        let hole = case.mask.as_raw().iter().filter(|&&m| m != 0).count() as f64
            / case.mask.as_raw().len() as f64;
        let mut rows: Vec<(String, RgbImage, f64)> = Vec::new();
        for (label, strategy) in [
            ("ours (auto)", FillStrategy::Auto),
            ("ours: completion only", FillStrategy::Completion),
            ("ours: fast marching only", FillStrategy::FastMarching),
            ("ours: membrane only", FillStrategy::Membrane),
        ] {
            let started = Instant::now();
            let out = removal::fill(&case.image, &case.mask, 1, strategy);
            rows.push((label.into(), out, started.elapsed().as_secs_f64()));
        }
        rows.push((
            "flat mean fill".into(),
            flat_fill(&case.image, &case.mask),
            0.0,
        ));
        let mut telea: Option<(f64, f64)> = None;
        if let Some(r) = reference {
            for (suffix, label) in [("telea", "OpenCV TELEA"), ("ns", "OpenCV NS")] {
                let seconds = r["removal"][&case.name][format!("{suffix}_seconds")].as_f64();
                let out = image::open(dir.join(format!("{}.{suffix}.png", case.name)));
                if let (Some(seconds), Ok(out)) = (seconds, out) {
                    let out = out.to_rgb8();
                    if suffix == "telea" {
                        telea = Some((psnr_in_mask(&out, &case.original, &case.mask), seconds));
                    }
                    rows.push((label.into(), out, seconds));
                }
            }
        }
        for (method, out, seconds) in rows {
            let psnr = psnr_in_mask(&out, &case.original, &case.mask);
            let (delta, time_ratio) = telea.map_or(("–".into(), "–".into()), |(p, s)| {
                (format!("{:+.2}", psnr - p), format!("{:.1}", seconds / s))
            });
            println!(
                "| {} | {:.1} | {} | {:.2} | {:.2} | {:.3} | {:.2} | {} | {} |",
                case.name,
                hole * 100.0,
                method,
                psnr,
                gradient_energy_ratio(&out, &case.original, &case.mask),
                seconds,
                seconds / megapixels,
                delta,
                time_ratio
            );
            if method == "ours (auto)" {
                out.save(dir.join(format!("{}.ours.png", case.name)))
                    .expect("save");
            }
        }
    }
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
