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
    use tandem_storage::OpLog;
    use tandem_storage::conformance::{Backend, run_all, two_sequencers_race};
    use tandem_storage::scylla::{Migration, ScyllaLog, ScyllaOptions, drop_keyspace, migrate};

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

    /// Two sequencers (two connections) race for the same revisions.
    #[test]
    fn two_sequencers_never_both_write_a_revision() {
        let Some(uri) = uri() else { return };
        let o = options(&uri, format!("tandem_fence_{}", std::process::id()));
        two_sequencers_race(&|| Box::new(ScyllaLog::connect(o.clone()).expect("connect")));
        drop_keyspace(&o).unwrap();
    }
}
