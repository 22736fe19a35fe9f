//! Shared scenarios of the Kafka tests: run against the embedded mock
//! cluster (always) and against real Apache Kafka (when
//! `FLOWSTAGE_KAFKA_BOOTSTRAP` is set).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowstage::prelude::*;
use flowstage_stages::kafka::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

/// Guard against hangs only (never a timing assertion): a scenario step that
/// waits for an event fails with a message instead of hanging forever.
pub const HANG_GUARD: Duration = Duration::from_secs(180);

pub async fn guard<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(HANG_GUARD, f).await {
        Ok(x) => x,
        Err(_) => panic!("hang guard: still waiting for {what} after {HANG_GUARD:?}"),
    }
}

/// Consumer properties that make group changes quick.
pub fn consumer_settings(
    bootstrap: &str,
    group: &str,
    topic: &str,
    log: &CommitLog,
) -> ConsumerSettings {
    let log = log.clone();
    ConsumerSettings::new(bootstrap, group, [topic])
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .on_commit(move |tp, pos| log.record(tp, pos))
}

/// Every successful commit, per partition, in the order they happened.
#[derive(Clone, Default)]
pub struct CommitLog {
    commits: Arc<Mutex<BTreeMap<TopicPartition, Vec<i64>>>>,
    /// Told of every commit.
    recorded: Arc<Notify>,
}

impl CommitLog {
    pub fn record(&self, tp: &TopicPartition, pos: i64) {
        self.commits
            .lock()
            .unwrap()
            .entry(tp.clone())
            .or_default()
            .push(pos);
        self.recorded.notify_waiters();
    }

    /// Waits until every partition of `ends` was committed up to its end.
    pub async fn wait_committed_to(&self, ends: &BTreeMap<TopicPartition, i64>) {
        loop {
            let recorded = self.recorded.notified();
            let mut recorded = std::pin::pin!(recorded);
            recorded.as_mut().enable();
            let last = self.last();
            if ends.iter().all(|(tp, end)| last.get(tp) >= Some(end)) {
                return;
            }
            recorded.await;
        }
    }

    /// Asserts that no partition's committed offset ever went backwards;
    /// returns the number of commits checked.
    pub fn assert_monotonic(&self) -> usize {
        let log = self.commits.lock().unwrap();
        let mut n = 0;
        for (tp, positions) in log.iter() {
            for w in positions.windows(2) {
                assert!(w[0] <= w[1], "commit of {tp} went backwards: {positions:?}");
            }
            n += positions.len();
        }
        n
    }

    pub fn last(&self) -> BTreeMap<TopicPartition, i64> {
        self.commits
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(tp, v)| v.last().map(|&p| (tp.clone(), p)))
            .collect()
    }
}

pub fn id(i: usize) -> String {
    format!("rec-{i:06}")
}

/// Produces records `ids` to `topic` (key = payload = id), round-robin over
/// `partitions` partitions.
pub async fn produce_inputs(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    ids: std::ops::Range<usize>,
) {
    let producer =
        KafkaProducer::new(&ProducerSettings::new(bootstrap).max_in_flight(512)).unwrap();
    let topic = topic.to_string();
    let stats = Source::from_iter(ids)
        .map(move |i| {
            let rec = ProducerRecord::new(topic.clone(), id(i))
                .key(id(i))
                .partition((i % partitions as usize) as i32);
            ProducerMessage::single(rec, ())
        })
        .run_with(producer.sink())
        .await
        .unwrap();
    assert!(producer.max_in_flight_seen() <= 512);
    assert!(stats.records > 0);
}

/// A running consume → process → produce → commit pipeline.
pub struct Pipeline {
    pub control: ConsumerControl,
    pub committer: Committer,
    pub handle: tokio::task::JoinHandle<()>,
    pub done: Completion<CommitStats>,
    /// Results acknowledged by the broker.
    pub processed: Arc<AtomicUsize>,
    /// Partitions this instance consumed records from.
    pub partitions: Arc<Mutex<HashSet<i32>>>,
    pub progress: Arc<Notify>,
    pub producer: KafkaProducer,
}

pub const MAX_IN_FLIGHT: usize = 64;

pub fn start_pipeline(
    bootstrap: &str,
    group: &str,
    input: &str,
    output: &str,
    log: &CommitLog,
) -> Pipeline {
    start_pipeline_with(
        bootstrap,
        group,
        input,
        output,
        log,
        CommitterSettings::default()
            .max_batch(100)
            .max_interval(Duration::from_millis(200)),
        None,
    )
}

pub fn start_pipeline_with(
    bootstrap: &str,
    group: &str,
    input: &str,
    output: &str,
    log: &CommitLog,
    committer_settings: CommitterSettings,
    assignment_strategy: Option<&str>,
) -> Pipeline {
    let producer =
        KafkaProducer::new(&ProducerSettings::new(bootstrap).max_in_flight(MAX_IN_FLIGHT)).unwrap();
    let mut settings = consumer_settings(bootstrap, group, input, log);
    if let Some(strategy) = assignment_strategy {
        settings = settings.set("partition.assignment.strategy", strategy);
    }
    let (control, source) = committable_source(settings).unwrap().pre_materialize();
    let committer = control.committer(committer_settings);
    let processed = Arc::new(AtomicUsize::new(0));
    let partitions = Arc::new(Mutex::new(HashSet::new()));
    let progress = Arc::new(Notify::new());
    let output = output.to_string();
    let parts = partitions.clone();
    let (p2, n2) = (processed.clone(), progress.clone());
    let (done, driver) = source
        .map(move |m| {
            parts.lock().unwrap().insert(m.record.partition);
            let payload = m.record.payload.clone().unwrap_or_default();
            let result = format!("result-of-{}", String::from_utf8_lossy(&payload));
            let rec = ProducerRecord::new(output.clone(), result)
                .key(payload)
                .header("source-offset", m.record.offset.to_string());
            ProducerMessage::single(rec, m.offset)
        })
        .via(producer.flow())
        .map(move |r| {
            p2.fetch_add(1, Ordering::SeqCst);
            n2.notify_waiters();
            r
        })
        .to(committer.sink())
        .into_parts();
    let handle = tokio::spawn(driver);
    Pipeline {
        control,
        committer,
        handle,
        done,
        processed,
        partitions,
        progress,
        producer,
    }
}

impl Pipeline {
    /// Waits until at least `n` results were acknowledged.
    pub async fn wait_processed(&self, n: usize) {
        loop {
            let notified = self.progress.notified();
            if self.processed.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }

    /// Waits until the assignment satisfies `f`.
    pub async fn wait_assignment(
        &self,
        f: impl Fn(&[TopicPartition]) -> bool,
    ) -> Vec<TopicPartition> {
        let mut rx = self.control.assignment_changes();
        let a = rx.wait_for(|a| f(a)).await.expect("consumer gone");
        a.clone()
    }

    /// Simulates a crash: the graph is aborted and every handle dropped,
    /// in-flight records are never committed.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }

    /// Graceful shutdown: stop consuming, finish in-flight, commit.
    pub async fn shutdown(self) -> CommitStats {
        let Pipeline {
            control,
            done,
            handle,
            ..
        } = self;
        let stats = drain_and_shutdown(&control, done)
            .await
            .expect("pipeline failed");
        let _ = handle.await;
        stats
    }
}

/// Reads `topic` from the beginning until `expected` distinct keys were seen;
/// returns how many results each key got.
pub async fn collect_results(
    bootstrap: &str,
    topic: &str,
    expected: usize,
) -> HashMap<String, usize> {
    let consumer: StreamConsumer<ClientLog> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("verifier-{}", unique()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create_with_context(ClientLog)
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    guard("all results", async {
        while counts.len() < expected {
            let m = consumer.recv().await.unwrap();
            let key = String::from_utf8_lossy(m.key().unwrap()).into_owned();
            *counts.entry(key).or_default() += 1;
        }
    })
    .await;
    counts
}

/// The group's committed offsets and the partitions' end offsets.
pub fn committed_and_end(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<(i32, i64, i64)> {
    let consumer: StreamConsumer<ClientLog> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create_with_context(ClientLog)
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(30))
        .unwrap();
    (0..partitions)
        .map(|p| {
            let c = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            };
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(30))
                .unwrap();
            (p, c, high)
        })
        .collect()
}

pub fn unique() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: AtomicUsize = AtomicUsize::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{t:x}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub const PARTITIONS: i32 = 6;

/// Kill mid-way and restart in the same group: every record gets ≥ 1 result.
/// Returns (records, results, duplicates).
pub async fn scenario_kill_and_restart(
    bootstrap: &str,
    input: &str,
    output: &str,
    n: usize,
) -> (usize, usize, usize) {
    let group = format!("g-restart-{}", unique());
    let log = CommitLog::default();
    produce_inputs(bootstrap, input, PARTITIONS, 0..n).await;

    let first = start_pipeline(bootstrap, &group, input, output, &log);
    let first_processed = first.processed.clone();
    guard("first instance progress", first.wait_processed(n / 3)).await;
    assert!(first.producer.max_in_flight_seen() <= MAX_IN_FLIGHT);
    let uncommitted_at_kill = first.control.in_flight();
    first.kill().await;
    let processed_by_first = first_processed.load(Ordering::SeqCst);

    let second = start_pipeline(bootstrap, &group, input, output, &log);
    let counts = collect_results(bootstrap, output, n).await;
    let processed_by_second = second.processed.clone();
    let stats = guard("graceful shutdown", second.shutdown()).await;
    let processed_by_second = processed_by_second.load(Ordering::SeqCst);
    eprintln!(
        "kill+restart: first instance acknowledged {processed_by_first} results \
         ({uncommitted_at_kill} records in flight at the kill), second {processed_by_second}"
    );
    assert!(
        processed_by_first < n && processed_by_second > 0,
        "the kill happened mid-way"
    );
    assert!(stats.commits > 0);

    for i in 0..n {
        assert!(
            counts.get(&id(i)).copied().unwrap_or(0) >= 1,
            "no result for {}",
            id(i)
        );
    }
    let results: usize = counts.values().sum();
    let commits = log.assert_monotonic();
    assert!(commits > 0);
    // After the graceful shutdown everything consumed is committed.
    for (p, committed, end) in committed_and_end(bootstrap, &group, input, PARTITIONS) {
        assert_eq!(
            committed, end,
            "partition {p}: committed {committed}, end {end}"
        );
    }
    (n, results, results - n)
}

/// Two consumers in one group share the partitions; stopping one moves its
/// partitions to the other. Returns (records per instance).
pub async fn scenario_group_sharing(
    bootstrap: &str,
    input: &str,
    output: &str,
    n: usize,
) -> (usize, usize) {
    let group = format!("g-share-{}", unique());
    let log = CommitLog::default();
    let a = start_pipeline(bootstrap, &group, input, output, &log);
    let b = start_pipeline(bootstrap, &group, input, output, &log);
    wait_split(&[&a.control, &b.control], PARTITIONS as usize).await;
    produce_inputs(bootstrap, input, PARTITIONS, 0..n).await;
    let counts = collect_results(bootstrap, output, n).await;
    assert!(counts.len() == n);
    let (na, nb) = (
        a.processed.load(Ordering::SeqCst),
        b.processed.load(Ordering::SeqCst),
    );
    assert!(
        na > 0 && nb > 0,
        "both instances processed records: {na} / {nb}"
    );
    {
        let (sa, sb) = (a.partitions.lock().unwrap(), b.partitions.lock().unwrap());
        assert!(
            sa.is_disjoint(&sb),
            "partitions consumed by both: {sa:?} {sb:?}"
        );
    }

    // Stop one gracefully: its partitions move to the other.
    guard("graceful shutdown of a", a.shutdown()).await;
    guard(
        "b takes every partition",
        b.wait_assignment(|x| x.len() == PARTITIONS as usize),
    )
    .await;
    produce_inputs(bootstrap, input, PARTITIONS, n..2 * n).await;
    let counts = collect_results(bootstrap, output, 2 * n).await;
    assert!(counts.len() == 2 * n);
    guard("graceful shutdown of b", b.shutdown()).await;
    log.assert_monotonic();
    for (p, committed, end) in committed_and_end(bootstrap, &group, input, PARTITIONS) {
        assert_eq!(committed, end, "partition {p}");
    }
    (na, nb)
}

/// Waits until every consumer owns partitions, no partition is owned twice and
/// all `partitions` are owned (a settled group).
pub async fn wait_split(consumers: &[&ConsumerControl], partitions: usize) {
    guard("a settled shared assignment", async {
        loop {
            let mut rxs: Vec<_> = consumers.iter().map(|c| c.assignment_changes()).collect();
            let now: Vec<Vec<TopicPartition>> = rxs
                .iter_mut()
                .map(|rx| rx.borrow_and_update().clone())
                .collect();
            let all: HashSet<&TopicPartition> = now.iter().flatten().collect();
            let owned: usize = now.iter().map(Vec::len).sum();
            if now.iter().all(|a| !a.is_empty()) && all.len() == partitions && owned == partitions {
                return;
            }
            // Wait for any change.
            let changes = rxs.iter_mut().map(|rx| Box::pin(rx.changed()));
            let _ = futures::future::select_all(changes).await;
        }
    })
    .await
}

/// A second consumer joins while the first is processing and committing
/// after every record: the rebalance's revocation commits race with the
/// committer's. Every record still gets a result, no commit goes backwards,
/// and in the end everything is committed. Returns (results, duplicates).
pub async fn scenario_join_under_load(
    bootstrap: &str,
    input: &str,
    output: &str,
    n: usize,
    assignment_strategy: Option<&str>,
) -> (usize, usize) {
    let group = format!("g-join-{}", unique());
    let log = CommitLog::default();
    produce_inputs(bootstrap, input, PARTITIONS, 0..n).await;
    let eager = || {
        CommitterSettings::default()
            .max_batch(1)
            .max_interval(Duration::from_millis(10))
    };
    let a = start_pipeline_with(
        bootstrap,
        &group,
        input,
        output,
        &log,
        eager(),
        assignment_strategy,
    );
    guard("a's progress", a.wait_processed(n / 5)).await;
    let b = start_pipeline_with(
        bootstrap,
        &group,
        input,
        output,
        &log,
        eager(),
        assignment_strategy,
    );
    let counts = collect_results(bootstrap, output, n).await;
    // Every record has a result, but a partition that moved may still be
    // committed only up to where its first owner's commits stopped (the mock
    // refuses commits during a rebalance): its new owner reads the rest
    // again. Both keep running until that is committed too.
    let ends: BTreeMap<TopicPartition, i64> =
        committed_and_end(bootstrap, &group, input, PARTITIONS)
            .into_iter()
            .map(|(p, _, end)| (TopicPartition::new(input, p), end))
            .collect();
    guard(
        "every partition committed to its end",
        log.wait_committed_to(&ends),
    )
    .await;
    let sa = guard("a's shutdown", a.shutdown()).await;
    let sb = guard("b's shutdown", b.shutdown()).await;
    eprintln!("join under load: a {sa:?}, b {sb:?}");
    let commits = log.assert_monotonic();
    assert!(commits > 0);
    for (p, committed, end) in committed_and_end(bootstrap, &group, input, PARTITIONS) {
        assert_eq!(committed, end, "partition {p}");
    }
    let results: usize = counts.values().sum();
    (results, results - n)
}

/// Writes one record to `topic` in a committed transaction (a blocking
/// call): the topic then ends with the transaction's commit marker, which no
/// reader is given. Apache Kafka only (the mock cluster writes no markers).
pub fn write_in_a_transaction(bootstrap: &str, topic: &str, key: &str, payload: &[u8]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", format!("{topic}-txn"))
        .create()
        .expect("transactional producer");
    let wait = Duration::from_secs(30);
    producer.init_transactions(wait).expect("init");
    producer.begin_transaction().expect("begin");
    producer
        .send(BaseRecord::to(topic).key(key).payload(payload))
        .map_err(|(e, _)| e)
        .expect("send");
    producer.commit_transaction(wait).expect("commit");
}
