//! Transform, compose and apply of typical ops at several document sizes (criterion).
//!
//! Deltas are keystrokes and small edits at random positions of documents of 1 K, 100 K and
//! 10 M chars: transform and compose cost what the ops hold; apply costs the document's depth
//! (O(log n)) plus, at 10 M chars, the cache misses of touching a random place in 10 MB.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_engine::random::{self, Shape};
use tandem_engine::{Attributes, ClientId, Delta, DocState, Document, Limits};

const SIZES: &[usize] = &[1_000, 100_000, 10_000_000];
const PAIRS: usize = 256;

/// A small edit at a random position: a keystroke, or a formatted insert with a delete.
fn edit_at_random(rng: &mut ChaCha8Rng, len: usize) -> Delta {
    let pos = rng.random_range(0..len.saturating_sub(16).max(1));
    let tail = random::delta(rng, 16, Shape::RICH);
    Delta::from_ops(std::iter::once(tandem_engine::Op::retain(pos, Attributes::NONE)).chain(tail.into_ops()))
}

fn document(len: usize) -> Document {
    let line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n";
    let text = line.repeat(len / line.len() + 1);
    let mut doc = Document::from_text(&text.chars().take(len).collect::<String>());
    // Some formatting, so the run tree is not a single run.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..(len / 1000).min(2000) {
        let pos = rng.random_range(0..len - 10);
        doc.apply(&Delta::new().retain(pos, Attributes::NONE).retain(5, [("bold", true)].into_iter().collect()))
            .expect("in range");
    }
    doc
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ot_ops");
    group.throughput(Throughput::Elements(PAIRS as u64));
    for &size in SIZES {
        let mut rng = ChaCha8Rng::seed_from_u64(size as u64);
        let pairs: Vec<(Delta, Delta)> =
            (0..PAIRS).map(|_| (edit_at_random(&mut rng, size), edit_at_random(&mut rng, size))).collect();
        group.bench_with_input(BenchmarkId::new("transform", size), &pairs, |b, pairs| {
            b.iter(|| pairs.iter().map(|(x, y)| x.transform(y, true).ops().len()).sum::<usize>());
        });
        group.bench_with_input(BenchmarkId::new("compose", size), &pairs, |b, pairs| {
            b.iter(|| pairs.iter().map(|(x, y)| x.compose(y).ops().len()).sum::<usize>());
        });
        // Keystroke pairs (insert a char, delete a char) keep the length stable, so the same
        // list applies again and again to one warm document.
        let mut doc = document(size);
        let keystrokes: Vec<Delta> = (0..PAIRS)
            .map(|i| {
                let pos = rng.random_range(0..size - 1);
                let d = Delta::new().retain(pos, Attributes::NONE);
                if i % 2 == 0 { d.insert("a", Attributes::NONE) } else { d.delete(1) }
            })
            .collect();
        group.bench_function(BenchmarkId::new("apply_keystroke", size), |b| {
            b.iter(|| {
                for k in &keystrokes {
                    doc.apply(k).expect("keystroke in range");
                }
            });
        });
    }
    // The sequencer's cost of a submission k revisions behind.
    for behind in [0usize, 10, 100] {
        let mut state = DocState::restore(0, document(100_000), Limits::default());
        let mut rng = ChaCha8Rng::seed_from_u64(behind as u64);
        for i in 0..behind {
            let k = random::keystroke(&mut rng, state.document().len());
            state.submit(ClientId(1), i as u64, i as u64 + 1, k).expect("fits");
        }
        let subs: Vec<Delta> = (0..PAIRS).map(|_| random::keystroke(&mut rng, 90_000)).collect();
        group.bench_with_input(BenchmarkId::new("submit_behind", behind), &subs, |b, subs| {
            b.iter_batched_ref(
                || state.clone(),
                |s| {
                    for (i, d) in subs.iter().enumerate() {
                        let base = s.rev() - behind as u64;
                        s.submit(ClientId(2 + i as u64), base, 1, d.clone()).expect("fits");
                    }
                },
                criterion::BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
