//! Model stores end to end, driving the real `flowstage` binary (the patterns of
//! `pipeline.rs`): `flowstage serve --store local|kafka` scores records with a model, is
//! stopped, and restarted pointed at a NEW, EMPTY model topic: the model restored from the
//! store scores every new record at once, and its usage count continues from the old one.
//!
//! Each scenario runs on the embedded broker (a `flowstage broker` child) and on Apache Kafka
//! when `FLOWSTAGE_KAFKA_BOOTSTRAP` is set (otherwise it says SKIPPED).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    apache_bootstrap, banner_http, create_topics, http_get, note, parse_result, regression_model,
    start_broker, synthetic_csv, topic_partitions, unique, Proc, PARTITIONS, REGRESSION,
};
use flowstage_model::pb::serving_result::Score;
use flowstage_model::pb::ServingResult;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value as Json;

/// Guard against hangs only (never a timing assertion).
const HANG_GUARD: Duration = Duration::from_secs(120);

// ---- clusters --------------------------------------------------------------------------------

struct Cluster {
    label: &'static str,
    bootstrap: String,
    data: String,
    models: String,
    results: String,
    instances: String,
    apache: bool,
    _broker: Option<Proc>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn embedded() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let (broker, bootstrap) = start_broker(dir.path());
        Cluster {
            label: "embedded broker",
            bootstrap,
            data: "mdata".into(),
            models: "models".into(),
            results: "results".into(),
            instances: "serving-instances".into(),
            apache: false,
            _broker: Some(broker),
            dir,
        }
    }

    fn apache(test: &str) -> Option<Cluster> {
        let bootstrap = apache_bootstrap(test)?;
        let base = unique(test);
        let c = Cluster {
            label: "Apache Kafka",
            data: format!("{base}-mdata"),
            models: format!("{base}-models"),
            results: format!("{base}-results"),
            instances: format!("{base}-instances"),
            apache: true,
            _broker: None,
            dir: tempfile::tempdir().expect("temp dir"),
            bootstrap,
        };
        create_topics(
            &c.bootstrap,
            &[
                (&c.data, PARTITIONS, false),
                (&c.models, 1, true),
                (&c.results, PARTITIONS, false),
            ],
        );
        Some(c)
    }

    /// A model topic with nothing in it (created on Apache Kafka; the embedded broker
    /// creates it when it is first asked for).
    fn empty_models_topic(&self) -> String {
        let name = unique("models-empty");
        if self.apache {
            create_topics(&self.bootstrap, &[(&name, 1, true)]);
        }
        name
    }

    fn serve(&self, name: &str, group: &str, models: &str, store: &[String]) -> (Proc, SocketAddr) {
        let mut args: Vec<String> = [
            "serve",
            "--brokers",
            &self.bootstrap,
            "--group",
            group,
            "--instance-id",
            name,
            "--http",
            "127.0.0.1:0",
            "--data-topic",
            &self.data,
            "--models-topic",
            models,
            "--results-topic",
            &self.results,
            "--dlq-topic",
            &format!("{}-dlq", self.data),
            "--instances-topic",
            &self.instances,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(store.iter().cloned());
        let mut proc = Proc::spawn(name, &args, self.dir.path());
        let line = proc.wait_line("the serve banner", |l| l.starts_with("flowstage serve:"));
        (proc, banner_http(&line))
    }

    /// `flowstage provide`: `count` records of `csv` at 2,000/s, after `models` (if any).
    fn provide(&self, name: &str, csv: &Path, models: &[PathBuf], count: u64) -> Proc {
        let mut args: Vec<String> = vec![
            "provide".into(),
            "--brokers".into(),
            self.bootstrap.clone(),
            "--data".into(),
            csv.display().to_string(),
            "--rate".into(),
            "2000".into(),
            "--count".into(),
            count.to_string(),
            "--loop".into(),
            "--data-topic".into(),
            self.data.clone(),
            "--models-topic".into(),
            self.models.clone(),
            "--no-progress".into(),
        ];
        for m in models {
            args.push("--models".into());
            args.push(m.display().to_string());
        }
        Proc::spawn(name, &args, self.dir.path())
    }
}

// ---- reading ---------------------------------------------------------------------------------

/// Reads every partition of the results topic from `start` (the beginning, or the end as of
/// its creation).
struct Results {
    consumer: BaseConsumer,
    topic: String,
}

impl Results {
    fn new(bootstrap: &str, topic: &str, from_end: bool) -> Results {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", unique("store-test-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let deadline = Instant::now() + HANG_GUARD;
        let partitions = topic_partitions(&consumer, topic, deadline);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let offset = if from_end {
                // A just-created topic may have no leader yet: retry with a back-off.
                let high = loop {
                    match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                        Ok((_, high)) => break high,
                        Err(e) => {
                            assert!(Instant::now() < deadline, "hang guard: watermarks: {e}");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                };
                Offset::Offset(high)
            } else {
                Offset::Beginning
            };
            tpl.add_partition_offset(topic, p, offset)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        Results {
            consumer,
            topic: topic.to_string(),
        }
    }

    /// Reads results until each record `0..n` has one; returns them by sequence number.
    fn read(&self, n: u64, what: &str) -> BTreeMap<u64, ServingResult> {
        let mut got = BTreeMap::new();
        let deadline = Instant::now() + HANG_GUARD;
        while (got.len() as u64) < n {
            assert!(
                Instant::now() < deadline,
                "hang guard: {what}: {} of {n} results after {HANG_GUARD:?} ({})",
                got.len(),
                self.topic
            );
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let (seq, r) = parse_result(&m);
                    assert!(seq < n, "a result for record {seq}; only {n} published");
                    got.insert(seq, r);
                }
                Some(Err(e)) => note(&format!("reading {}: {e} (continuing)", self.topic)),
                None => {}
            }
        }
        got
    }
}

/// Every result was scored by the regression model, with its row's score.
fn assert_regression(results: &BTreeMap<u64, ServingResult>, alcohol: &[f64], label: &str) {
    for (seq, r) in results {
        assert!(
            r.processed,
            "{label}: record {seq} not processed: {}",
            r.error
        );
        assert_eq!(r.model_name, REGRESSION, "{label}: record {seq}");
        let a = alcohol[*seq as usize % alcohol.len()];
        match r.score {
            Some(Score::Value(v)) => assert!(
                (v - (1.0 + 0.5 * a)).abs() < 1e-9,
                "{label}: record {seq}: score {v}, alcohol {a}"
            ),
            ref other => panic!("{label}: record {seq}: score {other:?}"),
        }
    }
}

/// Polls `GET /state` until `pred` holds (the state is published every 100 ms; nothing
/// announces a change, hence polling with a short back-off).
fn wait_state(addr: SocketAddr, what: &str, pred: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + HANG_GUARD;
    let mut pause = Duration::from_millis(20);
    loop {
        let (status, body) = http_get(addr, "/state");
        if status == 200 && pred(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: {what}: /state after {HANG_GUARD:?}: {body:#}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn wine_usage(state: &Json) -> Option<u64> {
    state["data_types"]["wine"]["current"]["usage"].as_u64()
}

// ---- the scenario ----------------------------------------------------------------------------

/// Serve with `store`, score `n1` records, stop; restart on an empty model topic, score `n2`
/// more: all by the restored model, its usage continuing.
fn restart_restores(c: &Cluster, kind: &str, store: &[String]) {
    let (n1, n2) = (500u64, 300u64);
    let (csv, alcohol) = synthetic_csv(c.dir.path(), 700);
    let model = regression_model(c.dir.path());
    let group = unique("store");

    // First life: the model from the model topic, n1 records.
    let results = Results::new(&c.bootstrap, &c.results, true);
    let (mut first, http) = c.serve("store-1", &group, &c.models, store);
    let mut provide = c.provide("provide-1", &csv, std::slice::from_ref(&model), n1);
    let got = results.read(n1, "results of the first life");
    provide.wait_success("flowstage provide (first)");
    assert_regression(&got, &alcohol, "first life");
    let state = wait_state(http, "usage of the first life", |s| {
        wine_usage(s) == Some(n1)
    });
    assert_eq!(state["totals"]["models_restored"], 0, "{state:#}");
    first.stop();

    // Second life: a new, empty model topic, so no model message exists.
    let empty = c.empty_models_topic();
    let results = Results::new(&c.bootstrap, &c.results, true);
    let started = Instant::now();
    let (mut second, http) = c.serve("store-2", &group, &empty, store);
    let state = wait_state(http, "the restored model", |s| wine_usage(s).is_some());
    let restore_wait = started.elapsed();
    let wine = &state["data_types"]["wine"];
    assert_eq!(wine["current"]["name"], REGRESSION, "{state:#}");
    assert_eq!(wine_usage(&state), Some(n1), "usage restored: {state:#}");
    assert_eq!(wine["restored"]["store"], kind, "{state:#}");
    assert_eq!(state["totals"]["models_restored"], 1, "{state:#}");
    let mut provide = c.provide("provide-2", &csv, &[], n2);
    let got = results.read(n2, "results of the second life");
    provide.wait_success("flowstage provide (second)");
    assert_regression(&got, &alcohol, "second life (restored model)");
    let state = wait_state(http, "usage continued", |s| wine_usage(s) == Some(n1 + n2));
    assert!(
        state["data_types"]["wine"]["current"]["p99_ns"]
            .as_u64()
            .is_some(),
        "{state:#}"
    );
    second.stop();

    // Third life, back on the original model topic: its model message is not newer than the
    // restored model, so the model is not installed again (which would reset its usage).
    let n3 = 50u64;
    let results = Results::new(&c.bootstrap, &c.results, true);
    let (mut third, http) = c.serve("store-3", &group, &c.models, store);
    let mut provide = c.provide("provide-3", &csv, &[], n3);
    // Records are taken only once the model topic was read to its end: after these
    // results, its model message was seen.
    let got = results.read(n3, "results of the third life");
    provide.wait_success("flowstage provide (third)");
    assert_regression(&got, &alcohol, "third life");
    let state = wait_state(http, "all third-life records counted", |s| {
        s["totals"]["records"].as_u64() == Some(n3)
    });
    let wine = &state["data_types"]["wine"];
    assert_eq!(
        wine_usage(&state),
        Some(n1 + n2 + n3),
        "not reset: {state:#}"
    );
    assert_eq!(
        wine["swaps"], 1,
        "installed once, from the store: {state:#}"
    );
    assert_eq!(wine["restored"]["store"], kind, "{state:#}");
    third.stop();
    let log = second.stderr();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("restored 1 models from the {kind} store")))
        .unwrap_or_else(|| panic!("no restore line in the log:\n{log}"));
    note(&format!(
        "store {kind} on {}: restart served the restored model ({n1} + {n2} uses); state \
         visible {:.0} ms after spawn; log: {}",
        c.label,
        restore_wait.as_secs_f64() * 1e3,
        line.split("restored").nth(1).unwrap_or(line).trim()
    ));
}

fn local_store(c: &Cluster) -> Vec<String> {
    vec![
        "--store".into(),
        "local".into(),
        "--store-path".into(),
        c.dir.path().join("models.redb").display().to_string(),
    ]
}

fn kafka_store() -> Vec<String> {
    vec![
        "--store".into(),
        "kafka".into(),
        "--store-topic".into(),
        unique("changelog"),
    ]
}

#[test]
fn local_store_on_the_embedded_broker() {
    let c = Cluster::embedded();
    restart_restores(&c, "local", &local_store(&c));
}

#[test]
fn local_store_on_apache_kafka() {
    if let Some(c) = Cluster::apache("store-local") {
        restart_restores(&c, "local", &local_store(&c));
    }
}

#[test]
fn kafka_store_on_the_embedded_broker() {
    let c = Cluster::embedded();
    restart_restores(&c, "kafka", &kafka_store());
}

#[test]
fn kafka_store_on_apache_kafka() {
    if let Some(c) = Cluster::apache("store-kafka") {
        restart_restores(&c, "kafka", &kafka_store());
    }
}

#[test]
fn local_store_needs_a_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_flowstage"))
        .args(["serve", "--store", "local", "--http", "off"])
        .env_remove("FLOWSTAGE_STORE_PATH")
        .output()
        .expect("run flowstage serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--store-path"), "{err}");
}

/// A store file that is not a database stops `serve` with the store's own
/// error, not as an invalid setting.
#[test]
fn a_store_file_that_is_not_a_database_is_the_stores_error() {
    let c = Cluster::embedded();
    let path = c.dir.path().join("notes.redb");
    std::fs::write(&path, b"these are not a database's pages\n".repeat(200)).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_flowstage"))
        .args(["serve", "--brokers", &c.bootstrap, "--http", "off"])
        .args(["--store", "local", "--store-path"])
        .arg(&path)
        .output()
        .expect("run flowstage serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("local store"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(!err.contains("invalid"), "{err}");
    // Read at start, before anything consumes (nothing to commit or close).
    let out_text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out_text.contains("flowstage serve: instance"),
        "{out_text}"
    );
    assert!(!err.contains("commit"), "{err}");
    // The file is left as it was.
    assert_eq!(
        std::fs::read(&path).expect("read"),
        b"these are not a database's pages\n".repeat(200)
    );
}
