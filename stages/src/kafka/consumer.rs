//! The committable consumer source and its control handle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use flowstage::{BoxSource, Source, StreamError};
use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError as ClientError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use super::commit::CommitRequest;
use super::error::KafkaStageError;
use super::tracker::{OffsetTracker, TopicPartition, TrackerCounts};

/// Called after every successful commit with each partition's new position
/// (the next offset the group will read).
pub type CommitHook = Arc<dyn Fn(&TopicPartition, i64) + Send + Sync>;

/// How to connect a consumer source.
#[derive(Clone)]
pub struct ConsumerSettings {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `group.id`.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Extra librdkafka properties (applied last, so they may override the
    /// defaults: `auto.offset.reset=earliest`, auto commit and offset store off).
    pub properties: Vec<(String, String)>,
    /// Observer of successful commits (tests, metrics).
    pub on_commit: Option<CommitHook>,
    /// Commit the processed prefix of revoked partitions with the consumer
    /// (default `true`), except when the assignment was lost (the session
    /// timed out). A transactional sink turns it off: its offsets are
    /// committed only inside transactions.
    pub commit_on_revoke: bool,
    /// How long a commit's result is awaited (default 10 s): by the
    /// committer, by [`ConsumerControl::commit_now`] and on revocation. A
    /// commit without a result by then counts as a retriable failure: its
    /// positions stay pending and are committed again later.
    pub commit_timeout: Duration,
    /// Copy each record's headers into [`ConsumerRecord::headers`] (default
    /// `true`). librdkafka parses a record's headers when they are first
    /// asked for, with an allocation even when the record has none; a
    /// consumer that never reads them saves that: about 4 % of the wine
    /// server's instructions per record (callgrind).
    pub read_headers: bool,
}

impl std::fmt::Debug for ConsumerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("properties", &super::connection::Redacted(&self.properties))
            .finish_non_exhaustive()
    }
}

impl ConsumerSettings {
    /// Settings for `group_id` reading `topics` from `bootstrap_servers`.
    pub fn new<I, S>(
        bootstrap_servers: impl Into<String>,
        group_id: impl Into<String>,
        topics: I,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ConsumerSettings {
            bootstrap_servers: bootstrap_servers.into(),
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            properties: Vec::new(),
            on_commit: None,
            commit_on_revoke: true,
            commit_timeout: Duration::from_secs(10),
            read_headers: true,
        }
    }

    /// Sets [`read_headers`](Self::read_headers): with `false` every record's
    /// headers are empty.
    pub fn read_headers(mut self, read: bool) -> Self {
        self.read_headers = read;
        self
    }

    /// Sets [`commit_timeout`](Self::commit_timeout) (at least 1 ms).
    pub fn commit_timeout(mut self, timeout: Duration) -> Self {
        self.commit_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// Sets [`commit_on_revoke`](Self::commit_on_revoke).
    pub fn commit_on_revoke(mut self, commit: bool) -> Self {
        self.commit_on_revoke = commit;
        self
    }

    /// Sets a librdkafka property.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Observes successful commits.
    pub fn on_commit(
        mut self,
        hook: impl Fn(&TopicPartition, i64) + Send + Sync + 'static,
    ) -> Self {
        self.on_commit = Some(Arc::new(hook));
        self
    }

    fn client_config(&self) -> Result<ClientConfig, KafkaStageError> {
        let bad =
            |name: &'static str, reason: String| Err(KafkaStageError::Config { name, reason });
        if self.topics.is_empty() {
            return bad("topics", "no topic to subscribe to".into());
        }
        for topic in &self.topics {
            // `^…` subscribes to the topics a regular expression matches.
            if !topic.starts_with('^') {
                if let Err(reason) = super::check_topic_name(topic) {
                    return bad("topics", reason);
                }
            }
        }
        if self.group_id.trim().is_empty() {
            return bad("group_id", "must not be empty".into());
        }
        if let Err(reason) = super::check_bootstrap(&self.bootstrap_servers) {
            return bad("bootstrap_servers", reason);
        }
        let mut c = super::base_client_config(&self.bootstrap_servers);
        c.set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Latency: no Nagle delay on small fetch and commit requests.
            .set("socket.nagle.disable", "true");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        Ok(c)
    }
}

/// The position of one consumed record, to hand to a
/// [`Committer`](super::Committer) once the record's result has been produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittableOffset {
    /// The record's topic and partition.
    pub tp: TopicPartition,
    /// The record's offset.
    pub offset: i64,
    pub(crate) epoch: u64,
}

/// Anything that carries the [`CommittableOffset`] of the record it came from.
pub trait Committable {
    /// The offset to mark processed.
    fn committable_offset(&self) -> &CommittableOffset;
}

impl Committable for CommittableOffset {
    fn committable_offset(&self) -> &CommittableOffset {
        self
    }
}

/// A consumed record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset in the partition.
    pub offset: i64,
    /// The key, if any.
    pub key: Option<Vec<u8>>,
    /// The payload, if any.
    pub payload: Option<Vec<u8>>,
    /// The record's timestamp (epoch ms), if any.
    pub timestamp: Option<i64>,
    /// The headers, in order (empty when the source's
    /// [`ConsumerSettings::read_headers`] is off).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A consumed record with the offset to commit once its result is produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittableMessage {
    /// The record.
    pub record: ConsumerRecord,
    /// Its committable position.
    pub offset: CommittableOffset,
}

impl Committable for CommittableMessage {
    fn committable_offset(&self) -> &CommittableOffset {
        &self.offset
    }
}

/// Assignment changes, as seen by the consumer's rebalance callbacks.
#[derive(Debug, Clone)]
pub(crate) enum AssignmentEvent {
    Revoked(Vec<TopicPartition>),
}

/// State shared by a consumer's source, context, control and committer.
pub(crate) struct Shared {
    tracker: Mutex<OffsetTracker>,
    /// Serialises the issuing of commits (committer, revocation, transactions)
    /// so a commit computed earlier is never issued after one computed later.
    /// It is held while a commit is computed and handed to librdkafka, not
    /// while its result is awaited: a revocation callback waiting on it must
    /// not wait on the group (see [`CommitRequest`]). The exception is a
    /// transactional sink's commit, which holds it through the transaction's
    /// commit (bounded by its call timeout), so that no revocation slips in
    /// between its check for revocations and the commit.
    commit_lock: Mutex<()>,
    on_commit: Option<CommitHook>,
    commit_on_revoke: bool,
    commit_timeout: Duration,
    read_headers: bool,
    assignment: watch::Sender<Vec<TopicPartition>>,
    stop: watch::Sender<bool>,
    events: Mutex<Vec<mpsc::UnboundedSender<AssignmentEvent>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn tracker(&self) -> MutexGuard<'_, OffsetTracker> {
        lock(&self.tracker)
    }

    /// Whether revocations commit the processed prefix with the consumer.
    pub(crate) fn commits_on_revoke(&self) -> bool {
        self.commit_on_revoke
    }

    /// Holds off commits and revocations while the guard lives.
    pub(crate) fn commit_serial(&self) -> MutexGuard<'_, ()> {
        lock(&self.commit_lock)
    }

    pub(crate) fn subscribe_events(&self) -> mpsc::UnboundedReceiver<AssignmentEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.events).push(tx);
        rx
    }

    /// Commits every position that moved forward with `consumer`, waiting at
    /// most the commit timeout; returns how many partitions were committed.
    /// Blocks: call it off the async threads.
    pub(crate) fn commit_pending<C: ConsumerContext + 'static>(
        &self,
        consumer: &impl Consumer<C>,
    ) -> KafkaResult<usize> {
        let (positions, request) = {
            let _serial = lock(&self.commit_lock);
            let positions = self.tracker().pending_commits();
            if positions.is_empty() {
                return Ok(0);
            }
            let request = CommitRequest::issue(consumer, &positions_list(&positions)?)?;
            (positions, request)
        };
        request.wait(self.commit_timeout)?;
        self.record_committed(&positions);
        Ok(positions.len())
    }

    /// Commits `positions` with `commit` and records them; the caller holds
    /// [`commit_serial`](Self::commit_serial) (the transactional sink, whose
    /// `commit` sends them to a transaction with bounded waits).
    pub(crate) fn commit_positions(
        &self,
        positions: BTreeMap<TopicPartition, i64>,
        commit: impl FnOnce(&TopicPartitionList) -> KafkaResult<()>,
    ) -> KafkaResult<usize> {
        if positions.is_empty() {
            return Ok(0);
        }
        commit(&positions_list(&positions)?)?;
        self.record_committed(&positions);
        Ok(positions.len())
    }

    /// Records committed `positions` and tells the commit hook.
    fn record_committed(&self, positions: &BTreeMap<TopicPartition, i64>) {
        let mut tracker = self.tracker();
        for (tp, pos) in positions {
            tracker.committed(tp, *pos);
        }
        drop(tracker);
        if let Some(hook) = &self.on_commit {
            for (tp, pos) in positions {
                hook(tp, *pos);
            }
        }
    }

    fn on_revoke(&self, consumer: &BaseConsumer<SourceContext>, revoked: &TopicPartitionList) {
        let tps: Vec<TopicPartition> = revoked
            .elements()
            .iter()
            .map(|e| TopicPartition::new(e.topic(), e.partition()))
            .collect();
        // The lock is held only to compute and issue the commit: whoever holds
        // it does not wait on the group, so this callback cannot stall it.
        let serial = lock(&self.commit_lock);
        let mut positions = BTreeMap::new();
        {
            let mut tracker = self.tracker();
            for tp in &tps {
                if let Some(pos) = tracker.revoke(tp) {
                    positions.insert(tp.clone(), pos);
                }
            }
        }
        let n = positions.len();
        // A lost assignment (the session timed out: Kafka's onPartitionsLost)
        // is not committed: the group has moved on, and the commit would only
        // wait for the coordinator to fail it.
        let lost = self.commit_on_revoke && consumer.assignment_lost();
        if !self.commit_on_revoke || lost {
            drop(serial);
            tracing::debug!(
                partitions = tps.len(),
                lost,
                "kafka: partitions revoked (no commit)"
            );
            lock(&self.events).retain(|tx| tx.send(AssignmentEvent::Revoked(tps.clone())).is_ok());
            return;
        }
        let committed = if positions.is_empty() {
            drop(serial);
            Ok(())
        } else {
            let request =
                positions_list(&positions).and_then(|tpl| CommitRequest::issue(consumer, &tpl));
            drop(serial);
            // Waited for here, so the next owner of these partitions starts
            // after them (unless the wait runs out).
            request.and_then(|r| r.wait(self.commit_timeout))
        };
        if committed.is_ok() {
            self.record_committed(&positions);
        }
        match committed {
            Ok(()) => tracing::debug!(
                partitions = tps.len(),
                committed = n,
                "kafka: partitions revoked"
            ),
            // Not fatal: the records will be processed again by the next owner.
            Err(e) => tracing::warn!(error = %e, "kafka: commit on revocation failed"),
        }
        lock(&self.events).retain(|tx| tx.send(AssignmentEvent::Revoked(tps.clone())).is_ok());
    }

    /// Applies an assignment change from the rebalance event itself: added
    /// partitions on `Assign`, removed on `Revoke` (the full sets with the
    /// eager protocol, the increments with the cooperative one). The client
    /// is not asked (`rd_kafka_assignment` can block forever while the
    /// consumer is closing).
    fn on_assignment_changed(&self, rebalance: &Rebalance<'_>) {
        let (tpl, assigned) = match rebalance {
            Rebalance::Assign(tpl) => (tpl, true),
            Rebalance::Revoke(tpl) => (tpl, false),
            Rebalance::Error(_) => return,
        };
        let changed: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition::new(e.topic(), e.partition()))
            .collect();
        if assigned {
            let mut tracker = self.tracker();
            for tp in &changed {
                tracker.assign(tp);
            }
        }
        tracing::debug!(
            partitions = changed.len(),
            assigned,
            "kafka: assignment changed"
        );
        self.assignment.send_modify(|now| {
            if assigned {
                now.extend(changed.iter().cloned());
                now.sort();
                now.dedup();
            } else {
                now.retain(|tp| !changed.contains(tp));
            }
        });
    }
}

/// `positions` as a list of offsets to commit.
fn positions_list(positions: &BTreeMap<TopicPartition, i64>) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::with_capacity(positions.len());
    for (tp, pos) in positions {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*pos))?;
    }
    Ok(tpl)
}

/// The consumer context: commits what is safe on revocation and publishes
/// assignment changes.
pub struct SourceContext {
    shared: Arc<Shared>,
}

impl ClientContext for SourceContext {
    super::client_log::forward_client_log!();
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        super::rebalance::rebalance(self, consumer, err, tpl);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.shared.on_revoke(consumer, tpl);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka: rebalance error"),
            _ => self.shared.on_assignment_changed(rebalance),
        }
    }
}

/// The librdkafka consumer behind a source.
pub type SourceConsumer = StreamConsumer<SourceContext>;

/// A source's consumer, shared by its handles; closed where it cannot hold up
/// the async threads.
///
/// Closing a group consumer is blocking work: librdkafka revokes the
/// assignment (the revocation commits what was processed, for up to the
/// [`commit_timeout`](ConsumerSettings::commit_timeout)) and leaves the group.
/// It happens when the last handle is dropped, which is often inside a tokio
/// task. So inside a runtime the close moves to the runtime's blocking pool
/// (whose threads a runtime waits for when it is dropped, so a program that
/// ends by dropping its runtime still closes the consumer first); outside one
/// it runs on the dropping thread. [`ConsumerControl::closed`] resolves when
/// it is done.
pub(crate) struct OwnedConsumer {
    /// `Some` until dropped.
    inner: Option<Closing>,
    /// Becomes `true` (or its sender goes) once the consumer has closed.
    closed: watch::Receiver<bool>,
}

/// The consumer and the signal sent after it has closed: fields are dropped
/// in declaration order, so the consumer's close is over before the signal.
struct Closing {
    consumer: SourceConsumer,
    _signal: ClosedSignal,
}

/// Sends `true` when dropped.
struct ClosedSignal(watch::Sender<bool>);

impl Drop for ClosedSignal {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl OwnedConsumer {
    fn new(consumer: SourceConsumer) -> Self {
        let (tx, closed) = watch::channel(false);
        OwnedConsumer {
            inner: Some(Closing {
                consumer,
                _signal: ClosedSignal(tx),
            }),
            closed,
        }
    }
}

impl std::ops::Deref for OwnedConsumer {
    type Target = SourceConsumer;

    fn deref(&self) -> &SourceConsumer {
        match &self.inner {
            Some(c) => &c.consumer,
            // Taken only by `drop`, after which nothing can deref.
            None => unreachable!("the consumer is taken only when dropped"),
        }
    }
}

impl Drop for OwnedConsumer {
    fn drop(&mut self) {
        let Some(closing) = self.inner.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            // A runtime shutting down drops the task unrun, and with it the
            // consumer: closed on whichever thread that happens.
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(closing))),
            Err(_) => drop(closing),
        }
    }
}

impl super::keeper::NativeHandle for OwnedConsumer {
    fn native_ptr(&self) -> *mut rdkafka::bindings::rd_kafka_t {
        self.client().native_ptr()
    }
}

/// The materialized value of a consumer source: stop it, watch its
/// assignment, commit, make a [`Committer`](super::Committer) for it, and
/// wait for its close ([`shutdown`](Self::shutdown)).
#[derive(Clone)]
pub struct ConsumerControl {
    pub(crate) consumer: Arc<OwnedConsumer>,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ConsumerControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerControl")
            .field("assignment", &self.assignment())
            .field("counts", &self.counts())
            .finish()
    }
}

impl ConsumerControl {
    /// Stops consuming: the source completes (after the record it may be
    /// emitting). In-flight records can still be committed.
    pub fn stop(&self) {
        self.shared.stop.send_replace(true);
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        *self.shared.stop.borrow()
    }

    /// The partitions assigned to this consumer now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.shared.assignment.borrow().clone()
    }

    /// A receiver that sees every assignment change (sorted partitions).
    pub fn assignment_changes(&self) -> watch::Receiver<Vec<TopicPartition>> {
        self.shared.assignment.subscribe()
    }

    /// Records emitted and not yet marked processed.
    pub fn in_flight(&self) -> usize {
        self.shared.tracker().in_flight()
    }

    /// The tracker's counters.
    pub fn counts(&self) -> TrackerCounts {
        self.shared.tracker().counts()
    }

    /// The highest position this consumer committed for `tp`.
    pub fn committed_position(&self, tp: &TopicPartition) -> Option<i64> {
        self.shared.tracker().committed_position(tp)
    }

    /// Commits every processed prefix now (synchronously, off the async
    /// threads); returns the number of partitions committed.
    pub async fn commit_now(&self) -> Result<usize, KafkaStageError> {
        let consumer = self.consumer.clone();
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.commit_pending(&**consumer))
            .await
            .map_err(|e| KafkaStageError::Task(e.to_string()))?
            .map_err(KafkaStageError::Commit)
    }

    /// Starts an offset committer for this consumer.
    pub fn committer(&self, settings: super::CommitterSettings) -> super::Committer {
        super::Committer::start(self.clone(), settings)
    }

    /// Resolves once the consumer has closed (Alpakka Kafka's
    /// `Control.isShutdown`): its partitions revoked (committing what was
    /// processed), the group left, the client destroyed. The future holds no
    /// handle on the consumer, so it can be awaited after dropping them all.
    ///
    /// The consumer closes when its last handle is dropped: every
    /// `ConsumerControl` clone, the source's stream, and what holds one (a
    /// [`Committer`](super::Committer), a transactional sink). The close
    /// itself runs off the async threads (on the runtime's blocking pool).
    ///
    /// ```no_run
    /// # async fn run(control: flowstage_stages::kafka::ConsumerControl) {
    /// let closed = control.closed();
    /// drop(control); // and the source's other handles
    /// closed.await; // the group is left: the broker can go now
    /// # }
    /// ```
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closed = self.consumer.closed.clone();
        async move {
            // An error: the signal's sender is gone, which happens only after
            // the close too.
            let _ = closed.wait_for(|c| *c).await;
        }
    }

    /// Stops the source, drops this handle and waits until the consumer has
    /// closed (Alpakka Kafka's `Control.shutdown()`; see [`closed`](Self::closed)).
    /// It waits for the source's other handles as well: the stream (it
    /// completes once stopped, and goes when whatever runs it finishes), a
    /// [`Committer`](super::Committer) (close it first: its
    /// [`close`](super::Committer::close) makes the last commit), other
    /// clones. To finish the records already consumed first, use
    /// [`drain_and_shutdown`](super::drain_and_shutdown) before it.
    pub async fn shutdown(self) {
        self.stop();
        let closed = self.closed();
        drop(self);
        closed.await;
    }
}

/// The stream type of [`committable_source`].
pub type CommittableSource = BoxSource<CommittableMessage, ConsumerControl>;

pub(crate) fn create_consumer(
    settings: &ConsumerSettings,
) -> Result<ConsumerControl, KafkaStageError> {
    let (stop, _) = watch::channel(false);
    let (assignment, _) = watch::channel(Vec::new());
    let shared = Arc::new(Shared {
        tracker: Mutex::new(OffsetTracker::new()),
        commit_lock: Mutex::new(()),
        on_commit: settings.on_commit.clone(),
        commit_on_revoke: settings.commit_on_revoke,
        commit_timeout: settings.commit_timeout,
        read_headers: settings.read_headers,
        assignment,
        stop,
        events: Mutex::new(Vec::new()),
    });
    let consumer: SourceConsumer =
        settings
            .client_config()?
            .create_with_context(SourceContext {
                shared: shared.clone(),
            })?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let consumer = Arc::new(OwnedConsumer::new(consumer));
    super::keeper::watch(&consumer, &settings.bootstrap_servers);
    Ok(ConsumerControl { consumer, shared })
}

/// `m` as a committable message, marked emitted. `topic` keeps the last topic
/// name seen, so records of one topic share one allocation.
fn to_committable(
    m: &BorrowedMessage<'_>,
    shared: &Shared,
    topic: &mut Option<Arc<str>>,
) -> CommittableMessage {
    let name = match topic {
        Some(t) if **t == *m.topic() => t.clone(),
        _ => topic.insert(Arc::from(m.topic())).clone(),
    };
    let tp = TopicPartition::new(name, m.partition());
    let offset = m.offset();
    let epoch = shared.tracker().emitted(&tp, offset);
    let headers = if shared.read_headers {
        m.headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    CommittableMessage {
        record: ConsumerRecord {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset,
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            timestamp: m.timestamp().to_millis(),
            headers,
        },
        offset: CommittableOffset { tp, offset, epoch },
    }
}

/// How often a waiting consumer looks at its queue even without a wake-up.
const RECV_NUDGE: Duration = Duration::from_millis(250);

/// `consumer.recv()`, looking at the queue again every [`RECV_NUDGE`] while
/// it waits. librdkafka wakes a waiting consumer only when its queue goes from
/// empty to not empty; were such a wake-up lost, the consumer (and the
/// rebalances it serves) would wait for good. This bounds that, and costs
/// nothing while records flow.
pub(crate) async fn recv<C, R>(consumer: &StreamConsumer<C, R>) -> KafkaResult<BorrowedMessage<'_>>
where
    C: ConsumerContext + 'static,
    R: rdkafka::util::AsyncRuntime,
{
    loop {
        tokio::select! {
            biased;
            r = consumer.recv() => return r,
            _ = tokio::time::sleep(RECV_NUDGE) => {}
        }
    }
}

/// The consumer loop as a stream: records until stopped or a fatal error.
pub(crate) fn message_stream(
    control: &ConsumerControl,
) -> futures::stream::BoxStream<'static, flowstage::Item<CommittableMessage>> {
    let consumer = control.consumer.clone();
    let shared = control.shared.clone();
    let mut stop = shared.stop.subscribe();
    flowstage::async_stream::stream! {
        let mut topic = None;
        // As in `recv`, but one timer for the stream: nothing is created per
        // record (the nudge is only looked at while the consumer waits).
        let mut nudge = tokio::time::interval(RECV_NUDGE);
        nudge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                r = consumer.recv() => r.map(|m| to_committable(&m, &shared, &mut topic)),
                _ = nudge.tick() => continue,
            };
            match next {
                Ok(m) => yield Ok(m),
                Err(e @ ClientError::MessageConsumptionFatal(_)) => {
                    yield Err(StreamError::user(KafkaStageError::Client(e)));
                    break;
                }
                Err(ClientError::PartitionEOF(_)) => {}
                Err(e) => super::client_log::at_level!(
                    super::client_log::error_level(&e),
                    error = %e,
                    "kafka: consumer error (continuing)"
                ),
            }
        }
        tracing::debug!("kafka: consumer source completed");
    }
    .boxed()
}

/// A source of [`CommittableMessage`]s from a consumer group (Alpakka Kafka's
/// `committableSource`). It materializes a [`ConsumerControl`].
///
/// Offsets are not committed automatically: pass each record's
/// [`CommittableOffset`] to a [`Committer`](super::Committer) once its result
/// has been produced (at-least-once). **Every** emitted offset must reach the
/// committer — also for records that produce no result — or the partition's
/// commits stall at it.
///
/// Transient consumer errors are logged and consumption continues; a fatal
/// client error fails the stream with [`KafkaStageError::Client`].
pub fn committable_source(
    settings: ConsumerSettings,
) -> Result<CommittableSource, KafkaStageError> {
    let control = create_consumer(&settings)?;
    let stream = message_stream(&control);
    Ok(Source::from_parts(stream, control))
}
