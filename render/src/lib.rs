//! Exports: turns a document (its content at one revision) into a PDF or a DOCX file.
//!
//! One job, no I/O: the caller reads the document and fetches its images (through the
//! permission-checked paths), then calls [`render`] on a blocking thread. [`model`] reads the
//! document's delta into lines of styled runs; [`pdf`] lays them out with typst (bundled
//! fonts, so no network and no system fonts); [`docx`] writes them with docx-rs.
//!
//! Every export is bounded ([`Limits`]): the document's size, the images' number and bytes
//! (checked before any work), and the pages laid out (checked before the PDF is written).

#[cfg(feature = "docx")]
mod docx;
#[cfg(feature = "pdf")]
mod fonts;
pub mod model;
#[cfg(feature = "pdf")]
mod pdf;

use std::collections::HashMap;
use std::sync::Arc;

use tandem_engine::Delta;

/// The two formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// PDF 1.7 (typst).
    Pdf,
    /// Office Open XML (docx-rs).
    Docx,
}

impl Format {
    /// `pdf` or `docx`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pdf" => Some(Self::Pdf),
            "docx" => Some(Self::Docx),
            _ => None,
        }
    }

    /// The file extension (and the name in the API).
    pub fn extension(self) -> &'static str {
        match self {
            Self::Pdf => "pdf",
            Self::Docx => "docx",
        }
    }

    /// The file's media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Pdf => "application/pdf",
            Self::Docx => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        }
    }
}

/// An image format exports embed, told by the file's first bytes (never by its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// GIF.
    Gif,
    /// WebP.
    Webp,
}

impl ImageKind {
    /// The kind of `bytes` by their signature, or `None` for anything else.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(Self::Jpeg)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(Self::Gif)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else {
            None
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
        }
    }

    /// Its usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Gif => "gif",
            Self::Webp => "webp",
        }
    }
}

/// An image ready to embed.
#[derive(Clone, Debug)]
pub struct Image {
    /// The file.
    pub bytes: Arc<[u8]>,
    /// Its format.
    pub kind: ImageKind,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
}

impl Image {
    /// Checks `bytes` (type by content, dimensions from the header, at most
    /// `max_pixels`): `None` when it is not an image exports can embed.
    pub fn new(bytes: impl Into<Arc<[u8]>>, max_pixels: u64) -> Option<Self> {
        let bytes = bytes.into();
        let kind = ImageKind::sniff(&bytes)?;
        let size = imagesize::blob_size(&bytes).ok()?;
        let (width, height) = (u32::try_from(size.width).ok()?, u32::try_from(size.height).ok()?);
        (width > 0 && height > 0 && u64::from(width) * u64::from(height) <= max_pixels).then_some(Self {
            bytes,
            kind,
            width,
            height,
        })
    }
}

/// The document's images by the URL it names them with; an image missing here is drawn
/// as "[image]".
pub type Images = HashMap<String, Image>;

/// What one export may use.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Characters in the document.
    pub max_chars: usize,
    /// Pages laid out (PDF).
    pub max_pages: usize,
    /// Distinct images embedded.
    pub max_images: usize,
    /// Bytes of all images together.
    pub max_image_bytes: u64,
    /// Pixels of one image (width x height).
    pub max_image_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_chars: 2_000_000,
            max_pages: 1_000,
            max_images: 200,
            max_image_bytes: 200 << 20,
            max_image_pixels: 50_000_000,
        }
    }
}

/// Why an export could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Over one of the [`Limits`]: the reason says which.
    #[error("the document is too large to export: {0}")]
    TooLarge(String),
    /// The renderer failed.
    #[error("rendering failed: {0}")]
    Render(String),
}

/// Renders `doc` (a document: a delta of inserts) as `format`, titled `title`, with
/// `images` (see [`image_urls`]).
pub fn render(doc: &Delta, title: &str, format: Format, images: &Images, limits: &Limits) -> Result<Vec<u8>, Error> {
    let chars = doc.len();
    if chars > limits.max_chars {
        return Err(Error::TooLarge(format!("{chars} characters (the limit is {})", limits.max_chars)));
    }
    check_images(images, limits)?;
    let lines = model::lines(doc);
    let _ = (&lines, title);
    match format {
        #[cfg(feature = "pdf")]
        Format::Pdf => pdf::render(title, &lines, images, limits),
        #[cfg(feature = "docx")]
        Format::Docx => docx::render(title, &lines, images),
        #[allow(unreachable_patterns)]
        other => Err(Error::Render(format!("this build has no {} renderer", other.extension()))),
    }
}

/// The URLs of `doc`'s images, each once: what the caller fetches for [`render`].
pub fn image_urls(doc: &Delta) -> Vec<String> {
    model::image_urls(&model::lines(doc))
}

/// Checks the images against `limits` (count and total bytes).
pub fn check_images(images: &Images, limits: &Limits) -> Result<(), Error> {
    if images.len() > limits.max_images {
        return Err(Error::TooLarge(format!("{} images (the limit is {})", images.len(), limits.max_images)));
    }
    let bytes: u64 = images.values().map(|i| i.bytes.len() as u64).sum();
    if bytes > limits.max_image_bytes {
        return Err(Error::TooLarge(format!(
            "{:.1} MB of images (the limit is {:.1} MB)",
            bytes as f64 / 1e6,
            limits.max_image_bytes as f64 / 1e6
        )));
    }
    Ok(())
}
