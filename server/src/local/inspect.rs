//! Checking downloaded inputs against the documented limits before a job is
//! accepted, and decoding them for processing.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader};

use crate::aliyun::{AliyunCode, MAX_SIDE, MIN_SIDE};

/// 23500007 unless `image` and `mask` are decodable PNG or JPEG files, the
/// image's sides are within the documented limits and the mask has the
/// image's size. Sizes are read from the headers before decoding, so an
/// oversized image is refused without being decoded. Blocking.
pub(super) fn check_pair(image: &[u8], mask: &[u8]) -> Result<(), AliyunCode> {
    let size = dimensions(image)?;
    let side_ok = |s: u32| (MIN_SIDE..=MAX_SIDE).contains(&s);
    if !side_ok(size.0) || !side_ok(size.1) {
        return Err(AliyunCode::ImageInvalid);
    }
    if dimensions(mask)? != size {
        return Err(AliyunCode::ImageInvalid);
    }
    decode(image).map_err(|_| AliyunCode::ImageInvalid)?;
    decode(mask).map_err(|_| AliyunCode::ImageInvalid)?;
    Ok(())
}

/// Decodes a PNG or JPEG file (format from its content). Blocking.
pub(super) fn decode(bytes: &[u8]) -> image::ImageResult<DynamicImage> {
    reader(bytes)?.decode()
}

fn dimensions(bytes: &[u8]) -> Result<(u32, u32), AliyunCode> {
    reader(bytes)
        .and_then(|r| r.into_dimensions())
        .map_err(|_| AliyunCode::ImageInvalid)
}

fn reader(bytes: &[u8]) -> image::ImageResult<ImageReader<Cursor<&[u8]>>> {
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => Ok(reader),
        _ => Err(image::ImageError::Unsupported(
            image::error::UnsupportedError::from_format_and_kind(
                image::error::ImageFormatHint::Unknown,
                image::error::UnsupportedErrorKind::Format(image::error::ImageFormatHint::Unknown),
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::encode_png;
    use image::{GrayImage, RgbImage};

    fn png_rgb(w: u32, h: u32) -> Vec<u8> {
        encode_png(&RgbImage::new(w, h)).unwrap()
    }

    fn png_gray(w: u32, h: u32) -> Vec<u8> {
        encode_png(&GrayImage::new(w, h)).unwrap()
    }

    #[test]
    fn sizes_formats_and_mask_shapes_are_enforced() {
        assert_eq!(check_pair(&png_rgb(400, 400), &png_gray(400, 400)), Ok(()));
        assert_eq!(
            check_pair(&png_rgb(399, 400), &png_gray(399, 400)),
            Err(AliyunCode::ImageInvalid)
        );
        assert_eq!(
            check_pair(&png_rgb(400, 4097), &png_gray(400, 4097)),
            Err(AliyunCode::ImageInvalid)
        );
        assert_eq!(
            check_pair(&png_rgb(400, 400), &png_gray(400, 401)),
            Err(AliyunCode::ImageInvalid)
        );
        assert_eq!(
            check_pair(b"GIF89a....", &png_gray(400, 400)),
            Err(AliyunCode::ImageInvalid)
        );
        let mut truncated = png_rgb(400, 400);
        truncated.truncate(truncated.len() / 2);
        assert_eq!(
            check_pair(&truncated, &png_gray(400, 400)),
            Err(AliyunCode::ImageInvalid)
        );
    }
}
