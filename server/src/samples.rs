//! Bundled sample image/mask pairs for demos, the README and tests, so
//! nothing has to be fetched. They are synthetic scenes (see
//! [`retouch_engine::synthetic`]) computed from fixed formulas and seeds, the same
//! on every run.

use image::{GrayImage, RgbImage};

use crate::aliyun::ApiKind;
use retouch_engine::png::encode_png;
use retouch_engine::synthetic::{
    Backdrop, HoleShape, MattingStyle, coarsen_mask, matting_scene, removal_scene,
};

/// Width of every sample.
const WIDTH: u32 = 640;
/// Height of every sample.
const HEIGHT: u32 = 480;

/// An input image and its mask, PNG-encoded.
#[derive(Debug, Clone)]
pub struct SamplePair {
    /// Name used in URLs: `/samples/{name}.png` and `/samples/{name}-mask.png`.
    pub name: &'static str,
    /// The API the pair is made for.
    pub api: ApiKind,
    /// One line saying what the sample shows.
    pub description: &'static str,
    /// The image (RGB PNG).
    pub image_png: Vec<u8>,
    /// The mask (grayscale PNG, values 0 and 255).
    pub mask_png: Vec<u8>,
}

/// "portrait": hair-like strands over a busy background, with a keep-mask
/// that is off by up to 4 px, as a quick hand-drawn mask would be.
pub fn matting_sample() -> SamplePair {
    matting_pair(
        "portrait",
        "matting: hair-like strands, mask off by up to 4 px",
        MattingStyle::Strands,
    )
}

/// "clutter": a red object over a scene with a horizon and a pole, with a
/// mask of the object (255 = remove).
pub fn removal_sample() -> SamplePair {
    removal_pair(
        "clutter",
        "removal: an object over sky, grass and a pole",
        Backdrop::Edges,
        HoleShape::Blob,
    )
}

/// Every sample: two for matting, three for removal.
pub fn all() -> Vec<SamplePair> {
    vec![
        matting_sample(),
        matting_pair(
            "veil",
            "matting: soft edges and a semi-transparent veil",
            MattingStyle::Soft,
        ),
        removal_sample(),
        removal_pair(
            "bricks",
            "removal: an object on brickwork",
            Backdrop::Bricks,
            HoleShape::Blob,
        ),
        removal_pair(
            "scribbles",
            "removal: thin strokes over a grainy gradient",
            Backdrop::GrainyGradient,
            HoleShape::Strokes,
        ),
    ]
}

fn matting_pair(name: &'static str, description: &'static str, style: MattingStyle) -> SamplePair {
    let scene = matting_scene(style, WIDTH, HEIGHT, 21);
    let mask = coarsen_mask(&scene.alpha, WIDTH, HEIGHT, 4.0, 22);
    pair(
        name,
        ApiKind::InstanceMatting,
        description,
        &scene.image,
        &mask,
    )
}

fn removal_pair(
    name: &'static str,
    description: &'static str,
    backdrop: Backdrop,
    shape: HoleShape,
) -> SamplePair {
    let scene = removal_scene(backdrop, shape, WIDTH, HEIGHT, 23);
    pair(
        name,
        ApiKind::ObjectRemoval,
        description,
        &scene.image,
        &scene.mask,
    )
}

fn pair(
    name: &'static str,
    api: ApiKind,
    description: &'static str,
    image: &RgbImage,
    mask: &GrayImage,
) -> SamplePair {
    SamplePair {
        name,
        api,
        description,
        image_png: encode_png(image).expect("in-memory PNG encoding"),
        mask_png: encode_png(mask).expect("in-memory PNG encoding"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png: &[u8]) -> image::DynamicImage {
        image::load_from_memory_with_format(png, image::ImageFormat::Png).unwrap()
    }

    #[test]
    fn samples_are_deterministic_pngs_of_640_by_480_with_binary_masks() {
        let first = all();
        let second = all();
        assert_eq!(first.len(), 5);
        for (a, b) in first.iter().zip(&second) {
            assert_eq!(a.image_png, b.image_png);
            assert_eq!(a.mask_png, b.mask_png);
            let image = decode(&a.image_png);
            let mask = decode(&a.mask_png).to_luma8();
            assert_eq!((image.width(), image.height()), (WIDTH, HEIGHT));
            assert_eq!(mask.dimensions(), (WIDTH, HEIGHT));
            assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
            let covered = mask.pixels().filter(|p| p.0[0] == 255).count();
            assert!(
                covered > 5_000 && covered < 150_000,
                "{}: {covered}",
                a.name
            );
        }
        assert_eq!(first[0].name, "portrait");
        assert_eq!(first[2].name, "clutter");
    }
}
