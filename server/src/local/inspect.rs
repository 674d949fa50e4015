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
    let reader = reader(bytes)?;
    // The JPEG decoder fills a cut-off file with grey rather than fail:
    // a file that never reaches its end marker is refused here instead.
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(image::ImageError::Decoding(
            image::error::DecodingError::new(
                ImageFormat::Jpeg.into(),
                "the file ends before its end-of-image marker (truncated)",
            ),
        ));
    }
    reader.decode()
}

/// Whether an end-of-image marker (FF D9) follows the last start-of-scan
/// marker (FF DA). Inside scan data a 0xFF byte is always followed by 0x00
/// or a restart marker, so FF D9 there is the real end.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    last_scan.is_some_and(|at| bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]))
}

fn dimensions(bytes: &[u8]) -> Result<(u32, u32), AliyunCode> {
    reader(bytes)
        .and_then(|r| r.into_dimensions())
        .map_err(|_| AliyunCode::ImageInvalid)
}

fn reader(bytes: &[u8]) -> image::ImageResult<ImageReader<Cursor<&[u8]>>> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    reader.limits(crate::aliyun::decode_limits());
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
    use image::{GrayImage, RgbImage};
    use retouch_engine::png::encode_png;

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

    /// A PNG whose header declares `width`×`height` RGBA and whose pixel
    /// data is `idat` (a zlib stream): what a decompression bomb or a lying
    /// header looks like.
    fn png_with(width: u32, height: u32, idat: &[u8]) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut crc = crc32fast::Hasher::new();
            crc.update(kind);
            crc.update(data);
            png.extend_from_slice(kind);
            png.extend_from_slice(data);
            png.extend_from_slice(&crc.finalize().to_be_bytes());
        };
        let mut ihdr = width.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
        chunk(b"IHDR", &ihdr);
        chunk(b"IDAT", idat);
        chunk(b"IEND", &[]);
        png
    }

    /// [`png_with`] an empty zlib stream: a header and nothing behind it.
    fn png_header_only(width: u32, height: u32) -> Vec<u8> {
        png_with(
            width,
            height,
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        )
    }

    #[test]
    fn absurd_headers_are_refused_before_decoding() {
        let bomb = png_header_only(100_000, 100_000);
        assert_eq!(check_pair(&bomb, &bomb), Err(AliyunCode::ImageInvalid));
        // Decoding it directly also stops at the limit, not at an
        // allocation of 40 GB.
        let error = decode(&bomb).unwrap_err();
        assert!(matches!(error, image::ImageError::Limits(_)), "{error:?}");
        // Within the sides, a header that promises more data than the
        // file holds is a decoding error.
        let hollow = png_header_only(4096, 4096);
        assert!(decode(&hollow).is_err());
    }

    #[test]
    fn a_zip_bomb_png_is_refused_from_its_header() {
        // 16 MiB of zero rows deflate to a few KiB; the header claims a
        // 20000×20000 RGBA image (1.6 GB decoded).
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut encoder, &vec![0u8; 16 << 20]).unwrap();
        let idat = encoder.finish().unwrap();
        assert!(idat.len() < 64 * 1024);
        let bomb = png_with(20_000, 20_000, &idat);
        assert_eq!(check_pair(&bomb, &bomb), Err(AliyunCode::ImageInvalid));
        assert!(matches!(decode(&bomb), Err(image::ImageError::Limits(_))));
        // An upload of it is refused by its header too (the decoder's
        // limits name it before the side check can).
        let refusal = crate::uploads::inspect(&bomb).unwrap_err();
        assert!(refusal.contains("png"), "{refusal}");
    }

    #[test]
    fn a_truncated_jpeg_is_refused() {
        let mut jpeg = Vec::new();
        RgbImage::from_pixel(400, 400, image::Rgb([200, 10, 10]))
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        jpeg.truncate(jpeg.len() * 2 / 3);
        assert_eq!(
            check_pair(&jpeg, &png_gray(400, 400)),
            Err(AliyunCode::ImageInvalid)
        );
    }
}
