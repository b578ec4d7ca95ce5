//! The conformance suite against ScyllaDB, when a cluster is reachable: set
//! `TANDEM_SCYLLA_URI=host:9042` (and `TANDEM_SCYLLA_RF` if the cluster has more than one
//! node) and build with `--features scylla`. `deploy/scylla-conformance.yml` starts a ScyllaDB
//! node and runs this for anyone with Docker. Each case gets its own keyspace, dropped after.

#[cfg(not(feature = "scylla"))]
#[test]
fn scylla_backend_passes_the_conformance_suite() {
    println!("skipped: built without the `scylla` feature (cargo test -p tandem-storage --features scylla)");
}

#[cfg(feature = "scylla")]
mod with_scylla {
    use std::sync::Arc;

    use tandem_engine::ClientId;
    use tandem_storage::conformance::{Backend, edits, run_all};
    use tandem_storage::scylla::{Migration, ScyllaLog, ScyllaOptions, drop_keyspace, migrate};
    use tandem_storage::{LogOp, OpLog, StorageError};

    fn uri() -> Option<String> {
        let uri = std::env::var("TANDEM_SCYLLA_URI").ok().filter(|u| !u.is_empty());
        if uri.is_none() {
            println!("skipped: TANDEM_SCYLLA_URI not set");
        }
        uri
    }

    fn options(uri: &str, keyspace: String) -> ScyllaOptions {
        let rf: u32 = std::env::var("TANDEM_SCYLLA_RF").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
        let mut o = ScyllaOptions::from_uri(uri).expect("TANDEM_SCYLLA_URI");
        o.keyspace = keyspace;
        o.consistency = if rf == 1 { "ONE".into() } else { "QUORUM".into() };
        o.retention = std::time::Duration::from_secs(3600);
        let m = Migration {
            replication: format!("{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"),
            ..Migration::default()
        };
        migrate(&o, &m).expect("tandem migrate");
        o
    }

    struct Scylla {
        uri: String,
        n: usize,
        current: Option<ScyllaOptions>,
        made: Vec<ScyllaOptions>,
    }

    impl Backend for Scylla {
        fn fresh(&mut self) -> Box<dyn OpLog> {
            self.n += 1;
            let o = options(&self.uri, format!("tandem_conf_{}_{}", std::process::id(), self.n));
            self.made.push(o.clone());
            self.current = Some(o);
            self.reopen()
        }

        fn reopen(&mut self) -> Box<dyn OpLog> {
            Box::new(ScyllaLog::connect(self.current.clone().expect("fresh first")).expect("connect"))
        }
    }

    impl Drop for Scylla {
        fn drop(&mut self) {
            for o in &self.made {
                if let Err(e) = drop_keyspace(o) {
                    eprintln!("dropping keyspace {}: {e}", o.keyspace);
                }
            }
        }
    }

    #[test]
    fn scylla_backend_passes_the_conformance_suite() {
        let Some(uri) = uri() else { return };
        run_all(&mut Scylla { uri, n: 0, current: None, made: Vec::new() });
    }

    /// Two sequencers (two connections) race for the same revisions: exactly one wins each,
    /// the other gets a conflict, and the log holds one op per revision.
    #[test]
    fn two_sequencers_never_both_write_a_revision() {
        let Some(uri) = uri() else { return };
        let o = options(&uri, format!("tandem_fence_{}", std::process::id()));
        let (ops, _) = edits("raced", 1, 40, 0);
        let rival: Vec<LogOp> = ops
            .iter()
            .map(|op| {
                let mut c = (*op.commit).clone();
                c.author = ClientId(1000 + c.author.0);
                LogOp { doc: Arc::clone(&op.doc), time_ms: op.time_ms, commit: Arc::new(c) }
            })
            .collect();
        let race = |mine: Vec<LogOp>| {
            let o = o.clone();
            std::thread::spawn(move || {
                let mut log = ScyllaLog::connect(o).unwrap();
                let mut won = Vec::new();
                for op in mine {
                    match log.append(std::slice::from_ref(&op)) {
                        Ok(a) if a.written == 1 => won.push(op.rev()),
                        Ok(a) => panic!("unexpected {a:?}"),
                        Err(StorageError::Conflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                won
            })
        };
        let (a, b) = (race(ops.clone()), race(rival.clone()));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        // Each revision went to one side: the two lists of wins never overlap and together
        // cover the log.
        let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        assert!(all.windows(2).all(|w| w[0] != w[1]), "a revision written twice: {a:?} {b:?}");
        let mut log = ScyllaLog::connect(o.clone()).unwrap();
        let latest = log.latest_rev("raced").unwrap();
        assert_eq!(latest, 40);
        assert_eq!(all.len() as u64, latest, "every revision acknowledged to one side");
        let stored = log.read("raced", 1, latest).unwrap();
        for op in &stored {
            let i = (op.rev() - 1) as usize;
            let from_a = a.contains(&op.rev()) && op.commit.author == ops[i].commit.author;
            let from_b = b.contains(&op.rev()) && op.commit.author == rival[i].commit.author;
            assert!(from_a ^ from_b, "revision {} is neither side's acknowledged op", op.rev());
        }
        drop(log);
        drop_keyspace(&o).unwrap();
    }
}
