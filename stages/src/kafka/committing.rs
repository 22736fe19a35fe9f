//! The committable producer sink (Alpakka Kafka's `Producer.committableSink`):
//! produce each message's records and mark the input's offset processed when
//! the broker acknowledged them — without a future per record.
//!
//! Records go to a librdkafka producer whose delivery callback (on the
//! producer's polling thread) marks the offset in the [`Committer`]; the sink
//! only waits while [`max_in_flight`](ProducerSettings::max_in_flight) records
//! are unacknowledged, or while librdkafka's local queue is full.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use flowstage::{Completion, Sink, SinkStage, StreamError};
use futures::task::AtomicWaker;
use futures::StreamExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use tokio::sync::Notify;

use super::committer::Committer;
use super::consumer::CommittableOffset;
use super::error::KafkaStageError;
use super::producer::{ProducerMessage, ProducerSettings, ProducerStats};

/// A message's offset and how many of its records are still unacknowledged.
struct Pending {
    offset: CommittableOffset,
    remaining: AtomicUsize,
}

struct Shared {
    committer: Committer,
    in_flight: AtomicUsize,
    /// The highest `in_flight` seen.
    max_in_flight: AtomicUsize,
    acknowledged: AtomicU64,
    /// Signalled when a record is acknowledged or fails (while the sink waits).
    progress: Notify,
    /// Whether the sink waits on `progress`: deliveries notify only then, so
    /// the common case (room under the bound) costs no lock on either side.
    waiting: AtomicBool,
    /// Set once `failure` holds an error (read without the lock).
    failed: AtomicBool,
    failure: Mutex<Option<StreamError>>,
    /// The sink's task while it waits for its upstream: a failure wakes it,
    /// so it fails then, not when the next element arrives.
    idle: AtomicWaker,
}

impl Shared {
    fn fail(&self, e: StreamError) {
        let mut f = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        if f.is_none() {
            *f = Some(e);
        }
        self.failed.store(true, Ordering::Release);
        drop(f);
        self.progress.notify_waiters();
        self.idle.wake();
    }

    /// The next element of `upstream`, or the failure reported while
    /// waiting for it (a delivery or commit that failed).
    async fn next_or_failure<T>(
        &self,
        upstream: &mut futures::stream::BoxStream<'static, flowstage::Item<T>>,
    ) -> Option<flowstage::Item<T>> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(item) = upstream.poll_next_unpin(cx) {
                return Poll::Ready(item);
            }
            // Registered before the check, so a failure in between is seen.
            self.idle.register(cx.waker());
            match self.failure() {
                Some(e) => Poll::Ready(Some(Err(e))),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// Wakes the sink if it waits. A delivery decrements `in_flight` before
    /// this reads `waiting` (both sequentially consistent), and the sink sets
    /// `waiting` before it reads `in_flight`: one of them sees the other.
    fn delivered(&self) {
        if self.waiting.load(Ordering::SeqCst) {
            self.progress.notify_waiters();
        }
    }

    /// Waits until `ready()` holds, re-checking after each acknowledgement
    /// (registered before the check, so no notification is lost).
    async fn wait_until(&self, ready: impl Fn() -> bool) {
        if ready() {
            return;
        }
        loop {
            let mut notified = std::pin::pin!(self.progress.notified());
            notified.as_mut().enable();
            self.waiting.store(true, Ordering::SeqCst);
            if ready() {
                self.waiting.store(false, Ordering::SeqCst);
                return;
            }
            notified.await;
        }
    }

    /// Waits for a delivery, at most `limit`.
    async fn wait_progress(&self, limit: Duration) {
        let mut notified = std::pin::pin!(self.progress.notified());
        notified.as_mut().enable();
        self.waiting.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(limit, notified).await;
        self.waiting.store(false, Ordering::SeqCst);
    }

    fn failure(&self) -> Option<StreamError> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The producer context: marks offsets on delivery.
struct MarkOnDelivery {
    shared: Arc<Shared>,
}

impl ClientContext for MarkOnDelivery {
    super::client_log::forward_client_log!();
}

impl ProducerContext for MarkOnDelivery {
    type DeliveryOpaque = Arc<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Arc<Pending>) {
        let s = &self.shared;
        match result {
            Ok(_) => {
                s.acknowledged.fetch_add(1, Ordering::Relaxed);
                if pending.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    if let Err(e) = s.committer.mark(&pending.offset) {
                        s.fail(e);
                    }
                }
            }
            Err((e, m)) => s.fail(StreamError::user(KafkaStageError::Delivery {
                topic: m.topic().to_string(),
                source: e.clone(),
            })),
        }
        s.in_flight.fetch_sub(1, Ordering::SeqCst);
        s.delivered();
    }
}

/// A sink producing each [`ProducerMessage`]'s records and marking its
/// [`CommittableOffset`] in `committer` once all of them are acknowledged (a
/// message without records is marked at once). At most
/// `settings.max_in_flight` records are unacknowledged; the sink waits beyond
/// that. The first failed delivery or commit fails the sink, at once even
/// while its upstream has no element ready. When the stream
/// ends the sink waits for every acknowledgement and flushes the committer,
/// so its completion resolves once everything it received was committed.
///
/// Compared with [`KafkaProducer::flow`](super::KafkaProducer::flow) into
/// [`Committer::sink`], this creates no future per record — the cheaper path
/// when nothing after the producer needs the delivery reports.
pub fn committable_sink(
    settings: &ProducerSettings,
    committer: Committer,
) -> Result<
    Sink<impl SinkStage<ProducerMessage<CommittableOffset>, Mat = Completion<ProducerStats>>>,
    KafkaStageError,
> {
    if settings.max_in_flight == 0 {
        return Err(KafkaStageError::Config {
            name: "max_in_flight",
            reason: "must be at least 1".into(),
        });
    }
    let shared = Arc::new(Shared {
        committer,
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        acknowledged: AtomicU64::new(0),
        progress: Notify::new(),
        waiting: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        failure: Mutex::new(None),
        idle: AtomicWaker::new(),
    });
    let producer: Arc<ThreadedProducer<MarkOnDelivery>> = Arc::new(
        settings
            .client_config()
            .create_with_context(MarkOnDelivery {
                shared: shared.clone(),
            })?,
    );
    super::keeper::watch(&producer, &settings.bootstrap_servers);
    let max_in_flight = settings.max_in_flight;
    let queue_timeout = settings.queue_timeout;
    Ok(Sink::from_fn(
        move |mut upstream: futures::stream::BoxStream<
            'static,
            flowstage::Item<ProducerMessage<CommittableOffset>>,
        >| async move {
            let mut stats = ProducerStats::default();
            let mut outcome = Ok(());
            while let Some(item) = shared.next_or_failure(&mut upstream).await {
                let message = match item {
                    Ok(m) => m,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                };
                if let Some(e) = shared.failure() {
                    outcome = Err(e);
                    break;
                }
                if let Err(e) =
                    send(&producer, &shared, message, max_in_flight, queue_timeout).await
                {
                    outcome = Err(e);
                    break;
                }
                stats.messages += 1;
            }
            // Wait for every acknowledgement, then commit.
            shared
                .wait_until(|| shared.in_flight.load(Ordering::SeqCst) == 0)
                .await;
            stats.records = shared.acknowledged.load(Ordering::Relaxed);
            stats.max_in_flight = shared.max_in_flight.load(Ordering::Relaxed) as u64;
            outcome?;
            if let Some(e) = shared.failure() {
                return Err(e);
            }
            shared.committer.flush().await?;
            Ok(stats)
        },
    ))
}

/// Hands a message's records to librdkafka, waiting for room.
async fn send(
    producer: &ThreadedProducer<MarkOnDelivery>,
    shared: &Arc<Shared>,
    message: ProducerMessage<CommittableOffset>,
    max_in_flight: usize,
    queue_timeout: Duration,
) -> Result<(), StreamError> {
    let ProducerMessage {
        records,
        passthrough,
    } = message;
    if records.is_empty() {
        return shared.committer.mark(&passthrough);
    }
    let pending = Arc::new(Pending {
        offset: passthrough,
        remaining: AtomicUsize::new(records.len()),
    });
    for record in &records {
        // Room under the in-flight bound.
        shared
            .wait_until(|| shared.in_flight.load(Ordering::SeqCst) < max_in_flight)
            .await;
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::Relaxed);
        let mut deadline = None;
        let mut opaque = pending.clone();
        loop {
            let r = record.base_record(opaque);
            match producer.send(r) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if tokio::time::Instant::now()
                        < *deadline
                            .get_or_insert_with(|| super::deadline_after(queue_timeout).into()) =>
                {
                    // librdkafka's queue is full: wait for deliveries to drain it.
                    opaque = back.delivery_opaque;
                    shared.wait_progress(Duration::from_millis(10)).await;
                }
                Err((e, _)) => {
                    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                    return Err(StreamError::user(KafkaStageError::Delivery {
                        topic: record.topic.clone(),
                        source: e,
                    }));
                }
            }
        }
    }
    Ok(())
}
