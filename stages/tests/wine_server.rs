//! The wine model server on the embedded broker, in-process: records and a
//! model in, one result per record out, undecodable records to the dead-letter
//! topic, the instance listed on `/state/instances`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use flowstage_model::pb::model_descriptor::{MessageContent, ModelType};
use flowstage_model::pb::{ModelDescriptor, ServingResult, WineRecord};
use flowstage_stages::kafka::*;
use flowstage_stages::wine::instances::DEFAULT_INSTANCES_TOPIC;
use flowstage_stages::wine::server::{Server, ServerConfig, DLQ_SOURCE_HEADER};
use flowstage_stages::wine::{record_key, Topics, DLQ_REASON_HEADER};
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

const HANG_GUARD: Duration = Duration::from_secs(180);

async fn guard<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(HANG_GUARD, f).await {
        Ok(x) => x,
        Err(_) => panic!("hang guard: still waiting for {what} after {HANG_GUARD:?}"),
    }
}

/// A linear regression on alcohol: score = 1 + 0.5 * alcohol.
const PMML: &str = r#"<?xml version="1.0"?>
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

/// The embedded broker with the pipeline's topics, `partitions` for data and results.
fn pipeline_broker(topics: &Topics, partitions: i32) -> EmbeddedBroker {
    EmbeddedBroker::start(
        EmbeddedBrokerConfig::new(1)
            .topic(&topics.data, partitions)
            .topic(&topics.models, 1)
            .topic(&topics.results, partitions)
            .topic(&topics.dlq, 1)
            .topic(DEFAULT_INSTANCES_TOPIC, 1),
    )
    .expect("embedded broker")
}

/// [`PMML`] as the wine model `alcohol-regression`, by value.
fn alcohol_model() -> ModelDescriptor {
    ModelDescriptor {
        name: "alcohol-regression".into(),
        description: "test".into(),
        data_type: "wine".into(),
        modeltype: ModelType::Pmml as i32,
        message_content: Some(MessageContent::Data(PMML.as_bytes().to_vec())),
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8(buf).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

fn consumer(bootstrap: &str, topic: &str) -> StreamConsumer<ClientLog> {
    let c: StreamConsumer<ClientLog> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("check-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create_with_context(ClientLog)
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

/// The microseconds past `ts` of record `seq` in the dead-letter test.
fn micros_of(seq: u64) -> i32 {
    i32::try_from(seq % 1000).unwrap_or(0)
}

/// The microseconds past `ts` of the records [`send_records`] sends.
const TS_MICROS: i32 = 437;

/// Sends one wine record per `(key, dataType)`, alcohol 10, created at
/// 1 ms and [`TS_MICROS`] µs past the epoch.
async fn send_records(producer: &KafkaProducer, topic: &str, records: &[(u64, &str)]) {
    for &(seq, data_type) in records {
        let record = WineRecord {
            alcohol: 10.0,
            data_type: data_type.into(),
            ts: 1,
            ts_micros: TS_MICROS,
            ..Default::default()
        };
        producer
            .send(ProducerRecord::new(topic, record.encode_to_vec()).key(record_key(seq)))
            .await
            .expect("record sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scores_every_record_once_and_sends_bad_ones_to_the_dead_letter_topic() {
    let topics = Topics::default();
    let broker = pipeline_broker(&topics, 4);
    let bootstrap = broker.bootstrap_servers().to_string();

    let mut config = ServerConfig::new(&bootstrap);
    config.http = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.instance_id = "test-instance".into();
    config.heartbeat = Duration::from_millis(200);
    let server = Server::start(config).await.expect("server starts");
    let addr = server.http_addr().expect("HTTP address");
    let state = server.state().clone();
    let directory = server.instances().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));

    // The model first, then the records (the server reads the model topic on
    // its own consumer, so wait until the model serves).
    let producer = KafkaProducer::new(&ProducerSettings::new(&bootstrap)).expect("producer");
    let model = alcohol_model();
    producer
        .send(ProducerRecord::new(&topics.models, model.encode_to_vec()).key("wine"))
        .await
        .expect("model sent");
    guard(
        "the model to serve",
        state.wait_for(|s| s.current_model("wine") == Some("alcohol-regression")),
    )
    .await;

    // 1,000 records; every 50th is not a WineRecord, every 75th has no dataType.
    let n = 1_000u64;
    let mut good = BTreeMap::new();
    let mut bad = BTreeMap::new();
    for seq in 0..n {
        let alcohol = 8.0 + (seq % 70) as f64 / 10.0;
        let payload = if seq % 50 == 7 {
            bad.insert(seq, "not a WineRecord");
            vec![0xff, 0xff, 0xff, 0xff]
        } else if seq % 75 == 11 {
            bad.insert(seq, "without dataType");
            WineRecord {
                alcohol,
                ..Default::default()
            }
            .encode_to_vec()
        } else {
            good.insert(seq, 1.0 + 0.5 * alcohol);
            WineRecord {
                alcohol,
                data_type: "wine".into(),
                ts: 1,
                ts_micros: micros_of(seq),
                ..Default::default()
            }
            .encode_to_vec()
        };
        producer
            .send(ProducerRecord::new(&topics.data, payload).key(record_key(seq)))
            .await
            .expect("record sent");
    }

    // Every good record: exactly one result, scored by the model.
    let results = consumer(&bootstrap, &topics.results);
    let mut seen = BTreeMap::new();
    guard("all results", async {
        while seen.len() < good.len() {
            let m = results.recv().await.expect("result");
            let key = String::from_utf8(m.key().expect("result key").to_vec()).expect("utf-8");
            let r = ServingResult::decode(m.payload().expect("payload")).expect("ServingResult");
            assert!(r.processed, "record {key}: {}", r.error);
            assert_eq!(r.model_name, "alcohol-regression");
            let seq: u64 = key.parse().expect("numeric key");
            let expected = good.get(&seq).expect("a result only for good records");
            match r.score {
                Some(flowstage_model::pb::serving_result::Score::Value(v)) => {
                    assert!(
                        (v - expected).abs() < 1e-9,
                        "record {seq}: {v} != {expected}"
                    )
                }
                other => panic!("record {seq}: score {other:?}"),
            }
            // The record's creation time, to the µs.
            assert_eq!((r.record_ts, r.record_ts_micros), (1, micros_of(seq)));
            assert!(seen.insert(seq, ()).is_none(), "record {seq}: two results");
        }
    })
    .await;

    // Every bad record: in the dead-letter topic with its reason and origin.
    let dlq = consumer(&bootstrap, &topics.dlq);
    let mut dead = BTreeSet::new();
    guard("all dead letters", async {
        while dead.len() < bad.len() {
            let m = dlq.recv().await.expect("dead letter");
            let seq: u64 = std::str::from_utf8(m.key().expect("key"))
                .expect("utf-8")
                .parse()
                .expect("numeric key");
            let headers = m.headers().expect("headers");
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default()
            };
            let reason = header(DLQ_REASON_HEADER);
            assert!(
                reason.contains(bad.get(&seq).expect("only bad records")),
                "record {seq}: reason {reason:?}"
            );
            assert!(header(DLQ_SOURCE_HEADER).starts_with("mdata/"));
            assert!(dead.insert(seq), "record {seq}: two dead letters");
        }
    })
    .await;

    // The instance lists itself with its four partitions.
    let listed = guard(
        "the instance record with its partitions",
        directory.wait_for(|l| {
            l.iter()
                .any(|i| i.info.id == "test-instance" && i.info.partitions.len() == 4)
        }),
    )
    .await;
    assert_eq!(listed.len(), 1);
    let (status, body) = get(addr, "/state/instances").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let listed = &v[0];
    assert_eq!(listed["id"], "test-instance");
    assert_eq!(listed["partitions"].as_array().map(Vec::len), Some(4));
    assert_eq!(listed["this"], true);
    assert_eq!(listed["http"], addr.to_string());

    let _ = stop_tx.send(());
    let summary = guard("the server to stop", running)
        .await
        .expect("server task")
        .expect("server result");
    assert_eq!(summary.records, n);
    assert_eq!(summary.results, good.len() as u64);
    assert_eq!(summary.dead_letters, bad.len() as u64);
    assert_eq!(summary.commits.marked, n, "every offset committed");
}

/// A stored model that does not load does not hide the model topic's message
/// its position covers: the dataType gets that model, and every record is
/// scored (they were all "no model" until a newer model message came).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stored_model_that_does_not_load_does_not_hide_the_topics_model() {
    use flowstage_stages::store::{
        LocalStore, ModelPosition, ModelStore, StoreConfig, StoredModel,
    };
    let topics = Topics::default();
    let broker = pipeline_broker(&topics, 2);
    let bootstrap = broker.bootstrap_servers().to_string();
    let producer = KafkaProducer::new(&ProducerSettings::new(&bootstrap)).expect("producer");
    let good = alcohol_model();
    producer
        .send(ProducerRecord::new(&topics.models, good.encode_to_vec()).key("wine"))
        .await
        .expect("model sent");
    // The store says the model at models/0/0 was this one, which does not load.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    LocalStore::open(&path)
        .expect("open the store")
        .put_model(&StoredModel {
            data_type: "wine".into(),
            descriptor: ModelDescriptor {
                name: "broken".into(),
                message_content: Some(MessageContent::Data(b"<PMML>not really</PMML>".to_vec())),
                ..good.clone()
            },
            position: Some(ModelPosition {
                topic: topics.models.clone(),
                partition: 0,
                offset: 0,
            }),
            stored_ms: 1,
        })
        .expect("put the model");

    let mut config = ServerConfig::new(&bootstrap);
    config.http = None;
    config.store = StoreConfig::Local { path };
    let server = Server::start(config).await.expect("server starts");
    let state = server.state().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));
    guard(
        "the topic's model to serve",
        state.wait_for(|s| s.current_model("wine") == Some("alcohol-regression")),
    )
    .await;
    let n = 20u64;
    let records: Vec<(u64, &str)> = (0..n).map(|seq| (seq, "wine")).collect();
    send_records(&producer, &topics.data, &records).await;
    let results = consumer(&bootstrap, &topics.results);
    for _ in 0..n {
        let m = guard("a result", results.recv()).await.expect("result");
        let r = ServingResult::decode(m.payload().expect("payload")).expect("ServingResult");
        assert!(r.processed, "{}", r.error);
        assert_eq!(r.model_name, "alcohol-regression");
    }
    let s = state.snapshot();
    assert_eq!(s.totals.no_model, 0);
    assert_eq!(s.data_types["wine"].load_failures, 1, "the stored model");
    let _ = stop_tx.send(());
    guard("the server's stop", running)
        .await
        .expect("task")
        .expect("clean stop");
}

/// A model topic whose last record is a transaction marker (a transactional
/// writer published the model), on Apache Kafka (the mock cluster writes no
/// markers): the server still reads it to its end at start-up and scores with
/// the model, and a record of a dataType without any model is answered "no
/// model" instead of waiting for the marker, which is never delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_topic_ending_with_a_transaction_marker_is_read_to_its_end() {
    let bootstrap = match std::env::var("FLOWSTAGE_KAFKA_BOOTSTRAP") {
        Ok(b) if !b.trim().is_empty() => b,
        _ => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (wine_server, transaction marker): FLOWSTAGE_KAFKA_BOOTSTRAP is not set"
            );
            return;
        }
    };
    let unique = common::unique();
    let topics = Topics {
        data: format!("mdata-{unique}"),
        models: format!("models-{unique}"),
        results: format!("results-{unique}"),
        dlq: format!("dlq-{unique}"),
    };
    // The model, in a committed transaction: the topic ends with its marker.
    let (b, t) = (bootstrap.clone(), topics.models.clone());
    let payload = alcohol_model().encode_to_vec();
    tokio::task::spawn_blocking(move || common::write_in_a_transaction(&b, &t, "wine", &payload))
        .await
        .expect("task");

    let mut config = ServerConfig::new(&bootstrap);
    config.http = None;
    config.group_id = format!("serve-{unique}");
    config.instances_topic = format!("instances-{unique}");
    config.topics = topics.clone();
    config.create_topics = Some(1);
    let server = guard("the server's start", Server::start(config))
        .await
        .expect("server starts");
    let state = server.state().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));
    let producer = KafkaProducer::new(&ProducerSettings::new(&bootstrap)).expect("producer");
    send_records(&producer, &topics.data, &[(0, "wine"), (1, "beer")]).await;
    let results = consumer(&bootstrap, &topics.results);
    let mut by_key = BTreeMap::new();
    guard("both results", async {
        while by_key.len() < 2 {
            let m = results.recv().await.expect("result");
            let r = ServingResult::decode(m.payload().expect("payload")).expect("ServingResult");
            by_key.insert(m.key().map(<[u8]>::to_vec), r);
        }
    })
    .await;
    let wine = &by_key[&Some(record_key(0))];
    assert!(wine.processed, "{}", wine.error);
    assert_eq!(wine.model_name, "alcohol-regression");
    let beer = &by_key[&Some(record_key(1))];
    assert!(!beer.processed);
    assert!(beer.error.contains("no model"), "{}", beer.error);
    // Scored or not, a result carries its record's creation time to the µs.
    for r in [wine, beer] {
        assert_eq!((r.record_ts, r.record_ts_micros), (1, TS_MICROS));
    }
    guard(
        "the \"no model\" count",
        state.wait_for(|s| s.totals.no_model == 1 && s.totals.records == 2),
    )
    .await;
    let _ = stop_tx.send(());
    guard("the server's stop", running)
        .await
        .expect("task")
        .expect("clean stop");
}
