//! The sequential editing traces the engine's examples replay.

use anyhow::{Context, Result};
use tandem_engine::{Attributes, Delta};
use tandem_traces::{Patch, Trace, sequential_traces};

/// The sequential trace whose file name starts with `name`, and its patches as deltas
/// (retain, insert, delete).
pub(crate) fn load(name: &str) -> Result<(Trace, Vec<Delta>)> {
    let path = sequential_traces()?
        .into_iter()
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(name)))
        .with_context(|| format!("no sequential trace named {name}"))?;
    let trace = Trace::load(&path)?;
    let patches = trace
        .patches()
        .iter()
        .map(|Patch(pos, del, ins)| {
            Delta::new().retain(*pos, Attributes::NONE).insert(ins, Attributes::NONE).delete(*del)
        })
        .collect();
    Ok((trace, patches))
}
