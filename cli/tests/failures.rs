//! The failure suite of issue 7, driving the real `flowstage` binary (`flowstage broker`,
//! `provide`, `serve` as child processes; the test produces and reads topics itself).
//!
//! The scenarios run on Apache Kafka when `FLOWSTAGE_KAFKA_BOOTSTRAP` names a broker
//! (`scripts/test.sh` starts one; otherwise they say SKIPPED). Without it, smaller variants run
//! on a `flowstage broker` child instead (the mock keeps at most 5 MiB a partition); with it,
//! those say SKIPPED, which keeps the file within its time budget (about 160 s on the 2-core
//! development machine with Apache Kafka, 80 s on the embedded broker).
//!
//! 1. `kill -9` of the server 5 times during a 100,000-record run, at-least-once: every record
//!    has a result, all scored by the model (none "no model" after a restart); each restart
//!    installs the model from its local model store (`--store local`) before its first record;
//!    duplicates are counted and printed. The same with `serve --processing exactly-once` (one
//!    `--instance-id` across restarts): exactly one result per record for a read_committed
//!    consumer.
//! 2. The broker stopped and started again (same port, same data) mid-stream, on an Apache
//!    Kafka of the test's own (`scripts/kafka/restart.sh`): the pipeline waits, resumes, every
//!    record is scored. (This test found that a commit failing with `WaitingForCoordinator`
//!    after the restart was fatal; such errors are now retried by the committer. Its
//!    intermittent failures then led to the bounded commit waits and the broker keeper, see
//!    `scripts/kafka/soak-restarts.sh`.) And a stop (SIGTERM) while the broker is away ends
//!    after `--shutdown-timeout-ms` instead of waiting for the cluster.
//! 3. Overload: records published far faster than a deliberately slow model (a generated PMML
//!    neural network) scores them: the server's RSS stays flat while the lag grows, and in the
//!    end every record is scored.
//! 4. Bad data: random and mutated protobuf records interleaved with good ones (1,000,000 bad on
//!    Apache Kafka): no panic, every payload that prost does not decode as a `WineRecord` with a
//!    dataType goes to the dead-letter topic with a reason, results + dead letters = records,
//!    every good record scored.
//! 5. Bad models (truncated, corrupted, wrong type, oversized, a location outside the models
//!    directory, PMML with an external entity): each rejected with its reason in
//!    `GET /state/wine`, the previous model still serving.
//!
//! Waiting is on events (stdout lines, records read from topics, process exits); the HTTP state
//! and the topics' watermarks are polled with a short back-off where nothing announces a change.
//! Every wait has a hang guard that fails with a message saying what did not happen.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    apache_bootstrap, decode_result, http_get, note, regression_model, synthetic_csv, unique,
    watermark_sum, Cluster, Proc, Provide, Serve, TopicReader, PARTITIONS, REGRESSION,
    REGRESSION_PMML, WINE,
};
use flowstage_model::pb::model_descriptor::{MessageContent, ModelType};
use flowstage_model::pb::serving_result::Score;
use flowstage_model::pb::{ModelDescriptor, ServingResult, WineRecord};
use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value as Json;

/// Guard against hangs only (never a timing assertion).
const HANG_GUARD: Duration = Duration::from_secs(180);

// ---- small helpers ---------------------------------------------------------------------------

/// The alcohol of synthetic row `i`.
fn row_alcohol(i: usize) -> f64 {
    8.0 + ((i % 70) / 10) as f64 + ((i % 70) % 10) as f64 / 10.0
}

/// A PMML descriptor by value.
fn pmml_descriptor(name: &str, pmml: &[u8]) -> ModelDescriptor {
    ModelDescriptor {
        name: name.into(),
        description: format!("{name} (failure suite)"),
        data_type: WINE.into(),
        modeltype: ModelType::Pmml as i32,
        message_content: Some(MessageContent::Data(pmml.to_vec())),
    }
}

/// A deliberately slow PMML model: a neural network from `alcohol` through `layers` tanh
/// layers of `width` neurons (fully connected), so one record costs about
/// `width² × (layers − 1)` multiply-adds.
fn slow_model_pmml(width: usize, layers: usize) -> String {
    let mut s = String::with_capacity(width * width * layers * 36 + 4096);
    s.push_str(
        r#"<?xml version="1.0"?>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
<Header/>
<DataDictionary>
<DataField name="alcohol" optype="continuous" dataType="double"/>
<DataField name="quality" optype="continuous" dataType="double"/>
</DataDictionary>
<NeuralNetwork functionName="regression" activationFunction="tanh">
<MiningSchema><MiningField name="alcohol"/><MiningField name="quality" usageType="target"/></MiningSchema>
<NeuralInputs numberOfInputs="1"><NeuralInput id="in"><DerivedField optype="continuous" dataType="double"><FieldRef field="alcohol"/></DerivedField></NeuralInput></NeuralInputs>
"#,
    );
    let weight = |a: usize, b: usize| ((a * 31 + b * 17) % 41) as f64 / 100.0 - 0.2;
    s.push_str("<NeuralLayer>\n");
    for j in 0..width {
        s.push_str(&format!(
            "<Neuron id=\"l0n{j}\" bias=\"0.01\"><Con from=\"in\" weight=\"{:.2}\"/></Neuron>\n",
            weight(j, 1) / 10.0
        ));
    }
    s.push_str("</NeuralLayer>\n");
    for l in 1..layers {
        s.push_str("<NeuralLayer>\n");
        for k in 0..width {
            s.push_str(&format!("<Neuron id=\"l{l}n{k}\" bias=\"0\">"));
            for j in 0..width {
                s.push_str(&format!(
                    "<Con from=\"l{}n{j}\" weight=\"{:.2}\"/>",
                    l - 1,
                    weight(j, k)
                ));
            }
            s.push_str("</Neuron>\n");
        }
        s.push_str("</NeuralLayer>\n");
    }
    s.push_str("<NeuralLayer activationFunction=\"identity\"><Neuron id=\"out\" bias=\"5\">");
    for k in 0..width {
        s.push_str(&format!(
            "<Con from=\"l{}n{k}\" weight=\"0.001\"/>",
            layers - 1
        ));
    }
    s.push_str(
        "</Neuron></NeuralLayer>\n<NeuralOutputs numberOfOutputs=\"1\"><NeuralOutput \
         outputNeuron=\"out\"><DerivedField optype=\"continuous\" dataType=\"double\"><FieldRef \
         field=\"quality\"/></DerivedField></NeuralOutput></NeuralOutputs>\n</NeuralNetwork>\n\
         </PMML>\n",
    );
    s
}

/// A small deterministic PRNG (xorshift64*), so no dependency is needed for the bad data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The server's resident set size, kB (`VmRSS` of /proc/<pid>/status).
fn rss_kb(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmRSS:")
}

/// A kB field of /proc/<pid>/status (`VmRSS:`, `VmHWM:` — the peak RSS).
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Serve {
    /// `GET /state/wine`.
    fn wine_state(&self) -> Json {
        let (status, body) = http_get(self.http, "/state/wine");
        assert_eq!(status, 200, "GET /state/wine of {}: {body:#}", self.id);
        body
    }
}

// ---- clusters --------------------------------------------------------------------------------

/// The embedded variant of a scenario: a `flowstage broker` of its own when Apache Kafka is not
/// configured, or `None` with a SKIPPED note when it is (the scenario then runs on Apache
/// Kafka, which keeps the suite within its time budget).
fn embedded_unless_apache(test: &str) -> Option<Cluster> {
    if std::env::var("FLOWSTAGE_KAFKA_BOOTSTRAP").is_ok_and(|b| !b.trim().is_empty()) {
        note(&format!(
            "SKIPPED ({test} on the embedded broker): it runs on Apache Kafka \
             (FLOWSTAGE_KAFKA_BOOTSTRAP is set)"
        ));
        return None;
    }
    Some(Cluster::embedded())
}

impl Cluster {
    /// Starts `flowstage serve` (HTTP on a free port) with `extra` arguments and waits for its
    /// banner.
    fn serve(&self, group: &str, id: &str, extra: &[String]) -> Serve {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let name = format!("serve-{id}-{}", STARTS.fetch_add(1, Ordering::SeqCst));
        self.start_serve(&name, group, id, extra).0
    }

    fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("message.max.bytes", "10000000")
            .create()
            .expect("producer")
    }

    /// Publishes a model descriptor and waits for its acknowledgement.
    fn publish_model(&self, producer: &BaseProducer, d: &ModelDescriptor) {
        let bytes = d.encode_to_vec();
        producer
            .send(
                BaseRecord::<str, Vec<u8>>::to(&self.topics.models)
                    .key(WINE)
                    .payload(&bytes),
            )
            .map_err(|(e, _)| e)
            .expect("send the model");
        producer
            .flush(Duration::from_secs(30))
            .expect("model acknowledged");
    }
}

/// An Apache Kafka of the test's own (`scripts/kafka/start.sh` with its own `KAFKA_RUN_DIR`),
/// stopped (and its data removed) when dropped.
struct OwnKafka {
    run_dir: PathBuf,
    bootstrap: String,
}

impl OwnKafka {
    fn script(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts/kafka")
            .join(name)
    }

    fn run(&self, script: &str, args: &[&str]) -> String {
        let out = Command::new(Self::script(script))
            .args(args)
            .env("KAFKA_RUN_DIR", &self.run_dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        assert!(
            out.status.success(),
            "{script} {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts one, or `None` with a SKIPPED note: it runs where the shared Apache Kafka
    /// tests run (`FLOWSTAGE_KAFKA_BOOTSTRAP` set, i.e. in CI) and needs java and mvn.
    fn start(test: &str) -> Option<OwnKafka> {
        apache_bootstrap(test)?;
        let has = |tool: &str| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !has("java") || !has("mvn") {
            note(&format!(
                "SKIPPED ({test}): no java/mvn for a broker of its own"
            ));
            return None;
        }
        let mut k = OwnKafka {
            run_dir: std::env::temp_dir().join(unique("flowstage-fail-kafka")),
            bootstrap: String::new(),
        };
        k.bootstrap = k.run("start.sh", &[]);
        Some(k)
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        let _ = Command::new(Self::script("stop.sh"))
            .env("KAFKA_RUN_DIR", &self.run_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

// ---- reading topics --------------------------------------------------------------------------

/// Results per record of `0..n` (a count, and the first result of each).
struct Collected {
    count: Vec<u32>,
    first: Vec<Option<ServingResult>>,
    distinct: u64,
    total: u64,
    unprocessed: Vec<(u64, String)>,
}

impl Collected {
    fn new(n: u64) -> Collected {
        Collected {
            count: vec![0; n as usize],
            first: vec![None; n as usize],
            distinct: 0,
            total: 0,
            unprocessed: Vec::new(),
        }
    }

    fn n(&self) -> u64 {
        self.count.len() as u64
    }

    fn add(&mut self, seq: u64, r: ServingResult) {
        assert!(
            seq < self.n(),
            "a result for record {seq}, but only {} were published",
            self.n()
        );
        if !r.processed && self.unprocessed.len() < 20 {
            self.unprocessed.push((seq, r.error.clone()));
        }
        let i = seq as usize;
        if self.count[i] == 0 {
            self.distinct += 1;
            self.first[i] = Some(r);
        } else if !r.processed {
            // Keep an unprocessed duplicate visible to `assert_scored`.
            self.first[i] = Some(r);
        }
        self.count[i] += 1;
        self.total += 1;
    }

    fn has_all(&self) -> bool {
        self.distinct == self.n()
    }

    fn duplicates(&self) -> u64 {
        self.total - self.distinct
    }

    /// Reads results until each record has one (failing at once if `server` exits).
    fn read_all(&mut self, reader: &TopicReader, what: &str, server: &mut Proc) {
        if self.has_all() {
            return;
        }
        reader.read_until_alive(what, Some(server), |m| {
            let (seq, r) = decode_result(m);
            self.add(seq, r);
            self.has_all()
        });
    }

    /// Panics unless every result was scored by a model named in `models`, and those by the
    /// regression model carry its score of their row.
    fn assert_scored(&self, label: &str, models: &[&str]) {
        assert!(
            self.unprocessed.is_empty(),
            "{label}: results not processed (the model is there before the first record), \
             first ones: {:?}",
            self.unprocessed
        );
        for (seq, r) in self.first.iter().enumerate() {
            let Some(r) = r else { continue };
            assert!(
                models.contains(&r.model_name.as_str()),
                "{label}: record {seq} scored by {:?}, want one of {models:?}",
                r.model_name
            );
            assert_eq!(r.data_type, WINE, "record {seq}");
            if r.model_name == REGRESSION {
                let a = row_alcohol(seq % 1000);
                match r.score {
                    Some(Score::Value(v)) => assert!(
                        (v - (1.0 + 0.5 * a)).abs() < 1e-9,
                        "{label}: record {seq}: score {v}, alcohol {a}"
                    ),
                    ref other => panic!("{label}: record {seq}: score {other:?}"),
                }
            }
        }
    }
}

// ---- HTTP ------------------------------------------------------------------------------------

/// Polls `GET /state/wine` until `pred` holds (nothing announces a load; hence polling with a
/// short back-off) and returns the state.
fn wait_state(serve: &mut Serve, what: &str, pred: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + HANG_GUARD;
    let mut pause = Duration::from_millis(20);
    loop {
        let (status, body) = http_get(serve.http, "/state/wine");
        if status == 200 && pred(&body) {
            return body;
        }
        if Instant::now() >= deadline {
            panic!(
                "hang guard: {what}: /state/wine of {} after {HANG_GUARD:?}: {body:#}\n{}",
                serve.id,
                serve.proc.describe()
            );
        }
        assert!(serve.proc.running(), "{what}: {}", serve.proc.describe());
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(300));
    }
}

// ---- scenario 1: kill -9 five times ----------------------------------------------------------

/// Whether this `flowstage` has `serve --processing`.
fn has_processing_flag() -> bool {
    Command::new(env!("CARGO_BIN_EXE_flowstage"))
        .args(["serve", "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--processing"))
}

/// The restarted server installed the model from its local store before it took a record: its
/// log says "restored 1 models from the local store" (printed once the restored models are
/// installed, by a task of its own, so possibly after the next line) and its stage's "model
/// installed" comes before "models ready; consuming records" (the server takes no record before
/// that line; a model on the model topic not newer than the stored one is not installed again).
fn assert_restored_first(p: &mut Proc) {
    let log = p.wait_stderr(
        "the restored models",
        "restored 1 models from the local store",
    );
    let installed = log.find("model installed");
    let ready = log.find("models ready; consuming records");
    assert!(
        matches!((installed, ready), (Some(i), Some(r)) if i < r),
        "the model is restored from the store before the first record: {}",
        p.describe()
    );
}

/// The `usage` of each of `log`'s lines saying `what` ("statistics stored" by the model
/// store's writer, "statistics restored" at a restart), in order.
fn logged_usages(log: &str, what: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            l.split("usage=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Statistics across kill -9s: a restarted server continues from exactly the last statistics
/// its killed predecessor wrote to the store — or the write before, when the kill interrupted
/// the last one (a store write is atomic) — or from what that one restored when it wrote
/// nothing. What came after the last write (at most one write interval) is lost, nothing else.
struct StatsChain {
    /// What the next server may restore: the last write and the one before (or what the
    /// killed server restored; empty: no statistics stored yet).
    expected: Vec<u64>,
    /// Writes seen in the killed servers' logs.
    writes: usize,
    /// The usage each restart continued from.
    restored: Vec<u64>,
}

impl StatsChain {
    /// `p` was just killed.
    fn killed(&mut self, p: &Proc) {
        let written = logged_usages(&p.stderr(), "writing statistics");
        self.writes += written.len();
        match written.as_slice() {
            [] => {}
            [only] => self.expected.push(*only),
            [.., before, last] => self.expected = vec![*before, *last],
        }
        // At most the last write and the one before it.
        let keep = self.expected.len().saturating_sub(2);
        self.expected.drain(..keep);
    }

    /// `p`, started after the last kill, has installed its model.
    fn check_restart(&mut self, p: &mut Proc) {
        let restored = logged_usages(&p.stderr(), "statistics restored");
        match restored.first() {
            Some(u) => assert!(
                self.expected.contains(u),
                "the restarted server continues from the last statistics written before the kill \
                 ({:?}), not {u}: {}",
                self.expected,
                p.describe()
            ),
            None => assert!(
                self.expected.is_empty(),
                "statistics were written ({:?}) but not restored: {}",
                self.expected,
                p.describe()
            ),
        }
        // What this server restored is what its successor restores if it writes nothing.
        self.expected = restored.first().copied().into_iter().collect();
        self.restored.extend(restored.first());
    }
}

fn kill_five_times(c: &Cluster, n: u64, exactly_once: bool) {
    let started = Instant::now();
    let mode = if exactly_once {
        "exactly-once"
    } else {
        "at-least-once"
    };
    let (csv, _) = synthetic_csv(c.path(), 1000);
    let model = regression_model(c.path());
    let group = unique("kill5");
    // A local model store: each restart must install the model from it before its first record.
    let store = c.path().join(format!("{group}.redb"));
    // Statistics written every 20 ms, so that each server (busy for a fraction of a second
    // before it is killed) writes several times.
    let mut extra: Vec<String> = vec![
        "--store".into(),
        "local".into(),
        "--store-path".into(),
        store.display().to_string(),
        "--store-interval-ms".into(),
        "20".into(),
    ];
    if exactly_once {
        extra.extend(["--processing".into(), "exactly-once".into()]);
    }
    let results = TopicReader::new(&c.bootstrap, &c.topics.results, exactly_once);

    // The model and all records up front (the provider acknowledges the model before the
    // first record), so every server, the first one included, starts with the model.
    let mut provide = c.provide(
        "provide",
        &csv,
        std::slice::from_ref(&model),
        Provide {
            count: n,
            rate: 0,
            model_every: None,
        },
    );
    provide.wait_success("flowstage provide");

    // At-least-once: a new id per start (a fresh member; the dead one's session expires).
    // Exactly-once: the same id, so the transactional id fences the killed instance.
    let id = |k: u64| {
        if exactly_once {
            "kill5".to_string()
        } else {
            format!("kill5-{k}")
        }
    };
    let mut serve = c.serve(&group, &id(0), &extra);
    let mut got = Collected::new(n);
    let mut killed_at = Vec::new();
    let mut chain = StatsChain {
        expected: Vec::new(),
        writes: 0,
        restored: Vec::new(),
    };
    for k in 1..=5u64 {
        let threshold = n * k / 6;
        let what = format!("{threshold} records with results before kill {k}");
        results.read_until_alive(&what, Some(&mut serve.proc), |m| {
            let (seq, r) = decode_result(m);
            got.add(seq, r);
            got.distinct >= threshold
        });
        assert!(
            serve.proc.running(),
            "the server died by itself: {}",
            serve.proc.describe()
        );
        if k > 1 {
            assert_restored_first(&mut serve.proc);
            chain.check_restart(&mut serve.proc);
        }
        serve.proc.kill9();
        chain.killed(&serve.proc);
        killed_at.push(got.distinct);
        serve = c.serve(&group, &id(k), &extra);
        // Results the killed server produced may reach the next threshold by themselves:
        // the checks above need this server to have started consuming.
        serve
            .proc
            .wait_stderr("models ready", "models ready; consuming records");
    }
    got.read_all(
        &results,
        "a result for each record after the fifth restart",
        &mut serve.proc,
    );
    assert_restored_first(&mut serve.proc);
    chain.check_restart(&mut serve.proc);
    assert!(
        chain.writes > 0,
        "the killed servers stored statistics at least once (else the check above is empty)"
    );
    let summary = serve.stop();
    // Everything written by now (the last server stopped cleanly): read to the end.
    results.read_to_end("the rest of the results", |m| {
        let (seq, r) = decode_result(m);
        got.add(seq, r);
    });
    let in_topic = results.count();
    let max_per_record = got.count.iter().copied().max().unwrap_or(0);
    note(&format!(
        "kill -9 ×5 ({mode}) on {}: {n} records; killed with {killed_at:?} records having \
         results; the last server consumed {} records; {} results read ({} duplicates, at most \
         {max_per_record} per record); {in_topic} messages in the results topic; statistics: \
         {} writes by the killed servers, the restarts continued from usage {:?}; {:.1} s",
        c.label,
        summary.records,
        got.total,
        got.duplicates(),
        chain.writes,
        chain.restored,
        started.elapsed().as_secs_f64()
    ));
    assert!(got.has_all(), "every record has a result");
    got.assert_scored(&format!("{} ({mode})", c.label), &[REGRESSION]);
    if exactly_once {
        assert_eq!(
            got.duplicates(),
            0,
            "exactly-once: a read_committed consumer sees one result per record"
        );
    }
}

#[test]
fn kill_nine_five_times_at_least_once_on_apache_kafka() {
    if let Some(c) = Cluster::apache("kill5") {
        kill_five_times(&c, 100_000, false);
    }
}

#[test]
fn kill_nine_five_times_at_least_once_on_the_embedded_broker() {
    if let Some(c) = embedded_unless_apache("kill5") {
        kill_five_times(&c, 30_000, false);
    }
}

#[test]
fn kill_nine_five_times_exactly_once_on_apache_kafka() {
    assert!(
        has_processing_flag(),
        "`flowstage serve --processing exactly-once` is not in this binary yet"
    );
    if let Some(c) = Cluster::apache("kill5eos") {
        kill_five_times(&c, 100_000, true);
    }
}

// ---- scenario 2: the broker stopped and started again ----------------------------------------

#[test]
fn broker_restart_mid_stream_on_apache_kafka() {
    let Some(kafka) = OwnKafka::start("broker-restart") else {
        return;
    };
    let started = Instant::now();
    let c = Cluster::on_apache(
        "restart",
        "Apache Kafka of its own",
        kafka.bootstrap.clone(),
    );
    let n: u64 = 40_000;
    let (csv, _) = synthetic_csv(c.path(), 1000);
    let model = regression_model(c.path());
    let group = unique("restart");
    let mut serve = c.serve(&group, "restart-1", &[]);
    let mut provide = c.provide(
        "provide",
        &csv,
        std::slice::from_ref(&model),
        Provide {
            count: n,
            rate: 4_000,
            model_every: None,
        },
    );
    let mut got = Collected::new(n);
    {
        let results = c.reader(&c.topics.results);
        let what = "5,000 records with results before the broker stops";
        results.read_until_alive(what, Some(&mut serve.proc), |m| {
            let (seq, r) = decode_result(m);
            got.add(seq, r);
            got.distinct >= 5_000
        });
    }
    let before = got.distinct;
    kafka.run("restart.sh", &["stop"]);
    let stopped = Instant::now();
    // The pipeline waits: neither the server nor the provider gives up while the broker is
    // away (checked again once it is back, for the whole time it was down).
    let back = kafka.run("restart.sh", &["start"]);
    assert_eq!(back, kafka.bootstrap, "the broker is back on the same port");
    let down = stopped.elapsed();
    assert!(
        serve.proc.running(),
        "the server exited while the broker was down: {}",
        serve.proc.describe()
    );
    let provider_alive = provide.running();
    // A new reader from the beginning (the old one's connection went with the broker).
    let results = c.reader(&c.topics.results);
    let mut got = Collected::new(n);
    got.read_all(
        &results,
        "a result for each record after the broker came back",
        &mut serve.proc,
    );
    provide.wait_success("flowstage provide (across the broker restart)");
    let summary = serve.stop();
    results.read_to_end("the rest of the results", |m| {
        let (seq, r) = decode_result(m);
        got.add(seq, r);
    });
    note(&format!(
        "broker restart on {}: {n} records; broker stopped after {before} had results, down \
         {:.1} s (provider {} while it was down); the server consumed {} records; {} results \
         read ({} duplicates); {:.1} s",
        c.label,
        down.as_secs_f64(),
        if provider_alive {
            "kept running"
        } else {
            "had exited"
        },
        summary.records,
        got.total,
        got.duplicates(),
        started.elapsed().as_secs_f64()
    ));
    assert!(got.has_all());
    got.assert_scored(c.label, &[REGRESSION]);
}

/// SIGTERM while the cluster is gone (the embedded broker killed): the server does not wait for
/// it — its producer alone would wait up to `message.timeout.ms`, 5 minutes, and the last
/// instance record as long. It stops within `--shutdown-timeout-ms`: drained (exit 0), or
/// saying how many records it left uncommitted (exit 1).
#[test]
fn a_stop_while_the_broker_is_away_ends_after_the_shutdown_timeout() {
    let mut c = Cluster::embedded();
    let (csv, _) = synthetic_csv(c.path(), 200);
    let model = regression_model(c.path());
    let extra = ["--shutdown-timeout-ms".to_string(), "2000".to_string()];
    let mut serve = c.serve(&unique("away"), "away-1", &extra);
    let mut provide = c.provide(
        "provide",
        &csv,
        std::slice::from_ref(&model),
        Provide {
            count: 10_000_000,
            rate: 5_000,
            model_every: None,
        },
    );
    {
        let results = c.reader(&c.topics.results);
        let mut n = 0;
        results.read_until_alive("500 results", Some(&mut serve.proc), |_| {
            n += 1;
            n >= 500
        });
    }
    c.broker.as_mut().expect("the embedded broker").kill9();
    provide.kill9();
    let status = serve.proc.terminate();
    match status.code() {
        Some(0) => note("stop with the broker away: drained in time (exit 0)"),
        Some(1) => {
            let log = serve.proc.stderr();
            assert!(
                log.contains("did not drain within"),
                "exit 1 without the drain message: {}",
                serve.proc.describe()
            );
            note("stop with the broker away: gave up after the shutdown timeout (exit 1)");
        }
        _ => panic!(
            "serve after SIGTERM with the broker away: {}",
            serve.proc.describe()
        ),
    }
}

// ---- scenario 3: overload --------------------------------------------------------------------

/// The slow model's shape: 3 tanh layers of 160 (51,200 multiply-adds a record).
const SLOW_WIDTH: usize = 160;
const SLOW_LAYERS: usize = 3;
const SLOW: &str = "slowNeuralNetwork";

fn overload(c: &Cluster, n: u64) {
    let started = Instant::now();
    let (csv, _) = synthetic_csv(c.path(), 1000);
    let models_dir = c.path().join("models");
    std::fs::create_dir_all(&models_dir).expect("models dir");
    std::fs::write(
        models_dir.join("slow.pmml"),
        slow_model_pmml(SLOW_WIDTH, SLOW_LAYERS),
    )
    .expect("write the slow model");
    let producer = c.producer();
    c.publish_model(
        &producer,
        &ModelDescriptor {
            name: SLOW.into(),
            description: "deliberately slow".into(),
            data_type: WINE.into(),
            modeltype: ModelType::Pmml as i32,
            message_content: Some(MessageContent::Location("slow.pmml".into())),
        },
    );
    // The server's defaults bound librdkafka's prefetch (queued.min.messages 5,000 per
    // partition, queued.max.messages.kbytes 8 MiB; librdkafka's own are 100,000 and 64 MiB, with
    // which RSS grew from 45 to 110 MiB at a lag of 290k): far below the lag this test builds,
    // so growth with the lag would show.
    let extra: Vec<String> = ["--models-dir", &models_dir.display().to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let group = unique("overload");
    let mut serve = c.serve(&group, "overload-1", &extra);
    wait_state(&mut serve, "the slow model loaded", |s| {
        s["current"]["name"] == SLOW
    });
    let pid = serve.proc.pid();
    let results = c.reader(&c.topics.results);
    let counter: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .create()
        .expect("consumer");
    let lag = || {
        let published = watermark_sum(&counter, &c.topics.data, PARTITIONS);
        let scored = watermark_sum(&counter, &c.topics.results, PARTITIONS);
        (published, scored)
    };

    // The provider at full speed; sample RSS and lag while it runs (a sampling period, not a
    // synchronisation).
    let rss0 = rss_kb(pid).expect("VmRSS of the server");
    let publish_start = Instant::now();
    let mut provide = c.provide(
        "provide",
        &csv,
        &[],
        Provide {
            count: n,
            rate: 0,
            model_every: None,
        },
    );
    let mut samples: Vec<(f64, u64, i64, i64)> = Vec::new();
    let deadline = Instant::now() + HANG_GUARD;
    let mut publish_secs = None;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let rss = rss_kb(pid).unwrap_or_else(|| panic!("server gone: {}", serve.proc.describe()));
        let (published, scored) = lag();
        samples.push((started.elapsed().as_secs_f64(), rss, published, scored));
        if publish_secs.is_none() && !provide.running() {
            publish_secs = Some(publish_start.elapsed().as_secs_f64());
        }
        // Go on sampling a while after the last record was published: the lag stays high.
        if let Some(p) = publish_secs {
            if publish_start.elapsed().as_secs_f64() > p + 3.0 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: the provider did not finish"
        );
    }
    provide.wait_success("flowstage provide");
    let (published, scored_slow) = lag();
    assert_eq!(published, n as i64, "records in the data topic");
    let slow_state = serve.wine_state();
    let slow_rate = scored_slow as f64 / publish_start.elapsed().as_secs_f64();
    let publish_rate = n as f64 / publish_secs.unwrap_or(f64::NAN);

    // Then a fast model drains the lag, so the test ends in bounded time.
    c.publish_model(
        &producer,
        &pmml_descriptor(REGRESSION, REGRESSION_PMML.as_bytes()),
    );
    let mut got = Collected::new(n);
    got.read_all(
        &results,
        "a result for every record after the fast model came",
        &mut serve.proc,
    );
    let summary = serve.stop();
    assert!(serve.proc.status.is_some_and(|s| s.success()));

    let peak_lag = samples.iter().map(|(_, _, p, s)| p - s).max().unwrap_or(0);
    let rss_max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let rss_last = samples.last().map_or(0, |s| s.1);
    // RSS once the lag passed n/3 records (reported): far above the server's prefetch bound
    // (queued.min.messages 5,000 × 6 partitions, queued.max.messages.kbytes 8 MiB).
    let rss_early = samples
        .iter()
        .find(|(_, _, p, s)| p - s > n as i64 / 3)
        .map_or(rss0, |s| s.1);
    let listing: Vec<String> = samples
        .iter()
        .map(|(t, rss, p, s)| format!("{t:.1}s rss {} MiB lag {}", rss / 1024, p - s))
        .collect();
    note(&format!(
        "overload on {}: {n} records published in {:.1} s ({publish_rate:.0}/s) against the \
         slow model's {slow_rate:.0} results/s (mean {} ns a record); peak lag {peak_lag} \
         records; server RSS {} MiB before, {} MiB when the lag passed n/3, max {} MiB, \
         {} MiB at the peak; {} results, {} duplicates; server summary {summary:?}; {:.1} s\n  \
         samples: {}",
        c.label,
        publish_secs.unwrap_or(f64::NAN),
        slow_state["current"]["mean_ns"],
        rss0 / 1024,
        rss_early / 1024,
        rss_max / 1024,
        rss_last / 1024,
        got.total,
        got.duplicates(),
        started.elapsed().as_secs_f64(),
        listing.join(", ")
    ));
    got.assert_scored(c.label, &[SLOW, REGRESSION]);
    assert!(
        peak_lag >= n as i64 / 2,
        "the lag grows: peak {peak_lag} of {n} records (the provider outruns the slow model)"
    );
    // Bounded, not growing with the lag: from before the first record to the lag's peak
    // (≥ n/2 = 150,000 records on Apache Kafka, ≥ 130 bytes each on the wire plus librdkafka's
    // per-message overhead) RSS grows by less than 40 MiB. Measured with the server's prefetch
    // bounds: +24–25 MiB, a single step (fetch buffers, an allocator arena) at a lag that varies
    // from run to run, flat afterwards; with librdkafka's own defaults (100,000 records a
    // partition, 64 MiB) it grows with the lag, 45 → 110 MiB at a lag of 290,000, and this fails.
    assert!(
        rss_max.saturating_sub(rss0) < 40 * 1024,
        "RSS grew with the lag: {} MiB before, {} MiB at a lag of n/3, max {} MiB (samples: {})",
        rss0 / 1024,
        rss_early / 1024,
        rss_max / 1024,
        listing.join(", ")
    );
}

#[test]
fn overload_on_apache_kafka() {
    if let Some(c) = Cluster::apache("overload") {
        overload(&c, 300_000);
    }
}

#[test]
fn overload_on_the_embedded_broker() {
    if let Some(c) = embedded_unless_apache("overload") {
        overload(&c, 100_000);
    }
}

// ---- scenario 4: bad data --------------------------------------------------------------------

/// A good record of synthetic row `i % 1000`.
fn good_record(i: usize) -> WineRecord {
    WineRecord {
        fixed_acidity: 7.4,
        volatile_acidity: 0.7,
        citric_acid: (i % 10) as f64 / 10.0,
        residual_sugar: 1.9,
        chlorides: 0.076,
        free_sulfur_dioxide: 11.0,
        total_sulfur_dioxide: 34.0,
        density: 0.9978,
        p_h: 3.51,
        sulphates: 0.56,
        alcohol: row_alcohol(i % 1000),
        data_type: WINE.into(),
        ts: 0,
        ts_micros: 0,
    }
}

/// What the bad-data producer sent for one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A good record of ours: scored by the model.
    Scored,
    /// A mutant that still decodes with a dataType: a result (maybe "no model").
    Result,
    /// A dead letter.
    Dead,
}

/// A bad payload of kind `kind` (None: no payload).
fn bad_payload(rng: &mut Rng, good: &[u8], kind: u64) -> Option<Vec<u8>> {
    match kind {
        // Random bytes, 0–80 long.
        0 => {
            let len = rng.below(81) as usize;
            Some((0..len).map(|_| rng.next() as u8).collect())
        }
        // A good record cut short.
        1 => Some(good[..rng.below(good.len() as u64) as usize].to_vec()),
        // A good record with 1–3 bits flipped.
        2 => {
            let mut b = good.to_vec();
            for _ in 0..=rng.below(3) {
                let i = rng.below(b.len() as u64) as usize;
                b[i] ^= 1 << rng.below(8);
            }
            Some(b)
        }
        // Wrong wire types: dataType (field 12) as a varint, alcohol (11) as bytes.
        3 => {
            let mut b = good.to_vec();
            if rng.below(2) == 0 {
                b.extend_from_slice(&[12 << 3, 0x2a]);
            } else {
                b.extend_from_slice(&[(11 << 3) | 2, 3, 1, 2, 3]);
            }
            Some(b)
        }
        // A well-formed record without dataType.
        4 => {
            let mut r = WineRecord::decode(good).expect("good record");
            r.data_type.clear();
            Some(r.encode_to_vec())
        }
        // Random bytes after a valid prefix (garbage tail).
        5 => {
            let mut b = good.to_vec();
            let len = 1 + rng.below(16) as usize;
            b.extend((0..len).map(|_| rng.next() as u8));
            Some(b)
        }
        _ => None,
    }
}

/// The oracle: prost decoding of `WineRecord`, and a non-empty dataType.
fn is_valid(payload: Option<&[u8]>) -> bool {
    payload
        .and_then(|p| WineRecord::decode(p).ok())
        .is_some_and(|r| !r.data_type.is_empty())
}

fn bad_data(c: &Cluster, bad: u64) {
    let started = Instant::now();
    let good_every = 10u64;
    let total = bad + bad / good_every;
    let model = pmml_descriptor(REGRESSION, REGRESSION_PMML.as_bytes());
    let producer = c.producer();
    c.publish_model(&producer, &model);
    let group = unique("baddata");
    let mut serve = c.serve(&group, "baddata-1", &[]);

    // Record i is keyed i; every 11th is good, the others bad of a kind.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut expect = Vec::with_capacity(total as usize);
    let mut kinds = [0u64; 7];
    let send = |key: &str, payload: Option<&[u8]>| loop {
        let mut rec = BaseRecord::<str, [u8]>::to(&c.topics.data).key(key);
        if let Some(p) = payload {
            rec = rec.payload(p);
        }
        match producer.send(rec) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => panic!("send record {key}: {e}"),
        }
    };
    for i in 0..total {
        let key = i.to_string();
        let good = good_record(i as usize).encode_to_vec();
        if i % (good_every + 1) == good_every {
            send(&key, Some(&good));
            expect.push(Expect::Scored);
        } else {
            let kind = rng.below(7);
            kinds[kind as usize] += 1;
            let payload = bad_payload(&mut rng, &good, kind);
            send(&key, payload.as_deref());
            expect.push(if is_valid(payload.as_deref()) {
                Expect::Result
            } else {
                Expect::Dead
            });
        }
        if i % 10_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("records acknowledged");
    let produced_secs = started.elapsed().as_secs_f64();
    let want_dead = expect.iter().filter(|e| **e == Expect::Dead).count() as u64;
    let want_results = total - want_dead;
    let scored = expect.iter().filter(|e| **e == Expect::Scored).count() as u64;

    // Every result, then every dead letter.
    let results = c.reader(&c.topics.results);
    let mut got = vec![0u8; total as usize];
    let mut results_read = 0u64;
    let mut not_scored = Vec::new();
    results.read_until_alive(
        &format!("{want_results} results"),
        Some(&mut serve.proc),
        |m| {
            let key = m.key().expect("result key");
            let i: usize = std::str::from_utf8(key)
                .ok()
                .and_then(|k| k.parse().ok())
                .unwrap_or_else(|| panic!("result key {key:?}"));
            let r =
                ServingResult::decode(m.payload().unwrap_or_default()).expect("a ServingResult");
            assert_ne!(
                expect[i],
                Expect::Dead,
                "record {i}: a result, want a dead letter"
            );
            if expect[i] == Expect::Scored && (!r.processed || r.model_name != REGRESSION) {
                not_scored.push((i, r.error.clone()));
            }
            got[i] += 1;
            results_read += 1;
            results_read == want_results
        },
    );
    let dlq = c.reader(&c.topics.dlq);
    let mut dead_read = 0u64;
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    dlq.read_until_alive(
        &format!("{want_dead} dead letters"),
        Some(&mut serve.proc),
        |m| {
            let key = m.key().expect("dead letter key");
            let i: usize = std::str::from_utf8(key)
                .ok()
                .and_then(|k| k.parse().ok())
                .unwrap_or_else(|| panic!("dead letter key {key:?}"));
            assert_eq!(
                expect[i],
                Expect::Dead,
                "record {i}: a dead letter, want a result"
            );
            let reason = m
                .headers()
                .and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "flowstage-dlq-reason")
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
                .unwrap_or_default();
            assert!(
                !reason.is_empty(),
                "record {i}: a dead letter without reason"
            );
            // Group the reasons by their first words (prost's detail varies).
            let head: String = reason.split(':').next().unwrap_or_default().to_string();
            *reasons.entry(head).or_default() += 1;
            got[i] += 1;
            dead_read += 1;
            dead_read == want_dead
        },
    );
    assert!(serve.proc.running(), "{}", serve.proc.describe());
    let summary = serve.stop();
    let in_results = results.count();
    let in_dlq = dlq.count();
    note(&format!(
        "bad data on {}: {total} records ({bad} bad: {kinds:?} random/truncated/bit-flipped/\
         wrong wire type/no dataType/garbage tail/no payload; {scored} good) produced in \
         {produced_secs:.1} s; oracle: {want_dead} dead letters, {want_results} results; read \
         {dead_read} dead letters ({reasons:?}) and {results_read} results; topics hold \
         {in_results} results + {in_dlq} dead letters; server summary {summary:?}; {:.1} s",
        c.label,
        started.elapsed().as_secs_f64()
    ));
    assert!(
        not_scored.is_empty(),
        "good records not scored by the model: {} (first: {:?})",
        not_scored.len(),
        &not_scored[..not_scored.len().min(10)]
    );
    assert!(got.iter().all(|g| *g == 1), "each record answered once");
    assert_eq!(in_results as u64, want_results, "results in the topic");
    assert_eq!(in_dlq as u64, want_dead, "dead letters in the topic");
    assert_eq!(
        in_results + in_dlq,
        total as i64,
        "results + dead letters = records"
    );
    assert_eq!(summary.records, total, "{summary:?}");
    assert_eq!(summary.dead_letters, want_dead, "{summary:?}");
    assert_eq!(summary.results, want_results, "{summary:?}");
}

#[test]
fn bad_data_on_apache_kafka() {
    if let Some(c) = Cluster::apache("baddata") {
        bad_data(&c, 1_000_000);
    }
}

#[test]
fn bad_data_on_the_embedded_broker() {
    // The mock keeps at most 5 MiB in a partition (older messages are dropped), and the
    // dead-letter topic has one: 20,000 dead letters with their headers fit.
    if let Some(c) = embedded_unless_apache("baddata") {
        bad_data(&c, 20_000);
    }
}

// ---- scenario 5: bad models ------------------------------------------------------------------

fn bad_models(c: &Cluster) {
    let started = Instant::now();
    let models_dir = c.path().join("models");
    std::fs::create_dir_all(&models_dir).expect("models dir");
    std::fs::write(models_dir.join("good.pmml"), REGRESSION_PMML).expect("write");
    let outside = c.path().join("outside.pmml");
    std::fs::write(&outside, REGRESSION_PMML).expect("write");
    std::os::unix::fs::symlink(&outside, models_dir.join("link.pmml")).expect("symlink");
    // 256 MiB + 1 byte, sparse: one byte past the PMML evaluator's default size limit.
    let big = File::create(models_dir.join("big.pmml")).expect("create");
    big.set_len(256 * 1024 * 1024 + 1).expect("set_len");
    drop(big);
    let onnx = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../model/tests/fixtures/onnx/mlp_regressor.onnx"),
    )
    .expect("the ONNX fixture model/tests/fixtures/onnx/mlp_regressor.onnx");

    let producer = c.producer();
    c.publish_model(
        &producer,
        &pmml_descriptor(REGRESSION, REGRESSION_PMML.as_bytes()),
    );
    let group = unique("badmodels");
    let extra = vec!["--models-dir".to_string(), models_dir.display().to_string()];
    let mut serve = c.serve(&group, "badmodels-1", &extra);
    wait_state(&mut serve, "the good model loaded", |s| {
        s["current"]["name"] == REGRESSION
    });

    let good = REGRESSION_PMML.as_bytes();
    let mut corrupted = good.to_vec();
    for b in &mut corrupted[200..260] {
        *b = 0xff;
    }
    let by_location = |name: &str, loc: &str, t: ModelType| ModelDescriptor {
        name: name.into(),
        description: String::new(),
        data_type: WINE.into(),
        modeltype: t as i32,
        message_content: Some(MessageContent::Location(loc.into())),
    };
    let by_value = |name: &str, bytes: &[u8], t: ModelType| ModelDescriptor {
        message_content: Some(MessageContent::Data(bytes.to_vec())),
        ..by_location(name, "", t)
    };
    let xxe = r#"<?xml version="1.0"?>
<!DOCTYPE PMML [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4"><Header description="&xxe;"/>
<DataDictionary><DataField name="alcohol" optype="continuous" dataType="double"/>
<DataField name="quality" optype="continuous" dataType="double"/></DataDictionary>
<RegressionModel functionName="regression"><MiningSchema><MiningField name="alcohol"/>
<MiningField name="quality" usageType="target"/></MiningSchema>
<RegressionTable intercept="1"><NumericPredictor name="alcohol" coefficient="0.5"/>
</RegressionTable></RegressionModel></PMML>"#;
    // (descriptor, words the reason must contain, case-insensitive)
    let cases: Vec<(ModelDescriptor, Vec<&str>)> = vec![
        (
            by_value("truncated", &good[..good.len() / 2], ModelType::Pmml),
            vec!["pmml", "malformed xml"],
        ),
        (
            by_value("corrupted", &corrupted, ModelType::Pmml),
            vec!["pmml", "utf-8"],
        ),
        (
            by_value("onnxBytesAsPmml", &onnx, ModelType::Pmml),
            vec!["pmml"],
        ),
        (
            by_value("pmmlBytesAsOnnx", good, ModelType::Onnx),
            vec!["onnx", "decode"],
        ),
        (
            by_value("pmmlBytesAsTensorflow", good, ModelType::Tensorflow),
            vec!["tensorflow", "decode"],
        ),
        (
            by_location("oversized", "big.pmml", ModelType::Pmml),
            vec!["268435457 bytes", "limit"],
        ),
        (
            by_location("parentDir", "../outside.pmml", ModelType::Pmml),
            vec!["location", ".."],
        ),
        (
            by_location("absolute", &outside.display().to_string(), ModelType::Pmml),
            vec!["location", "absolute"],
        ),
        (
            by_location("symlinkOut", "link.pmml", ModelType::Pmml),
            vec!["location", "outside"],
        ),
        (
            by_value("externalEntity", xxe.as_bytes(), ModelType::Pmml),
            vec!["doctype", "refused"],
        ),
        (
            ModelDescriptor {
                message_content: None,
                ..by_location("empty", "", ModelType::Pmml)
            },
            vec!["neither"],
        ),
    ];
    let records = c.producer();
    let results = c.reader(&c.topics.results);
    let mut seq = 0u64;
    let mut report = Vec::new();
    let mut wrong_reasons = Vec::new();
    for (k, (d, words)) in cases.iter().enumerate() {
        c.publish_model(&producer, d);
        let state = wait_state(
            &mut serve,
            &format!("the load failure of {}", d.name),
            |s| s["load_failures"].as_u64() == Some(k as u64 + 1),
        );
        let error = state["last_error"]["error"].as_str().unwrap_or_default();
        report.push(format!("{}: {error}", d.name));
        assert_eq!(
            state["last_error"]["model_name"], d.name,
            "the last failure names the model: {state:#}"
        );
        let lower = error.to_lowercase();
        for w in words {
            if !lower.contains(w) {
                wrong_reasons.push(format!("{}: reason {error:?} lacks {w:?}", d.name));
            }
        }
        assert_eq!(
            state["current"]["name"], REGRESSION,
            "{}: the previous model stays current: {state:#}",
            d.name
        );
        // The previous model still scores: 50 records, each scored by it.
        let from = seq;
        for _ in 0..50 {
            let payload = good_record(seq as usize).encode_to_vec();
            records
                .send(
                    BaseRecord::<str, Vec<u8>>::to(&c.topics.data)
                        .key(&seq.to_string())
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .expect("send a record");
            seq += 1;
        }
        records
            .flush(Duration::from_secs(30))
            .expect("records acknowledged");
        let mut seen = 0;
        let what = format!("results after {}", d.name);
        results.read_until_alive(&what, Some(&mut serve.proc), |m| {
            let (s, r) = decode_result(m);
            assert!(
                r.processed && r.model_name == REGRESSION,
                "record {s} after {}: {r:?}",
                d.name
            );
            if s >= from {
                seen += 1;
            }
            seen == 50
        });
    }
    let rss = rss_kb(serve.proc.pid()).unwrap_or(0);
    let peak = proc_status_kb(serve.proc.pid(), "VmHWM:").unwrap_or(0);
    let summary = serve.stop();
    note(&format!(
        "bad models on {}: {} rejected, the previous model scored {seq} records around them; \
         server RSS at the end {} MiB, peak {} MiB; summary {summary:?}; {:.1} s; reasons:\n  \
         {}",
        c.label,
        cases.len(),
        rss / 1024,
        peak / 1024,
        started.elapsed().as_secs_f64(),
        report.join("\n  ")
    ));
    assert!(wrong_reasons.is_empty(), "{wrong_reasons:#?}");
    assert_eq!(summary.results, seq);
}

#[test]
fn bad_models_on_the_embedded_broker() {
    if let Some(c) = embedded_unless_apache("badmodels") {
        bad_models(&c);
    }
}

#[test]
fn bad_models_on_apache_kafka() {
    if let Some(c) = Cluster::apache("badmodels") {
        bad_models(&c);
    }
}
