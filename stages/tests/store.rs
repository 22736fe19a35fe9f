//! Model stores: round trips (model, statistics with the histogram, history),
//! overwrites, corrupted entries, and the serving stage restoring from a store.
//! The Kafka store runs on the embedded mock cluster, and on Apache Kafka when
//! `FLOWSTAGE_KAFKA_BOOTSTRAP` is set.

use std::sync::Arc;
use std::time::Duration;

use flowstage::prelude::*;
use flowstage_model::pb::{ModelDescriptor, WineRecord};
use flowstage_model::{FieldDesc, Model, ModelError, ModelType, Record, Score, Value};
use flowstage_stages::kafka::{EmbeddedBroker, EmbeddedBrokerConfig};
use flowstage_stages::serving::*;
use flowstage_stages::store::*;
use hdrhistogram::Histogram;

mod common;

/// Guard against hangs only (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(60);

fn descriptor(name: &str, data_type: &str, bytes: usize) -> ModelDescriptor {
    ModelDescriptor {
        name: name.into(),
        description: format!("{name} for {data_type}"),
        data_type: data_type.into(),
        modeltype: 0,
        // Content that is not all the same byte: a real copy is needed.
        message_content: Some(flowstage_model::pb::model_descriptor::MessageContent::Data(
            (0..bytes).map(|i| (i % 251) as u8).collect(),
        )),
    }
}

fn histogram(values: &[u64]) -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("bounds");
    for &v in values {
        h.record(v).expect("in range");
    }
    h
}

fn stats(name: &str, values: &[u64]) -> ModelStats {
    let h = histogram(values);
    let mut s = ModelStats::new(name, "pmml");
    s.description = "d".into();
    s.usage = values.len() as u64;
    s.errors = 1;
    s.total_ns = values.iter().sum();
    s.min_ns = values.iter().min().copied();
    s.max_ns = values.iter().max().copied();
    s.mean_ns = Some(s.total_ns as f64 / values.len() as f64);
    s.p50_ns = Some(h.value_at_quantile(0.5));
    s.p90_ns = Some(h.value_at_quantile(0.9));
    s.p99_ns = Some(h.value_at_quantile(0.99));
    s.p999_ns = Some(h.value_at_quantile(0.999));
    s.load_ns = 1234;
    s.swap_latency_ns = Some(5678);
    s.histogram = Some(Arc::new(h));
    s
}

fn entry(dt: &str, name: &str, offset: i64, values: &[u64]) -> StoredEntry {
    let mut old = stats(&format!("{name}-old"), &[7, 8, 9]);
    old.histogram = None;
    StoredEntry {
        model: StoredModel {
            data_type: dt.into(),
            descriptor: descriptor(name, dt, 300),
            position: Some(ModelPosition {
                topic: "models".into(),
                partition: 0,
                offset,
            }),
            stored_ms: 1_000,
        },
        stats: Some(StoredStats {
            data_type: dt.into(),
            current: stats(name, values),
            history: vec![HistoryEntry {
                stats: old,
                replaced_ms: 900,
                replaced_by: name.into(),
            }],
            stored_ms: 2_000,
        }),
    }
}

fn put(store: &dyn ModelStore, e: &StoredEntry) {
    store.put_model(&e.model).expect("put model");
    if let Some(s) = &e.stats {
        store.put_stats(std::slice::from_ref(s)).expect("put stats");
    }
}

/// Round trip, overwrite, a model replaced without statistics yet, and a
/// corrupted entry skipped: the checks every store must pass.
fn check_store(store: &dyn ModelStore) {
    let wine = entry("wine", "tree", 3, &[100, 200, 300, 400, 50_000]);
    let beer = entry("beer", "forest", 5, &[10, 20, 30]);
    put(store, &wine);
    put(store, &beer);
    let r = store.load().expect("load");
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    assert_eq!(
        r.entries,
        vec![beer.clone(), wine.clone()],
        "sorted by dataType"
    );
    // The histogram came back: the same percentiles as the original.
    let back = r.entries[1].stats.as_ref().expect("stats");
    let h = back.current.histogram.as_deref().expect("histogram");
    assert_eq!(h.len(), 5);
    assert_eq!(
        h.value_at_quantile(0.99),
        histogram(&[100, 200, 300, 400, 50_000]).value_at_quantile(0.99)
    );
    assert!(
        h.value_at_quantile(0.99) >= 49_000,
        "p99 {}",
        h.value_at_quantile(0.99)
    );

    // Overwrite: the latest value of each key wins.
    let wine2 = entry("wine", "tree", 3, &[1, 2, 3, 4, 5, 6]);
    put(store, &wine2);
    let r = store.load().expect("load");
    assert_eq!(r.entries, vec![beer.clone(), wine2.clone()]);

    // A new model without statistics yet: the old model's statistics are not
    // given to it.
    let mut linear = entry("wine", "linear", 9, &[1]);
    linear.stats = None;
    put(store, &linear);
    let r = store.load().expect("load");
    assert_eq!(r.entries, vec![beer.clone(), linear.clone()]);

    // A corrupted entry is skipped with a typed error; the others load.
    store
        .put_raw(&[(model_key("broken"), vec![0xff, 0xff, 0xff, 0xff, 0x01])])
        .expect("put raw");
    store
        .put_raw(&[(stats_key("beer"), b"\x08\x07garbage".to_vec())])
        .expect("put raw");
    let r = store.load().expect("load with corrupted entries");
    assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
    assert!(r
        .skipped
        .iter()
        .all(|e| matches!(e, StoreError::Corrupt { .. })));
    let mut beer_no_stats = beer.clone();
    beer_no_stats.stats = None;
    assert_eq!(r.entries, vec![beer_no_stats, linear]);
}

#[test]
fn memory_store_round_trip() {
    let store = MemoryStore::new();
    assert!(store.load().expect("load").entries.is_empty());
    check_store(&store);
}

#[test]
fn local_store_round_trip_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("models.redb");
    {
        let store = LocalStore::open(&path).expect("open");
        assert!(store.load().expect("load").entries.is_empty());
        check_store(&store);
    }
    // Reopened (a restart): the same content.
    let store = LocalStore::open(&path).expect("reopen");
    let r = store.load().expect("load");
    assert_eq!(r.entries.len(), 2);
    assert_eq!(r.skipped.len(), 2);
    assert_eq!(r.entries[1].model.descriptor.name, "linear");
}

#[test]
fn a_file_that_is_not_a_database_is_a_typed_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("not-a-db.redb");
    std::fs::write(
        &path,
        b"this is not a redb file at all, but it is long enough to look at",
    )
    .expect("write");
    match LocalStore::open(&path) {
        Err(StoreError::Local { .. }) => {}
        other => panic!("expected a Local error, got {other:?}"),
    }
    // Never overwritten.
    assert!(std::fs::read(&path)
        .expect("read")
        .starts_with(b"this is not"));
}

/// A damaged database file (single flipped bytes in its pages) is a typed
/// error or skipped entries, never a panic of the caller: redb panicked on
/// some of these (an invalid page type, a slice out of range).
#[test]
fn a_damaged_database_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clean = dir.path().join("clean.redb");
    {
        let store = LocalStore::open(&clean).expect("open");
        put(&store, &entry("wine", "tree", 3, &[100, 200, 300]));
        put(&store, &entry("beer", "forest", 5, &[10, 20]));
    }
    let bytes = std::fs::read(&clean).expect("read");
    let mut failed = 0;
    // Every 32nd byte past the file's first page, each flipped alone.
    for at in (4096 + 16..bytes.len()).step_by(32) {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x5a;
        let path = dir.path().join("damaged.redb");
        std::fs::write(&path, &damaged).expect("write");
        let loaded = std::panic::catch_unwind(|| LocalStore::open(&path).and_then(|s| s.load()));
        match loaded {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => failed += 1,
            Err(_) => panic!("a flipped byte at {at} panicked the caller"),
        }
    }
    assert!(failed > 0, "no flipped byte was noticed");
}

/// `big`: the size of a descriptor by value that must go through (the mock
/// cluster keeps at most 5 MiB per partition).
async fn kafka_round_trip(bootstrap: &str, topic: &str, big_bytes: usize) {
    let store = KafkaStore::open(bootstrap, topic, DEFAULT_MAX_MESSAGE_BYTES)
        .await
        .expect("open");
    let store = Arc::new(store);
    let s = store.clone();
    tokio::task::spawn_blocking(move || check_store(&*s))
        .await
        .expect("checks");
    // Another instance (a new client) restores the same by reading the topic.
    let other = KafkaStore::open(bootstrap, topic, DEFAULT_MAX_MESSAGE_BYTES)
        .await
        .expect("open again");
    let r = tokio::task::spawn_blocking(move || other.load())
        .await
        .expect("task")
        .expect("load");
    assert_eq!(r.entries.len(), 2);
    assert_eq!(r.entries[1].model.descriptor.name, "linear");
    // Big descriptors by value (a SavedModel), over Kafka's default 1 MB.
    let mut big = entry("big", "saved", 1, &[1]);
    big.model.descriptor = descriptor("saved", "big", big_bytes);
    let s = store.clone();
    let b = big.clone();
    tokio::task::spawn_blocking(move || put(&*s, &b))
        .await
        .expect("put big");
    let s = store.clone();
    let r = tokio::task::spawn_blocking(move || s.load())
        .await
        .expect("task")
        .expect("load");
    assert_eq!(
        r.entries.iter().find(|e| e.model.data_type == "big"),
        Some(&big)
    );
    // Over the limit: a typed error, nothing written.
    let small = KafkaStore::open(bootstrap, topic, 100_000)
        .await
        .expect("open");
    let r = tokio::task::spawn_blocking(move || small.put_model(&big.model))
        .await
        .expect("task");
    assert!(matches!(r, Err(StoreError::TooLarge { .. })), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_store_round_trip_on_the_mock_cluster() {
    let broker = EmbeddedBroker::start(EmbeddedBrokerConfig::new(1)).expect("mock cluster");
    tokio::time::timeout(
        PATIENCE,
        kafka_round_trip(
            broker.bootstrap_servers(),
            "store-changelog",
            2 * 1024 * 1024,
        ),
    )
    .await
    .expect("in time");
}

/// On a changelog with several partitions (the mock cluster's auto-created
/// topics have 4), the entries the store writes win over a stale copy of one
/// that another writer put on another partition after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_on_another_partition_does_not_win() {
    let broker = EmbeddedBroker::start(EmbeddedBrokerConfig::new(1)).expect("mock cluster");
    let bootstrap = broker.bootstrap_servers().to_string();
    let store = Arc::new(
        KafkaStore::open(&bootstrap, "store-parts", DEFAULT_MAX_MESSAGE_BYTES)
            .await
            .expect("open"),
    );
    let s = store.clone();
    let (stale, newest) = tokio::task::spawn_blocking(move || {
        let old = entry("wine", "old", 1, &[1]);
        put(&*s, &old);
        let stale = s.load_raw().expect("load");
        put(&*s, &entry("wine", "new", 2, &[2]));
        (stale, s.load().expect("load"))
    })
    .await
    .expect("task");
    assert_eq!(newest.entries[0].model.descriptor.name, "new");
    // The old entries again, on partition 3, after the new ones.
    let producer = flowstage_stages::kafka::KafkaProducer::new(
        &flowstage_stages::kafka::ProducerSettings::new(&bootstrap),
    )
    .expect("producer");
    for (k, v) in stale {
        producer
            .send(
                flowstage_stages::kafka::ProducerRecord::new("store-parts", v)
                    .key(k)
                    .partition(3),
            )
            .await
            .expect("stale copy sent");
    }
    let r = tokio::task::spawn_blocking(move || store.load())
        .await
        .expect("task")
        .expect("load");
    assert_eq!(r.entries.len(), 1);
    assert_eq!(r.entries[0].model.descriptor.name, "new");
    assert_eq!(
        r.entries[0].stats.as_ref().map(|s| s.current.name.as_str()),
        Some("new")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_store_round_trip_on_apache_kafka() {
    let bootstrap = match std::env::var("FLOWSTAGE_KAFKA_BOOTSTRAP") {
        Ok(b) if !b.trim().is_empty() => b,
        _ => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (store): FLOWSTAGE_KAFKA_BOOTSTRAP is not set; run \
                 `export FLOWSTAGE_KAFKA_BOOTSTRAP=$(scripts/kafka/start.sh)` to run it on Apache Kafka"
            );
            return;
        }
    };
    let topic = format!("store-changelog-{}", std::process::id());
    tokio::time::timeout(
        PATIENCE,
        kafka_round_trip(&bootstrap, &topic, 8 * 1024 * 1024),
    )
    .await
    .expect("in time");
    // A transactional writer appends a record: the topic now ends with its
    // commit marker, which no reader is given. The store still reads the topic
    // to its end (it waited for a record at the marker's offset, then gave up).
    let (b, t) = (bootstrap.clone(), topic.clone());
    tokio::task::spawn_blocking(move || {
        common::write_in_a_transaction(&b, &t, "junk", b"not an entry")
    })
    .await
    .expect("task");
    let store = KafkaStore::open(&bootstrap, &topic, DEFAULT_MAX_MESSAGE_BYTES)
        .await
        .expect("open");
    let r = tokio::time::timeout(PATIENCE, tokio::task::spawn_blocking(move || store.load()))
        .await
        .expect("in time")
        .expect("task")
        .expect("the topic read to its end");
    assert_eq!(r.entries.len(), 3, "{r:?}");
    assert!(
        r.skipped.iter().any(|e| e.to_string().contains("junk")),
        "{:?}",
        r.skipped
    );
}

// ---- the serving stage with a store -----------------------------------------

#[derive(Debug)]
struct Alcohol;

impl Model for Alcohol {
    fn model_type(&self) -> ModelType {
        ModelType::Other(100)
    }
    fn inputs(&self) -> &[FieldDesc] {
        &[]
    }
    fn outputs(&self) -> &[FieldDesc] {
        &[]
    }
    fn score(&self, r: &Record) -> Result<Score, ModelError> {
        let v = r
            .get("alcohol")
            .and_then(Value::as_f64)
            .ok_or_else(|| ModelError::Input("no alcohol".into()))?;
        Ok(Score {
            value: Value::Number(v),
            outputs: vec![],
        })
    }
    fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        Ok(vec![])
    }
}

fn wines(n: usize) -> Vec<WineRecord> {
    (0..n)
        .map(|i| WineRecord {
            alcohol: 9.0 + i as f64 / 100.0,
            data_type: "wine".into(),
            ..Default::default()
        })
        .collect()
}

/// One serving run: the store's models (as built models) then `extra`, then
/// `records`; the writer persists into `store`. Returns the final snapshot.
async fn serve_once(
    store: Arc<dyn ModelStore>,
    extra: Vec<&str>,
    records: usize,
) -> Arc<ServingSnapshot> {
    let restored = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.load())
            .await
            .expect("task")
            .expect("load")
    };
    let state = ServingState::new();
    let catalog = Arc::new(ModelCatalog::new());
    let mut models: Vec<ModelMessage> = Vec::new();
    for e in &restored.entries {
        state.seed_restored(e.seed(store.kind()));
        catalog.offered(&e.model.descriptor, e.model.position.clone());
        models.push(
            BuiltModel::new(
                e.model.descriptor.name.clone(),
                "",
                "wine",
                Arc::new(Alcohol),
            )
            .into(),
        );
    }
    for name in extra {
        catalog.offered(&descriptor(name, "wine", 10), None);
        models.push(BuiltModel::new(name, "", "wine", Arc::new(Alcohol)).into());
    }
    let writer = StoreWriter::spawn(
        store.clone(),
        state.clone(),
        catalog,
        Duration::from_millis(50),
        &restored.entries,
    );
    let n_models = models.len() as u64;
    let (model_tx, model_rx) = tokio::sync::mpsc::unbounded_channel();
    for m in models {
        model_tx.send(m).expect("send");
    }
    let model_src = Source::from_parts(
        futures::stream::unfold(model_rx, |mut rx| async move {
            rx.recv().await.map(|m| (Ok(m), rx))
        }),
        NotUsed,
    );
    // Records only after the models are in place.
    let gate = state.clone();
    let data = Source::from_parts(
        futures::stream::once(async move {
            gate.wait_for(|s| s.totals.swaps >= n_models).await;
        })
        .flat_map(move |_| futures::stream::iter(wines(records).into_iter().map(Ok))),
        NotUsed,
    );
    let (results, state) = ServingStage::new(flowstage_model::ModelRegistry::with_defaults())
        .state(state)
        .build(model_src, data)
        .expect("build");
    let results = tokio::time::timeout(PATIENCE, results.run_with(Sink::collect()))
        .await
        .expect("in time")
        .expect("results");
    assert_eq!(results.len(), records);
    assert!(results.iter().all(|r| r.processed));
    drop(model_tx);
    writer.finish().await;
    state.snapshot()
}

use futures::StreamExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_stage_continues_the_stored_statistics() {
    let store: Arc<dyn ModelStore> = Arc::new(MemoryStore::new());
    // First life: two models (the first goes to the history), 300 records.
    let first = serve_once(store.clone(), vec!["first", "second"], 300).await;
    let cur = first.data_types["wine"].current.clone().expect("current");
    assert_eq!(cur.name, "second");
    assert_eq!(cur.usage, 300);
    assert_eq!(first.totals.models_restored, 0);
    assert_eq!(first.data_types["wine"].restored, None);

    // What the writer stored at shutdown: the model, its statistics (usage,
    // histogram), the history.
    let s = store.clone();
    let stored = tokio::task::spawn_blocking(move || s.load())
        .await
        .expect("task")
        .expect("load");
    assert_eq!(stored.entries.len(), 1);
    let e = &stored.entries[0];
    assert_eq!(e.model.descriptor.name, "second");
    let st = e.stats.as_ref().expect("stats stored");
    assert_eq!(st.current.usage, 300);
    assert_eq!(st.current.histogram.as_ref().map(|h| h.len()), Some(300));
    assert_eq!(st.history.len(), 1);
    assert_eq!(st.history[0].stats.name, "first");

    // Second life, no new model: the stored one serves, its usage continues.
    let second = serve_once(store.clone(), vec![], 200).await;
    let d = &second.data_types["wine"];
    let cur2 = d.current.clone().expect("current");
    assert_eq!(cur2.name, "second");
    assert_eq!(cur2.usage, 500, "300 before the restart + 200 after");
    assert_eq!(cur2.since_ms, cur.since_ms, "the same model life");
    assert!(cur2.min_ns.is_some());
    assert!(cur2.min_ns <= cur.min_ns && cur2.max_ns >= cur.max_ns);
    assert_eq!(d.history.len(), 1);
    assert_eq!(d.history[0].stats.name, "first");
    assert_eq!(second.totals.models_restored, 1);
    let restored = d.restored.clone().expect("restored info");
    assert_eq!(restored.store, "memory");

    // Third life with a new model: the restored one goes to the history, the
    // new one starts from zero and is not marked restored.
    let third = serve_once(store.clone(), vec!["third"], 10).await;
    let d = &third.data_types["wine"];
    let cur3 = d.current.clone().expect("current");
    assert_eq!(cur3.name, "third");
    assert_eq!(cur3.usage, 10);
    assert_eq!(d.restored, None);
    assert_eq!(third.totals.models_restored, 1);
    let names: Vec<&str> = d.history.iter().map(|h| h.stats.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(d.history[1].stats.usage, 500);
    assert!(d.history.iter().all(|h| h.stats.histogram.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_are_restored_through_the_local_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    {
        let store: Arc<dyn ModelStore> = Arc::new(LocalStore::open(&path).expect("open"));
        let first = serve_once(store, vec!["m"], 100).await;
        assert_eq!(
            first.data_types["wine"].current.as_ref().map(|c| c.usage),
            Some(100)
        );
    }
    let store: Arc<dyn ModelStore> = Arc::new(LocalStore::open(&path).expect("reopen"));
    let second = serve_once(store, vec![], 50).await;
    let cur = second.data_types["wine"].current.clone().expect("current");
    assert_eq!((cur.name.as_str(), cur.usage), ("m", 150));
    assert!(cur.p50_ns.is_some());
    assert_eq!(
        second.data_types["wine"]
            .restored
            .as_ref()
            .map(|r| r.store.as_str()),
        Some("local")
    );
}
