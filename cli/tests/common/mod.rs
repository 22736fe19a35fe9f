//! Helpers shared by the integration tests that drive the real `flowstage` binary
//! (`pipeline.rs`, `failures.rs`, `store.rs`, `exactly_once.rs`, `provide.rs`): the cluster a
//! scenario runs on (a `flowstage broker` child, or Apache Kafka from
//! `FLOWSTAGE_KAFKA_BOOTSTRAP`), `flowstage` child processes, unique names, topic creation and
//! reading, the test's regression model and synthetic wine rows, and a tiny HTTP client.
//!
//! Each test file is a crate of its own that includes this module with `mod common;` and uses
//! only part of it, hence `allow(dead_code)`: an item one file does not use would otherwise warn
//! in that file's crate.
//!
//! Every wait is bounded by the including file's own `HANG_GUARD` constant (`crate::HANG_GUARD`),
//! so each suite keeps its own hang guard (a guard against hangs only, never a timing
//! assertion).

#![allow(dead_code)]

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowstage_model::pb::ServingResult;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value as Json;

use crate::HANG_GUARD;

/// Partitions of the data and results topics (the embedded broker's defaults).
pub const PARTITIONS: i32 = 6;

/// The wine dataType.
pub const WINE: &str = "wine";

/// The tests' own fast model: quality = 1 + 0.5 × alcohol.
pub const REGRESSION_PMML: &str = r#"<?xml version="1.0"?>
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

/// Its model name (the file stem, the provider's convention).
pub const REGRESSION: &str = "alcoholRegression";

/// The UCI column names, in the UCI CSV's order.
pub const COLUMNS: [&str; 11] = [
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
];

// ---- small helpers ---------------------------------------------------------------------------

/// Written to the process's stderr directly, so it shows although the harness captures
/// `eprintln!` of passing tests.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Milliseconds since the Unix epoch (a record timestamp's unit).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A name no other test (of this run or an earlier one on the same broker) uses.
pub fn unique(prefix: &str) -> String {
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

/// `n` synthetic wine rows (a headered CSV the provider reads, `dir/synthetic.csv`); row `i`'s
/// alcohol is `8.0 + (i % 70) / 10`. Returns the file and the alcohol of each row.
pub fn synthetic_csv(dir: &Path, n: usize) -> (PathBuf, Vec<f64>) {
    let path = dir.join("synthetic.csv");
    let mut text = COLUMNS.join(",");
    text.push('\n');
    let mut alcohol = Vec::with_capacity(n);
    for i in 0..n {
        let a = format!("{}.{}", 8 + (i % 70) / 10, (i % 70) % 10);
        alcohol.push(a.parse::<f64>().expect("alcohol"));
        text.push_str(&format!(
            "7.4,0.7,0.{},1.9,0.076,11,34,0.9978,3.51,0.56,{a}\n",
            i % 10
        ));
    }
    std::fs::write(&path, text).expect("write the synthetic CSV");
    (path, alcohol)
}

/// Writes the regression model to `dir/alcoholRegression.pmml`.
pub fn regression_model(dir: &Path) -> PathBuf {
    let path = dir.join(format!("{REGRESSION}.pmml"));
    std::fs::write(&path, REGRESSION_PMML).expect("write the PMML model");
    path
}

// ---- child processes -------------------------------------------------------------------------

/// A `flowstage` child process: stdout read line by line on a thread, stderr into a log file
/// (its tail is printed when a test fails). Killed (SIGKILL) when dropped, so a panicking test
/// leaves no process behind.
pub struct Proc {
    pub name: String,
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// The stdout lines read so far.
    pub stdout: Vec<String>,
    pub stderr_path: PathBuf,
    /// The exit status, once reaped.
    pub status: Option<ExitStatus>,
}

/// The log filter of `flowstage serve` children: its default, plus the statistics writes and
/// restores of its model store, the Kafka stages' assignment changes, revocation commits and
/// retries, and the server's progress line every 5 s (debug), so a failing run's log shows what
/// the consumer went through and at which step records stopped.
pub const SERVE_LOG: &str = "warn,flowstage=info,flowstage_stages=info,\
     flowstage_stages::store=debug,flowstage_stages::serving=debug,flowstage_stages::kafka=debug,\
     flowstage_stages::wine::server=debug";

impl Proc {
    /// Starts the `flowstage` binary cargo built for this test.
    pub fn spawn(name: &str, args: &[String], log_dir: &Path) -> Proc {
        Proc::spawn_env(name, args, log_dir, &[])
    }

    /// [`spawn`](Self::spawn) with environment variables `env` set.
    pub fn spawn_env(name: &str, args: &[String], log_dir: &Path, env: &[(&str, &str)]) -> Proc {
        Proc::spawn_bin_env(
            Path::new(env!("CARGO_BIN_EXE_flowstage")),
            name,
            args,
            log_dir,
            env,
        )
    }

    /// Starts `bin` (a `flowstage` binary) with `args`; its stderr goes to
    /// `log_dir/<name>.stderr`.
    pub fn spawn_bin(bin: &Path, name: &str, args: &[String], log_dir: &Path) -> Proc {
        Proc::spawn_bin_env(bin, name, args, log_dir, &[])
    }

    fn spawn_bin_env(
        bin: &Path,
        name: &str,
        args: &[String],
        log_dir: &Path,
        env: &[(&str, &str)],
    ) -> Proc {
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let stderr = File::create(&stderr_path).expect("create the stderr log");
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn stderr_tail(&self) -> String {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Name, pid, status, stdout and the tail of stderr, for failure messages.
    pub fn describe(&mut self) -> String {
        let status = self.child.try_wait().ok().flatten().or(self.status);
        format!(
            "{} (pid {}, {}): stdout {:?}\n--- stderr tail of {}:\n{}",
            self.name,
            self.pid(),
            status.map_or("running".into(), |s| s.to_string()),
            self.stdout,
            self.name,
            self.stderr_tail()
        )
    }

    /// The process's thread stacks, from gdb when it is installed (for hang reports: they
    /// show where a silent server waits). Empty when gdb is absent or fails.
    pub fn stacks(&self) -> String {
        let out = Command::new("timeout")
            .args(["60", "gdb", "-p", &self.pid().to_string(), "-batch", "-nx"])
            .args(["-ex", "set pagination off", "-ex", "thread apply all bt"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => String::new(),
        }
    }

    /// Copies the process's whole stderr log out of the test's temporary directory (which
    /// goes when the test fails), into cargo's target tmp directory, and prints where.
    pub fn keep_log(&self) {
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "{}-{}.stderr",
            self.name,
            self.pid()
        ));
        match std::fs::copy(&self.stderr_path, &kept) {
            Ok(_) => eprintln!(
                "--- the whole log of {} is in {}",
                self.name,
                kept.display()
            ),
            Err(e) => eprintln!("--- cannot keep the log of {}: {e}", self.name),
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.status.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for a stdout line satisfying `pred`, and returns it.
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
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
                Err(RecvTimeoutError::Timeout) => panic!(
                    "hang guard: no {what} after {HANG_GUARD:?} from {}",
                    self.describe()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.child.wait();
                    panic!("ended before printing {what}: {}", self.describe())
                }
            }
        }
    }

    /// Waits until the process has written `needle` to stderr (the log file, polled) and
    /// returns its stderr so far.
    pub fn wait_stderr(&mut self, what: &str, needle: &str) -> String {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let log = self.stderr();
            if log.contains(needle) {
                return log;
            }
            if !self.running() {
                panic!("ended before logging {what}: {}", self.describe());
            }
            if Instant::now() > deadline {
                panic!(
                    "hang guard: no {what} after {HANG_GUARD:?} from {}",
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the process closes its stdout and exits.
    pub fn wait_exit(&mut self, what: &str) -> ExitStatus {
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
                Err(RecvTimeoutError::Timeout) => panic!(
                    "hang guard: {what}: still running after {HANG_GUARD:?}: {}",
                    self.describe()
                ),
            }
        }
        let status = self.child.wait().expect("wait for the child");
        self.status = Some(status);
        status
    }

    /// Waits for a successful exit.
    pub fn wait_success(&mut self, what: &str) {
        let status = self.wait_exit(what);
        assert!(status.success(), "{what}: {}", self.describe());
    }

    /// SIGTERM (graceful shutdown), then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM {} failed", self.pid());
        self.wait_exit("exit after SIGTERM")
    }

    /// SIGTERM, then waits for a successful exit.
    pub fn stop(&mut self) {
        let status = self.terminate();
        assert!(status.success(), "exit after SIGTERM: {}", self.describe());
    }

    /// SIGKILL (`kill -9`), then reaps it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.status = Some(self.child.wait().expect("wait for the killed child"));
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

/// The number before `word` in a summary line (`"12 records consumed"`, `"records"` → 12).
pub fn number_before(line: &str, word: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].trim_end_matches(',') == word)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or_else(|| panic!("no count of {word:?} in {line:?}"))
}

/// A `flowstage broker` child (logging into `dir`) and the bootstrap address it printed.
pub fn start_broker(dir: &Path) -> (Proc, String) {
    let mut broker = Proc::spawn("broker", &["broker".to_string()], dir);
    let bootstrap = broker
        .wait_line("bootstrap address", |l| !l.trim().is_empty())
        .trim()
        .to_string();
    (broker, bootstrap)
}

/// The HTTP address in `flowstage serve`'s banner line.
pub fn banner_http(line: &str) -> SocketAddr {
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP address in {line:?}"))
}

/// A running `flowstage serve`.
pub struct Serve {
    pub proc: Proc,
    pub id: String,
    pub http: SocketAddr,
}

/// What `flowstage serve` printed when it stopped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub results: u64,
    pub dead_letters: u64,
    pub committed: u64,
}

impl Serve {
    /// SIGTERM; the server drains, commits, prints its summary and exits 0.
    pub fn stop(&mut self) -> Summary {
        let status = self.proc.terminate();
        assert!(
            status.success(),
            "serve {} after SIGTERM: {}",
            self.id,
            self.proc.describe()
        );
        let line = self
            .proc
            .stdout
            .iter()
            .find(|l| l.starts_with("flowstage serve: stopped:"))
            .cloned()
            .unwrap_or_else(|| panic!("no summary line: {}", self.proc.describe()));
        // "… stopped: N records consumed, M results produced, D dead letters, …"
        Summary {
            records: number_before(&line, "records"),
            results: number_before(&line, "results"),
            dead_letters: number_before(&line, "dead"),
            committed: number_before(&line, "offsets"),
        }
    }
}

// ---- clusters --------------------------------------------------------------------------------

/// The `FLOWSTAGE_KAFKA_BOOTSTRAP` broker, or `None` with a SKIPPED note.
pub fn apache_bootstrap(test: &str) -> Option<String> {
    match std::env::var("FLOWSTAGE_KAFKA_BOOTSTRAP") {
        Ok(b) if !b.trim().is_empty() => Some(b.trim().to_string()),
        _ => {
            note(&format!(
                "SKIPPED ({test} on Apache Kafka): FLOWSTAGE_KAFKA_BOOTSTRAP is not set; run \
                 `export FLOWSTAGE_KAFKA_BOOTSTRAP=$(scripts/kafka/start.sh)` to run it"
            ));
            None
        }
    }
}

/// Topic names of one test.
#[derive(Debug, Clone)]
pub struct Names {
    pub data: String,
    pub models: String,
    pub results: String,
    pub dlq: String,
    pub instances: String,
}

/// The cluster a scenario runs on: a `flowstage broker` child, or Apache Kafka.
pub struct Cluster {
    pub label: &'static str,
    pub bootstrap: String,
    pub topics: Names,
    /// The embedded broker (dropped — killed — before the log directory goes).
    pub broker: Option<Proc>,
    pub dir: tempfile::TempDir,
}

/// How `flowstage provide` publishes.
#[derive(Debug, Clone, Copy)]
pub struct Provide {
    pub count: u64,
    /// Records a second (0: full speed).
    pub rate: u64,
    /// A model every N records (`None`: each model published once, before the records).
    pub model_every: Option<u64>,
}

impl Cluster {
    /// A `flowstage broker` of its own, with its default topics.
    pub fn embedded() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let (broker, bootstrap) = start_broker(dir.path());
        Cluster {
            label: "embedded broker",
            bootstrap,
            topics: Names {
                data: "mdata".into(),
                models: "models".into(),
                results: "results".into(),
                dlq: "mdata-dlq".into(),
                instances: "serving-instances".into(),
            },
            broker: Some(broker),
            dir,
        }
    }

    /// Apache Kafka at `FLOWSTAGE_KAFKA_BOOTSTRAP` with topics of this test's own, or `None`
    /// (and a SKIPPED note) when it is not set.
    pub fn apache(test: &str) -> Option<Cluster> {
        let bootstrap = apache_bootstrap(test)?;
        Some(Cluster::on_apache(test, "Apache Kafka", bootstrap))
    }

    /// Topics of this test's own on the Apache Kafka at `bootstrap`.
    pub fn on_apache(test: &str, label: &'static str, bootstrap: String) -> Cluster {
        let base = unique(test);
        let topics = Names {
            data: format!("{base}-mdata"),
            models: format!("{base}-models"),
            results: format!("{base}-results"),
            dlq: format!("{base}-mdata-dlq"),
            instances: format!("{base}-instances"),
        };
        create_topics(
            &bootstrap,
            &[
                (&topics.data, PARTITIONS, false),
                (&topics.models, 1, true),
                (&topics.results, PARTITIONS, false),
                (&topics.dlq, 1, false),
                (&topics.instances, 1, true),
            ],
        );
        Cluster {
            label,
            bootstrap,
            topics,
            broker: None,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `flowstage serve` as child `name` (HTTP on a free port) with `extra` arguments,
    /// waits for its banner, and returns the server and the banner line.
    pub fn start_serve(
        &self,
        name: &str,
        group: &str,
        id: &str,
        extra: &[String],
    ) -> (Serve, String) {
        let t = &self.topics;
        let mut args: Vec<String> = [
            "serve",
            "--brokers",
            &self.bootstrap,
            "--group",
            group,
            "--instance-id",
            id,
            "--http",
            "127.0.0.1:0",
            "--data-topic",
            &t.data,
            "--models-topic",
            &t.models,
            "--results-topic",
            &t.results,
            "--dlq-topic",
            &t.dlq,
            "--instances-topic",
            &t.instances,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.broker.is_none() {
            // Quick group changes after a kill -9 on Apache Kafka (its minimum session
            // timeout). On the embedded broker `serve` sets 6 s itself (the mock completes
            // every rebalance only a second short of it), and the tests run its defaults.
            for p in ["session.timeout.ms=6000", "heartbeat.interval.ms=500"] {
                args.extend(["--consumer-property".to_string(), p.to_string()]);
            }
        }
        args.extend(extra.iter().cloned());
        // The server's usual log, and each statistics write of its model store (the failure
        // suite reads them); a RUST_LOG of the test run wins.
        let log = std::env::var("RUST_LOG").unwrap_or_else(|_| SERVE_LOG.to_string());
        let mut proc = Proc::spawn_env(name, &args, self.path(), &[("RUST_LOG", &log)]);
        let line = proc.wait_line("the serve banner", |l| l.starts_with("flowstage serve:"));
        let http = banner_http(&line);
        let serve = Serve {
            proc,
            id: id.to_string(),
            http,
        };
        (serve, line)
    }

    /// Starts `flowstage provide`: `spec.count` records of `data` looped, `models` cycling, one
    /// every `spec.model_every` records (or each published once), at `spec.rate` (0: full
    /// speed).
    pub fn provide(&self, name: &str, data: &Path, models: &[PathBuf], spec: Provide) -> Proc {
        let mut args: Vec<String> = vec![
            "provide".into(),
            "--brokers".into(),
            self.bootstrap.clone(),
            "--data".into(),
            data.display().to_string(),
            "--rate".into(),
            spec.rate.to_string(),
            "--count".into(),
            spec.count.to_string(),
            "--loop".into(),
            "--data-topic".into(),
            self.topics.data.clone(),
            "--models-topic".into(),
            self.topics.models.clone(),
            "--no-progress".into(),
        ];
        for m in models {
            args.push("--models".into());
            args.push(m.display().to_string());
        }
        if let Some(n) = spec.model_every {
            args.push("--model-every".into());
            args.push(n.to_string());
        }
        Proc::spawn(name, &args, self.path())
    }

    /// A reader of `topic` from the beginning (read_uncommitted).
    pub fn reader(&self, topic: &str) -> TopicReader {
        TopicReader::new(&self.bootstrap, topic, false)
    }
}

/// Creates topics (name, partitions, compacted) on Apache Kafka.
pub fn create_topics(bootstrap: &str, topics: &[(&str, i32, bool)]) {
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
    let results = rt
        .block_on(admin.create_topics(&new, &opts))
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
    }
}

// ---- reading topics --------------------------------------------------------------------------

/// The partition count of `topic`, once its metadata is there (retried until `deadline`).
pub fn topic_partitions(consumer: &BaseConsumer, topic: &str, deadline: Instant) -> i32 {
    loop {
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
            return i32::try_from(n).expect("partition count");
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: topic {topic} has no partitions after {HANG_GUARD:?}"
        );
        // Metadata of a just-created topic: a retry back-off, not a synchronisation.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The sum of a topic's high watermarks (nothing is deleted in a test, the low ones are 0).
pub fn watermark_sum(consumer: &BaseConsumer, topic: &str, partitions: i32) -> i64 {
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            assert_eq!(low, 0, "{topic}-{p}: nothing is deleted in a test");
            high
        })
        .sum()
}

/// Reads every partition of a topic from the beginning (no group, nothing committed).
pub struct TopicReader {
    pub consumer: BaseConsumer,
    pub topic: String,
    pub partitions: i32,
    read_committed: bool,
    /// Per partition, the offset after the last message read.
    next: RefCell<Vec<i64>>,
}

impl TopicReader {
    pub fn new(bootstrap: &str, topic: &str, read_committed: bool) -> TopicReader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", unique("test-reader"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "isolation.level",
                if read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            )
            .create()
            .expect("consumer");
        let partitions = topic_partitions(&consumer, topic, Instant::now() + HANG_GUARD);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        TopicReader {
            consumer,
            topic: topic.to_string(),
            partitions,
            read_committed,
            next: RefCell::new(vec![0; partitions as usize]),
        }
    }

    /// Hands messages to `on` until it returns true.
    pub fn read_until(&self, what: &str, on: impl FnMut(&BorrowedMessage<'_>) -> bool) {
        self.read_until_alive(what, None, on);
    }

    /// Hands messages to `on` until it returns true; fails at once (not after the hang guard)
    /// if `server` exits meanwhile.
    pub fn read_until_alive(
        &self,
        what: &str,
        mut server: Option<&mut Proc>,
        mut on: impl FnMut(&BorrowedMessage<'_>) -> bool,
    ) {
        let deadline = Instant::now() + HANG_GUARD;
        let mut read = 0u64;
        loop {
            if Instant::now() >= deadline {
                // Where a silent server waits: its threads' stacks, when gdb can get them.
                if let Some(p) = server.as_deref_mut() {
                    let stacks = p.stacks();
                    if !stacks.is_empty() {
                        eprintln!(
                            "--- thread stacks of {} (pid {}):\n{stacks}",
                            p.name,
                            p.pid()
                        );
                    }
                    p.keep_log();
                }
                panic!(
                    "hang guard: {what}: not there after {HANG_GUARD:?} (read {read} messages of \
                     {}, up to offsets {:?})",
                    self.topic,
                    self.next.borrow()
                );
            }
            match self.poll() {
                Some(Ok(m)) => {
                    read += 1;
                    if on(&m) {
                        return;
                    }
                }
                None | Some(Err(KafkaError::PartitionEOF(_))) => {
                    if let Some(p) = server.as_deref_mut() {
                        assert!(p.running(), "{what}: the server exited: {}", p.describe());
                    }
                }
                Some(Err(e)) => note(&format!("reading {}: {e} (continuing)", self.topic)),
            }
        }
    }

    /// Hands every message to `on` until each partition was read up to its high watermark as
    /// of the call (call it once the writers have stopped). A read_committed reader never sees
    /// the commit marker a transaction ends with, so there one offset short of it is the end.
    pub fn read_to_end(&self, what: &str, mut on: impl FnMut(&BorrowedMessage<'_>)) {
        let ends: Vec<i64> = (0..self.partitions)
            .map(|p| {
                self.consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .collect();
        let slack = i64::from(self.read_committed);
        let done = |next: &[i64]| {
            next.iter()
                .zip(&ends)
                .all(|(n, end)| *end == 0 || *n + slack >= *end)
        };
        let deadline = Instant::now() + HANG_GUARD;
        while !done(&self.next.borrow()) {
            assert!(
                Instant::now() < deadline,
                "hang guard: {what}: read up to {:?} of {ends:?} after {HANG_GUARD:?} ({})",
                self.next.borrow(),
                self.topic
            );
            match self.poll() {
                Some(Ok(m)) => on(&m),
                None | Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => note(&format!("reading {}: {e} (continuing)", self.topic)),
            }
        }
    }

    /// The next message, noting its offset.
    pub fn poll(&self) -> Option<Result<BorrowedMessage<'_>, KafkaError>> {
        let m = self.consumer.poll(Duration::from_millis(200));
        if let Some(Ok(m)) = &m {
            self.next.borrow_mut()[m.partition() as usize] = m.offset() + 1;
        }
        m
    }

    /// Messages in the topic now (the sum of the partitions' high watermarks).
    pub fn count(&self) -> i64 {
        watermark_sum(&self.consumer, &self.topic, self.partitions)
    }
}

/// A result read from the results topic, by the sequence number in its key.
pub fn parse_result(m: &BorrowedMessage<'_>) -> (u64, ServingResult) {
    let key = m.key().expect("a result has its record's key");
    let r = ServingResult::decode(m.payload().unwrap_or_default()).expect("a ServingResult");
    let seq = std::str::from_utf8(key)
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("result key {key:?} is not a sequence number"));
    (seq, r)
}

/// [`parse_result`], asserting that the result's `record_key` is its Kafka key.
pub fn decode_result(m: &BorrowedMessage<'_>) -> (u64, ServingResult) {
    let (seq, r) = parse_result(m);
    assert_eq!(
        r.record_key,
        m.key().unwrap_or_default(),
        "record_key is the Kafka key"
    );
    (seq, r)
}

// ---- HTTP ------------------------------------------------------------------------------------

/// `GET path` on `addr`: the status code and the body as JSON (`Null` when it is not JSON).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, Json) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut text = String::new();
    s.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"));
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let json = serde_json::from_str(body).unwrap_or(Json::Null);
    (status, json)
}
