//! Every sequential editing trace, replayed through the engine, reproduces its `endContent`
//! exactly: through `Document::apply` and through the server's sequencer.

use tandem_benches::replay;
use tandem_benches::trace::{Trace, sequential_traces};

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
fn utf16_positions_are_converted_when_needed() {
    let dir = std::env::temp_dir().join(format!("tandem-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("astral.json");
    std::fs::write(&path, r#"{"startContent":"😀b","endContent":"😀xb","txns":[{"time":"t","patches":[[1,0,"x"]]}]}"#)
        .unwrap();
    let trace = Trace::load(&path).unwrap();
    let utf16 = trace.patches_utf16().unwrap();
    assert_eq!(utf16[0].0, 2);
    assert_eq!(replay::replay("yrs", &trace.start, &utf16).unwrap(), trace.end);
    assert_eq!(replay::replay("tandem", &trace.start, &trace.patches()).unwrap(), trace.end);
    std::fs::remove_dir_all(&dir).unwrap();
}
