//! The conformance suite and the two-sequencer race on the PostgreSQL backend, against a real
//! PostgreSQL started from nothing (`tandem_testkit::Postgres`; `TANDEM_TEST_DATABASE_URL`
//! names an existing server instead). Never skipped: without PostgreSQL it fails and says
//! what to install.

use tandem_storage::conformance::{Backend, run_all, two_sequencers_race};
use tandem_storage::postgres::{PostgresLog, PostgresOptions, migrate};
use tandem_storage::{OpLog, StorageError};
use tandem_testkit::Postgres;

fn options(pg: &Postgres, name: &str) -> PostgresOptions {
    let mut o = PostgresOptions::from_url(&pg.database(name));
    o.retention = std::time::Duration::from_secs(3600);
    migrate(&o).expect("tandem migrate");
    o
}

struct Pg<'a> {
    pg: &'a Postgres,
    current: Option<PostgresOptions>,
}

impl Backend for Pg<'_> {
    fn fresh(&mut self) -> Box<dyn OpLog> {
        self.current = Some(options(self.pg, "conf"));
        self.reopen()
    }

    fn reopen(&mut self) -> Box<dyn OpLog> {
        Box::new(PostgresLog::connect(self.current.clone().expect("fresh first")).expect("connect"))
    }
}

#[test]
fn postgres_backend_passes_the_conformance_suite() {
    let pg = Postgres::start();
    run_all(&mut Pg { pg: &pg, current: None });
}

#[test]
fn two_sequencers_never_both_write_a_revision() {
    let pg = Postgres::start();
    let o = options(&pg, "race");
    two_sequencers_race(&|| Box::new(PostgresLog::connect(o.clone()).expect("connect")));
}

#[test]
fn migration_is_checked_and_repeatable() {
    let pg = Postgres::start();
    let o = PostgresOptions::from_url(&pg.database("migrate"));
    let e = PostgresLog::connect(o.clone()).unwrap_err();
    assert!(matches!(&e, StorageError::Invalid(m) if m.contains("tandem migrate")), "{e}");
    migrate(&o).unwrap();
    // Again, and from three servers at once.
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| migrate(&o).unwrap());
        }
    });
    PostgresLog::connect(o.clone()).unwrap();
    // A newer schema than this build knows is refused by name.
    pg.sql_in(&o.url, "UPDATE tandem_oplog.oplog_schema SET version = 99 WHERE id = 0");
    let e = PostgresLog::connect(o).unwrap_err();
    assert!(e.to_string().contains("version 99"), "{e}");
}
