//! DOCX through docx-rs: a paragraph per line, named styles for headings, quotes and code,
//! numbering definitions for lists (a new numbering instance per list, so ordered lists
//! restart at 1), runs with their formatting, hyperlinks and inline pictures.

use docx_rs::{
    AbstractNumbering, AlignmentType, Docx, Hyperlink, HyperlinkType, IndentLevel, Level, LevelJc, LevelText,
    NumberFormat, Numbering, NumberingId, Paragraph, Pic, Run, RunFonts, Shading, ShdType, SpecialIndentType, Start,
    Style, StyleType, VertAlignType,
};

use crate::model::{Align, Inline, Kind, Line, ListKind, Script, Style as RunStyle};
use crate::{Error, Images};

/// Text width of the page (A4, 2 cm margins), EMU: wider pictures are scaled down to it.
const TEXT_WIDTH_EMU: u64 = (210 - 40) * 36_000;
const EMU_PER_PX: u64 = 9_525;
const BULLETS: usize = 1;
const ORDERED: usize = 2;
const MONO: &str = "DejaVu Sans Mono";

/// Renders `lines` to DOCX bytes.
pub(crate) fn render(title: &str, lines: &[Line], images: &Images) -> Result<Vec<u8>, Error> {
    let mut docx = Docx::new()
        .default_fonts(RunFonts::new().ascii("DejaVu Sans").hi_ansi("DejaVu Sans").cs("DejaVu Sans"))
        .default_size(21);
    docx = styles(docx);
    docx = docx.add_abstract_numbering(list_levels(BULLETS, false)).add_abstract_numbering(list_levels(ORDERED, true));
    docx = docx.add_numbering(Numbering::new(BULLETS, BULLETS));
    // Numbering instances: 1 is bullets; each ordered list gets its own (from 3 on).
    let mut next_numbering = 3;
    let mut in_ordered: Option<usize> = None;
    for line in lines {
        let mut p = Paragraph::new();
        match line.kind {
            Kind::Heading(level) => p = p.style(&format!("Heading{level}")),
            Kind::Quote => p = p.style("Quote"),
            Kind::Code => p = p.style("Code"),
            Kind::Paragraph => {
                if line.indent > 0 {
                    p = p.indent(Some(i32::from(line.indent) * 720), None, None, None);
                }
            }
            Kind::List(kind) => {
                let id = match kind {
                    ListKind::Ordered => *in_ordered.get_or_insert_with(|| {
                        next_numbering += 1;
                        next_numbering - 1
                    }),
                    _ => BULLETS,
                };
                p = p.numbering(NumberingId::new(id), IndentLevel::new(usize::from(line.indent)));
                if let ListKind::Check(done) = kind {
                    p = p.add_run(Run::new().add_text(if done { "☑ " } else { "☐ " }));
                }
            }
        }
        // An ordered list ends at the first line that is not part of it (nested bullets are).
        if !matches!(line.kind, Kind::List(_)) {
            in_ordered = None;
        }
        p = p.align(match line.align {
            Align::Left => AlignmentType::Left,
            Align::Center => AlignmentType::Center,
            Align::Right => AlignmentType::Right,
            Align::Justify => AlignmentType::Both,
        });
        if line.rtl {
            p.property = p.property.bidi(true);
        }
        let code = line.kind == Kind::Code;
        for inline in &line.inlines {
            p = inline_into(p, inline, images, code);
        }
        docx = docx.add_paragraph(p);
    }
    for id in 3..next_numbering {
        docx = docx.add_numbering(Numbering::new(id, ORDERED));
    }
    docx = docx.custom_property("title", title);
    let mut out = std::io::Cursor::new(Vec::new());
    docx.build().pack(&mut out).map_err(|e| Error::Render(format!("writing the DOCX: {e}")))?;
    Ok(out.into_inner())
}

fn inline_into(p: Paragraph, inline: &Inline, images: &Images, code: bool) -> Paragraph {
    match inline {
        Inline::Text(text, style) => {
            let run = run(text, style, code);
            match &style.link {
                Some(url) => p.add_hyperlink(Hyperlink::new(url, HyperlinkType::External).add_run(run)),
                None => p.add_run(run),
            }
        }
        Inline::Image { url, link } => {
            let Some(img) = images.get(url) else {
                return p.add_run(Run::new().add_text("[image]").italic());
            };
            let (w, h) = (u64::from(img.width) * EMU_PER_PX, u64::from(img.height) * EMU_PER_PX);
            let (w, h) = if w > TEXT_WIDTH_EMU { (TEXT_WIDTH_EMU, h * TEXT_WIDTH_EMU / w.max(1)) } else { (w, h) };
            let pic = Pic::new_with_dimensions(img.bytes.to_vec(), img.width, img.height)
                .size(u32::try_from(w).unwrap_or(u32::MAX), u32::try_from(h).unwrap_or(u32::MAX));
            let run = Run::new().add_image(pic);
            match link {
                Some(url) => p.add_hyperlink(Hyperlink::new(url, HyperlinkType::External).add_run(run)),
                None => p.add_run(run),
            }
        }
        Inline::Other(text) => p.add_run(Run::new().add_text(text).italic()),
    }
}

fn run(text: &str, s: &RunStyle, code: bool) -> Run {
    let mut r = Run::new().add_text(text);
    if s.bold {
        r = r.bold();
    }
    if s.italic {
        r = r.italic();
    }
    if s.underline || s.link.is_some() {
        r = r.underline("single");
    }
    if s.strike {
        r = r.strike();
    }
    if let Some(c) = s.color.or(s.link.as_ref().map(|_| crate::model::Rgb(0x1a, 0x56, 0xdb))) {
        r = r.color(c.hex());
    }
    if let Some(bg) = s.background {
        r = r.shading(Shading::new().shd_type(ShdType::Clear).color("auto").fill(bg.hex()));
    }
    if s.code || code {
        r = r.fonts(RunFonts::new().ascii(MONO).hi_ansi(MONO));
        if s.background.is_none() {
            r = r.shading(Shading::new().shd_type(ShdType::Clear).color("auto").fill("F2F2F2"));
        }
    }
    if let Some(script) = s.script {
        r.run_property = r.run_property.vert_align(match script {
            Script::Sub => VertAlignType::SubScript,
            Script::Super => VertAlignType::SuperScript,
        });
    }
    r
}

fn styles(mut docx: Docx) -> Docx {
    // Half-points: 24 / 20 / 16 / 14 / 12 / 11 pt.
    for (level, size) in [(1, 48), (2, 40), (3, 32), (4, 28), (5, 24), (6, 22)] {
        docx = docx.add_style(
            Style::new(format!("Heading{level}"), StyleType::Paragraph)
                .name(format!("Heading {level}"))
                .based_on("Normal")
                .next("Normal")
                .size(size)
                .bold(),
        );
    }
    docx.add_style(
        Style::new("Quote", StyleType::Paragraph).name("Quote").based_on("Normal").color("505050").italic().indent(
            Some(567),
            None,
            None,
            None,
        ),
    )
    .add_style(
        Style::new("Code", StyleType::Paragraph)
            .name("Code")
            .based_on("Normal")
            .fonts(RunFonts::new().ascii(MONO).hi_ansi(MONO).cs(MONO))
            .size(19),
    )
}

/// Nine levels of bullets or of numbers, indented 0.5 in per level.
fn list_levels(id: usize, ordered: bool) -> AbstractNumbering {
    let mut a = AbstractNumbering::new(id);
    for level in 0..9 {
        let (format, text) = if ordered {
            let format = ["decimal", "lowerLetter", "lowerRoman"][level % 3];
            (format, format!("%{}.", level + 1))
        } else {
            ("bullet", ["•", "◦", "▪"][level % 3].to_owned())
        };
        let left = 720 * (level as i32 + 1);
        a = a.add_level(
            Level::new(level, Start::new(1), NumberFormat::new(format), LevelText::new(text), LevelJc::new("left"))
                .indent(Some(left), Some(SpecialIndentType::Hanging(360)), None, None),
        );
    }
    a
}
