//! Structure that crosses a removed object continues across the hole: a
//! horizon behind a blob comes out as an edge along its own line, not a
//! soft wash. (Generated scenes: the horizon's line is known exactly, and
//! no bundled photograph has a straight edge crossing a hole at a known
//! place.)

use image::RgbImage;
use retouch_engine::removal::{self, FillStrategy};
use retouch_engine::synthetic::{Backdrop, HoleShape, removal_scene};

/// Of the points every 4 px along the horizon lying at least 8 px inside
/// the hole: how many have the fill's vertical gradient peak within 2.5 px
/// of the line at half the original edge's strength or more.
fn horizon_continued(strategy: FillStrategy, seed: u64) -> (usize, usize) {
    let (w, h) = (400u32, 300u32);
    let scene = removal_scene(Backdrop::Edges, HoleShape::Blob, w, h, seed);
    let out = removal::fill(&scene.image, &scene.mask, seed, strategy);
    let luma = |image: &RgbImage, x: u32, y: i64| {
        let p = image.get_pixel(x, y as u32).0;
        0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
    };
    let vertical =
        |image: &RgbImage, x: u32, y: i64| (luma(image, x, y + 1) - luma(image, x, y - 1)).abs();
    let in_hole = |x: i64, y: i64| {
        (0..i64::from(w)).contains(&x)
            && (0..i64::from(h)).contains(&y)
            && scene.mask.get_pixel(x as u32, y as u32).0[0] != 0
    };
    let (mut deep, mut continued) = (0, 0);
    for x in (0..w).step_by(4) {
        // The horizon of `Backdrop::Edges`.
        let line = 0.55 * h as f32 + 0.08 * (x as f32 - 0.5 * w as f32);
        let y = line.round() as i64;
        let inside = (-8..=8).all(|dy| (-8..=8).all(|dx| in_hole(i64::from(x) + dx, y + dy)));
        if !inside {
            continue;
        }
        deep += 1;
        let strength = (y - 2..=y + 2)
            .map(|yy| vertical(&scene.original, x, yy))
            .fold(0.0f32, f32::max);
        let (peak, at) = (y - 6..=y + 6)
            .map(|yy| (vertical(&out, x, yy), yy))
            .fold((0.0f32, y), |best, g| if g.0 > best.0 { g } else { best });
        if (at as f32 - line).abs() <= 2.5 && peak >= 0.5 * strength {
            continued += 1;
        }
    }
    (continued, deep)
}

#[test]
fn a_horizon_crossing_the_hole_continues_as_an_edge() {
    for seed in 0..4 {
        let (continued, deep) = horizon_continued(FillStrategy::Auto, seed);
        assert!(
            deep >= 10,
            "seed {seed}: only {deep} points deep in the hole"
        );
        assert!(
            continued * 4 >= deep * 3,
            "seed {seed}: the edge continues at {continued} of {deep} points"
        );
    }
}

/// What the test above tells apart: the membrane alone (a smooth
/// interpolation) washes the same edge out.
#[test]
fn a_smooth_fill_does_not_continue_the_horizon() {
    let (continued, deep) = (0..4)
        .map(|seed| horizon_continued(FillStrategy::Membrane, seed))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert!(
        continued * 4 < deep * 3,
        "the membrane continued the edge at {continued} of {deep} points"
    );
}
