//! Plots of a report, as SVG: latency percentile curves (from the `.hgrm` files) and
//! throughput and latency over time (from the report's per-second series). Drawn from the
//! files in a result directory, so `tandem-loadgen report DIR` redraws them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::report::Report;

const SIZE: (u32, u32) = (900, 520);
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

/// Parses an `.hgrm` percentile distribution: (percentile as a fraction, value in ms).
pub fn parse_hgrm(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let value: f64 = cols.next()?.parse().ok()?;
            let q: f64 = cols.next()?.parse().ok()?;
            Some((q, value))
        })
        .collect()
}

/// Where a percentile sits on the "nines" axis: 0 for p0, 1 for p90, 2 for p99, 3 for p99.9.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-6).log10()
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing: {e}")
}

/// Draws every plot the directory has data for; returns the files written.
pub fn render(dir: &Path, report: &Report) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut curves = Vec::new();
    for name in ["ack_latency", "propagation_latency", "presence_latency", "join", "connect"] {
        let path = dir.join(format!("{name}.hgrm"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            let points = parse_hgrm(&text);
            if !points.is_empty() {
                curves.push((name, points));
            }
        }
    }
    if !curves.is_empty() {
        let path = dir.join("latency_percentiles.svg");
        percentiles(
            &path,
            &format!("{} against {}: latency by percentile", report.scenario.name, report.label),
            &curves,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    if !report.series.is_empty() {
        let path = dir.join("throughput.svg");
        let series: Vec<(&str, Vec<(f64, f64)>)> = vec![
            ("sent/s", report.series.iter().map(|p| (p.t as f64, p.sent as f64)).collect()),
            ("acked/s", report.series.iter().map(|p| (p.t as f64, p.acked as f64)).collect()),
            ("delivered/s", report.series.iter().map(|p| (p.t as f64, p.delivered as f64)).collect()),
        ];
        over_time(
            &path,
            &format!("{} against {}: throughput per second", report.scenario.name, report.label),
            "per second",
            &series,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
        let path = dir.join("latency_over_time.svg");
        let series: Vec<(&str, Vec<(f64, f64)>)> = vec![
            ("ack mean ms", report.series.iter().map(|p| (p.t as f64, p.ack_mean_ms)).collect()),
            ("ack max ms", report.series.iter().map(|p| (p.t as f64, p.ack_max_ms)).collect()),
        ];
        over_time(
            &path,
            &format!("{} against {}: ack latency per second", report.scenario.name, report.label),
            "ms",
            &series,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn percentiles(path: &Path, title: &str, curves: &[(&str, Vec<(f64, f64)>)]) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let x_max = curves.iter().flat_map(|c| c.1.iter().map(|p| nines(p.0))).fold(1.0_f64, f64::max).ceil().min(6.0);
    let y_max = curves.iter().flat_map(|c| c.1.iter().map(|p| p.1)).fold(0.001_f64, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| {
            let n = x.round().max(0.0) as i32;
            format!("{:.*}%", (n - 2).max(0) as usize, 100.0 - 100.0 * 10f64.powi(-n))
        })
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().filter(|p| p.0 < 1.0).map(|p| (nines(p.0), p.1)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)
}

fn over_time(path: &Path, title: &str, unit: &str, series: &[(&str, Vec<(f64, f64)>)]) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let x_max = series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).fold(1.0_f64, f64::max);
    let y_max = series.iter().flat_map(|s| s.1.iter().map(|p| p.1)).fold(1.0_f64, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(err)?;
    chart.configure_mesh().x_desc("seconds since the run started").y_desc(unit).draw().map_err(err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_round_trips_into_points() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for us in 1..=1000u64 {
            h.record(us * 10).unwrap();
        }
        let points = parse_hgrm(&crate::report::hgrm(&h));
        assert!(points.len() > 20);
        assert!(points.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1), "monotone");
        let last = points.last().unwrap();
        assert_eq!(last.0, 1.0);
        assert!((last.1 - 10.007).abs() < 1e-9);
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
    }
}
