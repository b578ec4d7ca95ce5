//! The whole system around Tandem's nodes, sized and priced for a capacity plan: the op-log
//! store (ScyllaDB or PostgreSQL, by append rate and storage), the metadata database (by
//! queries), Kafka (by event bytes and retention), S3 (storage and requests) and the TCP load
//! balancer. Every input is a [`Figure`] that says whether it was measured here (and where)
//! or assumed (and from what published source); the plan prints them all.
//!
//! Sans I/O: [`System::parse`] reads the table (`loadgen/system.toml` is the default),
//! [`size`] does the arithmetic.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::plan::{HOURS_PER_MONTH, Machine, Prices, Target};

/// The default table.
pub const DEFAULT_SYSTEM: &str = include_str!("../system.toml");

/// One input of the plan.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Figure {
    /// Its value (units in its name).
    pub value: f64,
    /// Measured on this project's machines (else assumed).
    pub measured: bool,
    /// Where it was measured, or what it assumes and from what published source.
    pub source: String,
}

/// Where the op log lives at scale.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OplogStore {
    /// ScyllaDB (the design's choice at scale).
    Scylladb,
    /// PostgreSQL, sharded by document.
    Postgresql,
}

/// The table of figures.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// The op log's store.
    pub oplog_store: OplogStore,
    /// Machine shapes (names in the price table).
    pub oplog_machine: String,
    /// For the metadata database.
    pub metadata_machine: String,
    /// For the Kafka brokers.
    pub kafka_machine: String,
    /// The figures, by name.
    pub figures: BTreeMap<String, Figure>,
}

/// Every figure the sizing reads.
const NAMES: &[&str] = &[
    "postgres_appends_per_vcpu_s",
    "scylla_appends_per_vcpu_s",
    "scylla_replication",
    "postgres_oplog_copies",
    "op_bytes",
    "oplog_retention_days",
    "metadata_queries_per_open",
    "metadata_queries_per_vcpu_s",
    "metadata_copies",
    "event_bytes",
    "kafka_mb_per_broker_s",
    "kafka_replication",
    "kafka_retention_days",
    "ebs_usd_per_gb_month",
    "exports_per_s",
    "export_bytes",
    "uploads_per_s",
    "upload_bytes",
    "blob_reads_per_write",
    "s3_usd_per_gb_month",
    "s3_usd_per_1k_puts",
    "s3_usd_per_1k_gets",
    "nlb_usd_per_hour",
    "nlb_usd_per_lcu_hour",
    "connections_per_s_share",
];

impl System {
    /// Parses and checks a table: every figure named, none unknown, none negative, the
    /// machines in `prices`.
    pub fn parse(text: &str, prices: &Prices) -> Result<Self> {
        let s: Self = toml::from_str(text).context("parsing the system table")?;
        for n in NAMES {
            let f = s.figures.get(*n).with_context(|| format!("the system table has no figure {n}"))?;
            if !f.value.is_finite() || f.value < 0.0 {
                bail!("figure {n}: {} is not a non-negative number", f.value);
            }
            if f.source.trim().is_empty() {
                bail!("figure {n}: say where it comes from (source)");
            }
        }
        if let Some(extra) = s.figures.keys().find(|k| !NAMES.contains(&k.as_str())) {
            bail!("the system table has an unknown figure {extra} (known: {})", NAMES.join(", "));
        }
        for n in ["postgres_appends_per_vcpu_s", "scylla_appends_per_vcpu_s", "metadata_queries_per_vcpu_s"] {
            if s.get(n) <= 0.0 {
                bail!("figure {n} must be positive");
            }
        }
        for m in [&s.oplog_machine, &s.metadata_machine, &s.kafka_machine] {
            prices.get(m)?;
        }
        Ok(s)
    }

    /// A figure's value (the names are checked by [`System::parse`]).
    pub fn get(&self, name: &str) -> f64 {
        self.figures.get(name).map_or(0.0, |f| f.value)
    }
}

/// One component of the system, sized.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    /// What it is.
    pub name: String,
    /// What sizes it, in words (with the numbers).
    pub sizing: String,
    /// Machines (0 for a managed service priced per use).
    pub machines: u64,
    /// Their shape, if any.
    pub machine: Option<Machine>,
    /// USD per month, everything included.
    pub usd_per_month: f64,
}

/// The system sized.
#[derive(Clone, Debug, PartialEq)]
pub struct SystemPlan {
    /// Its components, the op-log store first.
    pub components: Vec<Component>,
}

impl SystemPlan {
    /// USD per month for everything but Tandem's own nodes.
    pub fn usd_per_month(&self) -> f64 {
        self.components.iter().map(|c| c.usd_per_month).sum()
    }
}

fn machines(needed: f64) -> u64 {
    needed.ceil().max(1.0) as u64
}

const GB: f64 = 1e9;
const SECONDS_PER_MONTH: f64 = HOURS_PER_MONTH * 3600.0;

/// Sizes the system for `target` (its edits, opens, connections and documents), every
/// resource at the target's headroom.
pub fn size(target: &Target, system: &System, prices: &Prices) -> Result<SystemPlan> {
    let h = target.headroom;
    let f = |n: &str| system.get(n);
    let mut components = Vec::new();

    // The op-log store: appends by vCPU, storage by the documents and the retained ops.
    let m = prices.get(&system.oplog_machine)?.clone();
    let retained_ops_bytes = target.edits_per_s * f("op_bytes") * f("oplog_retention_days") * 86_400.0;
    let data_bytes = target.documents * target.document_bytes + retained_ops_bytes;
    let disk_gb = m.disk_gb.unwrap_or(0.0);
    let (name, copies, per_vcpu) = match system.oplog_store {
        OplogStore::Scylladb => ("op log: ScyllaDB", f("scylla_replication"), f("scylla_appends_per_vcpu_s")),
        OplogStore::Postgresql => ("op log: PostgreSQL", f("postgres_oplog_copies"), f("postgres_appends_per_vcpu_s")),
    };
    let by_writes = target.edits_per_s * copies / (per_vcpu * f64::from(m.vcpu)) / h;
    let by_disk = if disk_gb > 0.0 { data_bytes * copies / (disk_gb * GB) / h } else { 0.0 };
    let n = machines(by_writes.max(by_disk));
    let bound = if by_disk > by_writes { "storage" } else { "appends" };
    // Shapes without local disks keep the data on EBS.
    let ebs_gb = if disk_gb > 0.0 { 0.0 } else { data_bytes * copies / GB / h };
    components.push(Component {
        name: name.to_owned(),
        sizing: format!(
            "{:.0} appends/s x {copies} copies at {per_vcpu:.0} a vCPU ({by_writes:.1} machines); {:.1} TB ({:.1} TB of documents, \
             {:.1} TB of ops kept {} days) x {copies} {}: bound by {bound}",
            target.edits_per_s,
            data_bytes / 1e12,
            target.documents * target.document_bytes / 1e12,
            retained_ops_bytes / 1e12,
            f("oplog_retention_days"),
            if disk_gb > 0.0 {
                format!("on {disk_gb:.0} GB local disks ({by_disk:.1} machines)")
            } else {
                format!("on EBS ({:.0} GB with headroom)", ebs_gb)
            },
        ),
        machines: n,
        usd_per_month: n as f64 * m.usd_per_hour * HOURS_PER_MONTH + ebs_gb * f("ebs_usd_per_gb_month"),
        machine: Some(m),
    });

    // The metadata database: queries by vCPU (a primary per shard of that size, and copies).
    let m = prices.get(&system.metadata_machine)?.clone();
    let queries = target.opens_per_s * f("metadata_queries_per_open");
    let primaries = machines(queries / (f("metadata_queries_per_vcpu_s") * f64::from(m.vcpu)) / h);
    let n = primaries * f("metadata_copies").max(1.0) as u64;
    components.push(Component {
        name: "metadata: PostgreSQL".to_owned(),
        sizing: format!(
            "{queries:.0} queries/s ({:.0} opens/s x {}) at {:.0} a vCPU: {primaries} primary(ies) x {} copies",
            target.opens_per_s,
            f("metadata_queries_per_open"),
            f("metadata_queries_per_vcpu_s"),
            f("metadata_copies")
        ),
        machines: n,
        usd_per_month: n as f64 * m.usd_per_hour * HOURS_PER_MONTH,
        machine: Some(m),
    });

    // Kafka: the change feed's bytes (replicated) by broker throughput, retention on EBS.
    let m = prices.get(&system.kafka_machine)?.clone();
    let events_per_s = target.edits_per_s / target.ops_per_event.max(1.0) + target.opens_per_s + target.emails_per_s;
    let in_bytes = events_per_s * f("event_bytes");
    let by_rate = in_bytes * f("kafka_replication") / (f("kafka_mb_per_broker_s") * 1e6) / h;
    let kept_gb = in_bytes * f("kafka_replication") * f("kafka_retention_days") * 86_400.0 / GB / h;
    let n = machines(by_rate.max(f("kafka_replication")));
    components.push(Component {
        name: "events: Kafka".to_owned(),
        sizing: format!(
            "{events_per_s:.0} events/s x {} B = {:.1} MB/s, x {} replicas at {} MB/s a broker ({by_rate:.1} brokers, at least {}); \
             {:.0} TB kept {} days on EBS",
            f("event_bytes"),
            in_bytes / 1e6,
            f("kafka_replication"),
            f("kafka_mb_per_broker_s"),
            f("kafka_replication"),
            kept_gb / 1e3,
            f("kafka_retention_days")
        ),
        machines: n,
        usd_per_month: n as f64 * m.usd_per_hour * HOURS_PER_MONTH + kept_gb * f("ebs_usd_per_gb_month"),
        machine: Some(m),
    });

    // S3: exports and uploads a month, kept; their PUTs and GETs.
    let puts_per_s = f("exports_per_s") + f("uploads_per_s");
    let bytes_per_s = f("exports_per_s") * f("export_bytes") + f("uploads_per_s") * f("upload_bytes");
    let stored_gb = bytes_per_s * SECONDS_PER_MONTH / GB;
    let requests = puts_per_s * SECONDS_PER_MONTH;
    let usd = stored_gb * f("s3_usd_per_gb_month")
        + requests / 1e3 * f("s3_usd_per_1k_puts")
        + requests * f("blob_reads_per_write") / 1e3 * f("s3_usd_per_1k_gets");
    components.push(Component {
        name: "blobs: S3".to_owned(),
        sizing: format!(
            "{puts_per_s:.0} PUTs/s ({} exports, {} uploads) and {:.0} GETs/s; {:.1} TB more each month (the first month's bill)",
            f("exports_per_s"),
            f("uploads_per_s"),
            puts_per_s * f("blob_reads_per_write"),
            stored_gb / 1e3
        ),
        machines: 0,
        machine: None,
        usd_per_month: usd,
    });

    // The TCP load balancer: capacity units by active connections, new ones and bytes.
    let by_active = target.connections / 100_000.0;
    let by_new = target.connections * f("connections_per_s_share") / 800.0;
    let by_bytes = target.messages_per_s * target.message_bytes * 3600.0 / GB;
    let lcu = by_active.max(by_new).max(by_bytes);
    components.push(Component {
        name: "load balancer: TCP (NLB)".to_owned(),
        sizing: format!(
            "{lcu:.0} capacity units (active connections {by_active:.0}, new connections {by_new:.0}, GB an hour {by_bytes:.0})"
        ),
        machines: 0,
        machine: None,
        usd_per_month: (f("nlb_usd_per_hour") + lcu * f("nlb_usd_per_lcu_hour")) * HOURS_PER_MONTH,
    });
    Ok(SystemPlan { components })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::DEFAULT_PRICES;

    fn target() -> Target {
        Target {
            active_share: 0.2,
            message_bytes: 120.0,
            document_bytes: 20_000.0,
            headroom: 0.6,
            opens_per_s: 20_000.0,
            emails_per_s: 1_000.0,
            ..Target::reference()
        }
    }

    #[test]
    fn the_default_table_parses_and_names_every_figure() {
        let prices = Prices::parse(DEFAULT_PRICES).unwrap();
        let s = System::parse(DEFAULT_SYSTEM, &prices).unwrap();
        assert_eq!(s.figures.len(), NAMES.len());
        assert!(s.figures.values().any(|f| f.measured) && s.figures.values().any(|f| !f.measured));
    }

    #[test]
    fn bad_tables_are_refused_with_the_figure_named() {
        let prices = Prices::parse(DEFAULT_PRICES).unwrap();
        let missing = DEFAULT_SYSTEM.replace("[figures.op_bytes]", "[figures.op_byte]");
        let e = System::parse(&missing, &prices).unwrap_err().to_string();
        assert!(e.contains("no figure op_bytes"), "{e}");
        let machine = DEFAULT_SYSTEM.replace("\"i4i.2xlarge\"", "\"x9.huge\"");
        assert!(System::parse(&machine, &prices).unwrap_err().to_string().contains("x9.huge"));
        let negative = DEFAULT_SYSTEM.replace("value = 188", "value = -160");
        assert!(System::parse(&negative, &prices).unwrap_err().to_string().contains("op_bytes"));
    }

    #[test]
    fn the_sizing_follows_the_figures() {
        let prices = Prices::parse(DEFAULT_PRICES).unwrap();
        let s = System::parse(DEFAULT_SYSTEM, &prices).unwrap();
        let t = target();
        let p = size(&t, &s, &prices).unwrap();
        assert_eq!(p.components.len(), 5);
        let oplog = &p.components[0];
        let m = oplog.machine.as_ref().unwrap();
        // ScyllaDB: 5M appends x 3 copies at 5,000 a vCPU on 8 vCPUs, at 60%.
        let by_writes = 5e6 * 3.0 / (5_000.0 * f64::from(m.vcpu)) / 0.6;
        assert!(oplog.machines >= by_writes.ceil() as u64, "{oplog:?}");
        // Twice the edits need at least as many op-log machines, and twice the appends bound.
        let mut t2 = t.clone();
        t2.edits_per_s *= 2.0;
        let p2 = size(&t2, &s, &prices).unwrap();
        assert!(p2.components[0].machines >= oplog.machines);
        assert!(p2.usd_per_month() > p.usd_per_month());
        // PostgreSQL instead: 2 copies at the measured rate.
        let mut pg = s.clone();
        pg.oplog_store = OplogStore::Postgresql;
        let p3 = size(&t, &pg, &prices).unwrap();
        assert!(p3.components[0].name.contains("PostgreSQL"));
        let by_writes_pg = 5e6 * 2.0 / (40_376.0 * f64::from(m.vcpu)) / 0.6;
        assert!(p3.components[0].machines >= by_writes_pg.ceil() as u64);
        // Kafka: at least a broker per replica.
        assert!(p.components[2].machines >= 3);
        // No opens: one metadata primary and its copy still.
        let mut quiet = t;
        quiet.opens_per_s = 0.0;
        assert_eq!(size(&quiet, &s, &prices).unwrap().components[1].machines, 2);
    }
}
