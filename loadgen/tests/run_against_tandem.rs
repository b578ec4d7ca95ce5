//! The generator end to end: `tandem-loadgen run` (the binary) drives a 5-second scenario
//! against a Tandem server with its op log on disk (the `tandem serve` engine, started
//! in-process on an ephemeral port), and the result directory holds a report whose counts add
//! up, that converged, with its `.hgrm` files and plots; `report` re-renders it and `compare`
//! reads it. The same over `wss://` against a server terminating TLS, with worker processes.

use std::path::Path;
use std::process::Command;

use tandem_testkit::pki::Pki;

fn loadgen(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem-loadgen")).args(args).output().expect("runs");
    assert!(
        out.status.success(),
        "tandem-loadgen {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A durable two-core server on an ephemeral port, and its data directory.
fn server() -> (tandem_net::ServerHandle, tempfile::TempDir) {
    server_with(|_| {})
}

/// The same, configured further by `f`.
fn server_with(f: impl FnOnce(&mut tandem_net::ServerConfig)) -> (tandem_net::ServerHandle, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut config = tandem_net::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cores: 2,
        max_messages_per_s: 10_000,
        ..tandem_net::ServerConfig::default()
    };
    config.storage.data_dir = data.path().to_path_buf();
    f(&mut config);
    (tandem_net::start(config).expect("server starts"), data)
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn a_five_second_scenario_reports_and_converges() {
    let (server, _data) = server();
    let target = format!("ws://{}/ws", server.local_addr());

    let work = tempfile::tempdir().unwrap();
    let scenario = work.path().join("small.toml");
    std::fs::write(
        &scenario,
        r#"# small: 4 documents x 3 editors, plus a reader each.
name = "small"
description = "4 documents x 3 editors at 10 ops/s, 1 reader each"
threads = 2
[stages]
ramp_up_s = 1
steady_s = 5
ramp_down_s = 1
[[groups]]
name = "editors"
role = "editor"
docs = 4
users_per_doc = 3
edit_rate = 10
cursor_rate = 2
[[groups]]
name = "readers"
role = "reader"
docs = 4
users_per_doc = 1
"#,
    )
    .unwrap();
    let out = work.path().join("out");
    loadgen(&["run", scenario.to_str().unwrap(), "--target", &target, "--out", out.to_str().unwrap()]);

    for f in [
        "report.json",
        "report.md",
        "ack_latency.hgrm",
        "propagation_latency.hgrm",
        "latency_percentiles.svg",
        "throughput.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let r = report(&out);
    assert_eq!(r["converged"], true, "{r:#}");
    assert_eq!(r["errors"], 0);
    assert_eq!(r["live_users"], 16);
    let (sent, acked, delivered) =
        (r["sent"].as_u64().unwrap(), r["acked"].as_u64().unwrap(), r["delivered"].as_u64().unwrap());
    // 12 editors x 10 ops/s x ~5 s.
    assert!((500..=700).contains(&sent), "sent {sent}");
    assert!(acked <= sent && acked * 10 >= sent * 9, "acked {acked} of {sent}");
    // Each op reaches the 2 other editors and the reader of its document: 3 deliveries (ops
    // made at the edges of the steady stage are counted on one side only).
    assert!(delivered >= sent * 3 * 9 / 10 && delivered <= sent * 3 * 11 / 10, "delivered {delivered} of {sent}");
    let ack = &r["ack_latency_ms"];
    assert_eq!(ack["count"].as_u64().unwrap(), acked);
    for k in ["p50", "p90", "p99", "p999", "max"] {
        assert!(ack[k].as_f64().unwrap() > 0.0, "{k}");
    }
    assert!(ack["p50"].as_f64() <= ack["p99"].as_f64() && ack["p99"].as_f64() <= ack["max"].as_f64());
    assert!(r["acked_per_s"].as_f64().unwrap() > 80.0);
    assert!(r["server"]["cores"] == 2, "{}", r["server"]);

    // `report` re-renders from the files; `compare` reads two result directories.
    std::fs::remove_file(out.join("report.md")).unwrap();
    std::fs::remove_file(out.join("throughput.svg")).unwrap();
    loadgen(&["report", out.to_str().unwrap()]);
    assert!(out.join("report.md").is_file() && out.join("throughput.svg").is_file());
    let cmp = loadgen(&["compare", out.to_str().unwrap(), out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&cmp.stdout);
    assert!(text.contains("| ack p99 ms |") && text.contains("1.00x"), "{text}");
    drop(server);
}

/// Three authors per document replay real traces (sped up 20x, so that a few seconds type a
/// few hundred transactions each) into one document at once; the run checks every
/// document's text against what the traces leave. At most 5 connections per process, so the
/// 12 users run in three worker processes (a document's 4 users together), which rebuild
/// the replay's sections from the coordinator's setup.
#[test]
fn trace_replay_types_real_traces_and_checks_the_text() {
    let (server, _data) = server();
    let target = format!("ws://{}/ws", server.local_addr());
    let traces = Path::new(env!("CARGO_MANIFEST_DIR")).join("../traces/sequential");
    let work = tempfile::tempdir().unwrap();
    let scenario = work.path().join("replay.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"# replay: 3 documents x 3 authors.
name = "replay"
description = "3 documents x 3 authors replaying traces at 20x"
threads = 2
[stages]
ramp_up_s = 1
steady_s = 4
ramp_down_s = 2
[[groups]]
name = "authors"
role = "replay"
docs = 3
doc_prefix = "t"
users_per_doc = 3
traces = ["{0}/clownschool_flat.json.gz", "{0}/rustcode.json.gz", "{0}/friendsforever_flat.json.gz"]
speed = 20
[[groups]]
name = "readers"
role = "reader"
docs = 3
doc_prefix = "t"
users_per_doc = 1
"#,
            traces.display()
        ),
    )
    .unwrap();
    let out = work.path().join("out");
    loadgen(&[
        "run",
        scenario.to_str().unwrap(),
        "--target",
        &target,
        "--out",
        out.to_str().unwrap(),
        "--connections-per-process",
        "5",
    ]);
    let r = report(&out);
    assert_eq!(r["converged"], true, "{r:#}");
    assert_eq!(r["errors"], 0);
    assert_eq!(r["generator"]["processes"], 3, "{}", r["generator"]);
    assert_eq!(r["generator"]["threads"], 6);
    assert_eq!(r["live_users"], 12);
    assert!(r["generator"]["cpu_s"].as_f64().unwrap() > 0.0, "the workers' CPU is counted");
    let c = &r["convergence"];
    assert_eq!(c["replayed_texts"], 3, "{c}");
    let txns = c["replayed_txns"].as_u64().unwrap();
    // friendsforever has no clock: 5 txns/s x 20 x 4 s = 400 per author; the others follow
    // their recorded times (tens per second at 20x).
    assert!(txns >= 3 * 400, "{txns} transactions");
    assert_eq!(r["sent"].as_u64().unwrap(), txns, "one edit per transaction");
    assert_eq!(r["acked"].as_u64().unwrap(), txns);
    assert!(
        std::fs::read_to_string(out.join("report.md")).unwrap().contains("documents' text checked against the traces")
    );
    drop(server);
}

#[test]
fn a_scenario_over_wss_converges_in_worker_processes() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::new(work.path());
    let ca_file = pki.ca_file.clone();
    let (cert_file, key_file) = pki.leaf_files(work.path());
    let (server, _data) = server_with(|c| {
        c.tls.cert_file = Some(cert_file);
        c.tls.key_file = Some(key_file);
    });
    let target = format!("wss://localhost:{}/ws", server.local_addr().port());

    let scenario = work.path().join("tls.toml");
    std::fs::write(
        &scenario,
        r#"name = "tls"
description = "2 documents x 2 editors at 10 ops/s and a reader each, over wss://"
threads = 1
[stages]
ramp_up_s = 1
steady_s = 3
ramp_down_s = 1
[[groups]]
name = "editors"
role = "editor"
docs = 2
users_per_doc = 2
edit_rate = 10
[[groups]]
name = "readers"
role = "reader"
docs = 2
users_per_doc = 1
"#,
    )
    .unwrap();
    let out = work.path().join("out");
    let (s, o, c) = (scenario.to_str().unwrap(), out.to_str().unwrap(), ca_file.to_str().unwrap());
    loadgen(&["run", s, "--target", &target, "--ca-file", c, "--out", o, "--connections-per-process", "3"]);
    let r = report(&out);
    assert_eq!(r["converged"], true, "{r:#}");
    assert_eq!(r["errors"], 0);
    assert_eq!(r["generator"]["processes"], 2, "{}", r["generator"]);
    assert_eq!(r["live_users"], 6);
    let (sent, acked, delivered) =
        (r["sent"].as_u64().unwrap(), r["acked"].as_u64().unwrap(), r["delivered"].as_u64().unwrap());
    assert!(sent >= 80 && acked * 10 >= sent * 9, "acked {acked} of {sent}");
    assert!(delivered >= sent * 2 * 9 / 10, "delivered {delivered} of {sent}");
    // Its counters came over HTTPS.
    assert!(r["server"]["cores"] == 2, "{}", r["server"]);

    // Without a CA, or trusting the wrong one, the run stops with a clear error.
    let refused = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tandem-loadgen")).args(args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&["run", s, "--target", &target, "--out", o]);
    assert!(err.contains("needs --ca-file"), "{err}");
    let other = Pki::named(work.path(), "other.pem").ca_file;
    let preload = work.path().join("preload.toml");
    std::fs::write(
        &preload,
        std::fs::read_to_string(&scenario).unwrap()
            + "[preload]\ndoc_prefix = \"p\"\ndocs = 1\nops = 10\nwriters = 1\n",
    )
    .unwrap();
    let err = refused(&["run", preload.to_str().unwrap(), "--target", &target, "--ca-file", other.to_str().unwrap()]);
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");
    drop(server);
}

/// A server that refuses the users (a secret they were not given): the run fails, and says
/// why with the server's first error rather than only counting errors.
#[test]
fn the_first_error_from_the_server_is_printed() {
    let (server, _data) = server_with(|c| c.dev_secret = Some("not-given-to-the-users".into()));
    let target = format!("ws://{}/ws", server.local_addr());
    let work = tempfile::tempdir().unwrap();
    let scenario = work.path().join("refused.toml");
    std::fs::write(
        &scenario,
        r#"name = "refused"
description = "1 document x 2 editors that the server refuses"
threads = 1
[stages]
ramp_up_s = 1
steady_s = 1
ramp_down_s = 1
[[groups]]
name = "editors"
role = "editor"
docs = 1
users_per_doc = 2
edit_rate = 5
"#,
    )
    .unwrap();
    let out = work.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_tandem-loadgen"))
        .args(["run", scenario.to_str().unwrap(), "--target", &target, "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.matches("the server answered an error").count(), 1, "{err}");
    assert!(err.contains("unauthorized") && err.contains("further errors are counted"), "{err}");
    // The convergence check, refused too, says so instead of waiting for documents to open.
    assert!(err.contains("reading the server's copy of the documents") && err.contains("was refused"), "{err}");
    assert!(!run.status.success());
    drop(server);
}
