//! Export render times: a 50-page document with formatting and 20 images, rendered again
//! and again in one format; prints p50, p99 and max render time and the process's peak
//! memory (VmHWM). One format per run, so the peak is that format's.
//!
//!   cargo run --release -p tandem-render --features pdf,docx --example export_bench -- pdf 30
//!   cargo run --release -p tandem-render --features pdf,docx --example export_bench -- docx 30
//!
//! The first output is left in the temporary directory (`tandem-export-bench.pdf`).

use std::sync::Arc;
use std::time::Instant;

use tandem_engine::Delta;
use tandem_render::{Format, Image, Images, Limits, render};

fn data(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)).unwrap()
}

/// About 50 pages: sections with headings, eleven formatted paragraphs, lists, quotes, code and
/// an image every few paragraphs (20 in all, two files alternating).
fn document() -> (Delta, Images) {
    let mut images = Images::new();
    for i in 0..20 {
        let file = if i % 2 == 0 { "photo.jpg" } else { "logo.png" };
        let bytes: Arc<[u8]> = data(file).into();
        images.insert(format!("/api/uploads/img{i}"), Image::new(bytes, 50_000_000).unwrap());
    }
    let words = "the quick brown fox jumps over the lazy dog while the team writes the plan together";
    let mut ops = Vec::new();
    for section in 0..20 {
        ops.push(serde_json::json!({"insert": format!("Section {section}: planning notes")}));
        ops.push(serde_json::json!({"insert": "\n", "attributes": {"header": 2}}));
        for p in 0..11 {
            ops.push(serde_json::json!({"insert": format!("Paragraph {p}. ")}));
            ops.push(serde_json::json!({"insert": "Bold lead-in, ", "attributes": {"bold": true}}));
            ops.push(
                serde_json::json!({"insert": format!("{words}, {words}; "), "attributes": {"italic": p % 2 == 0}}),
            );
            ops.push(serde_json::json!({"insert": "a link", "attributes": {"link": "https://example.com"}}));
            ops.push(serde_json::json!({"insert": format!(" and {words} {words} {words} {words}.\n")}));
        }
        for item in 0..3 {
            ops.push(serde_json::json!({"insert": format!("Item {item} of the list")}));
            ops.push(serde_json::json!({"insert": "\n", "attributes": {"list": "ordered", "indent": item % 2}}));
        }
        ops.push(serde_json::json!({"insert": "A quoted remark about the section."}));
        ops.push(serde_json::json!({"insert": "\n", "attributes": {"blockquote": true}}));
        ops.push(serde_json::json!({"insert": "let total = items.iter().sum::<u64>();"}));
        ops.push(serde_json::json!({"insert": "\n", "attributes": {"code-block": true}}));
        ops.push(serde_json::json!({"insert": {"image": format!("/api/uploads/img{section}")}}));
        ops.push(serde_json::json!({"insert": "\n", "attributes": {"align": "center"}}));
    }
    (serde_json::from_value(serde_json::json!({"ops": ops})).unwrap(), images)
}

fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let format = Format::parse(&args.next().unwrap_or_else(|| "pdf".into())).expect("pdf or docx");
    let runs: usize = args.next().map_or(20, |n| n.parse().unwrap());
    let (doc, images) = document();
    let before = peak_rss_kb();
    let limits = Limits::default();
    // The first render loads the fonts (PDF): reported apart.
    let t = Instant::now();
    let first = render(&doc, "Benchmark", format, &images, &limits).unwrap();
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let out = render(&doc, "Benchmark", format, &images, &limits).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(out.len().abs_diff(first.len()) < first.len() / 50, "renders are alike");
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    // Kept for a look (pdfinfo for the page count; LibreOffice for the DOCX).
    let path = std::env::temp_dir().join(format!("tandem-export-bench.{}", format.extension()));
    std::fs::write(&path, &first).unwrap();
    println!(
        "file={} format={} chars={} images={} bytes={} runs={runs} first_ms={first_ms:.1} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} peak_rss_mb={:.1} rss_before_mb={:.1}",
        path.display(),
        format.extension(),
        doc.len(),
        images.len(),
        first.len(),
        pct(0.50),
        pct(0.99),
        times[times.len() - 1],
        peak_rss_kb() as f64 / 1024.0,
        before as f64 / 1024.0,
    );
}
