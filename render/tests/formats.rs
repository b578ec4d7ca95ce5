//! Renders a document with every feature to PDF and DOCX and reads the files back with
//! independent tools: poppler (`pdftotext`, `pdfinfo`, `pdfimages`, `pdftoppm`) and
//! LibreOffice (DOCX converted to PDF headless). The README's test command installs them.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tandem_engine::Delta;
use tandem_render::{Error, Format, Image, Images, Limits, render};

const SCRIPTS: &[(&str, &str)] = &[
    ("Russian", "Привет, мир"),
    ("Greek", "Καλημέρα κόσμε"),
    ("Chinese", "你好世界"),
    ("Japanese", "こんにちは"),
    ("Korean", "안녕하세요"),
    ("Hindi", "नमस्ते"),
    ("Arabic", "مرحبا"),
    ("Hebrew", "שלום"),
    ("Thai", "สวัสดี"),
];

fn data(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)).unwrap()
}

fn images() -> Images {
    let mut images = Images::new();
    for (url, file) in [
        ("/api/uploads/png", "logo.png"),
        ("/api/uploads/jpg", "photo.jpg"),
        ("/api/uploads/gif", "dot.gif"),
        ("/api/uploads/webp", "pic.webp"),
    ] {
        let bytes: Arc<[u8]> = data(file).into();
        images.insert(url.into(), Image::new(bytes, 10_000_000).unwrap_or_else(|| panic!("{file} is an image")));
    }
    images
}

/// A document with every feature exports keep.
fn every_feature(filler_paragraphs: usize) -> Delta {
    let mut ops = vec![
        serde_json::json!({"insert": "Quarterly plan"}),
        serde_json::json!({"insert": "\n", "attributes": {"header": 1}}),
        serde_json::json!({"insert": "Bold words", "attributes": {"bold": true}}),
        serde_json::json!({"insert": ", "}),
        serde_json::json!({"insert": "italic words", "attributes": {"italic": true}}),
        serde_json::json!({"insert": ", "}),
        serde_json::json!({"insert": "underlined", "attributes": {"underline": true}}),
        serde_json::json!({"insert": ", "}),
        serde_json::json!({"insert": "struck", "attributes": {"strike": true}}),
        serde_json::json!({"insert": ", "}),
        serde_json::json!({"insert": "red text", "attributes": {"color": "#e60000"}}),
        serde_json::json!({"insert": ", "}),
        serde_json::json!({"insert": "highlighted", "attributes": {"background": "#ffff00"}}),
        serde_json::json!({"insert": ", "}),
        serde_json::json!({"insert": "a link", "attributes": {"link": "https://example.com/plan"}}),
        serde_json::json!({"insert": " and "}),
        serde_json::json!({"insert": "inline_code()", "attributes": {"code": true}}),
        serde_json::json!({"insert": ".\n"}),
        serde_json::json!({"insert": "Goals"}),
        serde_json::json!({"insert": "\n", "attributes": {"header": 2}}),
        serde_json::json!({"insert": "First goal"}),
        serde_json::json!({"insert": "\n", "attributes": {"list": "ordered"}}),
        serde_json::json!({"insert": "Nested bullet"}),
        serde_json::json!({"insert": "\n", "attributes": {"list": "bullet", "indent": 1}}),
        serde_json::json!({"insert": "Second goal"}),
        serde_json::json!({"insert": "\n", "attributes": {"list": "ordered"}}),
        serde_json::json!({"insert": "A bullet"}),
        serde_json::json!({"insert": "\n", "attributes": {"list": "bullet"}}),
        serde_json::json!({"insert": "Done item"}),
        serde_json::json!({"insert": "\n", "attributes": {"list": "checked"}}),
        serde_json::json!({"insert": "Wise words in a quote"}),
        serde_json::json!({"insert": "\n", "attributes": {"blockquote": true}}),
        serde_json::json!({"insert": "fn main() {"}),
        serde_json::json!({"insert": "\n", "attributes": {"code-block": true}}),
        serde_json::json!({"insert": "    println!(\"hi\");"}),
        serde_json::json!({"insert": "\n", "attributes": {"code-block": true}}),
        serde_json::json!({"insert": "}"}),
        serde_json::json!({"insert": "\n", "attributes": {"code-block": true}}),
        serde_json::json!({"insert": "Centered line"}),
        serde_json::json!({"insert": "\n", "attributes": {"align": "center"}}),
        serde_json::json!({"insert": "Right line"}),
        serde_json::json!({"insert": "\n", "attributes": {"align": "right"}}),
        // Typst syntax in the user's text must come out as text.
        serde_json::json!({"insert": "Literal: #import \"x\" $x^2$ *star* _u_ ] [ \\ @ref <lbl> // not a comment\n"}),
        serde_json::json!({"insert": {"image": "/api/uploads/png"}}),
        serde_json::json!({"insert": {"image": "/api/uploads/jpg"}}),
        serde_json::json!({"insert": {"image": "/api/uploads/gif"}}),
        serde_json::json!({"insert": {"image": "/api/uploads/webp"}}),
        serde_json::json!({"insert": {"image": "https://elsewhere.example/x.png"}}),
        serde_json::json!({"insert": "\n"}),
    ];
    for (name, text) in SCRIPTS {
        ops.push(serde_json::json!({"insert": format!("{name}: {text}\n")}));
    }
    ops.push(serde_json::json!({"insert": "مرحبا بالعالم"}));
    ops.push(serde_json::json!({"insert": "\n", "attributes": {"direction": "rtl", "align": "right"}}));
    for i in 0..filler_paragraphs {
        ops.push(serde_json::json!({"insert": format!("Filler paragraph {i}: the quick brown fox jumps over the lazy dog, again and again, until the line wraps at least once on the page.\n")}));
    }
    serde_json::from_value(serde_json::json!({"ops": ops})).unwrap()
}

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd} ({e}): the README's test command installs poppler and LibreOffice"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_text(text: &str, what: &str, scripts: bool) {
    for expected in [
        "Quarterly plan",
        "Bold words",
        "italic words",
        "underlined",
        "struck",
        "red text",
        "highlighted",
        "a link",
        "inline_code()",
        "Goals",
        "First goal",
        "Nested bullet",
        "Second goal",
        "Done item",
        "Wise words in a quote",
        "fn main() {",
        "println!(\"hi\");",
        "Centered line",
        "Right line",
        "Literal: #import \"x\" $x^2$ *star* _u_ ] [ \\ @ref <lbl> // not a comment",
        "[image]",
    ] {
        assert!(text.contains(expected), "{what}: {expected:?} missing from\n{text}");
    }
    assert!(text.contains("1.") && text.contains("2."), "{what}: the ordered list's numbers");
    if scripts {
        for (name, sample) in SCRIPTS {
            // Bidirectional text comes out of pdftotext in visual order; check the letters.
            let found = text.contains(sample) || {
                let letters: Vec<char> = sample.chars().filter(|c| c.is_alphabetic()).collect();
                letters.iter().all(|c| text.contains(*c))
            };
            assert!(found, "{what}: {name} ({sample}) missing");
        }
    }
}

#[test]
fn a_pdf_keeps_every_feature_and_script() {
    let doc = every_feature(80);
    let pdf = render(&doc, "Quarterly plan", Format::Pdf, &images(), &Limits::default()).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.pdf");
    std::fs::write(&path, &pdf).unwrap();
    let p = path.to_str().unwrap();
    let text = tool("pdftotext", &["-layout", p, "-"]);
    check_text(&text, "PDF", true);
    let info = tool("pdfinfo", &[p]);
    let pages: usize = info.lines().find_map(|l| l.strip_prefix("Pages:")).unwrap().trim().parse().unwrap();
    assert!((2..=8).contains(&pages), "{pages} pages:\n{info}");
    assert!(info.contains("Title:") && info.contains("Quarterly plan"), "{info}");
    // Four embedded images (the external one is not fetched).
    let images = tool("pdfimages", &["-list", p]);
    assert!(images.lines().skip(2).count() >= 4, "{images}");
    // The first page renders (the smoke check; docs/ has a committed sample page).
    tool("pdftoppm", &["-png", "-r", "40", "-f", "1", "-l", "1", p, dir.path().join("page").to_str().unwrap()]);
    let png =
        std::fs::read_dir(dir.path()).unwrap().flatten().find(|e| e.path().extension().is_some_and(|x| x == "png"));
    let png = png.expect("a rendered page").path();
    assert!(std::fs::metadata(&png).unwrap().len() > 5_000, "the page rendered nearly empty");
    if let Ok(out) = std::env::var("TANDEM_EXPORT_SAMPLE") {
        tool("pdftoppm", &["-png", "-r", "70", "-f", "1", "-l", "1", "-singlefile", p, &out]);
    }
}

#[test]
fn a_docx_opens_in_libreoffice_with_every_feature() {
    let doc = every_feature(5);
    let docx = render(&doc, "Quarterly plan", Format::Docx, &images(), &Limits::default()).unwrap();
    assert!(docx.starts_with(b"PK"), "a zip");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.docx");
    std::fs::write(&path, &docx).unwrap();
    // LibreOffice needs a profile directory of its own to run beside another instance.
    let profile = format!("-env:UserInstallation=file://{}", dir.path().join("profile").display());
    tool(
        "soffice",
        &[
            &profile,
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            dir.path().to_str().unwrap(),
            path.to_str().unwrap(),
        ],
    );
    let pdf = dir.path().join("plan.pdf");
    let text = tool("pdftotext", &["-layout", pdf.to_str().unwrap(), "-"]);
    check_text(&text, "DOCX", false);
    // Every script's text is in the document itself (LibreOffice draws it with whatever fonts
    // the machine has).
    let xml = tool("unzip", &["-p", path.to_str().unwrap(), "word/document.xml"]);
    for (name, sample) in SCRIPTS {
        assert!(xml.contains(sample), "DOCX: {name} missing");
    }
    assert!(xml.contains("w:numPr") && xml.contains("w:hyperlink") && xml.contains("Heading1"), "structure");
    let listing = tool("unzip", &["-l", path.to_str().unwrap()]);
    assert!(listing.matches("word/media/").count() >= 4, "{listing}");
    let images = tool("pdfimages", &["-list", pdf.to_str().unwrap()]);
    assert!(images.lines().skip(2).count() >= 4, "LibreOffice shows the pictures:\n{images}");
}

#[test]
fn exports_are_bounded() {
    let doc = every_feature(60);
    let small = Limits { max_pages: 1, ..Limits::default() };
    match render(&doc, "t", Format::Pdf, &images(), &small) {
        Err(Error::TooLarge(why)) => assert!(why.contains("pages"), "{why}"),
        other => panic!("{:?}", other.map(|b| b.len())),
    }
    let tiny = Limits { max_chars: 100, ..Limits::default() };
    for format in [Format::Pdf, Format::Docx] {
        let err = render(&doc, "t", format, &images(), &tiny).unwrap_err();
        assert!(err.to_string().contains("characters"), "{err}");
    }
    let few = Limits { max_images: 2, ..Limits::default() };
    assert!(render(&doc, "t", Format::Docx, &images(), &few).unwrap_err().to_string().contains("images"));
    let light = Limits { max_image_bytes: 1_000, ..Limits::default() };
    assert!(render(&doc, "t", Format::Pdf, &images(), &light).unwrap_err().to_string().contains("MB of images"));
}

#[test]
fn images_are_typed_by_content() {
    assert!(Image::new(data("logo.png"), 1_000_000).is_some());
    assert!(Image::new(data("pic.webp"), 1_000_000).is_some());
    assert!(Image::new(b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(), 1_000_000).is_none());
    assert!(Image::new(b"\x89PNG\r\n\x1a\ntruncated".to_vec(), 1_000_000).is_none(), "no dimensions");
    assert!(Image::new(data("photo.jpg"), 100).is_none(), "over the pixel limit");
}

#[test]
fn an_empty_document_exports() {
    for format in [Format::Pdf, Format::Docx] {
        let out = render(&Delta::new(), "", format, &Images::new(), &Limits::default()).unwrap();
        assert!(!out.is_empty());
    }
}
