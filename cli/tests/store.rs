//! Model stores end to end, driving the real `flowstage` binary (the patterns of
//! `pipeline.rs`): `flowstage serve --store local|kafka` scores records with a model, is
//! stopped, and restarted pointed at a NEW, EMPTY model topic: the model restored from the
//! store scores every new record at once, and its usage count continues from the old one.
//!
//! Each scenario runs on the embedded broker (a `flowstage broker` child) and on Apache Kafka
//! when `FLOWSTAGE_KAFKA_BOOTSTRAP` is set (otherwise it says SKIPPED).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowstage_model::pb::serving_result::Score;
use flowstage_model::pb::ServingResult;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value as Json;

/// Guard against hangs only (never a timing assertion).
const HANG_GUARD: Duration = Duration::from_secs(120);

const PARTITIONS: i32 = 6;

/// The test's model: quality = 1 + 0.5 × alcohol.
const REGRESSION_PMML: &str = r#"<?xml version="1.0"?>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <Header/>
  <DataDictionary>
    <DataField name="alcohol" optype="continuous" dataType="double"/>
    <DataField name="quality" optype="continuous" dataType="double"/>
  </DataDictionary>
  <RegressionModel functionName="regression">
    <MiningSchema>
      <MiningField name="alcohol"/>
      <MiningField name="quality" usageType="target"/>
    </MiningSchema>
    <RegressionTable intercept="1">
      <NumericPredictor name="alcohol" coefficient="0.5"/>
    </RegressionTable>
  </RegressionModel>
</PMML>"#;

const REGRESSION: &str = "alcoholRegression";

const COLUMNS: &str = "fixed acidity,volatile acidity,citric acid,residual sugar,chlorides,\
free sulfur dioxide,total sulfur dioxide,density,pH,sulphates,alcohol";

fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// `n` wine rows; row `i`'s alcohol is `8.0 + (i % 70) / 10`.
fn synthetic_csv(dir: &Path, n: usize) -> (PathBuf, Vec<f64>) {
    let path = dir.join("synthetic.csv");
    let mut text = format!("{COLUMNS}\n");
    let mut alcohol = Vec::with_capacity(n);
    for i in 0..n {
        let a = format!("{}.{}", 8 + (i % 70) / 10, (i % 70) % 10);
        alcohol.push(a.parse::<f64>().expect("alcohol"));
        text.push_str(&format!(
            "7.4,0.7,0.1,1.9,0.076,11,34,0.9978,3.51,0.56,{a}\n"
        ));
    }
    std::fs::write(&path, text).expect("write the CSV");
    (path, alcohol)
}

// ---- child processes -------------------------------------------------------------------------

/// A `flowstage` child: stdout line by line on a thread, stderr into a log file; killed when
/// dropped.
struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    fn spawn(name: &str, args: &[String], log_dir: &Path) -> Proc {
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let stderr = File::create(&stderr_path).expect("create the stderr log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowstage"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start flowstage {args:?}: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name: name.to_string(),
            child,
            lines,
            stdout: Vec::new(),
            stderr_path,
            status: None,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn describe(&mut self) -> String {
        let status = self.child.try_wait().ok().flatten().or(self.status);
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "{} (pid {}, {}): stdout {:?}\n--- stderr tail:\n{}",
            self.name,
            self.child.id(),
            status.map_or("running".into(), |s| s.to_string()),
            self.stdout,
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("hang guard: no {what}: {}", self.describe())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.child.wait();
                    panic!("ended before printing {what}: {}", self.describe())
                }
            }
        }
    }

    fn wait_exit(&mut self, what: &str) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.stdout.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("hang guard: {what}: still running: {}", self.describe())
                }
            }
        }
        let status = self.child.wait().expect("wait for the child");
        self.status = Some(status);
        status
    }

    fn wait_success(&mut self, what: &str) {
        let status = self.wait_exit(what);
        assert!(status.success(), "{what}: {}", self.describe());
    }

    /// SIGTERM (graceful shutdown), then waits for a successful exit.
    fn stop(&mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM failed");
        self.wait_success("exit after SIGTERM");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            note(&format!("--- {}", self.describe()));
        }
    }
}

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
        let mut broker = Proc::spawn("broker", &["broker".to_string()], dir.path());
        let bootstrap = broker
            .wait_line("bootstrap address", |l| !l.trim().is_empty())
            .trim()
            .to_string();
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
        let bootstrap = match std::env::var("FLOWSTAGE_KAFKA_BOOTSTRAP") {
            Ok(b) if !b.trim().is_empty() => b.trim().to_string(),
            _ => {
                note(&format!(
                    "SKIPPED ({test} on Apache Kafka): FLOWSTAGE_KAFKA_BOOTSTRAP is not set; run \
                     `export FLOWSTAGE_KAFKA_BOOTSTRAP=$(scripts/kafka/start.sh)` to run it"
                ));
                return None;
            }
        };
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
        let http = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP address in {line:?}"));
        (proc, http)
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

fn create_topics(bootstrap: &str, topics: &[(&str, i32, bool)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|&(name, partitions, compacted)| {
            let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
            if compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for r in rt
        .block_on(admin.create_topics(&new, &opts))
        .expect("create topics")
    {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
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
        let partitions = loop {
            let n = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .ok()
                .and_then(|md| {
                    md.topics()
                        .iter()
                        .find(|t| t.name() == topic && t.error().is_none())
                        .map(|t| t.partitions().len())
                })
                .unwrap_or(0);
            if n > 0 {
                break i32::try_from(n).expect("partitions");
            }
            assert!(Instant::now() < deadline, "hang guard: topic {topic}");
            // Metadata of a just-created topic: a retry back-off, not a synchronisation.
            std::thread::sleep(Duration::from_millis(200));
        };
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
                    let (seq, r) = decode_result(&m);
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

fn decode_result(m: &BorrowedMessage<'_>) -> (u64, ServingResult) {
    let key = m.key().expect("a result has its record's key");
    let r = ServingResult::decode(m.payload().unwrap_or_default()).expect("a ServingResult");
    let seq = std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("result key {key:?} is not a sequence number"));
    (seq, r)
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

fn http_get(addr: SocketAddr, path: &str) -> (u16, Json) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, serde_json::from_str(body).unwrap_or(Json::Null))
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
    let model = c.dir.path().join(format!("{REGRESSION}.pmml"));
    std::fs::write(&model, REGRESSION_PMML).expect("write the model");
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
