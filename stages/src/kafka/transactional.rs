//! Exactly-once processing with Kafka transactions (consume → process →
//! produce, KIP-98 / KIP-447): the [`transactional_sink`] produces each
//! message's records inside a transaction and commits the consumed offsets in
//! the same transaction, with the consumer's group metadata
//! (`send_offsets_to_transaction`). A `read_committed` reader of the output
//! sees every input's results exactly once: a transaction that is aborted or
//! never committed is invisible, and its input offsets stay uncommitted, so
//! whoever reads the partitions next processes those inputs again.
//!
//! ```no_run
//! use flowstage::prelude::*;
//! use flowstage_stages::kafka::*;
//! # async fn run(bootstrap: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let cs = ConsumerSettings::new(bootstrap, "scorers", ["in"])
//!     .set("isolation.level", "read_committed")
//!     .commit_on_revoke(false);
//! let (control, source) = committable_source(cs)?.pre_materialize();
//! let settings = TransactionalSettings::new(
//!     ProducerSettings::new(bootstrap),
//!     transactional_id("scorers", "instance-1"),
//! );
//! let sink = transactional_sink(&settings, &control)?;
//! let done = source
//!     .map(|m| {
//!         let result = m.record.payload.clone().unwrap_or_default(); // process
//!         ProducerMessage::single(ProducerRecord::new("out", result), m.offset)
//!     })
//!     .run_with(sink);
//! let stats = run_until(&control, done, shutdown_signal()).await?;
//! println!("{} transactions committed", stats.committed);
//! # Ok(()) }
//! ```
//!
//! ## How it works
//! - One transaction at a time: it begins with the first message after the
//!   previous commit, takes records until [`max_batch`](TransactionalSettings::max_batch)
//!   messages or [`max_interval`](TransactionalSettings::max_interval), then
//!   commits: the processed prefix of every partition is sent to the
//!   transaction and the transaction is committed (librdkafka flushes the
//!   records first). The blocking client calls (`init_transactions`,
//!   `send_offsets_to_transaction`, `commit_transaction`,
//!   `abort_transaction`) run on tokio's blocking pool; records are handed to
//!   librdkafka without waiting for acknowledgements (at most
//!   [`max_in_flight`](super::ProducerSettings::max_in_flight) unacknowledged).
//! - **No partial prefixes.** Messages may reach the sink out of input order
//!   (a dead letter overtaking a record still being scored). A transaction is
//!   committed only when, in every partition, the records it produced form the
//!   committable prefix; while a commit is due, a message that would land above
//!   a still-missing one is held back for the next transaction. So a committed
//!   offset never covers a record whose result is not committed, and no
//!   committed result belongs to a record whose offset is not.
//! - **Fencing.** The `transactional.id` ([`transactional_id`]) is stable per
//!   instance: a restarted instance with the same id fences the previous
//!   producer and aborts its open transaction at start
//!   (`init_transactions`). An open transaction of an instance that never
//!   comes back blocks `read_committed` readers of its partitions until
//!   `transaction.timeout.ms` ([`transaction_timeout`](TransactionalSettings::transaction_timeout),
//!   10 s by default) aborts it — so keep instance ids stable.
//! - **Failures.** A failed delivery, and a send-offsets or commit error
//!   the transaction cannot survive, abort the transaction and fail the
//!   stream with
//!   [`KafkaStageError::TransactionAborted`]; a restart re-reads from the
//!   committed offsets. Handled in place (as Kafka Streams does): a
//!   rebalance that revokes partitions the open transaction touched, and an
//!   *abortable* error of the offsets, the commit or a produce call (the
//!   group's generation moved on under the transaction, the producer's epoch
//!   was bumped). The transaction is aborted; the revoked partitions' next
//!   owners process its records again from the committed offsets, and the
//!   partitions this consumer still holds (kept by a cooperative rebalance,
//!   or revoked and assigned again) are read again here: the consumer seeks
//!   them back to their committed positions, and records of theirs read
//!   before the seek (in flight, held back, or still arriving) are dropped.
//!   After 5 such aborts in a row without a commit the stream fails.
//! - **A failed producer is replaced.** After a fatal producer error (for
//!   example `INVALID_TXN_STATE` in answer to an abort) a new producer with
//!   the same `transactional.id` takes over: its `init_transactions` fences
//!   the old one and aborts the open transaction, whose records are read
//!   again as above. Except when the producer was *fenced*: another producer
//!   with this `transactional.id` started (an instance started again while
//!   the old one still runs), and the old one gives way: the stream fails
//!   rather than fence it back. Refused authorization fails the stream too.
//! - The consumer must read `isolation.level=read_committed` (not to process
//!   aborted input) and must not commit on its own: create it with
//!   [`ConsumerSettings::commit_on_revoke(false)`](super::ConsumerSettings::commit_on_revoke)
//!   and run no [`Committer`](super::Committer) for it.
//! - librdkafka's mock cluster ([`EmbeddedBroker`](super::EmbeddedBroker))
//!   accepts the transactional requests but implements none of their
//!   semantics (no transaction markers, aborted records are visible to
//!   `read_committed`, offsets sent to a transaction are not stored): the sink
//!   refuses it with [`KafkaStageError::Unsupported`].

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flowstage::{Completion, Sink, SinkStage, StreamError};
use futures::StreamExt;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Message, Offset};
use tokio::sync::{mpsc, Notify};

use super::consumer::{AssignmentEvent, CommittableOffset, ConsumerControl};
use super::error::KafkaStageError;
use super::producer::{ProducerMessage, ProducerRecord, ProducerSettings};
use super::tracker::TopicPartition;

/// The delivery guarantee of a consume → process → produce pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Processing {
    /// Offsets are committed after the results are acknowledged: after a
    /// crash, records processed since the last commit are processed again
    /// (duplicate results). The default.
    #[default]
    AtLeastOnce,
    /// Results and offsets are committed together in Kafka transactions:
    /// `read_committed` readers see each input's results exactly once.
    ExactlyOnce,
}

impl fmt::Display for Processing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Processing::AtLeastOnce => "at-least-once",
            Processing::ExactlyOnce => "exactly-once",
        })
    }
}

impl FromStr for Processing {
    type Err = KafkaStageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "at-least-once" | "alo" => Ok(Processing::AtLeastOnce),
            "exactly-once" | "eos" => Ok(Processing::ExactlyOnce),
            other => Err(KafkaStageError::Config {
                name: "processing",
                reason: format!("{other:?}: expected at-least-once or exactly-once"),
            }),
        }
    }
}

/// The `transactional.id` of an instance of a consumer group:
/// `flowstage-<group>-<instance_id>`. Stable instance ids let a restarted
/// instance fence its predecessor and abort its open transaction at once.
pub fn transactional_id(group: &str, instance_id: &str) -> String {
    format!("flowstage-{group}-{instance_id}")
}

/// Settings of a [`transactional_sink`].
#[derive(Debug, Clone)]
pub struct TransactionalSettings {
    /// The producer's connection, in-flight bound and extra properties.
    pub producer: ProducerSettings,
    /// `transactional.id`, stable per instance (see [`transactional_id`]).
    pub transactional_id: String,
    /// Commit a transaction after this many messages.
    pub max_batch: usize,
    /// Commit a transaction at least this often while messages arrive (at
    /// most half the [`transaction_timeout`](Self::transaction_timeout)).
    pub max_interval: Duration,
    /// `transaction.timeout.ms`: the broker aborts a transaction left open
    /// longer (a crashed instance that does not come back).
    pub transaction_timeout: Duration,
    /// Timeout of the blocking transactional calls (init, commit, abort).
    pub call_timeout: Duration,
    /// Test hook: raise a fatal producer error once this many messages
    /// were taken ([`inject_fatal_error_after`](Self::inject_fatal_error_after)).
    fatal_after: Option<u64>,
}

impl TransactionalSettings {
    /// Defaults: 1,000 messages or 1 s per transaction, a 10 s transaction
    /// timeout, 30 s for each transactional call.
    pub fn new(producer: ProducerSettings, transactional_id: impl Into<String>) -> Self {
        TransactionalSettings {
            producer,
            transactional_id: transactional_id.into(),
            max_batch: 1000,
            max_interval: Duration::from_secs(1),
            transaction_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            fatal_after: None,
        }
    }

    /// For tests of the recovery from a fatal producer error: once `n`
    /// messages were taken into transactions, the sink raises one in its
    /// producer with librdkafka's `rd_kafka_test_fatal_error`
    /// (`INVALID_TXN_STATE`, as a broker may answer an abort).
    #[doc(hidden)]
    pub fn inject_fatal_error_after(mut self, n: u64) -> Self {
        self.fatal_after = Some(n);
        self
    }

    /// Sets [`max_batch`](Self::max_batch) (at least 1).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Sets [`max_interval`](Self::max_interval) (at least 1 ms).
    pub fn max_interval(mut self, d: Duration) -> Self {
        self.max_interval = d.max(Duration::from_millis(1));
        self
    }

    /// Sets [`transaction_timeout`](Self::transaction_timeout).
    pub fn transaction_timeout(mut self, d: Duration) -> Self {
        self.transaction_timeout = d;
        self
    }
}

/// What a [`transactional_sink`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransactionStats {
    /// Messages taken into a transaction (with or without records).
    pub messages: u64,
    /// Records acknowledged by the broker (in committed or aborted transactions).
    pub records: u64,
    /// Transactions committed.
    pub committed: u64,
    /// Transactions aborted in place (partitions they touched were revoked,
    /// or an abortable error); their records are read again.
    pub aborted: u64,
    /// Partitions this consumer read again from their committed position
    /// after such an abort (those it still held).
    pub rewound: u64,
    /// Producers replaced after a fatal error other than being fenced (the
    /// new one, with the same `transactional.id`, aborts the open
    /// transaction when it starts); each replacement is an in-place abort.
    pub producers_replaced: u64,
    /// Messages of revoked partitions dropped (their next owner processes them).
    pub stale: u64,
    /// Partition positions committed, summed over transactions.
    pub partitions_committed: u64,
}

/// Delivery bookkeeping shared with the producer's polling thread.
struct Deliveries {
    in_flight: AtomicUsize,
    acknowledged: AtomicU64,
    /// Signalled on every delivery report.
    progress: Notify,
    /// The first failed delivery and the transaction it belonged to.
    failure: Mutex<Option<(usize, KafkaError)>>,
}

impl Deliveries {
    fn new() -> Arc<Self> {
        Arc::new(Deliveries {
            in_flight: AtomicUsize::new(0),
            acknowledged: AtomicU64::new(0),
            progress: Notify::new(),
            failure: Mutex::new(None),
        })
    }

    async fn wait_until(&self, ready: impl Fn() -> bool) {
        loop {
            let mut notified = std::pin::pin!(self.progress.notified());
            notified.as_mut().enable();
            if ready() {
                return;
            }
            notified.await;
        }
    }

    /// The delivery failure of transaction `txn`, if any.
    fn failure(&self, txn: usize) -> Option<KafkaError> {
        match &*self.failure.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((t, e)) if *t == txn => Some(e.clone()),
            _ => None,
        }
    }
}

/// The producer context: counts deliveries; the opaque is the transaction's
/// sequence number.
struct TxnContext {
    deliveries: Arc<Deliveries>,
}

impl ClientContext for TxnContext {
    super::client_log::forward_client_log!();
}

impl ProducerContext for TxnContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, txn: usize) {
        let d = &self.deliveries;
        match result {
            Ok(_) => {
                d.acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, m)) => {
                tracing::debug!(error = %e, topic = m.topic(), txn, "transactional delivery failed");
                let mut f = d.failure.lock().unwrap_or_else(PoisonError::into_inner);
                if f.as_ref().is_none_or(|(t, _)| *t != txn) {
                    *f = Some((txn, e.clone()));
                }
            }
        }
        d.in_flight.fetch_sub(1, Ordering::AcqRel);
        d.progress.notify_waiters();
    }
}

type TxnProducer = ThreadedProducer<TxnContext>;

/// A transactional producer of `config` with fresh delivery bookkeeping,
/// watched by the [keeper](super::keeper).
fn new_producer(
    config: &rdkafka::ClientConfig,
    bootstrap: &str,
) -> Result<(Arc<TxnProducer>, Arc<Deliveries>), KafkaStageError> {
    let deliveries = Deliveries::new();
    let producer: Arc<TxnProducer> = Arc::new(config.create_with_context(TxnContext {
        deliveries: deliveries.clone(),
    })?);
    super::keeper::watch(&producer, bootstrap);
    Ok((producer, deliveries))
}

/// Refuses librdkafka's mock cluster (its id is `mockCluster…`), which
/// accepts transactions without their semantics. Blocking.
fn check_cluster(producer: &TxnProducer, timeout: Duration) -> Result<(), KafkaStageError> {
    match producer.client().fetch_cluster_id(Timeout::After(timeout)) {
        Some(id) if super::is_mock_cluster_id(&id) => Err(KafkaStageError::Unsupported(format!(
            "the broker is librdkafka's mock cluster ({id}), which accepts transactions but \
             neither hides aborted records from read_committed readers nor stores offsets \
             sent to a transaction; use Apache Kafka (or another real broker) for exactly-once"
        ))),
        _ => Ok(()),
    }
}

/// Checks that the cluster at `kafka` (its bootstrap servers, or a
/// [`KafkaConnection`](super::KafkaConnection) with the client properties a
/// secured cluster needs) can serve exactly-once processing (it is not
/// librdkafka's mock cluster). Does not check broker versions or ACLs: those
/// surface from `init_transactions`.
pub async fn check_transactions_supported(
    kafka: impl Into<super::KafkaConnection>,
) -> Result<(), KafkaStageError> {
    let deliveries = Deliveries::new();
    let producer: TxnProducer = kafka
        .into()
        .client_config()
        .create_with_context(TxnContext { deliveries })?;
    tokio::task::spawn_blocking(move || check_cluster(&producer, Duration::from_secs(10)))
        .await
        .map_err(|e| KafkaStageError::Task(e.to_string()))?
}

/// The open transaction.
#[derive(Debug)]
struct Txn {
    /// Sequence number (delivery opaques carry it).
    seq: usize,
    open: bool,
    started: Instant,
    messages: usize,
    /// Partitions whose records are in it.
    parts: BTreeSet<TopicPartition>,
}

impl Txn {
    fn due(&self, max_batch: usize, max_interval: Duration) -> bool {
        self.open && (self.messages >= max_batch || self.started.elapsed() >= max_interval)
    }
}

/// Everything the sink's loop works with.
struct Driver {
    producer: Arc<TxnProducer>,
    /// The producer's configuration, to replace it after a fatal error.
    config: rdkafka::ClientConfig,
    bootstrap: String,
    /// See [`TransactionalSettings::inject_fatal_error_after`].
    fatal_after: Option<u64>,
    control: ConsumerControl,
    deliveries: Arc<Deliveries>,
    events: Arc<Mutex<mpsc::UnboundedReceiver<AssignmentEvent>>>,
    /// Partitions revoked since the open transaction began.
    revoked: BTreeSet<TopicPartition>,
    txn: Txn,
    stats: TransactionStats,
    max_in_flight: usize,
    queue_timeout: Duration,
    call_timeout: Duration,
    /// Transactions aborted in place since the last commit.
    in_place_aborts: u32,
}

/// What a commit attempt found.
enum CommitOutcome {
    Committed(usize),
    /// A revocation arrived before the commit: nothing was committed.
    Revoked(Vec<TopicPartition>),
    /// Sending the offsets or committing failed with an error the
    /// transaction survives only by aborting (librdkafka's abortable errors:
    /// the group rebalanced under it, an epoch bump after a failed produce
    /// request): nothing was committed.
    Abortable(String),
}

/// In-place aborts in a row (no commit between them) after which the sink
/// gives up: an abortable error that comes back every time is not transient.
const MAX_IN_PLACE_ABORTS: u32 = 5;

/// Whether the transaction survives `e` by aborting (rather than the
/// producer being unusable).
fn abortable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.txn_requires_abort() && !t.is_fatal())
}

fn drain_revocations(
    events: &Mutex<mpsc::UnboundedReceiver<AssignmentEvent>>,
) -> Vec<TopicPartition> {
    let mut rx = events.lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = Vec::new();
    while let Ok(AssignmentEvent::Revoked(tps)) = rx.try_recv() {
        out.extend(tps);
    }
    out
}

fn aborted(reason: impl Into<String>) -> StreamError {
    StreamError::user(KafkaStageError::TransactionAborted(reason.into()))
}

impl Driver {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&TxnProducer) -> Result<T, KafkaStageError> + Send + 'static,
    ) -> Result<T, StreamError> {
        let p = self.producer.clone();
        tokio::task::spawn_blocking(move || f(&p))
            .await
            .map_err(|e| StreamError::user(KafkaStageError::Task(e.to_string())))?
            .map_err(StreamError::user)
    }

    async fn init(&self) -> Result<(), StreamError> {
        let t = self.call_timeout;
        self.blocking(move |p| {
            check_cluster(p, t)?;
            p.init_transactions(t).map_err(KafkaStageError::Client)
        })
        .await
    }

    async fn begin(&mut self) -> Result<(), StreamError> {
        if self.txn.open {
            return Ok(());
        }
        // A local state change in librdkafka: no broker round trip.
        if let Err(e) = self.producer.begin_transaction() {
            // A fatal error between transactions: nothing to read again.
            let Some(reason) = self.replaceable_fatal() else {
                return Err(StreamError::user(KafkaStageError::Client(e)));
            };
            self.replace_producer(&reason).await?;
            self.producer
                .begin_transaction()
                .map_err(|e| StreamError::user(KafkaStageError::Client(e)))?;
        }
        self.txn.open = true;
        self.txn.seq += 1;
        self.txn.started = Instant::now();
        self.txn.messages = 0;
        self.txn.parts.clear();
        self.revoked.clear();
        Ok(())
    }

    /// Aborts the open transaction (if any) and waits for librdkafka.
    async fn abort(&mut self) -> Result<(), StreamError> {
        if !self.txn.open {
            return Ok(());
        }
        self.txn.open = false;
        let t = self.call_timeout;
        self.blocking(move |p| p.abort_transaction(t).map_err(KafkaStageError::Client))
            .await?;
        let d = self.deliveries.clone();
        d.wait_until(|| d.in_flight.load(Ordering::Acquire) == 0)
            .await;
        Ok(())
    }

    /// The producer's fatal error if a new producer gets past it: any but
    /// being fenced (a producer with the same `transactional.id` started
    /// since, another instance with this one's id: this one gives way rather
    /// than fence it back; librdkafka reports it as `Fenced`) and refused
    /// authorization (a new producer would be refused too).
    fn replaceable_fatal(&self) -> Option<String> {
        use RDKafkaErrorCode as C;
        match self.producer.client().fatal_error() {
            None
            | Some((
                C::Fenced
                | C::ProducerFenced
                | C::InvalidProducerEpoch
                | C::TransactionalIdAuthorizationFailed
                | C::ClusterAuthorizationFailed,
                _,
            )) => None,
            Some((code, reason)) => Some(format!("{reason} ({code:?})")),
        }
    }

    /// Replaces the producer after a fatal error with a new one of the same
    /// `transactional.id`: its `init_transactions` fences the old one and
    /// aborts the transaction it left open.
    async fn replace_producer(&mut self, reason: &str) -> Result<(), StreamError> {
        tracing::warn!(
            reason,
            "kafka: the transactional producer failed; a new one with the same transactional.id takes over"
        );
        let (producer, deliveries) =
            new_producer(&self.config, &self.bootstrap).map_err(StreamError::user)?;
        let old = std::mem::replace(&mut self.producer, producer);
        let old_deliveries = std::mem::replace(&mut self.deliveries, deliveries);
        self.stats.records += old_deliveries.acknowledged.load(Ordering::Relaxed);
        self.txn.open = false;
        // A producer's drop purges and flushes what it holds (up to 0.5 s).
        tokio::task::spawn_blocking(move || drop(old));
        self.init().await?;
        self.stats.producers_replaced += 1;
        Ok(())
    }

    /// A record of the open transaction was not delivered: when a new
    /// producer can take over (the producer failed fatally, see
    /// [`replaceable_fatal`](Self::replaceable_fatal)) the transaction is
    /// aborted in place, otherwise the stream fails.
    async fn on_delivery_failure(&mut self, e: KafkaError) -> Result<(), StreamError> {
        let why = format!("a record could not be delivered: {e}");
        if self.replaceable_fatal().is_some() {
            return self.abort_in_place(&why).await;
        }
        Err(self.abort_and_fail(why).await)
    }

    /// Aborts, then fails the stream with `reason`.
    async fn abort_and_fail(&mut self, reason: String) -> StreamError {
        tracing::error!(reason, "kafka: aborting the transaction");
        if let Err(e) = self.abort().await {
            tracing::warn!(error = %e, "kafka: abort failed");
        }
        aborted(reason)
    }

    /// Handles revocations that arrived since the last check: if the open
    /// transaction has records of a revoked partition it is aborted in place
    /// ([`abort_in_place`](Self::abort_in_place)).
    async fn on_revocations(&mut self, newly: Vec<TopicPartition>) -> Result<(), StreamError> {
        self.revoked.extend(newly);
        if !self.txn.open || self.txn.parts.is_disjoint(&self.revoked) {
            return Ok(());
        }
        self.abort_in_place("partitions it touched were revoked")
            .await
    }

    /// Aborts the open transaction and reads its records again: those of
    /// partitions revoked from this consumer by their next owners, the others
    /// here ([`rewind`](Self::rewind)), including partitions revoked and
    /// assigned again whose new records were in it.
    async fn abort_in_place(&mut self, why: &str) -> Result<(), StreamError> {
        self.in_place_aborts += 1;
        if self.in_place_aborts > MAX_IN_PLACE_ABORTS {
            return Err(self
                .abort_and_fail(format!(
                    "{MAX_IN_PLACE_ABORTS} transactions in a row aborted; the last one because {why}"
                ))
                .await);
        }
        tracing::info!(
            partitions = self.txn.parts.len(),
            "kafka: aborting the open transaction because {why}; its records are read again from the committed offsets"
        );
        let parts: Vec<TopicPartition> = self.txn.parts.iter().cloned().collect();
        let abort = self.abort().await;
        // A producer that failed fatally refuses every record from then on,
        // whether or not its abort went through (a failed abort is one
        // cause, a local fatal error another): a new one takes over.
        match self.replaceable_fatal() {
            Some(reason) => {
                if let Err(e) = abort {
                    tracing::debug!(error = %e, "kafka: the failed producer's abort failed");
                }
                self.replace_producer(&reason).await?;
            }
            None => abort?,
        }
        self.stats.aborted += 1;
        if let Err(e) = self.rewind(parts).await {
            return Err(aborted(format!(
                "cannot read the aborted transaction's partitions again: {e}"
            )));
        }
        Ok(())
    }

    /// Repositions the consumer on `tps` (partitions whose records were in an
    /// aborted transaction) at their committed positions; those no longer
    /// assigned are left to their owners. The tracker starts a new epoch for
    /// each first, so the records emitted before (in flight, held back, or
    /// read before the seek) are dropped as stale.
    async fn rewind(&mut self, tps: Vec<TopicPartition>) -> Result<(), KafkaStageError> {
        let seeks: Vec<(TopicPartition, i64)> = {
            let mut tracker = self.control.shared.tracker();
            tps.into_iter()
                .filter_map(|tp| tracker.rewind(&tp).map(|from| (tp, from)))
                .collect()
        };
        let consumer = self.control.consumer.clone();
        let t = self.call_timeout;
        let n = seeks.len() as u64;
        tokio::task::spawn_blocking(move || {
            for (tp, from) in &seeks {
                tracing::debug!(partition = %tp, from, "kafka: reading the partition again");
                consumer
                    .seek(&tp.topic, tp.partition, Offset::Offset(*from), t)
                    .map_err(KafkaStageError::Client)?;
            }
            Ok::<_, KafkaStageError>(())
        })
        .await
        .map_err(|e| KafkaStageError::Task(e.to_string()))??;
        self.stats.rewound += n;
        Ok(())
    }

    async fn check_revocations(&mut self) -> Result<(), StreamError> {
        let newly = drain_revocations(&self.events);
        if newly.is_empty() {
            return Ok(());
        }
        self.on_revocations(newly).await
    }

    /// Sends the processed prefixes to the transaction and commits it.
    async fn commit(&mut self) -> Result<(), StreamError> {
        if !self.txn.open {
            return Ok(());
        }
        if let Some(e) = self.deliveries.failure(self.txn.seq) {
            return self.on_delivery_failure(e).await;
        }
        let shared = self.control.shared.clone();
        let consumer = self.control.consumer.clone();
        let events = self.events.clone();
        let t = self.call_timeout;
        let r = self
            .blocking(move |p| {
                // Serialised with revocations: none can slip in between the
                // check and the commit.
                let _serial = shared.commit_serial();
                let revoked = drain_revocations(&events);
                if !revoked.is_empty() {
                    return Ok(CommitOutcome::Revoked(revoked));
                }
                let positions = shared.tracker().pending_commits();
                let commit_txn = |p: &TxnProducer| {
                    let mut attempt = 0;
                    loop {
                        match p.commit_transaction(t) {
                            Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < 3 => {
                                attempt += 1;
                                tracing::debug!(error = %e, attempt, "kafka: retrying the transaction commit");
                            }
                            r => return r,
                        }
                    }
                };
                if positions.is_empty() {
                    commit_txn(p).map_err(KafkaStageError::Client)?;
                    return Ok(CommitOutcome::Committed(0));
                }
                let group = consumer.group_metadata().ok_or_else(|| {
                    KafkaStageError::TransactionAborted(
                        "the consumer has no group metadata".into(),
                    )
                })?;
                match shared.commit_positions(positions, |tpl| {
                    p.send_offsets_to_transaction(tpl, &group, t)?;
                    commit_txn(p)
                }) {
                    Ok(n) => Ok(CommitOutcome::Committed(n)),
                    Err(e) if abortable(&e) => Ok(CommitOutcome::Abortable(e.to_string())),
                    Err(e) => Err(KafkaStageError::Client(e)),
                }
            })
            .await;
        match r {
            Ok(CommitOutcome::Committed(n)) => {
                self.txn.open = false;
                self.stats.committed += 1;
                self.in_place_aborts = 0;
                self.stats.partitions_committed += n as u64;
                Ok(())
            }
            Ok(CommitOutcome::Revoked(tps)) => self.on_revocations(tps).await,
            Ok(CommitOutcome::Abortable(e)) => {
                self.abort_in_place(&format!("its commit failed ({e})"))
                    .await
            }
            Err(e) if self.replaceable_fatal().is_some() => {
                self.abort_in_place(&format!("its commit failed ({e})"))
                    .await
            }
            Err(e) => Err(self.abort_and_fail(format!("commit failed: {e}")).await),
        }
    }

    /// Takes one message into the open transaction (beginning one if needed).
    async fn send(
        &mut self,
        message: ProducerMessage<CommittableOffset>,
    ) -> Result<(), StreamError> {
        let ProducerMessage {
            records,
            passthrough: off,
        } = message;
        // Marked before its records are produced: the commit that could cover
        // it runs after this send, on this task.
        let current = self
            .control
            .shared
            .tracker()
            .mark(&off.tp, off.epoch, off.offset);
        if !current {
            self.stats.stale += 1;
            return Ok(());
        }
        self.begin().await?;
        self.stats.messages += 1;
        self.txn.messages += 1;
        self.txn.parts.insert(off.tp.clone());
        for record in &records {
            if !self.produce(record).await? {
                // The message's partition is read again with the others.
                return self
                    .abort_in_place(
                        "the producer refused a record: the transaction or the producer is in an error state",
                    )
                    .await;
            }
        }
        if self.fatal_after == Some(self.stats.messages) {
            self.fatal_after = None;
            self.inject_fatal_error();
        }
        Ok(())
    }

    /// See [`TransactionalSettings::inject_fatal_error_after`].
    fn inject_fatal_error(&self) {
        tracing::info!("kafka: raising a fatal error in the transactional producer (test hook)");
        // SAFETY: the pointer is the live client's (`self.producer` holds
        // it); librdkafka copies the reason, a NUL-terminated literal.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                self.producer.client().native_ptr(),
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TXN_STATE,
                c"flowstage test hook".as_ptr(),
            );
        }
    }

    /// Hands `record` to librdkafka. `false`: refused because the
    /// transaction is in an error state (an abortable error reached the
    /// producer before the commit did).
    async fn produce(&self, record: &ProducerRecord) -> Result<bool, StreamError> {
        let d = self.deliveries.clone();
        let max = self.max_in_flight;
        d.wait_until(|| d.in_flight.load(Ordering::Acquire) < max)
            .await;
        d.in_flight.fetch_add(1, Ordering::AcqRel);
        let deadline = tokio::time::Instant::from_std(super::deadline_after(self.queue_timeout));
        loop {
            let r = record.base_record(self.txn.seq);
            match self.producer.send(r) {
                Ok(()) => return Ok(true),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if tokio::time::Instant::now() < deadline =>
                {
                    // librdkafka's queue is full: wait for deliveries to drain it.
                    let notified = d.progress.notified();
                    let _ = tokio::time::timeout(Duration::from_millis(10), notified).await;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::State), _)) => {
                    d.in_flight.fetch_sub(1, Ordering::AcqRel);
                    return Ok(false);
                }
                Err((_, _)) if self.replaceable_fatal().is_some() => {
                    d.in_flight.fetch_sub(1, Ordering::AcqRel);
                    return Ok(false);
                }
                Err((e, _)) => {
                    d.in_flight.fetch_sub(1, Ordering::AcqRel);
                    // librdkafka's refusal says only "Fatal error": say which.
                    if let Some((code, reason)) = self.producer.client().fatal_error() {
                        return Err(aborted(format!("the producer failed: {reason} ({code:?})")));
                    }
                    return Err(StreamError::user(KafkaStageError::Delivery {
                        topic: record.topic.clone(),
                        source: e,
                    }));
                }
            }
        }
    }

    fn has_gaps(&self) -> bool {
        self.control.shared.tracker().has_gaps()
    }

    fn would_leave_gap(&self, off: &CommittableOffset) -> bool {
        self.control
            .shared
            .tracker()
            .unprocessed_before(&off.tp, off.epoch, off.offset)
    }
}

/// A sink that produces each [`ProducerMessage`]'s records and commits its
/// [`CommittableOffset`] inside Kafka transactions (see the [module
/// docs](self)): exactly-once for `read_committed` readers of the output.
/// `control` is the consumer the offsets come from; it must be created with
/// [`commit_on_revoke(false)`](super::ConsumerSettings::commit_on_revoke)
/// and no [`Committer`](super::Committer) may run for it.
///
/// Every offset the source emits must reach this sink (use
/// [`ProducerMessage::passthrough`] for records without a result). When the
/// stream ends the last transaction is committed and the completion resolves
/// with the [`TransactionStats`]; when it fails (or a transactional call
/// fails) the open transaction is aborted and the completion fails. If the
/// sink is dropped mid-way, its open transaction is never committed: the
/// broker aborts it after the transaction timeout, or at once when a producer
/// with the same `transactional.id` starts.
pub fn transactional_sink(
    settings: &TransactionalSettings,
    control: &ConsumerControl,
) -> Result<
    Sink<impl SinkStage<ProducerMessage<CommittableOffset>, Mat = Completion<TransactionStats>>>,
    KafkaStageError,
> {
    if settings.producer.max_in_flight == 0 {
        return Err(KafkaStageError::Config {
            name: "max_in_flight",
            reason: "must be at least 1".into(),
        });
    }
    if settings.transactional_id.is_empty() {
        return Err(KafkaStageError::Config {
            name: "transactional_id",
            reason: "must not be empty".into(),
        });
    }
    if control.shared.commits_on_revoke() {
        return Err(KafkaStageError::Config {
            name: "commit_on_revoke",
            reason: "a transactional sink needs a consumer created with commit_on_revoke(false)"
                .into(),
        });
    }
    let timeout_ms = settings.transaction_timeout.as_millis().max(1).to_string();
    let mut c = super::base_client_config(&settings.producer.bootstrap_servers);
    c.set("socket.nagle.disable", "true")
        .set("transaction.timeout.ms", &timeout_ms);
    for (k, v) in &settings.producer.properties {
        c.set(k, v);
    }
    c.set("transactional.id", &settings.transactional_id);
    let (producer, deliveries) = new_producer(&c, &settings.producer.bootstrap_servers)?;
    // Subscribed now, before the source runs: no revocation is missed.
    let events = Arc::new(Mutex::new(control.shared.subscribe_events()));
    let mut driver = Driver {
        producer,
        config: c,
        bootstrap: settings.producer.bootstrap_servers.clone(),
        fatal_after: settings.fatal_after,
        control: control.clone(),
        deliveries,
        events,
        revoked: BTreeSet::new(),
        txn: Txn {
            seq: 0,
            open: false,
            started: Instant::now(),
            messages: 0,
            parts: BTreeSet::new(),
        },
        stats: TransactionStats::default(),
        max_in_flight: settings.producer.max_in_flight,
        queue_timeout: settings.producer.queue_timeout,
        call_timeout: settings.call_timeout,
        in_place_aborts: 0,
    };
    let max_batch = settings.max_batch.max(1);
    // A transaction left open past the timeout is aborted by the broker and
    // the producer fenced: commit well before.
    let max_interval = settings
        .max_interval
        .min(settings.transaction_timeout / 2)
        .max(Duration::from_millis(1));
    Ok(Sink::from_fn(
        move |mut upstream: futures::stream::BoxStream<
            'static,
            flowstage::Item<ProducerMessage<CommittableOffset>>,
        >| async move {
            driver.init().await?;
            // Messages held back from a due commit (they would land above a
            // record still missing from their partition).
            let mut deferred: VecDeque<ProducerMessage<CommittableOffset>> = VecDeque::new();
            let mut upstream_done = false;
            loop {
                driver.check_revocations().await?;
                if let Some(e) = driver.deliveries.failure(driver.txn.seq) {
                    if driver.txn.open {
                        driver.on_delivery_failure(e).await?;
                        continue;
                    }
                }
                let due = driver.txn.due(max_batch, max_interval);
                if due && !driver.has_gaps() {
                    driver.commit().await?;
                    continue;
                }
                // While a commit is due, a held-back message whose missing
                // predecessors arrived since is taken at once (it may be the
                // one that closes a gap).
                let ready = if due {
                    deferred
                        .iter()
                        .position(|m| !driver.would_leave_gap(&m.passthrough))
                } else {
                    None
                };
                let message = if let Some(i) = ready {
                    deferred.remove(i)
                } else if !due && !deferred.is_empty() {
                    deferred.pop_front()
                } else if upstream_done {
                    if driver.txn.open && (due || deferred.is_empty()) {
                        // Nothing more arrives: the records above a gap are
                        // committed without their offsets (processed again
                        // after a restart). Only when the source's records did
                        // not all reach the sink.
                        if driver.has_gaps() {
                            tracing::warn!("kafka: committing a transaction with records above an unprocessed one");
                        }
                        driver.commit().await?;
                        continue;
                    }
                    if deferred.is_empty() {
                        break;
                    }
                    deferred.pop_front()
                } else {
                    let deadline =
                        tokio::time::Instant::from_std(driver.txn.started + max_interval);
                    let timed = driver.txn.open && !due;
                    let timer = async move {
                        if timed {
                            tokio::time::sleep_until(deadline).await;
                        } else {
                            futures::future::pending::<()>().await;
                        }
                    };
                    tokio::select! {
                        item = upstream.next() => match item {
                            None => {
                                upstream_done = true;
                                continue;
                            }
                            Some(Err(e)) => {
                                drop(upstream);
                                let _ = driver.abort_and_fail(format!("the stream failed: {e}")).await;
                                return Err(e);
                            }
                            Some(Ok(m)) => Some(m),
                        },
                        () = timer => continue,
                    }
                };
                let Some(message) = message else { continue };
                if due && driver.would_leave_gap(&message.passthrough) {
                    deferred.push_back(message);
                    continue;
                }
                if let Err(e) = driver.send(message).await {
                    let _ = driver.abort_and_fail(format!("{e}")).await;
                    return Err(e);
                }
            }
            driver.commit().await?;
            let d = driver.deliveries.clone();
            d.wait_until(|| d.in_flight.load(Ordering::Acquire) == 0)
                .await;
            driver.stats.records += d.acknowledged.load(Ordering::Relaxed);
            Ok(driver.stats)
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processing_parses_and_prints() {
        for p in [Processing::AtLeastOnce, Processing::ExactlyOnce] {
            assert_eq!(p.to_string().parse::<Processing>().ok(), Some(p));
        }
        assert_eq!(
            "Exactly_Once".parse::<Processing>().ok(),
            Some(Processing::ExactlyOnce)
        );
        assert!("twice".parse::<Processing>().is_err());
        assert_eq!(Processing::default(), Processing::AtLeastOnce);
        assert_eq!(transactional_id("g", "i-1"), "flowstage-g-i-1");
    }
}
