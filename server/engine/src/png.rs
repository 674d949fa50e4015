//! PNG encoding of results and samples.

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageBuffer, ImageEncoder, ImageResult, Pixel, PixelWithColorType};

/// Encodes an 8-bit image as PNG, favouring speed over size.
pub fn encode_png<P>(image: &ImageBuffer<P, Vec<u8>>) -> ImageResult<Vec<u8>>
where
    P: Pixel<Subpixel = u8> + PixelWithColorType,
{
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(image.as_raw(), image.width(), image.height(), P::COLOR_TYPE)?;
    Ok(out)
}
