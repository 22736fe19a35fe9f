//! Kafka stages against librdkafka's mock cluster, over real TCP.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use flowstage::prelude::*;
use flowstage_stages::kafka::*;
use rdkafka::producer::Producer;

fn broker(topics: &[(&str, i32)]) -> EmbeddedBroker {
    let mut cfg = EmbeddedBrokerConfig::new(3);
    for (t, p) in topics {
        cfg = cfg.topic(*t, *p);
    }
    EmbeddedBroker::start(cfg).expect("mock cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_and_restart_leaves_no_record_without_result() {
    let b = broker(&[("in", PARTITIONS), ("out", PARTITIONS)]);
    let (n, results, dups) =
        scenario_kill_and_restart(b.bootstrap_servers(), "in", "out", 3000).await;
    eprintln!("mock kill+restart: {n} records, {results} results, {dups} duplicates");
    assert!(results >= n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_consumers_in_one_group_share_partitions() {
    let b = broker(&[("in", PARTITIONS), ("out", PARTITIONS)]);
    let (na, nb) = scenario_group_sharing(b.bootstrap_servers(), "in", "out", 1200).await;
    eprintln!("mock group: instance a processed {na}, b {nb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_partition_sources_keep_partition_order() {
    let b = broker(&[("pin", 4), ("pout", 4)]);
    let bootstrap = b.bootstrap_servers().to_string();
    let n = 2000;
    produce_inputs(&bootstrap, "pin", 4, 0..n).await;
    let log = CommitLog::default();
    let producer =
        KafkaProducer::new(&ProducerSettings::new(&bootstrap).max_in_flight(32)).unwrap();
    let (control, outer) =
        partitioned_source(consumer_settings(&bootstrap, "g-part", "pin", &log), 64)
            .unwrap()
            .pre_materialize();
    let committer = control.committer(CommitterSettings::default().max_batch(50));
    let seen: Arc<Mutex<BTreeMap<i32, Vec<i64>>>> = Arc::default();
    let total = Arc::new(tokio::sync::Semaphore::new(0));
    let (seen2, total2, producer2, committer2) = (
        seen.clone(),
        total.clone(),
        producer.clone(),
        committer.clone(),
    );
    let outer_done = outer.run_with(Sink::foreach(move |ps: PartitionSource| {
        let (seen, total) = (seen2.clone(), total2.clone());
        let tp = ps.tp.clone();
        // The sub-stream runs on its own; its completion is not needed here.
        let done = ps
            .source
            .map(move |m| {
                assert_eq!(m.offset.tp, tp, "a record of another partition");
                seen.lock()
                    .unwrap()
                    .entry(m.record.partition)
                    .or_default()
                    .push(m.record.offset);
                let rec = ProducerRecord::new("pout", m.record.payload.clone().unwrap_or_default())
                    .key(m.record.key.clone().unwrap_or_default())
                    .partition(m.record.partition);
                ProducerMessage::single(rec, m.offset)
            })
            .via(producer2.flow())
            .map({
                let total = total.clone();
                move |r| {
                    total.add_permits(1);
                    r
                }
            })
            .run_with(committer2.sink());
        drop(done);
    }));
    guard("all records processed", total.acquire_many(n as u32))
        .await
        .unwrap()
        .forget();
    control.stop();
    let flushed = committer.flush().await.unwrap();
    assert!(flushed.commits > 0);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "one sub-source per partition");
    for (p, offsets) in &seen {
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order"
        );
    }
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), n);
    log.assert_monotonic();
    for (p, committed, end) in committed_and_end(&bootstrap, "g-part", "pin", 4) {
        assert_eq!(committed, end, "partition {p}");
    }
    drop(outer_done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_bounds_in_flight_records() {
    let b = broker(&[("bounded", 3)]);
    let producer =
        KafkaProducer::new(&ProducerSettings::new(b.bootstrap_servers()).max_in_flight(8)).unwrap();
    let stats = Source::from_iter(0..2000u32)
        .map(|i| ProducerMessage::multi(vec![ProducerRecord::new("bounded", i.to_string()); 2], i))
        .run_with(producer.sink())
        .await
        .unwrap();
    assert_eq!(stats.messages, 2000);
    assert_eq!(stats.records, 4000);
    assert!(
        producer.max_in_flight_seen() <= 8,
        "{}",
        producer.max_in_flight_seen()
    );
    assert!(
        producer.max_in_flight_seen() >= 2,
        "records were sent concurrently"
    );
    assert_eq!(producer.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_errors_are_typed_and_fail_the_stream() {
    let b = broker(&[("small", 1)]);
    let producer = KafkaProducer::new(
        &ProducerSettings::new(b.bootstrap_servers()).set("message.max.bytes", "2000"),
    )
    .unwrap();
    let err = Source::from_iter([10usize, 5000, 10])
        .map(|size| ProducerMessage::single(ProducerRecord::new("small", vec![b'x'; size]), size))
        .via(producer.flow())
        .run_with(Sink::collect())
        .await
        .expect_err("an oversized record must fail the stream");
    match kafka_error(&err) {
        Some(KafkaStageError::Delivery { topic, .. }) => assert_eq!(topic, "small"),
        other => panic!("expected a typed delivery error, got {other:?} ({err})"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_serves_topics_over_tcp() {
    let b = broker(&[("six", 6)]);
    assert!(
        b.bootstrap_servers().contains("127.0.0.1") || b.bootstrap_servers().contains("localhost")
    );
    b.create_topic(TopicSpec::new("later", 2)).unwrap();
    let producer = KafkaProducer::new(&ProducerSettings::new(b.bootstrap_servers())).unwrap();
    let md = producer
        .client()
        .client()
        .fetch_metadata(None, std::time::Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.brokers().len(), 3);
    let parts = |name: &str| {
        md.topics()
            .iter()
            .find(|t| t.name() == name)
            .map(|t| t.partitions().len())
    };
    assert_eq!(parts("six"), Some(6));
    assert_eq!(parts("later"), Some(2));
    assert!(EmbeddedBroker::start(EmbeddedBrokerConfig::new(0)).is_err());

    // run_embedded_broker: ready callback, then shutdown on the signal.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
    let run = tokio::spawn(run_embedded_broker(
        EmbeddedBrokerConfig::new(1).topic("t", 3),
        move |addr| {
            let _ = addr_tx.send(addr.to_string());
        },
        async move {
            let _ = rx.await;
        },
    ));
    let addr = addr_rx.await.unwrap();
    assert!(!addr.is_empty());
    tx.send(()).unwrap();
    run.await.unwrap().unwrap();
}

/// Headers arrive with their record by default; a source that does not read
/// them gets the same records with no headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_headers_are_read_unless_turned_off() {
    let b = broker(&[("hdr", 1)]);
    let bootstrap = b.bootstrap_servers().to_string();
    let producer = KafkaProducer::new(&ProducerSettings::new(&bootstrap)).unwrap();
    for i in 0..3u8 {
        let mut r = ProducerRecord::new("hdr", vec![i]);
        if i != 1 {
            r = r.header("h", vec![i, i]);
        }
        producer.send(r).await.unwrap();
    }
    let log = CommitLog::default();
    let read = |group: &str, headers: bool| {
        let settings = consumer_settings(&bootstrap, group, "hdr", &log).read_headers(headers);
        committable_source(settings)
            .unwrap()
            .take(3)
            .map(|m| (m.record.payload, m.record.headers))
            .run_with(Sink::collect())
    };
    let with = guard("records with headers", read("g-hdr-on", true))
        .await
        .unwrap();
    let without = guard("records without headers", read("g-hdr-off", false))
        .await
        .unwrap();
    let header = |i: u8| vec![("h".to_string(), Some(vec![i, i]))];
    let expected = vec![
        (Some(vec![0]), header(0)),
        (Some(vec![1]), Vec::new()),
        (Some(vec![2]), header(2)),
    ];
    assert_eq!(with, expected);
    let bare: Vec<_> = expected.into_iter().map(|(p, _)| (p, Vec::new())).collect();
    assert_eq!(without, bare, "headers read although turned off");
}

/// A revoked partition is committed up to its processed prefix, never past an
/// unprocessed record, and the next owner gets the unprocessed records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_never_commits_past_an_unprocessed_record() {
    let b = broker(&[("rin", PARTITIONS)]);
    let bootstrap = b.bootstrap_servers().to_string();
    produce_inputs(&bootstrap, "rin", PARTITIONS, 0..60).await; // 10 per partition
    let log = CommitLog::default();
    let group = "g-revoke";

    // A processes everything except offset 5 of each partition (still "in flight").
    let (a, source) = committable_source(consumer_settings(&bootstrap, group, "rin", &log))
        .unwrap()
        .pre_materialize();
    let committer = a.committer(CommitterSettings::default().max_batch(1));
    let marked = Arc::new(tokio::sync::Semaphore::new(0));
    let m2 = marked.clone();
    let _a_done = source
        .filter(|m| m.record.offset != 5)
        .map(move |m| {
            m2.add_permits(1);
            m
        })
        .run_with(committer.sink());
    guard("A sees 54 records", marked.acquire_many(54))
        .await
        .unwrap()
        .forget();
    committer.flush().await.unwrap();
    for p in 0..PARTITIONS {
        let tp = TopicPartition::new("rin", p);
        assert_eq!(
            a.committed_position(&tp),
            Some(5),
            "{tp}: processed prefix is 0..=4"
        );
    }

    // B joins: A's revoked partitions must not be committed past offset 5.
    let (bc, bsource) = committable_source(consumer_settings(&bootstrap, group, "rin", &log))
        .unwrap()
        .pre_materialize();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _b_done = bsource.run_with(Sink::foreach(move |m: CommittableMessage| {
        let _ = tx.send((m.record.partition, m.record.offset));
    }));
    wait_split(&[&a, &bc], PARTITIONS as usize).await;
    let b_parts = bc.assignment();
    assert!(
        a.assignment().len() < PARTITIONS as usize,
        "A lost partitions"
    );
    // B receives each of its partitions from offset 5 (the unprocessed record) on.
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    guard("B's first records", async {
        while !b_parts.iter().all(|tp| first.contains_key(&tp.partition)) {
            let (p, o) = rx.recv().await.unwrap();
            first.entry(p).or_insert(o);
        }
    })
    .await;
    for (p, o) in &first {
        assert_eq!(
            *o, 5,
            "partition {p}: B must resume at the unprocessed record"
        );
    }
    for (tp, pos) in log.last() {
        assert!(pos <= 5, "{tp} committed past an unprocessed record: {pos}");
    }
    log.assert_monotonic();
}

/// Commits happen when `max_batch` offsets were marked, and otherwise every
/// `max_interval` — observed through the commit hook, not by timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_in_batches_by_count_and_by_interval() {
    let b = broker(&[("bt", 1)]);
    let bootstrap = b.bootstrap_servers().to_string();
    produce_inputs(&bootstrap, "bt", 1, 0..25).await;

    let run = |group: &str, settings: CommitterSettings| {
        let (tx, rx) = tokio::sync::watch::channel(Vec::<i64>::new());
        let consumer = ConsumerSettings::new(&bootstrap, group, ["bt"])
            .on_commit(move |_, pos| tx.send_modify(|v| v.push(pos)));
        let (control, source) = committable_source(consumer).unwrap().pre_materialize();
        let committer = control.committer(settings);
        let done = source.run_with(committer.sink());
        (control, committer, done, rx)
    };

    // By count: no commit before 10 marks (the interval is an hour); a full
    // batch triggers one (which may include marks made meanwhile).
    let (control, committer, _done, mut rx) = run(
        "g-batch-count",
        CommitterSettings::default()
            .max_batch(10)
            .max_interval(Duration::from_secs(3600)),
    );
    guard("a batch commit", rx.wait_for(|v| !v.is_empty()))
        .await
        .unwrap();
    let stats = committer.flush().await.unwrap();
    let seen = rx.borrow().clone();
    assert!(
        seen[0] >= 10,
        "a commit before the batch was full: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&25), "flush commits the partial batch");
    assert!(
        seen.len() <= 3,
        "at most two full batches of 10 in 25, then the flush: {seen:?}"
    );
    assert_eq!(stats.marked, 25);
    control.stop();

    // By interval: the batch never fills, the interval commits everything.
    let (control, _committer, _done, mut rx) = run(
        "g-batch-interval",
        CommitterSettings::default()
            .max_batch(1_000_000)
            .max_interval(Duration::from_millis(50)),
    );
    guard(
        "an interval commit of all 25",
        rx.wait_for(|v| v.last() == Some(&25)),
    )
    .await
    .unwrap();
    control.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closing_the_last_committer_handle_waits_for_its_last_commit() {
    let b = broker(&[("cl", 1)]);
    let bootstrap = b.bootstrap_servers().to_string();
    produce_inputs(&bootstrap, "cl", 1, 0..25).await;
    let (tx, rx) = tokio::sync::watch::channel(Vec::<i64>::new());
    let consumer = ConsumerSettings::new(&bootstrap, "g-close", ["cl"])
        .on_commit(move |_, pos| tx.send_modify(|v| v.push(pos)));
    let (control, source) = committable_source(consumer).unwrap().pre_materialize();
    // Neither the batch nor the interval commits: only the last handle's end does.
    let committer = control.committer(
        CommitterSettings::default()
            .max_batch(1_000_000)
            .max_interval(Duration::from_secs(3600)),
    );
    let marker = committer.clone();
    guard(
        "25 records marked",
        source
            .take(25)
            .run_with(Sink::foreach(move |m: CommittableMessage| {
                marker.mark(m.committable_offset()).unwrap();
            })),
    )
    .await
    .unwrap();
    assert!(rx.borrow().is_empty(), "committed early: {:?}", rx.borrow());
    assert_eq!(committer.stats().marked, 25);
    // `close` returns once the last commit is made, not some time later
    // (after the sink's handle is gone too).
    let stats = guard("close", committer.close())
        .await
        .expect("the last commit");
    assert_eq!(rx.borrow().last(), Some(&25), "{:?}", rx.borrow());
    // Its counters include that last commit.
    assert_eq!((stats.marked, stats.commits), (25, 1), "{stats:?}");
    control.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_joining_under_load_loses_nothing() {
    // Eager (librdkafka's default range,roundrobin): every partition is
    // revoked while records are in flight and commits race the revocation.
    let b = broker(&[("in", PARTITIONS), ("out", PARTITIONS)]);
    let (results, dups) =
        scenario_join_under_load(b.bootstrap_servers(), "in", "out", 3000, None).await;
    eprintln!("mock join under load (eager): {results} results, {dups} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_joining_under_load_loses_nothing_cooperative() {
    let b = broker(&[("in", PARTITIONS), ("out", PARTITIONS)]);
    let (results, dups) = scenario_join_under_load(
        b.bootstrap_servers(),
        "in",
        "out",
        3000,
        Some("cooperative-sticky"),
    )
    .await;
    eprintln!("mock join under load (cooperative-sticky): {results} results, {dups} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committable_sink_bounds_in_flight_and_commits_every_record() {
    // A bound of 1 makes the sink wait for a delivery before every record: a
    // lost wake-up would hang it (the guard fails the test then).
    for max in [1usize, 3] {
        let b = broker(&[("csin", 3), ("csout", 3)]);
        let bootstrap = b.bootstrap_servers().to_string();
        produce_inputs(&bootstrap, "csin", 3, 0..600).await;
        let (tx, mut rx) = tokio::sync::watch::channel(BTreeMap::<i32, i64>::new());
        let consumer =
            ConsumerSettings::new(&bootstrap, "g-csink", ["csin"]).on_commit(move |tp, pos| {
                tx.send_modify(|m| {
                    m.insert(tp.partition, pos);
                })
            });
        let (control, source) = committable_source(consumer).unwrap().pre_materialize();
        let committer = control.committer(CommitterSettings::default().max_batch(50));
        let sink = committable_sink(
            &ProducerSettings::new(&bootstrap)
                .max_in_flight(max)
                .set("linger.ms", "0"),
            committer,
        )
        .unwrap();
        let done = source
            .map(|m: CommittableMessage| {
                let payload = m.record.payload.clone().unwrap_or_default();
                ProducerMessage::single(ProducerRecord::new("csout", payload), m.offset)
            })
            .run_with(sink);
        guard(
            "every offset committed",
            rx.wait_for(|m| m.len() == 3 && m.values().sum::<i64>() == 600),
        )
        .await
        .unwrap();
        control.stop();
        let stats = guard("the sink to complete", done).await.unwrap();
        assert_eq!((stats.messages, stats.records), (600, 600), "max {max}");
        assert!(
            (1..=max as u64).contains(&stats.max_in_flight),
            "max {max}: {} in flight at once",
            stats.max_in_flight
        );
        if max > 1 {
            assert!(stats.max_in_flight >= 2, "records were sent concurrently");
        }
        let produced: i64 = committed_and_end(&bootstrap, "g-csink-check", "csout", 3)
            .iter()
            .map(|(_, _, high)| high)
            .sum();
        assert_eq!(produced, 600, "max {max}");
    }
}

/// A commit that stays pending (the coordinator answers "loading" again and
/// again) does not hold up a revocation that comes meanwhile, and ends as a
/// retriable failure once the commit timeout runs out. (A committer that held
/// its lock through a synchronous commit, which waited on the group, which
/// waited on the revocation callback, which waited on that lock, stalled a
/// server for good after an Apache Kafka restart; the mock's coordinator does
/// not reproduce that wait, the broker-restart test of the CLI suite and
/// `scripts/kafka/soak-restarts.sh` do.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_commit_does_not_stall_a_revocation() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let b =
        EmbeddedBroker::start(EmbeddedBrokerConfig::new(1).topic("busy", 2)).expect("mock cluster");
    let bootstrap = b.bootstrap_servers().to_string();
    produce_inputs(&bootstrap, "busy", 2, 0..20).await;
    let log = CommitLog::default();
    let group = "g-busy";
    let settings = |log: &CommitLog| {
        consumer_settings(&bootstrap, group, "busy", log).commit_timeout(Duration::from_secs(2))
    };
    let (a, source) = committable_source(settings(&log))
        .unwrap()
        .pre_materialize();
    let committer =
        a.committer(CommitterSettings::default().max_interval(Duration::from_secs(3600)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _a_done = source.run_with(Sink::foreach(move |m: CommittableMessage| {
        let _ = tx.send(m.offset);
    }));
    let mut first = Vec::new();
    guard("the first 20 records", async {
        while first.len() < 20 {
            first.push(rx.recv().await.unwrap());
        }
    })
    .await;

    // Commits now get "coordinator loading", for a long while.
    b.request_errors(
        RDKafkaApiKey::OffsetCommit,
        vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS; 100_000],
    )
    .unwrap();
    for o in &first {
        committer.mark(o).unwrap();
    }
    let flush = tokio::spawn({
        let committer = committer.clone();
        async move { committer.flush().await }
    });
    // B joins the group: A's partitions are revoked while its commit is pending.
    let b_log = CommitLog::default();
    let (bc, bsource) = committable_source(settings(&b_log))
        .unwrap()
        .pre_materialize();
    let _b_done = bsource.run_with(Sink::ignore());
    wait_split(&[&a, &bc], 2).await;
    guard("the commit asked for while the coordinator was busy", flush)
        .await
        .unwrap()
        .unwrap();
    assert!(
        committer.stats().retriable_failures > 0,
        "{:?}",
        committer.stats()
    );
    b.request_errors(RDKafkaApiKey::OffsetCommit, Vec::new())
        .unwrap();
    log.assert_monotonic();
}

/// librdkafka can lose its reply to an (un)assign call made while the
/// consumer closes (confluentinc/librdkafka#4884), which used to hang the
/// thread dropping the consumer forever. A consumer whose assignment is still
/// queued when it is dropped hits that window in a few percent of drops (this
/// test failed 1 run in 3 before the fix, with 3 runs at once). Each drop
/// runs on a thread of its own, so a hang fails the test instead of hanging
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_consumer_while_it_joins_never_hangs() {
    let b =
        EmbeddedBroker::start(EmbeddedBrokerConfig::new(1).topic("join", 2)).expect("mock cluster");
    let (rounds, at_once) = (60, 4);
    for i in 0..rounds {
        let consumers: Vec<_> = (0..at_once)
            .map(|j| {
                committable_source(ConsumerSettings::new(
                    b.bootstrap_servers(),
                    format!("g{i}-{j}"),
                    ["join"],
                ))
                .expect("consumer")
                .pre_materialize()
            })
            .collect();
        // The drops come at a spread of moments around the groups'
        // assignments (the delays are the test's input, not a wait for
        // anything): the streams are never polled, so an assignment that
        // arrives stays queued for the consumer's close to serve.
        tokio::time::sleep(Duration::from_millis(60 + (i % 10) as u64 * 5)).await;
        // Each on a thread of its own (not the runtime's blocking pool,
        // whose shutdown would wait for a hung drop), all at once.
        let drops: Vec<_> = consumers
            .into_iter()
            .map(|consumer| {
                let (done, dropped) = tokio::sync::oneshot::channel();
                std::thread::spawn(move || {
                    drop(consumer);
                    let _ = done.send(());
                });
                dropped
            })
            .collect();
        for (j, dropped) in drops.into_iter().enumerate() {
            match tokio::time::timeout(Duration::from_secs(60), dropped).await {
                Ok(r) => r.expect("the dropping thread ended"),
                Err(_) => panic!("dropping consumer {j} of round {i} hung"),
            }
        }
    }
}

/// The messages of the events emitted on the threads it is the default
/// subscriber of (`tracing::subscriber::set_default` is per thread).
#[derive(Clone, Default)]
struct ThreadEvents(Arc<Mutex<Vec<String>>>);

impl ThreadEvents {
    fn count(&self, starting: &str) -> usize {
        let events = self.0.lock().unwrap();
        events.iter().filter(|m| m.starts_with(starting)).count()
    }

    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

struct MessageOf<'a>(&'a mut String);

impl tracing::field::Visit for MessageOf<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for ThreadEvents {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut message = String::new();
        event.record(&mut MessageOf(&mut message));
        self.0.lock().unwrap().push(message);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// A consumer of `topic` in `group` that has read one record (so it has its
/// assignment); its stream is gone, the control is its last handle.
async fn assigned_consumer(bootstrap: &str, group: &str, topic: &str) -> ConsumerControl {
    let (control, source) = committable_source(ConsumerSettings::new(bootstrap, group, [topic]))
        .unwrap()
        .pre_materialize();
    let first = guard("a record", source.take(1).run_with(Sink::collect())).await;
    assert_eq!(first.unwrap().len(), 1);
    assert!(!control.assignment().is_empty());
    control
}

#[test]
fn a_consumer_closes_off_the_async_threads_and_its_close_can_be_awaited() {
    // librdkafka's client logs this (through `tracing`, at trace level) on
    // the thread that closes the consumer, when the close is over.
    const DESTROYED: &str = "Consumer destroyed";
    let events = ThreadEvents::default();
    let _on_this_thread = tracing::subscriber::set_default(events.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let b = broker(&[("close", 1)]);
    let bootstrap = b.bootstrap_servers().to_string();
    rt.block_on(produce_inputs(&bootstrap, "close", 1, 0..1));

    // Dropped outside a runtime, the consumer closes on the dropping thread
    // (which shows that the event is seen here when the close runs here).
    let outside = rt.block_on(assigned_consumer(&bootstrap, "g-close-outside", "close"));
    events.clear();
    drop(outside);
    assert_eq!(events.count(DESTROYED), 1, "closed elsewhere");

    // Dropped inside the runtime, on its only thread, it closes elsewhere, and
    // `closed` resolves once it has.
    let inside = rt.block_on(assigned_consumer(&bootstrap, "g-close-inside", "close"));
    events.clear();
    rt.block_on(async move {
        let other = inside.clone();
        let mut closed = std::pin::pin!(inside.closed());
        drop(inside);
        // Never while a handle is left.
        assert!(futures::poll!(&mut closed).is_pending());
        // `shutdown` stops the source, drops its handle and waits for the close.
        guard("the consumer's shutdown", other.shutdown()).await;
        // And `closed`, taken before, resolves too. Awaited, not polled once:
        // the close's signal wakes its waiters one after the other (tokio's
        // watch channel spreads them over several queues), so this one may
        // still be waking when the shutdown's own waiter has returned.
        guard("the consumer's close", closed).await;
    });
    assert_eq!(events.count(DESTROYED), 0, "closed on the runtime's thread");
}

/// Takes `n` records of `source` and marks each with `committer`.
async fn mark_records(source: BoxSource<CommittableMessage>, committer: &Committer, n: u64) {
    let marker = committer.clone();
    let done = source
        .take(n)
        .run_with(Sink::foreach(move |m: CommittableMessage| {
            marker.mark(&m.offset).expect("mark");
        }));
    guard(&format!("{n} records"), done)
        .await
        .expect("the source");
}

/// Settings out of range are typed errors when a source or producer is made,
/// and secrets stay out of `Debug` output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_settings_are_refused_with_typed_errors() {
    let config_error = |r: Result<(), KafkaStageError>| match r {
        Err(KafkaStageError::Config { name, .. }) => name,
        other => panic!("expected a Config error, got {other:?}"),
    };
    let source = |s: ConsumerSettings| committable_source(s).map(drop);
    assert_eq!(
        config_error(source(ConsumerSettings::new("127.0.0.1:9", "g", ["a b"]))),
        "topics"
    );
    assert_eq!(
        config_error(source(ConsumerSettings::new("127.0.0.1:9", " ", ["t"]))),
        "group_id"
    );
    assert_eq!(
        config_error(source(ConsumerSettings::new(
            "127.0.0.1:100041",
            "g",
            ["t"]
        ))),
        "bootstrap_servers"
    );
    // A subscription by regular expression is not a topic name.
    assert!(source(ConsumerSettings::new("127.0.0.1:9", "g", ["^in-.*"])).is_ok());
    assert_eq!(
        config_error(
            KafkaProducer::new(&ProducerSettings::new("127.0.0.1:9").max_in_flight(usize::MAX))
                .map(drop)
        ),
        "max_in_flight"
    );
    assert_eq!(
        config_error(
            partitioned_source(ConsumerSettings::new("127.0.0.1:9", "g", ["t"]), usize::MAX)
                .map(drop)
        ),
        "per_partition_buffer"
    );
    let consumer = ConsumerSettings::new("k:9092", "g", ["t"]).set("sasl.password", "hunter2");
    let producer = ProducerSettings::new("k:9092").set("sasl.password", "hunter2");
    let transactional = TransactionalSettings::new(producer.clone(), "tid");
    for shown in [
        format!("{consumer:?}"),
        format!("{producer:?}"),
        format!("{transactional:?}"),
    ] {
        assert!(
            shown.contains("sasl.password") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}

/// Timeouts and intervals of `Duration::MAX` (and a zero interval) neither
/// panic nor hang: commits land and the consumer closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_timeouts_and_intervals_commit_and_close() {
    let b = broker(&[("ext", 1)]);
    let bootstrap = b.bootstrap_servers().to_string();
    produce_inputs(&bootstrap, "ext", 1, 0..10).await;
    let tp = TopicPartition::new("ext", 0);
    for (group, interval) in [("g-ext-max", Duration::MAX), ("g-ext-zero", Duration::ZERO)] {
        let log = CommitLog::default();
        let settings =
            consumer_settings(&bootstrap, group, "ext", &log).commit_timeout(Duration::MAX);
        let (control, source) = committable_source(settings).unwrap().pre_materialize();
        let committer = control.committer(CommitterSettings {
            max_interval: interval,
            buffer: usize::MAX,
            ..Default::default()
        });
        mark_records(source, &committer, 10).await;
        let flushed = guard("a flush", committer.flush()).await;
        assert!(flushed.is_ok(), "{group}: {flushed:?}");
        assert_eq!(control.committed_position(&tp), Some(10), "{group}");
        guard("commit_now", control.commit_now())
            .await
            .expect("commit_now");
        guard("the committer's close", committer.close())
            .await
            .expect("the last commit");
        guard("the consumer's shutdown", control.shutdown()).await;
        assert_eq!(log.last().get(&tp), Some(&10), "{group}");
    }
    let producer = KafkaProducer::new(&ProducerSettings::new(&bootstrap)).unwrap();
    guard("a flush", producer.flush(Duration::MAX))
        .await
        .expect("flush");
}

/// A commit that fails with a retriable error is tried again at the next
/// interval, without new records or a flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retriable_commit_failure_is_retried_while_idle() {
    let b = broker(&[("idle", 1)]);
    let bootstrap = b.bootstrap_servers().to_string();
    produce_inputs(&bootstrap, "idle", 1, 0..10).await;
    let (committed_tx, mut committed) = tokio::sync::watch::channel(0i64);
    let settings =
        ConsumerSettings::new(&bootstrap, "g-idle", ["idle"]).on_commit(move |_, pos| {
            committed_tx.send_replace(pos);
        });
    let (control, source) = committable_source(settings).unwrap().pre_materialize();
    let committer =
        control.committer(CommitterSettings::default().max_interval(Duration::from_millis(100)));
    b.request_errors(
        rdkafka::types::RDKafkaApiKey::OffsetCommit,
        vec![rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS],
    )
    .unwrap();
    mark_records(source, &committer, 10).await;
    guard("the retried commit", committed.wait_for(|&p| p == 10))
        .await
        .expect("the commit hook");
    let stats = committer.stats();
    assert_eq!(stats.retriable_failures, 1, "{stats:?}");
    guard("the committer's close", committer.close())
        .await
        .expect("the last commit");
    guard("the consumer's shutdown", control.shutdown()).await;
}

/// A fatal consumer error fails the per-partition source too (it ended as
/// if complete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_consumer_error_fails_the_partitioned_source() {
    let b = broker(&[("fatal", 2)]);
    b.request_errors(
        rdkafka::types::RDKafkaApiKey::JoinGroup,
        vec![rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID],
    )
    .unwrap();
    let settings = ConsumerSettings::new(b.bootstrap_servers(), "g-fatal", ["fatal"])
        .set("group.instance.id", "i1");
    let outer = partitioned_source(settings, 8).unwrap();
    let r = guard(
        "the outer source",
        outer.run_with(Sink::foreach(|_: PartitionSource| {})),
    )
    .await;
    let e = r.expect_err("a fatal error fails the outer source");
    assert!(e.to_string().contains("FencedInstanceId"), "{e}");
}

/// A last commit that fails is `close`'s error, not only a log line: the
/// caller learns that the records after the committed offsets will be
/// consumed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_last_commit_is_the_closes_error() {
    let b = broker(&[("lastfail", 1)]);
    let bootstrap = b.bootstrap_servers().to_string();
    produce_inputs(&bootstrap, "lastfail", 1, 0..5).await;
    let (control, source) = committable_source(ConsumerSettings::new(
        &bootstrap,
        "g-lastfail",
        ["lastfail"],
    ))
    .unwrap()
    .pre_materialize();
    // Commits only when asked to (a close).
    let committer =
        control.committer(CommitterSettings::default().max_interval(Duration::from_secs(3600)));
    mark_records(source, &committer, 5).await;
    b.request_errors(
        rdkafka::types::RDKafkaApiKey::OffsetCommit,
        vec![rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED; 10],
    )
    .unwrap();
    let closed = guard("the committer's close", committer.close()).await;
    let e = closed.expect_err("the last commit failed");
    assert!(e.to_string().contains("uthoriz"), "{e}");
    b.request_errors(rdkafka::types::RDKafkaApiKey::OffsetCommit, Vec::new())
        .unwrap();
    guard("the consumer's shutdown", control.shutdown()).await;
}

/// A delivery that fails fails the committable sink while its upstream waits
/// for the next record (it failed only when one came), and nothing is
/// committed past the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_fails_an_idle_committable_sink() {
    let b = broker(&[("idlein", 1), ("idleout", 1)]);
    let bootstrap = b.bootstrap_servers().to_string();
    produce_inputs(&bootstrap, "idlein", 1, 0..1).await;
    let (control, source) =
        committable_source(ConsumerSettings::new(&bootstrap, "g-idlesink", ["idlein"]))
            .unwrap()
            .pre_materialize();
    let committer = control.committer(CommitterSettings::default());
    let sink = committable_sink(
        &ProducerSettings::new(&bootstrap).set("linger.ms", "0"),
        committer.clone(),
    )
    .unwrap();
    b.request_errors(
        rdkafka::types::RDKafkaApiKey::Produce,
        vec![rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 5],
    )
    .unwrap();
    // One record, then the source waits for more (none come).
    let done = source
        .map(|m: CommittableMessage| {
            let payload = m.record.payload.clone().unwrap_or_default();
            ProducerMessage::single(ProducerRecord::new("idleout", payload), m.offset)
        })
        .run_with(sink);
    let e = guard("the sink's failure", done)
        .await
        .expect_err("the delivery failed");
    assert!(e.to_string().contains("idleout"), "{e}");
    assert_eq!(committer.stats().marked, 0);
    b.request_errors(rdkafka::types::RDKafkaApiKey::Produce, Vec::new())
        .unwrap();
    drop(committer);
    guard("the consumer's shutdown", control.shutdown()).await;
}
