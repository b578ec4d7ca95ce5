//! The conformance suite against the embedded log, with small segments so that rotation and
//! compaction are exercised.

use std::path::PathBuf;
use std::sync::Arc;

use tandem_storage::conformance::{Backend, run_all};
use tandem_storage::{LocalBlobs, LocalLog, LocalOptions, OpLog, RealFs};

struct Local {
    root: tempfile::TempDir,
    n: usize,
    opts: LocalOptions,
}

impl Local {
    fn dir(&self) -> PathBuf {
        self.root.path().join(format!("case-{}", self.n))
    }

    fn open(&self) -> Box<dyn OpLog> {
        let blobs = Arc::new(LocalBlobs::open(self.dir().join("blobs"), Arc::new(RealFs)).unwrap());
        Box::new(LocalLog::open(self.dir().join("oplog"), blobs, Arc::new(RealFs), self.opts.clone()).unwrap())
    }
}

impl Backend for Local {
    fn fresh(&mut self) -> Box<dyn OpLog> {
        self.n += 1;
        self.open()
    }

    fn reopen(&mut self) -> Box<dyn OpLog> {
        self.open()
    }
}

#[test]
fn embedded_log_passes_the_conformance_suite() {
    for segment_bytes in [64 * 1024, 64 << 20] {
        let opts = LocalOptions { segment_bytes, ..LocalOptions::default() };
        run_all(&mut Local { root: tempfile::tempdir().unwrap(), n: 0, opts });
    }
}
