//! `flowstage provide` and `flowstage serve` on secured listeners of the Apache Kafka that
//! `scripts/kafka/start.sh` starts besides its plaintext listener:
//!
//! - SASL_PLAINTEXT (mechanism PLAIN), its address in `FLOWSTAGE_KAFKA_SASL_BOOTSTRAP`
//!   (`scripts/test.sh` sets it from `$KAFKA_RUN_DIR/sasl-bootstrap`). The user is
//!   `FLOWSTAGE_KAFKA_SASL_USERNAME` / `FLOWSTAGE_KAFKA_SASL_PASSWORD`, by default the one
//!   `start.sh` creates (flowstage / flowstage-secret).
//! - SSL (TLS, a server certificate from a throwaway CA), its address in
//!   `FLOWSTAGE_KAFKA_SSL_BOOTSTRAP` and the CA certificate's path in `FLOWSTAGE_KAFKA_SSL_CA`
//!   (`scripts/test.sh` sets them from `$KAFKA_RUN_DIR/ssl-bootstrap` and `.../ca.pem`).
//!
//! - SASL_SSL (mechanism SCRAM-SHA-512 over TLS, as managed clusters are usually reached: the
//!   same user and CA), its address in `FLOWSTAGE_KAFKA_SASL_SSL_BOOTSTRAP` (`scripts/test.sh`
//!   sets it from `$KAFKA_RUN_DIR/sasl-ssl-bootstrap`), with `FLOWSTAGE_KAFKA_SSL_CA`.
//!
//! Without its variables a test says SKIPPED.
//!
//! 1. With `--kafka-property` security.protocol, sasl.mechanism, sasl.username and
//!    sasl.password, every client works through the SASL listener: the server creates its
//!    topics (admin client), reads the model (model reader), scores every record (data
//!    consumer, producer), lists itself on `/state/instances` (instances reader and producer)
//!    and keeps the model in the Kafka model store; restarted in exactly-once mode
//!    (transactional producer) it restores the model from the store and scores more records
//!    with it.
//! 2. Without those properties, or with a wrong password, the server does not run silently:
//!    it exits with an error that points at the security settings.
//! 3. With security.protocol=SSL and ssl.ca.location, the same clients work through the TLS
//!    listener (librdkafka verifies the broker's certificate and its address).
//! 4. Against the TLS listener without trusting its CA, or in plaintext, the server exits with
//!    the same error.
//! 5. With SASL_SSL, SCRAM-SHA-512, the user and the CA, the same clients work through the
//!    SASL_SSL listener (TLS verified, then the SCRAM exchange); a wrong password is refused
//!    with the same error.
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

/// A secured listener and the client properties that reach it.
struct Listener {
    /// What it is, for messages: "SASL", "TLS".
    kind: &'static str,
    bootstrap: String,
    properties: Vec<(String, String)>,
}

/// The value of `name` unless unset or blank.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Listener {
    /// `FLOWSTAGE_KAFKA_SASL_BOOTSTRAP` with the user, or `None` and a SKIPPED note.
    fn sasl_from_env(test: &str) -> Option<Listener> {
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
        Some(Listener {
            kind: "SASL",
            bootstrap,
            properties,
        })
    }

    /// `FLOWSTAGE_KAFKA_SSL_BOOTSTRAP` trusting the CA in `FLOWSTAGE_KAFKA_SSL_CA`, or `None`
    /// and a SKIPPED note.
    fn ssl_from_env(test: &str) -> Option<Listener> {
        let (Some(bootstrap), Some(ca)) = (
            env_var("FLOWSTAGE_KAFKA_SSL_BOOTSTRAP"),
            env_var("FLOWSTAGE_KAFKA_SSL_CA"),
        ) else {
            note(&format!(
                "SKIPPED ({test}): FLOWSTAGE_KAFKA_SSL_BOOTSTRAP and FLOWSTAGE_KAFKA_SSL_CA are \
                 not both set; start Apache Kafka with `KAFKA_RUN_DIR=/tmp/k \
                 scripts/kafka/start.sh` and run `export \
                 FLOWSTAGE_KAFKA_SSL_BOOTSTRAP=$(cat /tmp/k/ssl-bootstrap) \
                 FLOWSTAGE_KAFKA_SSL_CA=/tmp/k/ca.pem` (scripts/test.sh does both)"
            ));
            return None;
        };
        // Set but wrong is a broken set-up, not a reason to skip.
        assert!(
            Path::new(&ca).is_file(),
            "FLOWSTAGE_KAFKA_SSL_CA={ca} is not a file (the CA certificate start.sh writes)"
        );
        Some(Listener {
            kind: "TLS",
            bootstrap,
            properties: vec![
                ("security.protocol".into(), "SSL".into()),
                ("ssl.ca.location".into(), ca),
            ],
        })
    }

    /// `FLOWSTAGE_KAFKA_SASL_SSL_BOOTSTRAP` (SCRAM-SHA-512 with the SASL user) trusting the CA
    /// in `FLOWSTAGE_KAFKA_SSL_CA`, or `None` and a SKIPPED note.
    fn sasl_ssl_from_env(test: &str) -> Option<Listener> {
        let Some(bootstrap) = env_var("FLOWSTAGE_KAFKA_SASL_SSL_BOOTSTRAP") else {
            note(&format!(
                "SKIPPED ({test}): FLOWSTAGE_KAFKA_SASL_SSL_BOOTSTRAP is not set; start Apache \
                 Kafka with `KAFKA_RUN_DIR=/tmp/k scripts/kafka/start.sh` and run `export \
                 FLOWSTAGE_KAFKA_SASL_SSL_BOOTSTRAP=$(cat /tmp/k/sasl-ssl-bootstrap) \
                 FLOWSTAGE_KAFKA_SSL_CA=/tmp/k/ca.pem` (scripts/test.sh does both)"
            ));
            return None;
        };
        // The same CA as the TLS listener's, the same user as the SASL listener's.
        let mut tls = Listener::ssl_from_env(test)?;
        let sasl = Listener::sasl_from_env(test)?;
        tls.properties.retain(|(k, _)| k != "security.protocol");
        let mut properties = vec![
            ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ("sasl.mechanism".to_string(), "SCRAM-SHA-512".to_string()),
        ];
        properties.extend(tls.properties);
        properties.extend(
            sasl.properties
                .into_iter()
                .filter(|(k, _)| k == "sasl.username" || k == "sasl.password"),
        );
        Some(Listener {
            kind: "SASL_SSL",
            bootstrap,
            properties,
        })
    }

    /// The properties with `sasl.password` replaced by a wrong one, as `--kafka-property`
    /// flags.
    fn flags_with_a_wrong_password(&self) -> Vec<String> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let v = if k == "sasl.password" {
                    "not-the-password"
                } else {
                    v
                };
                format!("{k}={v}")
            })
            .flat_map(|p| ["--kafka-property".to_string(), p])
            .collect()
    }

    /// `--kafka-property k=v` for each property.
    fn flags(&self) -> Vec<String> {
        self.properties
            .iter()
            .flat_map(|(k, v)| ["--kafka-property".to_string(), format!("{k}={v}")])
            .collect()
    }

    /// A reader of every partition of `topic` from the beginning, through the listener.
    fn reader(&self, topic: &str, read_committed: bool) -> BaseConsumer {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", unique("secured-reader"))
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
        let consumer: BaseConsumer = config
            .create()
            .unwrap_or_else(|e| panic!("{} reader: {e}", self.kind));
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
    listener: &Listener,
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
        listener.bootstrap.clone(),
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
    args.extend(listener.flags());
    let mut p = Proc::spawn(&format!("provide-{}", unique("p")), &args, dir);
    p.wait_success(&format!(
        "flowstage provide through the {} listener",
        listener.kind
    ));
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

/// Waits until the server at `http` has scored `n` records with the regression model (the
/// model reader worked through the listener) and lists instance `id` with that model (the
/// instances reader and the instance records did too).
fn wait_model_and_instance(http: SocketAddr, id: &str, n: u64) {
    let state = wait_http(http, "/state/wine", "the model's usage", |s| {
        s["current"]["usage"].as_u64() == Some(n)
    });
    assert_eq!(state["current"]["name"], REGRESSION, "{state:#}");
    wait_http(http, "/state/instances", "this instance listed", |list| {
        list.as_array().is_some_and(|l| {
            l.iter()
                .any(|i| i["id"] == id && i["models"][WINE] == REGRESSION)
        })
    });
}

/// Log lines of a server that would mean one of its clients could not reach the cluster.
fn assert_no_client_failures(log: &str, who: &str) {
    for needle in [
        "cannot read the model topic",
        "cannot read the instances topic",
        "cannot publish the instance record",
        // Credentials refused ("SASL authentication error: Authentication failed: …"). Not
        // "SASL authentication" alone: librdkafka also logs "SASL authentication error:
        // SaslAuthenticateRequest failed: Local: Broker transport failure" when a connection
        // it is authenticating is torn down, e.g. while the group coordinator moves.
        "Authentication failed",
        "SSL handshake failed",
        "certificate verify failed",
    ] {
        assert!(!log.contains(needle), "{who} logged {needle:?}:\n{log}");
    }
}

#[test]
fn provide_and_serve_through_a_sasl_listener() {
    let Some(sasl) = Listener::sasl_from_env("provide and serve through a SASL listener") else {
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
    wait_model_and_instance(http, "sasl-1", n1);
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
    let Some(sasl) = Listener::sasl_from_env("serve without the SASL properties") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let topics = Topics::new(&unique("sasl-none"));
    let args = refused_serve_args(&sasl.bootstrap, "sasl-none", &topics);
    // A wrong password is refused the same way.
    let mut wrong = args.clone();
    wrong.extend(sasl.flags_with_a_wrong_password());
    assert_refused("serve-no-sasl", &args, dir.path());
    // The error carries librdkafka's reason.
    let log = assert_refused("serve-wrong-password", &wrong, dir.path());
    assert!(
        log.contains("SASL authentication error"),
        "a wrong password: the error does not carry librdkafka's reason:\n{log}"
    );
}

/// The arguments of a `serve` in `group` on `bootstrap` and `topics`, without HTTP and
/// without security settings (the refusal tests add theirs).
fn refused_serve_args(bootstrap: &str, group: &str, topics: &Topics) -> Vec<String> {
    [
        "serve",
        "--brokers",
        bootstrap,
        "--group",
        group,
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
    .collect()
}

/// Runs `flowstage serve` with `args` and panics unless it exits by itself (bounded by the
/// hang guard), unsuccessfully, without its banner, with an error that points at the
/// security settings; returns its stderr.
fn assert_refused(name: &str, args: &[String], dir: &Path) -> String {
    let mut server = Proc::spawn(name, args, dir);
    let status = server.wait_exit("the server's exit without working security settings");
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
    log
}

/// Through `listener`: a server with the Kafka model store (one more client, its own producer
/// and reader) and `extra` flags, the provider, 2,000 records each scored by the model, the
/// model and the instance on the HTTP state, a clean stop, no client failure in its log. Returns
/// the run's topic base name.
fn provide_and_serve_through(
    listener: &Listener,
    name: &str,
    extra: &[&str],
    read_committed: bool,
    dir: &Path,
) -> String {
    let base = unique(name);
    let (csv, alcohol) = synthetic_csv(dir, 700);
    let model = regression_model(dir);
    let topics = Topics::new(&base);
    let n = 2_000u64;
    let mut flags = listener.flags();
    flags.extend(["--store".to_string(), "kafka".to_string()]);
    flags.extend(["--store-topic".to_string(), format!("{base}-store")]);
    flags.extend(extra.iter().map(|s| s.to_string()));
    let id = format!("{name}-1");
    let (mut server, http) = serve(
        &id,
        &listener.bootstrap,
        &unique(&format!("{name}-group")),
        &topics,
        &flags,
        dir,
    );
    let reader = listener.reader(&topics.results, read_committed);
    provide(listener, &topics, (&csv, WINE), &[&model], n, dir);
    let what = format!("through the {} listener", listener.kind);
    let got = read_results(&reader, WINE, n, &mut server, &what);
    assert_regression(&got, &alcohol, &what);
    wait_model_and_instance(http, &id, n);
    let status = server.terminate();
    assert!(
        status.success(),
        "{} server: {}",
        listener.kind,
        server.describe()
    );
    assert_no_client_failures(&server.stderr(), &format!("the {} server", listener.kind));
    base
}

#[test]
fn provide_and_serve_through_a_tls_listener() {
    let Some(tls) = Listener::ssl_from_env("provide and serve through a TLS listener") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    provide_and_serve_through(&tls, "tls", &[], false, dir.path());
}

#[test]
fn serve_on_the_tls_listener_without_trusting_its_ca_stops_with_a_clear_error() {
    let Some(tls) = Listener::ssl_from_env("serve on the TLS listener without its CA") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let topics = Topics::new(&unique("tls-none"));
    let args = refused_serve_args(&tls.bootstrap, "tls-none", &topics);
    // TLS, but the throwaway CA is not among the trusted ones (the system's store, librdkafka's
    // default): the broker's certificate does not verify.
    let mut untrusted = args.clone();
    untrusted.extend([
        "--kafka-property".to_string(),
        "security.protocol=SSL".to_string(),
    ]);
    let log = assert_refused("serve-tls-untrusted", &untrusted, dir.path());
    // The error carries librdkafka's reason.
    assert!(
        log.contains("certificate verify failed"),
        "TLS without the CA: the error does not carry librdkafka's reason:\n{log}"
    );
    // Plaintext against the TLS port: the broker never answers in a way the client accepts.
    assert_refused("serve-tls-plaintext", &args, dir.path());
}

#[test]
fn provide_and_serve_through_a_sasl_ssl_listener_with_scram() {
    let test = "provide and serve through a SASL_SSL listener (SCRAM-SHA-512)";
    let Some(listener) = Listener::sasl_ssl_from_env(test) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    // Exactly-once too: the transactional producer is one more client kind.
    let exactly_once = ["--processing", "exactly-once"];
    let base = provide_and_serve_through(&listener, "scram", &exactly_once, true, dir.path());

    // A wrong password: TLS is fine, the SCRAM exchange fails, and the server says so.
    let mut wrong = refused_serve_args(&listener.bootstrap, "scram-wrong", &Topics::new(&base));
    wrong.extend(listener.flags_with_a_wrong_password());
    let log = assert_refused("serve-scram-wrong-password", &wrong, dir.path());
    assert!(
        log.contains("SASL authentication error"),
        "a wrong SCRAM password: the error does not carry librdkafka's reason:\n{log}"
    );
}
