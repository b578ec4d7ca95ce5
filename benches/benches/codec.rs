//! Encoding and validating deltas: rkyv (binary subprotocol, op log) against JSON (criterion).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tandem_engine::{Attributes, Delta};

fn typical() -> Vec<(&'static str, Delta)> {
    let bold: Attributes = [("bold", true)].into_iter().collect();
    let link: Attributes =
        serde_json::from_str(r#"{"link":{"href":"https://example.com/a/long/path"},"color":"blue"}"#).expect("json");
    vec![
        ("keystroke", Delta::new().retain(12_345, Attributes::NONE).insert("e", Attributes::NONE)),
        ("backspace", Delta::new().retain(12_345, Attributes::NONE).delete(1)),
        ("format", Delta::new().retain(100, Attributes::NONE).retain(25, bold.clone())),
        (
            "paste_1k",
            Delta::new()
                .retain(500, Attributes::NONE)
                .insert(&"lorem ipsum ".repeat(85), link)
                .insert("\n", bold)
                .delete(3),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    for (name, delta) in typical() {
        let archive = delta.to_archive();
        let json = serde_json::to_vec(&delta).expect("json");
        group.bench_with_input(BenchmarkId::new("rkyv_encode", name), &delta, |b, d| b.iter(|| d.to_archive()));
        group.bench_with_input(BenchmarkId::new("rkyv_validate", name), &archive, |b, a| {
            b.iter(|| Delta::access(a).expect("valid").ops().len());
        });
        group.bench_with_input(BenchmarkId::new("rkyv_decode", name), &archive, |b, a| {
            b.iter(|| Delta::from_archive(a).expect("valid"))
        });
        group.bench_with_input(BenchmarkId::new("json_encode", name), &delta, |b, d| {
            b.iter(|| serde_json::to_vec(d).expect("json"))
        });
        group.bench_with_input(BenchmarkId::new("json_decode", name), &json, |b, j| {
            b.iter(|| serde_json::from_slice::<Delta>(j).expect("json"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
