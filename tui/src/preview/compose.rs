//! Turns downloaded bytes into the picture a preview pane shows: decoded,
//! scaled down to at most [`MAX_SIDE`] pixels a side (a terminal shows far
//! fewer), masks as grey, and matting results laid over a checkerboard so
//! that their transparency shows.

use image::{DynamicImage, GenericImageView, Rgb, RgbImage, RgbaImage};

/// Longest side of a prepared preview, in pixels.
pub const MAX_SIDE: u32 = 512;

/// Checkerboard squares per longest side: a few cells each in a pane, so
/// that the board reads as a board and not as noise.
const SQUARES: u32 = 12;
const LIGHT: Rgb<u8> = Rgb([204, 204, 204]);
const DARK: Rgb<u8> = Rgb([153, 153, 153]);

/// What a preview shows: it decides how transparency is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewKind {
    /// An input image.
    Input,
    /// A mask (grey levels).
    Mask,
    /// A result; matting results are transparent where the cut-out is not.
    Result,
}

/// Decodes `bytes` and prepares them for a pane (see the module docs).
pub fn prepare(bytes: &[u8], kind: PreviewKind) -> Result<DynamicImage, String> {
    let image = image::load_from_memory(bytes).map_err(|e| format!("not an image: {e}"))?;
    let (width, height) = image.dimensions();
    let image = if width.max(height) > MAX_SIDE {
        image.thumbnail(MAX_SIDE, MAX_SIDE)
    } else {
        image
    };
    Ok(match kind {
        PreviewKind::Mask => DynamicImage::ImageRgb8(image.grayscale().to_rgb8()),
        _ if image.color().has_alpha() => {
            DynamicImage::ImageRgb8(over_checkerboard(&image.to_rgba8()))
        }
        _ => DynamicImage::ImageRgb8(image.to_rgb8()),
    })
}

/// `image` composited over a light and dark grey checkerboard.
pub fn over_checkerboard(image: &RgbaImage) -> RgbImage {
    let square = square_side(image.width(), image.height());
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let back = if (x / square + y / square).is_multiple_of(2) {
            LIGHT
        } else {
            DARK
        };
        let pixel = image.get_pixel(x, y);
        let alpha = u32::from(pixel[3]);
        Rgb(std::array::from_fn(|c| {
            ((u32::from(pixel[c]) * alpha + u32::from(back[c]) * (255 - alpha) + 127) / 255) as u8
        }))
    })
}

/// Side of a checkerboard square for an image of this size, in pixels.
fn square_side(width: u32, height: u32) -> u32 {
    (width.max(height) / SQUARES).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    fn png(image: DynamicImage) -> Vec<u8> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    }

    #[test]
    fn transparency_shows_the_checkerboard_and_opaque_pixels_stay() {
        let mut cutout = RgbaImage::from_pixel(64, 64, Rgba([0, 0, 0, 0]));
        cutout.put_pixel(40, 8, Rgba([255, 0, 0, 255]));
        cutout.put_pixel(8, 8, Rgba([255, 0, 0, 128]));
        let shown = prepare(&png(DynamicImage::ImageRgba8(cutout)), PreviewKind::Result)
            .unwrap()
            .to_rgb8();
        let square = square_side(64, 64);
        assert_eq!(square, 5);
        assert_eq!(*shown.get_pixel(0, 0), LIGHT);
        assert_eq!(*shown.get_pixel(square, 0), DARK);
        assert_eq!(*shown.get_pixel(square, square), LIGHT);
        assert_eq!(*shown.get_pixel(40, 8), Rgb([255, 0, 0]));
        // Half red over light grey: (8, 8) is in square (1, 1), light as (0, 0).
        assert_eq!(*shown.get_pixel(8, 8), Rgb([230, 102, 102]));
    }

    #[test]
    fn big_images_are_scaled_down_and_masks_turn_grey() {
        let mask = image::GrayImage::from_pixel(2048, 1024, image::Luma([255]));
        let shown = prepare(&png(DynamicImage::ImageLuma8(mask)), PreviewKind::Mask).unwrap();
        assert_eq!(shown.dimensions(), (MAX_SIDE, MAX_SIDE / 2));
        assert_eq!(*shown.to_rgb8().get_pixel(3, 3), Rgb([255, 255, 255]));
        assert!(prepare(b"<html>", PreviewKind::Input).is_err());
    }
}
