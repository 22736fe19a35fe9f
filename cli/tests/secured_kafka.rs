//! `flowstage provide` and `flowstage serve` on a secured listener: Apache Kafka's
//! SASL_PLAINTEXT listener (mechanism PLAIN) that `scripts/kafka/start.sh` opens besides the
//! plaintext one, its address in `FLOWSTAGE_KAFKA_SASL_BOOTSTRAP` (`scripts/test.sh` sets it
//! from `$KAFKA_RUN_DIR/sasl-bootstrap`; otherwise the tests say SKIPPED). The user is
//! `FLOWSTAGE_KAFKA_SASL_USERNAME` / `FLOWSTAGE_KAFKA_SASL_PASSWORD`, by default the one
//! `start.sh` creates (flowstage / flowstage-secret).
//!
//! 1. With `--kafka-property` security.protocol, sasl.mechanism, sasl.username and
//!    sasl.password, every client works through that listener: the server creates its topics
//!    (admin client), reads the model (model reader), scores every record (data consumer,
//!    producer), lists itself on `/state/instances` (instances reader and producer) and keeps
//!    the model in the Kafka model store; restarted in exactly-once mode (transactional
//!    producer) it restores the model from the store and scores more records with it.
//! 2. Without those properties the server does not run silently: it exits with an error that
//!    points at the security settings.
//!
//! Every wait is on an event (a line, a message, an exit) or polls the HTTP state with a short
//! back-off; each has a hang guard that names what did not happen.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    banner_http, decode_result, http_get, note, regression_model, synthetic_csv, topic_partitions,
    unique, Proc, REGRESSION, SERVE_LOG, WINE,
};
use flowstage_model::pb::serving_result::Score;
use flowstage_model::pb::ServingResult;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value as Json;

/// Guard against hangs only (never a timing assertion).
const HANG_GUARD: Duration = Duration::from_secs(120);

/// The SASL listener and the client properties that reach it.
struct Sasl {
    bootstrap: String,
    properties: Vec<(String, String)>,
}

impl Sasl {
    /// `FLOWSTAGE_KAFKA_SASL_BOOTSTRAP` with the user, or `None` and a SKIPPED note.
    fn from_env(test: &str) -> Option<Sasl> {
        let bootstrap = match std::env::var("FLOWSTAGE_KAFKA_SASL_BOOTSTRAP") {
            Ok(b) if !b.trim().is_empty() => b.trim().to_string(),
            _ => {
                note(&format!(
                    "SKIPPED ({test}): FLOWSTAGE_KAFKA_SASL_BOOTSTRAP is not set; start Apache \
                     Kafka with `KAFKA_RUN_DIR=/tmp/k scripts/kafka/start.sh` and run `export \
                     FLOWSTAGE_KAFKA_SASL_BOOTSTRAP=$(cat /tmp/k/sasl-bootstrap)` (scripts/test.sh \
                     does both)"
                ));
                return None;
            }
        };
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let properties = vec![
            ("security.protocol".into(), "SASL_PLAINTEXT".into()),
            ("sasl.mechanism".into(), "PLAIN".into()),
            (
                "sasl.username".into(),
                var("FLOWSTAGE_KAFKA_SASL_USERNAME", "flowstage"),
            ),
            (
                "sasl.password".into(),
                var("FLOWSTAGE_KAFKA_SASL_PASSWORD", "flowstage-secret"),
            ),
        ];
        Some(Sasl {
            bootstrap,
            properties,
        })
    }

    /// `--kafka-property k=v` for each property.
    fn flags(&self) -> Vec<String> {
        self.properties
            .iter()
            .flat_map(|(k, v)| ["--kafka-property".to_string(), format!("{k}={v}")])
            .collect()
    }

    /// A reader of every partition of `topic` from the beginning, through the SASL listener.
    fn reader(&self, topic: &str, read_committed: bool) -> BaseConsumer {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", unique("sasl-reader"))
            .set("enable.auto.commit", "false")
            .set(
                "isolation.level",
                if read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            );
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        let consumer: BaseConsumer = config.create().expect("SASL reader");
        let partitions = topic_partitions(&consumer, topic, Instant::now() + HANG_GUARD);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        consumer
    }
}

/// The topics of one server run.
struct Topics {
    data: String,
    models: String,
    results: String,
    dlq: String,
    instances: String,
}

impl Topics {
    fn new(base: &str) -> Topics {
        Topics {
            data: format!("{base}-mdata"),
            models: format!("{base}-models"),
            results: format!("{base}-results"),
            dlq: format!("{base}-mdata-dlq"),
            instances: format!("{base}-instances"),
        }
    }
}

/// Starts `flowstage serve` on `bootstrap` with `extra` arguments (no topic is created
/// beforehand: the server creates them) and waits for its banner.
fn serve(
    name: &str,
    bootstrap: &str,
    group: &str,
    topics: &Topics,
    extra: &[String],
    dir: &Path,
) -> (Proc, SocketAddr) {
    let mut args: Vec<String> = [
        "serve",
        "--brokers",
        bootstrap,
        "--group",
        group,
        "--instance-id",
        name,
        "--http",
        "127.0.0.1:0",
        "--data-topic",
        &topics.data,
        "--models-topic",
        &topics.models,
        "--results-topic",
        &topics.results,
        "--dlq-topic",
        &topics.dlq,
        "--instances-topic",
        &topics.instances,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    let log = std::env::var("RUST_LOG").unwrap_or_else(|_| SERVE_LOG.to_string());
    let mut proc = Proc::spawn_env(name, &args, dir, &[("RUST_LOG", &log)]);
    let line = proc.wait_line("the serve banner", |l| l.starts_with("flowstage serve:"));
    (proc, banner_http(&line))
}

/// Runs `flowstage provide` of `n` records of `csv` of dataType `data_type` (and `models`
/// first) to completion.
fn provide(
    sasl: &Sasl,
    topics: &Topics,
    (csv, data_type): (&Path, &str),
    models: &[&Path],
    n: u64,
    dir: &Path,
) {
    let mut args: Vec<String> = vec![
        "provide".into(),
        "--data-type".into(),
        data_type.into(),
        "--brokers".into(),
        sasl.bootstrap.clone(),
        "--data".into(),
        csv.display().to_string(),
        "--count".into(),
        n.to_string(),
        "--loop".into(),
        "--rate".into(),
        "0".into(),
        "--data-topic".into(),
        topics.data.clone(),
        "--models-topic".into(),
        topics.models.clone(),
        "--no-progress".into(),
    ];
    for m in models {
        args.push("--models".into());
        args.push(m.display().to_string());
    }
    args.extend(sasl.flags());
    let mut p = Proc::spawn(&format!("provide-{}", unique("p")), &args, dir);
    p.wait_success("flowstage provide through the SASL listener");
}

/// Reads `reader` until each of the records `0..n` of `data_type` has a result (results of
/// other dataTypes are skipped); fails at once if `server` exits meanwhile.
fn read_results(
    reader: &BaseConsumer,
    data_type: &str,
    n: u64,
    server: &mut Proc,
    what: &str,
) -> BTreeMap<u64, ServingResult> {
    let deadline = Instant::now() + HANG_GUARD;
    let mut got = BTreeMap::new();
    while (got.len() as u64) < n {
        assert!(
            Instant::now() < deadline,
            "hang guard: {what}: {} of {n} results after {HANG_GUARD:?}; {}",
            got.len(),
            server.describe()
        );
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let (seq, r) = decode_result(&m);
                if r.data_type == data_type {
                    assert!(seq < n, "{what}: a result for record {seq} of {n}");
                    got.insert(seq, r);
                }
            }
            None | Some(Err(KafkaError::PartitionEOF(_))) => {
                assert!(
                    server.running(),
                    "{what}: the server exited: {}",
                    server.describe()
                );
            }
            Some(Err(e)) => note(&format!("{what}: reading results: {e} (continuing)")),
        }
    }
    got
}

/// Panics unless every result was scored by the regression model with its row's score.
fn assert_regression(got: &BTreeMap<u64, ServingResult>, alcohol: &[f64], what: &str) {
    for (seq, r) in got {
        assert!(
            r.processed,
            "{what}: record {seq} not processed: {}",
            r.error
        );
        assert_eq!(r.model_name, REGRESSION, "{what}: record {seq}");
        assert_eq!(r.data_type, WINE, "{what}: record {seq}");
        let expected = 1.0 + 0.5 * alcohol[*seq as usize % alcohol.len()];
        match r.score {
            Some(Score::Value(v)) => assert!(
                (v - expected).abs() < 1e-9,
                "{what}: record {seq}: score {v}, expected {expected}"
            ),
            ref other => panic!("{what}: record {seq}: score {other:?}"),
        }
    }
}

/// Polls `GET path` until `pred` holds on the body (nothing announces a change of the state,
/// hence polling with a short back-off).
fn wait_http(addr: SocketAddr, path: &str, what: &str, pred: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + HANG_GUARD;
    let mut pause = Duration::from_millis(20);
    loop {
        let (status, body) = http_get(addr, path);
        if status == 200 && pred(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: {what}: GET {path} after {HANG_GUARD:?}: {status} {body:#}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(300));
    }
}

/// Log lines of a server that would mean one of its clients could not reach the cluster.
fn assert_no_client_failures(log: &str, who: &str) {
    for needle in [
        "cannot read the model topic",
        "cannot read the instances topic",
        "cannot publish the instance record",
        "SASL authentication",
    ] {
        assert!(!log.contains(needle), "{who} logged {needle:?}:\n{log}");
    }
}

#[test]
fn provide_and_serve_through_a_sasl_listener() {
    let Some(sasl) = Sasl::from_env("provide and serve through a SASL listener") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let base = unique("sasl");
    let group = unique("sasl-group");
    let store = [
        "--store".to_string(),
        "kafka".to_string(),
        "--store-topic".to_string(),
        format!("{base}-store"),
    ];
    let (csv, alcohol) = synthetic_csv(dir.path(), 700);
    let model = regression_model(dir.path());

    // First life: at-least-once, Kafka model store; the server creates the topics.
    let first = Topics::new(&format!("{base}-1"));
    let n1 = 2_000u64;
    let mut extra = sasl.flags();
    extra.extend(store.iter().cloned());
    let (mut server, http) = serve(
        "sasl-1",
        &sasl.bootstrap,
        &group,
        &first,
        &extra,
        dir.path(),
    );
    let reader = sasl.reader(&first.results, false);
    provide(&sasl, &first, (&csv, WINE), &[&model], n1, dir.path());
    let got = read_results(&reader, WINE, n1, &mut server, "first life");
    assert_regression(&got, &alcohol, "first life");
    // Records of a dataType without a model: before answering "no model" the server syncs
    // with the model topic's end offsets (its model feed client).
    let unknown = "no-model-type";
    provide(&sasl, &first, (&csv, unknown), &[], 10, dir.path());
    let reader = sasl.reader(&first.results, false);
    let got = read_results(&reader, unknown, 10, &mut server, "records without a model");
    assert!(
        got.values().all(|r| !r.processed),
        "records of a dataType without a model were scored: {got:?}"
    );
    let state = wait_http(http, "/state/wine", "the model's usage", |s| {
        s["current"]["usage"].as_u64() == Some(n1)
    });
    assert_eq!(state["current"]["name"], REGRESSION, "{state:#}");
    // The instances reader and the instance records work through the listener too.
    wait_http(http, "/state/instances", "this instance listed", |list| {
        list.as_array().is_some_and(|l| {
            l.iter()
                .any(|i| i["id"] == "sasl-1" && i["models"][WINE] == REGRESSION)
        })
    });
    let status = server.terminate();
    assert!(status.success(), "first server: {}", server.describe());
    let log = server.stderr();
    assert_no_client_failures(&log, "the first server");

    // Second life: exactly-once (the transactional producer), a data and model topic of its
    // own with no model message: the model comes from the Kafka store.
    let second = Topics::new(&format!("{base}-2"));
    let n2 = 500u64;
    let mut extra = sasl.flags();
    extra.extend(store.iter().cloned());
    extra.extend(["--processing".to_string(), "exactly-once".to_string()]);
    let (mut server, http) = serve(
        "sasl-2",
        &sasl.bootstrap,
        &group,
        &second,
        &extra,
        dir.path(),
    );
    server.wait_stderr(
        "the model restored from the Kafka store",
        "restored 1 models from the kafka store",
    );
    let reader = sasl.reader(&second.results, true);
    provide(&sasl, &second, (&csv, WINE), &[], n2, dir.path());
    let got = read_results(
        &reader,
        WINE,
        n2,
        &mut server,
        "second life (restored model)",
    );
    assert_regression(&got, &alcohol, "second life (restored model)");
    let state = wait_http(http, "/state", "the restored model's usage", |s| {
        s["data_types"][WINE]["current"]["usage"].as_u64() == Some(n1 + n2)
    });
    assert_eq!(state["totals"]["models_restored"], 1, "{state:#}");
    let status = server.terminate();
    assert!(status.success(), "second server: {}", server.describe());
    let summary = server
        .stdout
        .iter()
        .find(|l| l.starts_with("flowstage serve: stopped:"))
        .cloned()
        .unwrap_or_default();
    assert!(
        summary.contains("exactly-once:") && !summary.contains(" 0 transactions committed"),
        "second server's summary: {summary:?}"
    );
    assert_no_client_failures(&server.stderr(), "the second server");
}

#[test]
fn serve_without_the_sasl_properties_stops_with_a_clear_error() {
    let Some(sasl) = Sasl::from_env("serve without the SASL properties") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let topics = Topics::new(&unique("sasl-none"));
    let args: Vec<String> = [
        "serve",
        "--brokers",
        &sasl.bootstrap,
        "--group",
        "sasl-none",
        "--http",
        "off",
        "--data-topic",
        &topics.data,
        "--models-topic",
        &topics.models,
        "--results-topic",
        &topics.results,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // A wrong password is refused the same way.
    let mut wrong = args.clone();
    wrong.extend(
        sasl.properties
            .iter()
            .map(|(k, v)| {
                let v = if k == "sasl.password" {
                    "not-the-password"
                } else {
                    v
                };
                format!("{k}={v}")
            })
            .flat_map(|p| ["--kafka-property".to_string(), p]),
    );
    for (name, args) in [("serve-no-sasl", &args), ("serve-wrong-password", &wrong)] {
        let mut server = Proc::spawn(name, args, dir.path());
        // Bounded by the hang guard: it must stop by itself, not run silently.
        let status = server.wait_exit("the server's exit without working credentials");
        assert!(!status.success(), "{name} ran: {}", server.describe());
        let log = server.stderr();
        assert!(
            log.contains("cannot start the server")
                && log.contains("no answer from the Kafka cluster")
                && log.contains("security.protocol"),
            "{name}: the error does not say what is wrong: {}",
            server.describe()
        );
        assert!(
            !server
                .stdout
                .iter()
                .any(|l| l.starts_with("flowstage serve:")),
            "{name} printed its banner: {:?}",
            server.stdout
        );
    }
}
