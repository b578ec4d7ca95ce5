//! PDF through typst: the document becomes Typst source in which every piece of the user's
//! text is a string literal (so nothing they type is read as markup or code), compiled with
//! the bundled fonts and the document's images as the only files, and laid out into pages.

use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};

use typst::diag::{FileError, FileResult};
use typst::foundations::{Bytes, Datetime};
use typst::syntax::{FileId, RootedPath, Source, VirtualPath, VirtualRoot};
use typst::text::{Font, FontBook};
use typst::utils::LazyHash;
use typst::{Library, LibraryExt, World};
use typst_layout::PagedDocument;

use crate::model::{Align, Inline, Kind, Line, ListKind, Style};
use crate::{Error, Images, Limits, fonts};

/// The page's text width (A4, 2 cm margins), points: wider images are scaled down to it.
const TEXT_WIDTH_PT: f64 = 595.28 - 2.0 * 56.69;

struct Shared {
    library: LazyHash<Library>,
    book: LazyHash<FontBook>,
    fonts: Vec<Font>,
}

static SHARED: LazyLock<Shared> = LazyLock::new(|| {
    let fonts: Vec<Font> = fonts::ALL.iter().flat_map(|data| Font::iter(Bytes::new(*data))).collect();
    Shared { library: LazyHash::new(Library::default()), book: LazyHash::new(FontBook::from_fonts(&fonts)), fonts }
});

/// Compilations share typst's memo cache; it is cleared after each so a long-running worker
/// does not grow, and this lock keeps one compilation from clearing another's entries
/// mid-run (renders are few at a time and each runs on one thread anyway).
static COMPILE: Mutex<()> = Mutex::new(());

fn file_id(path: &str) -> FileId {
    // A fixed, small set of paths (typst interns every path it sees for good).
    RootedPath::new(VirtualRoot::Project, VirtualPath::new(path).expect("a valid virtual path")).intern()
}

struct Doc {
    main: Source,
    images: Vec<Bytes>,
}

impl World for Doc {
    fn library(&self) -> &LazyHash<Library> {
        &SHARED.library
    }

    fn book(&self) -> &LazyHash<FontBook> {
        &SHARED.book
    }

    fn main(&self) -> FileId {
        self.main.id()
    }

    fn source(&self, id: FileId) -> FileResult<Source> {
        if id == self.main.id() {
            Ok(self.main.clone())
        } else {
            Err(FileError::NotFound(id.vpath().get_without_slash().into()))
        }
    }

    fn file(&self, id: FileId) -> FileResult<Bytes> {
        let path = id.vpath().get_without_slash();
        path.strip_prefix("img/")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| self.images.get(n).cloned())
            .ok_or_else(|| FileError::NotFound(path.into()))
    }

    fn font(&self, index: usize) -> Option<Font> {
        SHARED.fonts.get(index).cloned()
    }

    fn today(&self, _offset: Option<typst::foundations::Duration>) -> Option<Datetime> {
        None
    }
}

/// Renders `lines` to PDF bytes.
pub(crate) fn render(title: &str, lines: &[Line], images: &Images, limits: &Limits) -> Result<Vec<u8>, Error> {
    let mut files = Vec::new();
    let source = source(title, lines, images, &mut files);
    let doc = Doc { main: Source::new(file_id("/main.typ"), source), images: files };
    let _one = COMPILE.lock().unwrap_or_else(|p| p.into_inner());
    let compiled = typst::compile::<PagedDocument>(&doc).output;
    let result = match compiled {
        Ok(paged) if paged.pages().len() > limits.max_pages => {
            Err(Error::TooLarge(format!("{} pages (the limit is {})", paged.pages().len(), limits.max_pages)))
        }
        Ok(paged) => {
            typst_pdf::pdf(&paged, &typst_pdf::PdfOptions::default()).map_err(|d| diagnostics("writing the PDF", &d))
        }
        Err(d) => Err(diagnostics("laying out the document", &d)),
    };
    typst::comemo::evict(0);
    result
}

fn diagnostics(what: &str, d: &[typst::diag::SourceDiagnostic]) -> Error {
    let msgs: Vec<&str> = d.iter().take(3).map(|d| d.message.as_str()).collect();
    Error::Render(format!("{what}: {}", msgs.join("; ")))
}

/// A Typst string literal holding `s` exactly.
fn lit(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The Typst source of the whole document.
pub(crate) fn source(title: &str, lines: &[Line], images: &Images, files: &mut Vec<Bytes>) -> String {
    let mut out = String::with_capacity(lines.len() * 64 + 512);
    out.push_str("#set document(title: ");
    lit(&mut out, title);
    out.push_str(")\n");
    out.push_str(concat!(
        "#set page(paper: \"a4\", margin: 2cm, numbering: \"1\")\n",
        "#set text(font: (\"DejaVu Sans\", \"Noto Sans Arabic\", \"Noto Sans Hebrew\", \"Noto Sans Devanagari\", ",
        "\"Noto Sans Thai\", \"Droid Sans Fallback\", \"NanumSquare\"), size: 10.5pt)\n",
        "#show raw: set text(font: (\"DejaVu Sans Mono\", \"Droid Sans Fallback\"), size: 9.5pt)\n",
        "#show heading: set block(above: 1.2em, below: 0.7em)\n",
        "#set quote(block: true)\n",
        "#show quote.where(block: true): it => block(stroke: (left: 2pt + luma(190)), inset: (left: 10pt, y: 4pt), text(fill: luma(70), it.body))\n",
    ));
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        // Runs of lines of one block kind become one block.
        let run_end = |pred: &dyn Fn(&Line) -> bool| i + lines[i..].iter().take_while(|l| pred(l)).count();
        match line.kind {
            Kind::Code => {
                let end = run_end(&|l| l.kind == Kind::Code);
                let text: Vec<String> = lines[i..end].iter().map(Line::text).collect();
                out.push_str("#block(fill: luma(245), inset: 8pt, radius: 2pt, width: 100%, raw(block: true, ");
                lit(&mut out, &text.join("\n"));
                out.push_str("))\n\n");
                i = end;
            }
            Kind::Quote => {
                let end = run_end(&|l| l.kind == Kind::Quote);
                out.push_str("#quote[");
                for (n, l) in lines[i..end].iter().enumerate() {
                    if n > 0 {
                        out.push_str("\n\n");
                    }
                    paragraph(&mut out, l, images, files);
                }
                out.push_str("]\n\n");
                i = end;
            }
            Kind::List(_) => {
                let end = run_end(&|l| matches!(l.kind, Kind::List(_)));
                for l in &lines[i..end] {
                    let Kind::List(kind) = l.kind else { unreachable!() };
                    for _ in 0..l.indent {
                        out.push_str("  ");
                    }
                    out.push_str(match kind {
                        ListKind::Ordered => "+ ",
                        ListKind::Bullet => "- ",
                        ListKind::Check(true) => "- ☑ ",
                        ListKind::Check(false) => "- ☐ ",
                    });
                    inlines(&mut out, &l.inlines, images, files);
                    out.push('\n');
                }
                out.push('\n');
                i = end;
            }
            Kind::Heading(level) => {
                let _ = write!(out, "#heading(level: {level})[");
                aligned(&mut out, line, images, files);
                out.push_str("]\n\n");
                i += 1;
            }
            Kind::Paragraph => {
                if line.inlines.is_empty() {
                    out.push_str("#v(1em)\n\n");
                } else {
                    if line.indent > 0 {
                        let _ = write!(out, "#pad(left: {}em)[", 2 * line.indent);
                    }
                    aligned(&mut out, line, images, files);
                    if line.indent > 0 {
                        out.push(']');
                    }
                    out.push_str("\n\n");
                }
                i += 1;
            }
        }
    }
    out
}

/// A line's content with its alignment and direction.
fn aligned(out: &mut String, line: &Line, images: &Images, files: &mut Vec<Bytes>) {
    let (open, close) = match line.align {
        Align::Left => ("", ""),
        Align::Center => ("#align(center)[", "]"),
        Align::Right => ("#align(right)[", "]"),
        Align::Justify => ("#par(justify: true)[", "]"),
    };
    out.push_str(open);
    paragraph(out, line, images, files);
    out.push_str(close);
}

fn paragraph(out: &mut String, line: &Line, images: &Images, files: &mut Vec<Bytes>) {
    if line.rtl {
        out.push_str("#text(dir: rtl)[");
    }
    inlines(out, &line.inlines, images, files);
    if line.rtl {
        out.push(']');
    }
}

fn inlines(out: &mut String, inlines: &[Inline], images: &Images, files: &mut Vec<Bytes>) {
    for inline in inlines {
        out.push('#');
        match inline {
            Inline::Text(text, style) => styled(out, text, style),
            Inline::Image { url, link } => {
                let Some(img) = images.get(url) else {
                    styled(out, "[image]", &Style { italic: true, ..Style::default() });
                    continue;
                };
                if let Some(link) = link {
                    out.push_str("link(");
                    lit(out, link);
                    out.push_str(", ");
                }
                let n = files.len();
                files.push(Bytes::new(img.bytes.clone()));
                // 96 dpi, as a browser shows it, and never wider than the text.
                let width = (f64::from(img.width) * 0.75).min(TEXT_WIDTH_PT);
                let _ = write!(out, "box(image(\"/img/{n}\", width: {width:.2}pt))");
                if link.is_some() {
                    out.push(')');
                }
            }
            Inline::Other(text) => styled(out, text, &Style { italic: true, ..Style::default() }),
        }
    }
}

/// One run as nested calls around a string literal: `strong(emph("..."))`.
fn styled(out: &mut String, text: &str, s: &Style) {
    let mut closes = 0;
    let mut open = |out: &mut String, f: &str| {
        out.push_str(f);
        closes += 1;
    };
    if let Some(link) = &s.link {
        open(out, "link(");
        lit(out, link);
        out.push_str(", ");
    }
    if s.bold {
        open(out, "strong(");
    }
    if s.italic {
        open(out, "emph(");
    }
    if s.underline || s.link.is_some() {
        open(out, "underline(");
    }
    if s.strike {
        open(out, "strike(");
    }
    match s.script {
        Some(crate::model::Script::Sub) => open(out, "sub("),
        Some(crate::model::Script::Super) => open(out, "super("),
        None => {}
    }
    if let Some(bg) = s.background {
        open(out, &format!("highlight(fill: rgb(\"#{}\"), ", bg.hex()));
    }
    let color = s.color.or(s.link.as_ref().map(|_| crate::model::Rgb(0x1a, 0x56, 0xdb)));
    if let Some(c) = color {
        open(out, &format!("text(fill: rgb(\"#{}\"), ", c.hex()));
    }
    if s.code {
        open(out, "raw(");
    }
    lit(out, text);
    for _ in 0..closes {
        out.push(')');
    }
}
