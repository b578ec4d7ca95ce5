//! Every sequential editing trace, replayed through the engine, reproduces its `endContent`
//! exactly: through `Document::apply` and through the server's sequencer.

use tandem_benches::replay;
use tandem_benches::trace::{Trace, Unit, sequential_traces};

#[test]
fn every_sequential_trace_replays_exactly() {
    let paths = sequential_traces().unwrap();
    assert_eq!(paths.len(), 8, "expected the 8 sequential traces in traces/sequential");
    for path in paths {
        let trace = Trace::load(&path).unwrap();
        let patches = trace.patches();
        assert!(!patches.is_empty());
        for engine in ["tandem", "tandem-sequencer"] {
            let text = replay::replay(engine, &trace.start, &patches).unwrap();
            assert!(
                text == trace.end,
                "{engine} diverged from {}'s endContent ({} vs {} bytes)",
                trace.name,
                text.len(),
                trace.end.len()
            );
        }
    }
}

#[test]
fn positions_are_converted_for_engines_that_count_other_units() {
    let dir = std::env::temp_dir().join(format!("tandem-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("astral.json");
    std::fs::write(
        &path,
        r#"{"startContent":"😀b","endContent":"😀xé","txns":[{"time":"t","patches":[[1,0,"x"],[2,1,"é"]]}]}"#,
    )
    .unwrap();
    let trace = Trace::load(&path).unwrap();
    let utf16 = trace.patches_in(Unit::Utf16).unwrap();
    assert_eq!((utf16[0].0, utf16[1].0), (2, 3));
    let bytes = trace.patches_in(Unit::Bytes).unwrap();
    assert_eq!((bytes[0].0, bytes[1].0, bytes[1].1), (4, 5, 1));
    assert!(trace.patches_in(Unit::Chars).is_none());
    for engine in replay::ENGINES {
        let patches = trace.patches_in(replay::unit(engine)).unwrap_or_else(|| trace.patches());
        assert_eq!(replay::replay(engine, &trace.start, &patches).unwrap(), trace.end, "{engine}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
