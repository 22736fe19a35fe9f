//! The batching offset committer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flowstage::{Completion, Sink, SinkStage, StreamError};
use futures::StreamExt;
use rdkafka::error::KafkaError as ClientError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::consumer::{Committable, CommittableOffset, ConsumerControl};
use super::error::KafkaStageError;

/// When the committer commits.
#[derive(Debug, Clone)]
pub struct CommitterSettings {
    /// Commit after this many offsets were marked processed.
    pub max_batch: usize,
    /// Commit at least this often while offsets are being marked (taken as 1 ms
    /// to 1 day).
    pub max_interval: Duration,
    /// Flush requests buffered for the committer task (taken as 1 to 65,536).
    pub buffer: usize,
}

/// The bounds of [`CommitterSettings::max_interval`].
const MIN_INTERVAL: Duration = Duration::from_millis(1);
const MAX_INTERVAL: Duration = Duration::from_secs(86_400);
/// The bound of [`CommitterSettings::buffer`].
const MAX_BUFFER: usize = 1 << 16;

impl Default for CommitterSettings {
    fn default() -> Self {
        CommitterSettings {
            max_batch: 1000,
            max_interval: Duration::from_secs(1),
            buffer: 16,
        }
    }
}

impl CommitterSettings {
    /// Sets [`max_batch`](Self::max_batch).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Sets [`max_interval`](Self::max_interval) (1 ms to 1 day).
    pub fn max_interval(mut self, d: Duration) -> Self {
        self.max_interval = d.clamp(MIN_INTERVAL, MAX_INTERVAL);
        self
    }
}

/// What a committer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Offsets marked processed.
    pub marked: u64,
    /// Commit requests that committed at least one partition.
    pub commits: u64,
    /// Partition positions committed, summed over commits.
    pub partitions_committed: u64,
    /// Commits that failed with a retriable error (rebalance in progress, …).
    pub retriable_failures: u64,
}

/// State shared by the committer's handles and its task.
struct Inner {
    control: ConsumerControl,
    max_batch: usize,
    /// Marks since the last commit.
    since_commit: AtomicUsize,
    /// Wakes the task when a batch is full.
    batch_full: Notify,
    stats: Mutex<CommitStats>,
    failure: Mutex<Option<Arc<KafkaStageError>>>,
}

impl Inner {
    fn stats(&self) -> CommitStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failure(&self) -> Option<Arc<KafkaStageError>> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn fail(&self, e: KafkaStageError) -> Arc<KafkaStageError> {
        tracing::error!(error = %e, "kafka: commit failed");
        let e = Arc::new(e);
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
        e
    }
}

type FlushReply = oneshot::Sender<Result<CommitStats, Arc<KafkaStageError>>>;

/// Commits offsets of processed records, in batches, never past an
/// unprocessed record of the same partition (see [`OffsetTracker`](super::OffsetTracker)).
///
/// A committer is a handle (cheap to clone) on a task that owns the commit
/// schedule. [`mark`](Committer::mark) records a processed offset at once (so
/// a rebalance's revocation commit includes it); the task commits when
/// [`max_batch`](CommitterSettings::max_batch) offsets were marked, every
/// [`max_interval`](CommitterSettings::max_interval) while marks arrive, on
/// [`flush`](Committer::flush), and a last time when every handle is dropped.
/// Commits are issued in order with the commits made on partition revocation,
/// so a partition's committed offset never moves backwards; their results are
/// awaited on the blocking pool, at most the consumer's
/// [`commit_timeout`](super::ConsumerSettings::commit_timeout) (a commit
/// without a result by then is a retriable failure and is made again).
#[derive(Clone)]
pub struct Committer {
    inner: Arc<Inner>,
    flush_tx: mpsc::Sender<FlushReply>,
    /// The committer's final counters, once its task has ended (its last
    /// commit made, its hold on the consumer released).
    done: watch::Receiver<Option<Result<CommitStats, Arc<KafkaStageError>>>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Committer {
    /// Starts the committer task for `control`'s consumer.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(control: ConsumerControl, settings: CommitterSettings) -> Committer {
        let (flush_tx, flush_rx) = mpsc::channel(settings.buffer.clamp(1, MAX_BUFFER));
        let inner = Arc::new(Inner {
            control,
            max_batch: settings.max_batch.max(1),
            since_commit: AtomicUsize::new(0),
            batch_full: Notify::new(),
            stats: Mutex::new(CommitStats::default()),
            failure: Mutex::new(None),
        });
        let (done_tx, done) = watch::channel(None);
        let interval = settings.max_interval.clamp(MIN_INTERVAL, MAX_INTERVAL);
        let task = run(inner.clone(), interval, flush_rx);
        tokio::spawn(async move {
            // `run` has dropped its handle on the consumer when it returns.
            let _ = done_tx.send(Some(task.await));
        });
        Committer {
            inner,
            flush_tx,
            done,
        }
    }

    /// Drops this handle and waits until the committer has stopped: every
    /// other handle dropped too (a sink's, once its stream ended), the last
    /// commit made (at most the consumer's
    /// [`commit_timeout`](super::ConsumerSettings::commit_timeout)) and the
    /// task's hold on the consumer released. Returns the final counters,
    /// that last commit included, or the error of the last commit or of an
    /// earlier fatal one (Alpakka Kafka's `drainAndShutdown` fails alike):
    /// the records after the committed offsets will be consumed again.
    /// Dropping the handles instead lets the committer finish in the
    /// background (a failed last commit is logged as an error), maybe after the caller
    /// has stopped the broker. Do not call it while keeping another handle:
    /// it would wait for that one.
    pub async fn close(self) -> Result<CommitStats, StreamError> {
        let Committer {
            inner,
            flush_tx,
            mut done,
        } = self;
        drop((inner, flush_tx));
        // An error: the task is gone without saying so (the runtime shut down).
        let last = done
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|last| last.clone());
        match last {
            Some(Ok(stats)) => Ok(stats),
            Some(Err(e)) => Err(StreamError::User(e)),
            None => Err(StreamError::user(KafkaStageError::CommitterClosed)),
        }
    }

    /// Marks one record processed (its result was produced). Fails if an
    /// earlier commit failed fatally.
    pub fn mark(&self, offset: &CommittableOffset) -> Result<(), StreamError> {
        if let Some(e) = self.inner.failure() {
            return Err(StreamError::User(e));
        }
        self.inner
            .control
            .shared
            .tracker()
            .mark(&offset.tp, offset.epoch, offset.offset);
        self.inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .marked += 1;
        if self.inner.since_commit.fetch_add(1, Ordering::AcqRel) + 1 >= self.inner.max_batch {
            self.inner.batch_full.notify_one();
        }
        Ok(())
    }

    /// The fatal commit error, if a commit failed with one.
    pub fn failure(&self) -> Option<Arc<KafkaStageError>> {
        self.inner.failure()
    }

    /// Commits everything marked so far and waits for the commit.
    pub async fn flush(&self) -> Result<CommitStats, StreamError> {
        let (reply, rx) = oneshot::channel();
        self.flush_tx
            .send(reply)
            .await
            .map_err(|_| StreamError::user(KafkaStageError::CommitterClosed))?;
        match rx.await {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(e)) => Err(StreamError::User(e)),
            Err(_) => Err(StreamError::user(KafkaStageError::CommitterClosed)),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> CommitStats {
        self.inner.stats()
    }

    /// A sink that marks each element's offset processed; when the stream
    /// ends (or fails) it flushes, so its completion resolves once every
    /// offset it received was committed (or the commit failed).
    pub fn sink<T: Committable + Send + 'static>(
        &self,
    ) -> Sink<impl SinkStage<T, Mat = Completion<CommitStats>>> {
        let committer = self.clone();
        Sink::from_fn(
            move |mut upstream: futures::stream::BoxStream<'static, flowstage::Item<T>>| async move {
                let mut failure = None;
                while let Some(item) = upstream.next().await {
                    match item {
                        Ok(x) => committer.mark(x.committable_offset())?,
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                drop(upstream);
                let stats = committer.flush().await?;
                match failure {
                    Some(e) => Err(e),
                    None => Ok(stats),
                }
            },
        )
    }
}

fn is_retriable(e: &ClientError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::State
                | RDKafkaErrorCode::NoOffset
                | RDKafkaErrorCode::BrokerDestroy
                | RDKafkaErrorCode::AssignmentLost
                // The broker went away or is coming back: the positions stay
                // pending and the next commit (or the revocation) retries.
                | RDKafkaErrorCode::WaitingForCoordinator
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::NetworkException
        )
    )
}

async fn commit(inner: &Inner) -> Result<(), KafkaStageError> {
    inner.since_commit.store(0, Ordering::Release);
    let consumer = inner.control.consumer.clone();
    let shared = inner.control.shared.clone();
    let r = tokio::task::spawn_blocking(move || shared.commit_pending(&**consumer))
        .await
        .map_err(|e| KafkaStageError::Task(e.to_string()))?;
    let mut s = inner.stats.lock().unwrap_or_else(PoisonError::into_inner);
    match r {
        Ok(0) => Ok(()),
        Ok(n) => {
            s.commits += 1;
            s.partitions_committed += n as u64;
            Ok(())
        }
        Err(e) if is_retriable(&e) => {
            // The positions stay pending and are committed next time (or by
            // the partition's revocation); never fatal for at-least-once.
            // Next time is the next tick at the latest, even if no more
            // records are marked.
            inner.since_commit.fetch_max(1, Ordering::AcqRel);
            s.retriable_failures += 1;
            tracing::debug!(error = %e, "kafka: retriable commit failure");
            Ok(())
        }
        Err(e) => Err(KafkaStageError::Commit(e)),
    }
}

/// The committer task; returns the final counters when every handle is gone,
/// or the error that stopped its commits.
async fn run(
    inner: Arc<Inner>,
    max_interval: Duration,
    mut flush_rx: mpsc::Receiver<FlushReply>,
) -> Result<CommitStats, Arc<KafkaStageError>> {
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + max_interval, max_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            reply = flush_rx.recv() => match reply {
                Some(reply) => {
                    let r = match inner.failure() {
                        Some(e) => Err(e),
                        None => commit(&inner).await.map_err(|e| inner.fail(e)),
                    };
                    let _ = reply.send(r.map(|()| inner.stats()));
                }
                // Every handle is gone: a last commit, then stop.
                None => {
                    if inner.failure().is_none() {
                        if let Err(e) = commit(&inner).await {
                            inner.fail(e);
                        }
                    }
                    break;
                }
            },
            _ = inner.batch_full.notified() => {
                if inner.since_commit.load(Ordering::Acquire) >= inner.max_batch && inner.failure().is_none() {
                    if let Err(e) = commit(&inner).await {
                        inner.fail(e);
                    }
                }
            }
            _ = ticker.tick() => {
                if inner.since_commit.load(Ordering::Acquire) > 0 && inner.failure().is_none() {
                    if let Err(e) = commit(&inner).await {
                        inner.fail(e);
                    }
                }
            }
        }
    }
    match inner.failure() {
        Some(e) => Err(e),
        None => Ok(inner.stats()),
    }
}
