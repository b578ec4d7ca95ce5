//! Trace replay, engine by engine, over the real editing traces (criterion).
//!
//! The fast engines replay every sequential trace; the slow peers (seconds per replay) only
//! the two smallest, so a full run stays in minutes. `trace-replay` (the binary) covers every
//! pair with a timeout.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tandem_benches::replay::{replay, unit};
use tandem_benches::trace::{Trace, sequential_traces};

const FAST: &[&str] = &["tandem", "tandem-sequencer", "diamond-types", "rope:jumprope", "rope:ropey"];
const SLOW: &[&str] = &["yrs", "operational-transform", "quill-delta-rs"];
const SMALL_TRACES: &[&str] = &["sveltecomponent", "friendsforever_flat"];

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("trace_replay");
    group.sample_size(10);
    for path in sequential_traces().expect("traces") {
        let trace = Trace::load(&path).expect("trace loads");
        let plain = trace.patches();
        group.throughput(Throughput::Elements(plain.len() as u64));
        let slow = if SMALL_TRACES.contains(&trace.name.as_str()) { SLOW } else { &[] };
        for engine in FAST.iter().chain(slow) {
            let patches = trace.patches_in(unit(engine)).unwrap_or_else(|| plain.clone());
            group.bench_with_input(BenchmarkId::new(*engine, &trace.name), &patches, |b, patches| {
                b.iter(|| replay(engine, &trace.start, patches).expect("known engine"));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
