//! Exactly-once processing with the transactional sink.
//!
//! On Apache Kafka (when `FLOWSTAGE_KAFKA_BOOTSTRAP` names a broker,
//! `scripts/kafka/start.sh`; otherwise SKIPPED):
//! 1. a clean run: every input's output is seen exactly once by a
//!    `read_committed` reader, and the group's committed offsets equal the
//!    input's end;
//! 2. a crash (the sink dropped with a transaction open): the open
//!    transaction's records are invisible to `read_committed` (though present
//!    in the log) and its input offsets are not committed; a restart with the
//!    same `transactional.id` fences the dead producer, re-processes those
//!    inputs, and the `read_committed` output has every input exactly once —
//!    in input order and with messages reordered before the sink (a
//!    transaction must then never commit records above a missing one);
//! 3. a second member joining mid-stream (eager and cooperative-sticky
//!    assignment): transactions aborted in place and their partitions read
//!    again, every input still read exactly once.
//!
//! On the embedded (mock) broker, which accepts transactional requests
//! without their semantics: the sink refuses it with a clear error.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{guard, id, produce_inputs, unique, PARTITIONS};
use flowstage::prelude::*;
use flowstage_stages::kafka::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;

fn bootstrap() -> Option<String> {
    match std::env::var("FLOWSTAGE_KAFKA_BOOTSTRAP") {
        Ok(b) if !b.trim().is_empty() => Some(b),
        _ => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (transactional): FLOWSTAGE_KAFKA_BOOTSTRAP is not set; run \
                 `export FLOWSTAGE_KAFKA_BOOTSTRAP=$(scripts/kafka/start.sh)` to run it on Apache Kafka"
            );
            None
        }
    }
}

async fn create_topics(bootstrap: &str, names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in admin
        .create_topics(&topics, &opts)
        .await
        .expect("create topics")
    {
        r.expect("topic created");
    }
}

/// Committed positions seen by the consumer's commit hook (inside transactions).
#[derive(Clone, Default)]
struct Positions {
    last: Arc<Mutex<BTreeMap<i32, i64>>>,
    changed: Arc<Notify>,
}

impl Positions {
    fn total(&self) -> i64 {
        self.last.lock().expect("positions").values().sum()
    }
}

impl EosPipeline {
    /// Waits until `n` input offsets are committed; panics if the pipeline
    /// ends first.
    async fn wait_committed(&mut self, n: i64) {
        let positions = self.positions.clone();
        let done = &mut self.done;
        guard(&format!("{n} input offsets committed"), async {
            loop {
                let notified = positions.changed.notified();
                if positions.total() >= n {
                    return;
                }
                tokio::select! {
                    () = notified => {}
                    r = &mut *done => panic!("the pipeline ended first: {r:?}"),
                }
            }
        })
        .await;
    }
}

/// Fresh input and output topic and group names (`kind` tells the tests'
/// topics apart on the broker).
fn names(kind: &str) -> (String, String, String) {
    let kind = if kind.is_empty() {
        String::new()
    } else {
        format!("{kind}-")
    };
    (
        format!("eos-{kind}in-{}", unique()),
        format!("eos-{kind}out-{}", unique()),
        format!("eos-{kind}g-{}", unique()),
    )
}

/// Blocks messages from the `limit`-th on (`usize::MAX`: none).
struct Gate {
    limit: usize,
}

struct EosPipeline {
    control: ConsumerControl,
    done: Completion<TransactionStats>,
    /// The graph's driver: aborting it is a crash.
    handle: tokio::task::JoinHandle<()>,
    positions: Positions,
}

/// input → (optionally reordered) → output with key = payload = the input's
/// id, through the transactional sink.
#[allow(clippy::too_many_arguments)]
fn start(
    bootstrap: &str,
    group: &str,
    txn_id: &str,
    input: &str,
    output: &str,
    gate: Gate,
    scramble: bool,
    max_batch: usize,
    max_interval: Duration,
    positions: Positions,
    assignment_strategy: Option<&str>,
    fatal_after: Option<u64>,
) -> EosPipeline {
    let hook = positions.clone();
    let mut cs = ConsumerSettings::new(bootstrap, group, [input])
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300");
    if let Some(s) = assignment_strategy {
        cs = cs.set("partition.assignment.strategy", s);
    }
    let cs = cs.commit_on_revoke(false).on_commit(move |tp, pos| {
        hook.last
            .lock()
            .expect("positions")
            .insert(tp.partition, pos);
        hook.changed.notify_waiters();
    });
    let (control, source) = committable_source(cs).expect("consumer").pre_materialize();
    let mut settings = TransactionalSettings::new(ProducerSettings::new(bootstrap), txn_id)
        .max_batch(max_batch)
        .max_interval(max_interval)
        .transaction_timeout(max_interval * 2);
    if let Some(n) = fatal_after {
        settings = settings.inject_fatal_error_after(n);
    }
    let sink = transactional_sink(&settings, &control).expect("sink");
    let output = output.to_string();
    let seq = AtomicUsize::new(0);
    let limit = gate.limit;
    let (done, driver) = source
        .map(move |m| (seq.fetch_add(1, Ordering::Relaxed), m))
        .map_async_unordered(16, move |(i, m): (usize, CommittableMessage)| async move {
            if i >= limit {
                futures::future::pending::<()>().await;
            }
            if scramble {
                // Reorder: yield a number of times that depends on the record.
                let mut h = std::collections::hash_map::DefaultHasher::new();
                m.record.offset.hash(&mut h);
                for _ in 0..(h.finish() % 7) {
                    tokio::task::yield_now().await;
                }
            }
            m
        })
        .map(move |m: CommittableMessage| {
            let mut rec = ProducerRecord::new(output.clone(), m.record.payload.unwrap_or_default());
            if let Some(k) = m.record.key {
                rec = rec.key(k);
            }
            ProducerMessage::single(rec, m.offset)
        })
        .to(sink)
        .into_parts();
    EosPipeline {
        control,
        done,
        handle: tokio::spawn(driver),
        positions,
    }
}

/// Reads every partition of `topic` to its end (`isolation.level`
/// `read_committed` or `read_uncommitted`); returns how many records each
/// key has.
async fn read_all(bootstrap: &str, topic: &str, isolation: &str) -> HashMap<String, usize> {
    let b = bootstrap.to_string();
    let t = topic.to_string();
    let iso = isolation.to_string();
    let task = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("group.id", format!("verifier-{}", unique()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", &iso)
            .create()
            .expect("verifier");
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(&t, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut at_end = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + common::HANG_GUARD;
        while at_end.len() < PARTITIONS as usize {
            assert!(
                std::time::Instant::now() < deadline,
                "hang guard: reading {t} to its end"
            );
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                    *counts.entry(key).or_default() += 1;
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                Some(Err(e)) => panic!("verifier: {e}"),
                None => {}
            }
        }
        counts
    });
    task.await.expect("verifier task")
}

/// The group's committed offset and the end of every partition of `topic`.
async fn committed_and_end(bootstrap: &str, group: &str, topic: &str) -> Vec<(i32, i64, i64)> {
    let (b, g, t) = (bootstrap.to_string(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || common::committed_and_end(&b, &g, &t, PARTITIONS))
        .await
        .expect("committed offsets")
}

async fn stop(p: EosPipeline) -> TransactionStats {
    p.control.stop();
    let stats = guard("the pipeline to finish", p.done)
        .await
        .expect("pipeline failed");
    let _ = p.handle.await;
    stats
}

/// 5,000 inputs through one pipeline (a fatal producer error raised after
/// `fatal_after` messages); every offset committed, every input's result
/// read `read_committed` exactly once. Returns the sink's counters.
async fn run_to_the_end(b: &str, fatal_after: Option<u64>) -> TransactionStats {
    let (input, output, group) = names("");
    create_topics(b, &[&input, &output]).await;
    let n = 5000;
    produce_inputs(b, &input, PARTITIONS, 0..n).await;
    let mut p = start(
        b,
        &group,
        &format!("txn-{}", unique()),
        &input,
        &output,
        Gate { limit: usize::MAX },
        false,
        700,
        Duration::from_secs(2),
        Positions::default(),
        None,
        fatal_after,
    );
    p.wait_committed(n as i64).await;
    let stats = stop(p).await;
    assert!(stats.messages >= n as u64, "{stats:?}");
    assert!(stats.committed >= (n / 700) as u64, "{stats:?}");
    for (p, committed, end) in committed_and_end(b, &group, &input).await {
        assert_eq!(
            committed, end,
            "partition {p}: committed offset is not the end"
        );
    }
    let seen = read_all(b, &output, "read_committed").await;
    assert_eq!(seen.len(), n, "distinct results");
    for i in 0..n {
        assert_eq!(
            seen.get(&id(i)),
            Some(&1),
            "{} results of {}",
            seen.get(&id(i)).copied().unwrap_or(0),
            id(i)
        );
    }
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_run_is_read_exactly_once_and_commits_to_the_end() {
    let Some(b) = bootstrap() else { return };
    let stats = run_to_the_end(&b, None).await;
    assert_eq!(stats.messages, 5000);
    assert_eq!(stats.records, 5000);
    assert_eq!(stats.aborted, 0);
    assert_eq!(stats.producers_replaced, 0);
}

/// A fatal producer error mid-transaction (`INVALID_TXN_STATE`, as a broker
/// once answered an abort in `a_member_joining_mid_stream`), raised with
/// librdkafka's test API on the real cluster: a new producer with the same
/// `transactional.id` takes over, the open transaction is aborted and its
/// inputs are read again, and the stream goes on, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fatal_producer_error_is_survived_by_a_new_producer_exactly_once() {
    let Some(b) = bootstrap() else { return };
    let stats = run_to_the_end(&b, Some(1_500)).await;
    assert_eq!(stats.producers_replaced, 1, "{stats:?}");
    assert_eq!(stats.aborted, 1, "{stats:?}");
    assert!(stats.rewound >= 1, "{stats:?}");
    // The aborted transaction's inputs were taken twice.
    assert!(stats.messages > 5000, "{stats:?}");
}

/// Fenced is the one fatal error the sink does not get past with a new
/// producer: a producer with the same `transactional.id` started elsewhere
/// (an instance started again while the old one still runs), and fencing it
/// back would have the two fence each other in turn. The old sink fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_sink_fails_rather_than_fence_its_successor() {
    let Some(b) = bootstrap() else { return };
    let (input, output, group) = names("fence");
    let txn_id = format!("txn-{}", unique());
    create_topics(&b, &[&input, &output]).await;
    let n = 3000;
    produce_inputs(&b, &input, PARTITIONS, 0..n).await;
    // One transaction for everything, left open.
    let p = start(
        &b,
        &group,
        &txn_id,
        &input,
        &output,
        Gate { limit: usize::MAX },
        false,
        1_000_000,
        Duration::from_secs(450),
        Positions::default(),
        None,
        None,
    );
    guard("the records in the log, uncommitted", async {
        while read_all(&b, &output, "read_uncommitted").await.len() < n {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // The successor: same transactional.id.
    let (b2, id2) = (b.clone(), txn_id.clone());
    tokio::task::spawn_blocking(move || {
        let successor: rdkafka::producer::BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &b2)
            .set("transactional.id", &id2)
            .create()
            .expect("successor");
        rdkafka::producer::Producer::init_transactions(&successor, Duration::from_secs(30))
            .expect("the successor fences the sink's producer");
    })
    .await
    .expect("successor task");
    // The stop commits the open transaction: the broker refuses it.
    p.control.stop();
    let r = guard("the fenced pipeline to end", p.done).await;
    let _ = p.handle.await;
    let e = r.expect_err("a fenced sink must fail").to_string();
    assert!(e.to_lowercase().contains("fenced"), "{e}");
    let seen = read_all(&b, &output, "read_committed").await;
    assert!(
        seen.is_empty(),
        "the open transaction was committed: {}",
        seen.len()
    );
}

/// Processes `limit` inputs, crashes with a transaction open, restarts with
/// the same transactional id.
async fn crash_and_restart(b: &str, scramble: bool) {
    let (input, output, group) = names("");
    let txn_id = format!("txn-{}", unique());
    create_topics(b, &[&input, &output]).await;
    let n = 6000;
    let limit = 2600;
    produce_inputs(b, &input, PARTITIONS, 0..n).await;

    let first = start(
        b,
        &group,
        &txn_id,
        &input,
        &output,
        Gate { limit },
        scramble,
        1000,
        // No commit by time while the test looks at the open transaction.
        Duration::from_secs(450),
        Positions::default(),
        None,
        None,
    );
    // Every message before the gate reached the log (two transactions
    // committed at ~1,000 and ~2,000 messages, the rest in the open one).
    guard("the first run's records in the log", async {
        loop {
            let raw = read_all(b, &output, "read_uncommitted").await;
            if raw.len() >= limit {
                return;
            }
        }
    })
    .await;
    let committed_positions = first.positions.total();
    let first_positions = first.positions.clone();
    // The crash: the sink and its producer dropped without a commit.
    first.handle.abort();
    let _ = first.handle.await;
    drop(first.control);

    let committed_view = read_all(b, &output, "read_committed").await;
    assert!(
        committed_view.values().all(|&c| c == 1),
        "a duplicate among the committed results"
    );
    assert_eq!(
        committed_view.len() as i64,
        committed_positions,
        "the committed results are exactly the inputs below the committed offsets"
    );
    assert!(
        committed_view.len() >= 1000 && committed_view.len() < limit,
        "the crash left a transaction open: {} of {limit} results committed",
        committed_view.len()
    );
    let broker_committed: i64 = committed_and_end(b, &group, &input)
        .await
        .iter()
        .map(|&(_, c, _)| c.max(0))
        .sum();
    assert_eq!(
        broker_committed, committed_positions,
        "the open transaction's input offsets are not committed"
    );

    // The restart fences the dead producer (its transaction is aborted) and
    // processes everything from the committed offsets.
    let mut second = start(
        b,
        &group,
        &txn_id,
        &input,
        &output,
        Gate { limit: usize::MAX },
        scramble,
        1000,
        Duration::from_secs(2),
        // The committed positions of both runs.
        first_positions,
        None,
        None,
    );
    second.wait_committed(n as i64).await;
    let stats = stop(second).await;
    assert!(
        stats.messages as i64 >= n as i64 - committed_positions,
        "{stats:?}"
    );
    for (p, committed, end) in committed_and_end(b, &group, &input).await {
        assert_eq!(
            committed, end,
            "partition {p}: committed offset is not the end"
        );
    }
    let seen = read_all(b, &output, "read_committed").await;
    assert_eq!(seen.len(), n, "distinct results");
    let dups: Vec<_> = seen.iter().filter(|(_, &c)| c != 1).collect();
    assert!(
        dups.is_empty(),
        "not exactly once: {} keys, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    let raw: usize = read_all(b, &output, "read_uncommitted")
        .await
        .values()
        .sum();
    assert!(
        raw > n,
        "the aborted transaction's records are in the log ({raw} records) but invisible"
    );
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "crash+restart (scramble {scramble}): {committed_positions} committed before the crash, {} in the aborted transaction, {n} exactly once after the restart\n",
            raw - n
        )
        .as_bytes(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_mid_transaction_is_invisible_and_reprocessed_after_a_restart() {
    let Some(b) = bootstrap() else { return };
    crash_and_restart(&b, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reordered_messages_are_still_exactly_once_after_a_crash() {
    let Some(b) = bootstrap() else { return };
    crash_and_restart(&b, true).await;
}

/// What a member of [`a_member_joining_mid_stream`] did over its lives.
#[derive(Debug, Default)]
struct MemberRuns {
    /// Its stats, summed over its lives.
    messages: u64,
    committed: u64,
    aborted: u64,
    rewound: u64,
    stale: u64,
    /// The errors that ended a life (each followed by a restart).
    failures: Vec<String>,
}

/// A second member joins the group while inputs arrive and transactions are
/// open: the eager protocol revokes every partition, the cooperative one only
/// some. The open transaction is aborted and its records read again in place
/// (from the partitions' next owners, or here after a seek). When a member's
/// stream fails instead (an error the transaction does not survive), it is
/// restarted with the same `transactional.id`, as a supervisor would. Either
/// way every input is read exactly once by `read_committed` and the committed
/// offsets reach the end.
async fn a_member_joining_mid_stream(b: &str, strategy: &str) {
    let (input, output, group) = names("join");
    create_topics(b, &[&input, &output]).await;
    let n = 12_000;
    let positions = Positions::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let member = |name: &str| {
        let (b, group, input, output) =
            (b.to_string(), group.clone(), input.clone(), output.clone());
        let (positions, strategy, txn) = (
            positions.clone(),
            strategy.to_string(),
            format!("{name}-{}", unique()),
        );
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut runs = MemberRuns::default();
            loop {
                let p = start(
                    &b,
                    &group,
                    &txn,
                    &input,
                    &output,
                    Gate { limit: usize::MAX },
                    false,
                    500,
                    Duration::from_secs(1),
                    positions.clone(),
                    Some(&strategy),
                    None,
                );
                let EosPipeline {
                    control,
                    mut done,
                    handle,
                    ..
                } = p;
                let stopping = async {
                    let _ = stop.wait_for(|s| *s).await;
                };
                let ended = tokio::select! {
                    r = &mut done => Some(r),
                    () = stopping => None,
                };
                let r = match ended {
                    Some(r) => r,
                    None => {
                        control.stop();
                        guard("a member to stop", done).await
                    }
                };
                let _ = handle.await;
                match r {
                    Ok(s) => {
                        runs.messages += s.messages;
                        runs.committed += s.committed;
                        runs.aborted += s.aborted;
                        runs.rewound += s.rewound;
                        runs.stale += s.stale;
                    }
                    Err(e) => runs.failures.push(e.to_string()),
                }
                let stopped = *stop.borrow();
                if stopped {
                    return runs;
                }
                assert!(runs.failures.len() < 5, "a member keeps failing: {runs:?}");
            }
        })
    };
    let wait_committed = |at_least: i64| {
        let positions = positions.clone();
        async move {
            loop {
                let notified = positions.changed.notified();
                if positions.total() >= at_least {
                    return;
                }
                notified.await;
            }
        }
    };
    let first = member("join-a");
    // Inputs keep arriving (about 4,000 a second), so transactions are open
    // whenever the group rebalances.
    let (b2, input2) = (b.to_string(), input.clone());
    let feeder = tokio::spawn(async move {
        for chunk in (0..n).step_by(400) {
            produce_inputs(&b2, &input2, PARTITIONS, chunk..(chunk + 400).min(n)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    guard("1,000 input offsets committed", wait_committed(1_000)).await;
    let second = member("join-b");
    guard("the inputs produced", feeder).await.expect("feeder");
    guard(
        &format!("{n} input offsets committed"),
        wait_committed(n as i64),
    )
    .await;
    let _ = stop_tx.send(true);
    let a = guard("the first member", first)
        .await
        .expect("first member");
    let b_runs = guard("the second member", second)
        .await
        .expect("second member");
    eprintln!("{strategy}: first member {a:?}; second member {b_runs:?}");
    for (p, committed, end) in committed_and_end(b, &group, &input).await {
        assert_eq!(
            committed, end,
            "partition {p}: committed offset is not the end"
        );
    }
    let seen = read_all(b, &output, "read_committed").await;
    let wrong: Vec<(String, usize)> = (0..n)
        .map(|i| (id(i), seen.get(&id(i)).copied().unwrap_or(0)))
        .filter(|(_, c)| *c != 1)
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "results per input not 1: {wrong:?} ({} distinct of {n})",
        seen.len()
    );
    assert_eq!(seen.len(), n, "results of inputs that were not sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_joining_mid_stream_is_exactly_once_with_eager_rebalancing() {
    let Some(b) = bootstrap() else { return };
    a_member_joining_mid_stream(&b, "range").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_joining_mid_stream_is_exactly_once_with_cooperative_rebalancing() {
    let Some(b) = bootstrap() else { return };
    a_member_joining_mid_stream(&b, "cooperative-sticky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_broker_is_refused_with_a_clear_error() {
    let broker = EmbeddedBroker::start(EmbeddedBrokerConfig::new(1).topic("in", 1).topic("out", 1))
        .expect("embedded broker");
    let b = broker.bootstrap_servers().to_string();
    produce_inputs(&b, "in", 1, 0..10).await;
    let cs = ConsumerSettings::new(&b, "g", ["in"])
        .set("isolation.level", "read_committed")
        .commit_on_revoke(false);
    let (control, source) = committable_source(cs).expect("consumer").pre_materialize();
    let settings = TransactionalSettings::new(ProducerSettings::new(&b), "txn-mock");
    let sink = transactional_sink(&settings, &control).expect("sink");
    let r = guard(
        "the sink's refusal",
        source
            .map(|m| ProducerMessage::single(ProducerRecord::new("out", "x"), m.offset))
            .run_with(sink),
    )
    .await;
    let e = r.expect_err("exactly-once on the mock cluster must fail");
    assert!(
        matches!(kafka_error(&e), Some(KafkaStageError::Unsupported(_))),
        "{e}"
    );
    assert!(e.to_string().contains("mock"), "{e}");
    assert!(check_transactions_supported(&b).await.is_err());

    // A consumer that commits on revocation cannot feed a transactional sink.
    let (control, _source) = committable_source(ConsumerSettings::new(&b, "g2", ["in"]))
        .expect("consumer")
        .pre_materialize();
    assert!(matches!(
        transactional_sink(&settings, &control).err(),
        Some(KafkaStageError::Config {
            name: "commit_on_revoke",
            ..
        })
    ));
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat`.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime: the 14th and 15th fields of the whole line.
    (ticks(11) + ticks(12)) / 100.0
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The measurement of the README's "Exactly-once" section (not a test; run
/// it in a release build: `FLOWSTAGE_KAFKA_BOOTSTRAP=… cargo test --release
/// -p flowstage-stages --features pmml --test transactional measure --
/// --ignored --nocapture`). Pre-publishes `FLOWSTAGE_EOS_RECORDS` (200,000)
/// records, then runs the wine [`Server`] in-process at full speed in each
/// mode in turn (`FLOWSTAGE_EOS_REPS` rounds, alternating; each run with a
/// group and results topic of its own) and measures the time from the
/// server's start until its group's committed offsets reach the data topic's
/// end, and the process's CPU time in that span. `FLOWSTAGE_EOS_COMMIT_BATCH`
/// (1,000, the default of `--commit-batch`) sets the records per commit and
/// per transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand with --ignored"]
async fn measure_exactly_once_against_at_least_once() {
    use flowstage_stages::wine::provider::{provide, ProviderConfig};
    use flowstage_stages::wine::server::{Server, ServerConfig};
    use flowstage_stages::wine::{ensure_topics, files, Topics};
    let Some(b) = bootstrap() else { return };
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("FLOWSTAGE_EOS_RECORDS", 200_000);
    let reps = env("FLOWSTAGE_EOS_REPS", 3);
    let commit_batch = env("FLOWSTAGE_EOS_COMMIT_BATCH", 1000) as usize;
    let base = format!("eos-bench-{}", unique());
    let topics = Topics {
        data: format!("{base}-mdata"),
        models: format!("{base}-models"),
        results: format!("{base}-results"),
        dlq: format!("{base}-dlq"),
    };
    let instances = format!("{base}-instances");
    ensure_topics(&b, &topics.layout(&instances, PARTITIONS))
        .await
        .expect("topics");
    let model = files::generated_models()
        .into_iter()
        .next()
        .expect("a generated model");
    let mut pc = ProviderConfig::new(&b);
    pc.topics = topics.clone();
    pc.rate = 0;
    pc.count = Some(n);
    pc.loop_data = true;
    pc.model_interval = Duration::from_secs(3600);
    let published = provide(
        pc,
        files::generated_wine_records(1_599, 7),
        vec![model],
        |_| {},
        futures::future::pending(),
    )
    .await
    .expect("publish");
    assert_eq!(published.records, n);

    let mut secs: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for rep in 0..reps {
        for processing in [Processing::AtLeastOnce, Processing::ExactlyOnce] {
            let mode = if processing == Processing::ExactlyOnce {
                "exactly-once"
            } else {
                "at-least-once"
            };
            let mut c = ServerConfig::new(&b);
            c.topics = topics.clone();
            c.topics.results = format!("{base}-results-{rep}-{mode}");
            c.instances_topic = instances.clone();
            c.group_id = format!("eos-bench-{}", unique());
            c.instance_id = format!("bench-{rep}");
            c.http = None;
            c.processing = processing;
            // Records per offset commit / transaction (both modes).
            c.commit = c.commit.max_batch(commit_batch);
            let group = c.group_id.clone();
            let (t0, cpu0) = (std::time::Instant::now(), process_cpu_seconds());
            let server = Server::start(c).await.expect("server");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let running = tokio::spawn(server.run(async {
                let _ = stopped.await;
            }));
            guard("every offset committed", async {
                loop {
                    let rows = committed_and_end(&b, &group, &topics.data).await;
                    if rows.iter().all(|&(_, c, end)| c >= end) {
                        return;
                    }
                    // Polling the committed offsets (nothing announces them).
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            let (s, c) = (t0.elapsed().as_secs_f64(), process_cpu_seconds() - cpu0);
            let _ = stop.send(());
            let summary = running.await.expect("server task").expect("server");
            assert!(summary.results >= n, "{summary}");
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!(
                    "run {rep} {mode:>13}: {n} records committed in {s:.2} s ({:.0} records/s), CPU {c:.2} s ({:.0} records per CPU-second); {summary}\n",
                    n as f64 / s,
                    n as f64 / c
                )
                .as_bytes(),
            );
            secs.entry(mode).or_default().push(s);
            cpu.entry(mode).or_default().push(c);
        }
    }
    let m =
        |map: &BTreeMap<&str, Vec<f64>>, k: &str| median(map.get(k).map_or(&[][..], Vec::as_slice));
    let (aw, ew) = (m(&secs, "at-least-once"), m(&secs, "exactly-once"));
    let (ac, ec) = (m(&cpu, "at-least-once"), m(&cpu, "exactly-once"));
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "medians of {reps}: at-least-once {aw:.2} s ({:.0}/s, CPU {ac:.2} s), exactly-once {ew:.2} s ({:.0}/s, CPU {ec:.2} s); throughput EOS/ALO {:.2}, CPU per record EOS/ALO {:.2}\n",
            n as f64 / aw,
            n as f64 / ew,
            aw / ew,
            ec / ac
        )
        .as_bytes(),
    );
}
