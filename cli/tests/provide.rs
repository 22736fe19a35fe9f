//! `flowstage broker` and `flowstage provide` as processes: the broker's
//! address on its first stdout line, the provider's records and models read
//! back from the topics with a Kafka consumer, a clean stop on SIGTERM, and
//! clear failures on bad input.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::now_ms;
use flowstage_model::pb::model_descriptor::MessageContent;
use flowstage_model::pb::{ModelDescriptor, SavedModelArchive, WineRecord};
use flowstage_stages::wine::files::{generated_models, read_wine_csv};
use flowstage_stages::wine::parse_record_key;
use prost::Message as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

/// Guards against hangs only; no assertion depends on timing.
const HANG_GUARD: Duration = Duration::from_secs(120);

const BIN: &str = env!("CARGO_BIN_EXE_flowstage");

/// A `flowstage` command without any FLOWSTAGE_* variable of the caller.
fn flowstage() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FLOWSTAGE_") {
            c.env_remove(k);
        }
    }
    c
}

/// `flowstage broker` as a child process, killed when dropped (also when a
/// test fails).
struct Broker {
    child: Child,
    bootstrap: String,
}

impl Broker {
    fn start(partitions: u32) -> Broker {
        let mut child = flowstage()
            .args(["broker", "--partitions", &partitions.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn flowstage broker");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep the pipe open (and drained) while the broker runs.
            for _ in lines {}
        });
        let mut broker = Broker {
            child,
            bootstrap: String::new(),
        };
        match rx.recv_timeout(HANG_GUARD) {
            Ok(Some(Ok(line))) => broker.bootstrap = line.trim().to_string(),
            other => panic!("flowstage broker printed no address: {other:?}"),
        }
        assert!(
            broker.bootstrap.contains(':') && !broker.bootstrap.contains(' '),
            "the first line is the address alone: {:?}",
            broker.bootstrap
        );
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to completion (killing it if the hang guard fires).
fn run(mut cmd: Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flowstage");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(HANG_GUARD) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("hang guard: flowstage still running after {HANG_GUARD:?}");
        }
    }
}

fn provide(broker: &Broker, args: &[&str]) -> Output {
    let mut cmd = flowstage();
    cmd.args(["provide", "--brokers", &broker.bootstrap, "--no-progress"])
        .args(args);
    let out = run(cmd);
    assert!(
        out.status.success(),
        "flowstage provide failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A consumer assigned to every partition of `topic` from the beginning.
fn consumer(bootstrap: &str, topic: &str) -> (BaseConsumer, usize) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "provide-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("metadata");
    let partitions = md.topics()[0].partitions().len();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    (c, partitions)
}

/// A message read back: key, payload, Kafka timestamp.
type Msg = (Vec<u8>, Vec<u8>, i64);

/// Reads `n` messages of `topic`, then checks that no more arrive within a
/// short poll (a bound on the count, not a synchronisation).
fn consume(bootstrap: &str, topic: &str, n: usize) -> Vec<Msg> {
    let (c, _) = consumer(bootstrap, topic);
    let deadline = Instant::now() + HANG_GUARD;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "hang guard: {} of {n} messages of {topic}",
            out.len()
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("message");
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
                m.timestamp().to_millis().unwrap_or(0),
            ));
        }
    }
    if let Some(m) = c.poll(Duration::from_millis(500)) {
        panic!(
            "{topic}: more than {n} messages: {:?}",
            m.map(|m| m.offset())
        );
    }
    out
}

/// Records read back, by sequence number (keys must be 0..n, each once).
fn records_by_seq(msgs: &[Msg]) -> Vec<(WineRecord, i64)> {
    let mut v: Vec<(u64, WineRecord, i64)> = msgs
        .iter()
        .map(|(k, p, t)| {
            (
                parse_record_key(k).expect("a record key"),
                WineRecord::decode(p.as_slice()).expect("a WineRecord"),
                *t,
            )
        })
        .collect();
    v.sort_by_key(|(k, _, _)| *k);
    let keys: Vec<u64> = v.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(keys, (0..msgs.len() as u64).collect::<Vec<_>>());
    v.into_iter().map(|(_, r, t)| (r, t)).collect()
}

fn models_of(msgs: &[Msg]) -> Vec<ModelDescriptor> {
    msgs.iter()
        .map(|(k, p, _)| {
            let d = ModelDescriptor::decode(p.as_slice()).expect("a ModelDescriptor");
            assert_eq!(k.as_slice(), d.data_type.as_bytes(), "keyed by dataType");
            d
        })
        .collect()
}

/// The number of records a summary line reports.
fn summary_records(summary: &str) -> u64 {
    summary
        .strip_prefix("published ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a summary line: {summary:?}"))
}

const CSV: &str = "\"quality\",\"fixed acidity\",\"volatile acidity\",\"citric acid\",\"residual sugar\",\
\"chlorides\",\"free sulfur dioxide\",\"total sulfur dioxide\",\"density\",\"pH\",\"sulphates\",\"alcohol\"
5,7.4,0.7,0,1.9,0.076,11,34,0.9978,3.51,0.56,9.4
5,7.8,0.88,0,2.6,0.098,25,67,0.9968,3.2,0.68,9.8
5,7.8,0.76,0.04,2.3,0.092,15,54,0.997,3.26,0.65,9.8
6,11.2,0.28,0.56,1.9,0.075,17,60,0.998,3.16,0.58,9.8
7,7.3,0.65,0,1.2,0.065,15,21,0.9946,3.39,0.47,10
";

/// The generated models as files of a directory (sorted by file name there).
fn write_generated_models(dir: &Path) -> Vec<ModelDescriptor> {
    let mut models = generated_models();
    for m in &models {
        let Some(MessageContent::Data(bytes)) = &m.message_content else {
            panic!("by value")
        };
        std::fs::write(dir.join(format!("{}.pmml", m.name)), bytes).expect("write model");
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    models
}

#[test]
fn provides_a_csv_and_model_files_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = tmp.path().join("wine.csv");
    std::fs::write(&csv, CSV).expect("write csv");
    let models_dir = tmp.path().join("models");
    std::fs::create_dir(&models_dir).expect("mkdir");
    let models = write_generated_models(&models_dir);
    let rows = read_wine_csv(&csv).expect("the test CSV reads");
    assert_eq!(rows.len(), 5);

    let broker = Broker::start(3);
    let (_, partitions) = consumer(&broker.bootstrap, "mdata");
    assert_eq!(
        partitions, 3,
        "--partitions sets the data topic's partitions"
    );

    let t0 = now_ms();
    let out = provide(
        &broker,
        &[
            "--data",
            &csv.to_string_lossy(),
            "--models",
            &models_dir.to_string_lossy(),
            "--rate",
            "0",
            "--count",
            "12",
            "--loop",
            "--model-every",
            "5",
        ],
    );
    let t1 = now_ms();
    let summary = stdout(&out);
    assert_eq!(summary.lines().count(), 1, "one summary line: {summary:?}");
    assert!(
        summary.starts_with("published 12 records and 3 models in "),
        "{summary:?}"
    );

    let recs = records_by_seq(&consume(&broker.bootstrap, "mdata", 12));
    for (seq, (r, t)) in recs.iter().enumerate() {
        let mut expected = rows[seq % rows.len()].clone();
        // Stamped when sent: the ms, and the µs past it.
        expected.ts = r.ts;
        expected.ts_micros = r.ts_micros;
        assert!((0..1000).contains(&r.ts_micros), "{}", r.ts_micros);
        assert_eq!(r, &expected, "record {seq}");
        assert_eq!(r.data_type, "wine");
        assert_eq!(r.ts, *t, "ts is the Kafka timestamp");
        assert!((t0..=t1).contains(&r.ts), "ts {} within the run", r.ts);
    }
    // Models before records 0, 5 and 10, round the sorted list, by value.
    let msgs = consume(&broker.bootstrap, "models", 3);
    let got = models_of(&msgs);
    for (k, (m, (_, _, ts))) in got.iter().zip(&msgs).enumerate() {
        let want = &models[k % models.len()];
        assert_eq!(m.name, want.name);
        assert_eq!(m.description, format!("from {}.pmml", want.name));
        assert_eq!(m.message_content, want.message_content);
        assert_eq!(m.data_type, "wine");
        let first_after = &recs[k * 5];
        assert!(
            *ts <= first_after.1,
            "model {k} ({ts}) published before record {} ({})",
            k * 5,
            first_after.1
        );
    }
}

#[test]
fn stops_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = tmp.path().join("wine.csv");
    std::fs::write(&csv, CSV).expect("write csv");
    let broker = Broker::start(2);

    let mut cmd = flowstage();
    cmd.args([
        "provide",
        "--brokers",
        &broker.bootstrap,
        "--no-progress",
        "--data",
        &csv.to_string_lossy(),
        "--loop",
        "--rate",
        "500",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn provide");
    /// Kills the child if the test fails before it was waited for.
    struct Kill(Option<u32>);
    impl Drop for Kill {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                let _ = Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
    let pid = child.id();
    let mut guard = Kill(Some(pid));

    // Once records arrive, ask it to stop.
    {
        let (c, _) = consumer(&broker.bootstrap, "mdata");
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            assert!(Instant::now() < deadline, "hang guard: no record arrived");
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                m.expect("message");
                break;
            }
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(HANG_GUARD)
        .expect("hang guard: provide did not stop on SIGTERM")
        .expect("wait");
    guard.0 = None; // reaped: its pid is no longer ours
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = stdout(&out);
    assert!(summary.contains("stopped on request"), "{summary:?}");
    let n = summary_records(summary.trim());
    assert!(n >= 1);
    // Every record it reports acknowledged is in the topic, keys 0..n, each once.
    let recs = records_by_seq(&consume(&broker.bootstrap, "mdata", n as usize));
    assert_eq!(recs.len() as u64, n);
}

#[test]
fn the_tutorial_files_by_value_and_by_location() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/wine");
    let csv = dir.join("winequality_red.csv");
    if !csv.is_file() {
        eprintln!(
            "SKIPPED the_tutorial_files_by_value_and_by_location: {} is absent",
            dir.display()
        );
        return;
    }
    let rows = read_wine_csv(&csv).expect("the tutorial CSV reads");
    assert_eq!(rows.len(), 1599);

    // By value: records looped past the end of the file, a model every 250.
    let broker = Broker::start(6);
    let out = provide(
        &broker,
        &[
            "--data",
            &csv.to_string_lossy(),
            "--models",
            &dir.to_string_lossy(),
            "--rate",
            "0",
            "--count",
            "2000",
            "--loop",
            "--model-every",
            "250",
        ],
    );
    assert!(
        stdout(&out).starts_with("published 2000 records and 8 models"),
        "{}",
        stdout(&out)
    );
    let recs = records_by_seq(&consume(&broker.bootstrap, "mdata", 2000));
    for seq in [0, 1, 1598, 1599, 1999] {
        let mut expected = rows[seq % 1599].clone();
        expected.ts = recs[seq].0.ts;
        expected.ts_micros = recs[seq].0.ts_micros;
        assert_eq!(recs[seq].0, expected, "record {seq}");
    }
    let models = models_of(&consume(&broker.bootstrap, "models", 8));
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names[0], "optimized_WineQuality");
    assert_eq!(names[1], "saved");
    assert!(
        names[2..].iter().all(|n| n.starts_with("winequality")),
        "{names:?}"
    );
    let Some(MessageContent::Data(graph)) = &models[0].message_content else {
        panic!("by value")
    };
    assert_eq!(
        graph,
        &std::fs::read(dir.join("optimized_WineQuality.pb")).expect("read")
    );
    let Some(MessageContent::Data(archive)) = &models[1].message_content else {
        panic!("by value")
    };
    let archive = SavedModelArchive::decode(archive.as_slice()).expect("a SavedModelArchive");
    assert_eq!(
        archive.saved_model,
        std::fs::read(dir.join("saved/1/saved_model.pb")).expect("read")
    );
    assert_eq!(archive.variables_data.len(), 1);
    drop(broker);

    // By location, models only: each once, in order, then it ends by itself.
    let broker = Broker::start(1);
    let out = provide(
        &broker,
        &[
            "--models",
            &dir.to_string_lossy(),
            "--by-location",
            "--model-interval",
            "0.01",
        ],
    );
    assert!(
        stdout(&out).starts_with("published 0 records and 9 models"),
        "{}",
        stdout(&out)
    );
    let models = models_of(&consume(&broker.bootstrap, "models", 9));
    let locations: BTreeSet<String> = models
        .iter()
        .map(|m| match &m.message_content {
            Some(MessageContent::Location(l)) => l.clone(),
            other => panic!("by location: {other:?}"),
        })
        .collect();
    assert!(locations.contains("saved/1"), "{locations:?}");
    assert!(locations.contains("optimized_WineQuality.pb"));
    assert!(locations.contains("winequalityLinearRegression.pmml"));
    assert_eq!(locations.len(), 9);
}

/// Runs `flowstage provide ARGS` expecting failure; returns stderr.
fn provide_fails(args: &[&str], code: Option<i32>) -> String {
    let mut cmd = flowstage();
    cmd.args(["provide", "--brokers", "127.0.0.1:1", "--no-progress"])
        .args(args);
    let out = run(cmd);
    assert!(!out.status.success(), "must fail: {args:?}");
    if code.is_some() {
        assert_eq!(out.status.code(), code, "{args:?}");
    }
    assert!(out.stdout.is_empty(), "nothing on stdout: {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_files_and_flags_fail_clearly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        "7.4;0.7;0;1.9;0.076;11;34;0.9978;3.51;0.56;9.4;5\n\
         7.8;0.88;0;2.6;0.098;25;67;0.9968;3.2;0.68;9.8;5\n\
         7.8;0.76;0.04;2.3;oops;15;54;0.997;3.26;0.65;9.8;5\n",
    )
    .expect("write");
    let bad_s = bad.to_string_lossy().into_owned();
    let err = provide_fails(&["--data", &bad_s], Some(1));
    assert!(err.contains(&format!("{bad_s}:3:")), "file:line in {err:?}");
    assert!(err.contains("column 5 (chlorides)"), "{err:?}");

    let err = provide_fails(&[], Some(1));
    assert!(err.contains("nothing to publish"), "{err:?}");

    let notes = tmp.path().join("notes.txt");
    std::fs::write(&notes, "x").expect("write");
    let err = provide_fails(&["--models", &notes.to_string_lossy()], Some(1));
    assert!(err.contains("not a model file"), "{err:?}");

    let missing: PathBuf = tmp.path().join("missing.csv");
    let err = provide_fails(&["--data", &missing.to_string_lossy()], Some(1));
    assert!(err.contains("missing.csv"), "{err:?}");

    // Flags clap rejects exit with its usage code.
    let err = provide_fails(&["--rate", "fast"], Some(2));
    assert!(err.contains("--rate"), "{err:?}");
    let err = provide_fails(&["--model-every", "0"], Some(2));
    assert!(err.contains("--model-every"), "{err:?}");
    let err = provide_fails(&["--model-interval=-1"], Some(2));
    assert!(err.contains("--model-interval"), "{err:?}");
    let err = provide_fails(&["--count", "0"], Some(2));
    assert!(err.contains("--count"), "{err:?}");

    // Settings refused before anything is published (the banner is not printed).
    let good = tmp.path().join("good.csv");
    std::fs::write(&good, "7.4;0.7;0;1.9;0.076;11;34;0.9978;3.51;0.56;9.4;5\n").expect("write");
    let good_s = good.to_string_lossy().into_owned();
    let model = tmp.path().join("m.pmml");
    std::fs::write(&model, "<PMML/>").expect("write");
    let model_s = model.to_string_lossy().into_owned();
    for (flags, named) in [
        (vec!["--rate", "18446744073709551615"], "rate"),
        (vec!["--model-interval", "1e19"], "model_interval"),
        (
            vec!["--max-in-flight", "18446744073709551615"],
            "max_in_flight",
        ),
        (vec!["--data-topic", "a b"], "data_topic"),
        (vec!["--models-topic", ""], "models_topic"),
        (vec!["--data-type", "  "], "data_type"),
        (vec!["--model-every", "5"], "--model-every"),
    ] {
        // `--model-every` with models and no records.
        let data: &[&str] = if named == "--model-every" {
            &["--models", &model_s]
        } else {
            &["--data", &good_s]
        };
        let err = provide_fails(&[data, &flags[..]].concat(), Some(1));
        assert!(err.contains(named), "{flags:?}: {err:?}");
        assert!(!err.contains("publishing"), "{flags:?}: {err:?}");
    }
    // One of the two ways of pacing models from the environment: named as such.
    let mut cmd = flowstage();
    cmd.args(["provide", "--brokers", "127.0.0.1:1", "--no-progress"])
        .args([
            "--data",
            &good_s,
            "--models",
            &model_s,
            "--model-interval",
            "2",
        ])
        .env("FLOWSTAGE_MODEL_EVERY", "5");
    let out = run(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("(FLOWSTAGE_MODEL_EVERY) and --model-interval") && err.contains("both set"),
        "{err}"
    );

    let empty = tmp.path().join("empty.pmml");
    std::fs::write(&empty, "").expect("write");
    let err = provide_fails(&["--models", &empty.to_string_lossy()], Some(1));
    assert!(err.contains("an empty model file"), "{err:?}");

    // A file that is not a model of its kind, by value and by location: refused
    // before anything is published (every server would fail to load it).
    let junk = tmp.path().join("junk.pmml");
    std::fs::write(&junk, b"\x89PNG\r\n\x1a\n not a PMML document").expect("write");
    let junk_s = junk.to_string_lossy().into_owned();
    for by_location in [false, true] {
        let mut flags = vec!["--data", &good_s, "--models", &junk_s];
        if by_location {
            flags.push("--by-location");
        }
        let err = provide_fails(&flags, Some(1));
        assert!(err.contains("model junk.pmml does not load"), "{err:?}");
        assert!(!err.contains("publishing"), "{err:?}");
    }
}
