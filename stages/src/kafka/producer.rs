//! The producer flow and sink: delivery reports, bounded in-flight records.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowstage::{Completion, Flow, FlowOps, Sink, SinkStage, StreamError};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::util::IntoOpaque;
use rdkafka::util::Timeout;
use tokio::sync::Semaphore;

use super::client_log::ClientLog;
use super::consumer::{Committable, CommittableOffset};
use super::error::KafkaStageError;

/// How to connect a producer.
#[derive(Clone)]
pub struct ProducerSettings {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// At most this many records are handed to the client and not yet
    /// acknowledged; beyond it, sending waits (backpressure).
    pub max_in_flight: usize,
    /// How long a send may wait for room in librdkafka's local queue.
    pub queue_timeout: Duration,
    /// Extra librdkafka properties (applied last).
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for ProducerSettings {
    /// Secrets among the properties (passwords, keys) are not shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("max_in_flight", &self.max_in_flight)
            .field("queue_timeout", &self.queue_timeout)
            .field("properties", &super::connection::Redacted(&self.properties))
            .finish()
    }
}

impl ProducerSettings {
    /// Settings for `bootstrap_servers` with 10,000 records in flight at most.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        ProducerSettings {
            bootstrap_servers: bootstrap_servers.into(),
            max_in_flight: 10_000,
            queue_timeout: Duration::from_secs(30),
            properties: Vec::new(),
        }
    }

    /// Sets [`max_in_flight`](Self::max_in_flight) (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Sets a librdkafka property.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// The librdkafka configuration of a producer with these settings: the
    /// crate's base configuration, no Nagle delay (latency: small produce
    /// requests), then [`properties`](Self::properties).
    pub(crate) fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = super::base_client_config(&self.bootstrap_servers);
        c.set("socket.nagle.disable", "true");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Destination topic.
    pub topic: String,
    /// Destination partition (`None`: by key, or librdkafka's partitioner).
    pub partition: Option<i32>,
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The payload.
    pub payload: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Timestamp (epoch ms); `None`: the client's clock.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// The headers as librdkafka takes them (`None` without headers).
    fn owned_headers(&self) -> Option<OwnedHeaders> {
        if self.headers.is_empty() {
            return None;
        }
        let mut hs = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            });
        }
        Some(hs)
    }

    /// This record for a `BaseProducer`/`ThreadedProducer`, with `opaque` for
    /// its delivery callback.
    pub(crate) fn base_record<D: IntoOpaque>(&self, opaque: D) -> BaseRecord<'_, [u8], [u8], D> {
        let mut r = BaseRecord::with_opaque_to(&self.topic, opaque);
        r.partition = self.partition;
        r.key = self.key.as_deref();
        r.payload = self.payload.as_deref();
        r.timestamp = self.timestamp;
        r.headers = self.owned_headers();
        r
    }

    /// A record with a payload for `topic`.
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            payload: Some(payload.into()),
            ..Default::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }
}

/// Zero or more records to produce and a value to pass on once all of them
/// are acknowledged (typically the [`CommittableOffset`] of the input record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerMessage<P> {
    /// The records (none: the passthrough is emitted at once).
    pub records: Vec<ProducerRecord>,
    /// Passed on in the [`ProducerResult`].
    pub passthrough: P,
}

impl<P> ProducerMessage<P> {
    /// One record.
    pub fn single(record: ProducerRecord, passthrough: P) -> Self {
        ProducerMessage {
            records: vec![record],
            passthrough,
        }
    }

    /// Several records (for example a result and an audit record).
    pub fn multi(records: Vec<ProducerRecord>, passthrough: P) -> Self {
        ProducerMessage {
            records,
            passthrough,
        }
    }

    /// No record: only the passthrough (to commit a record that has no result).
    pub fn passthrough(passthrough: P) -> Self {
        ProducerMessage {
            records: Vec::new(),
            passthrough,
        }
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

/// The deliveries of a [`ProducerMessage`] and its passthrough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerResult<P> {
    /// One report per record, in the message's order.
    pub deliveries: Vec<DeliveryReport>,
    /// The message's passthrough.
    pub passthrough: P,
}

impl<P: Committable> Committable for ProducerResult<P> {
    fn committable_offset(&self) -> &CommittableOffset {
        self.passthrough.committable_offset()
    }
}

/// Counters of a producer sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Messages (with their passthrough) completed; for
    /// [`committable_sink`](super::committable_sink), handed to the producer.
    pub messages: u64,
    /// Records acknowledged.
    pub records: u64,
    /// The most records that were unacknowledged at once (the committable
    /// sink's; at most its `max_in_flight`). 0 where not tracked.
    pub max_in_flight: u64,
}

#[derive(Debug, Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

/// A Kafka producer for streams: [`flow`](Self::flow) and [`sink`](Self::sink)
/// send records with at most [`max_in_flight`](ProducerSettings::max_in_flight)
/// unacknowledged, and fail the stream with [`KafkaStageError::Delivery`] when
/// a record cannot be delivered. Cheap to clone (one client).
#[derive(Clone)]
pub struct KafkaProducer {
    producer: Arc<FutureProducer<ClientLog>>,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    queue_timeout: Duration,
    gauge: Arc<Gauge>,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("max_in_flight", &self.max_in_flight)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl KafkaProducer {
    /// Creates the client.
    pub fn new(settings: &ProducerSettings) -> Result<Self, KafkaStageError> {
        if settings.max_in_flight == 0 {
            return Err(KafkaStageError::Config {
                name: "max_in_flight",
                reason: "must be at least 1".into(),
            });
        }
        super::check_count("max_in_flight", settings.max_in_flight)?;
        let producer: Arc<FutureProducer<ClientLog>> =
            Arc::new(settings.client_config().create_with_context(ClientLog)?);
        super::keeper::watch(&producer, &settings.bootstrap_servers);
        Ok(KafkaProducer {
            producer,
            permits: Arc::new(Semaphore::new(settings.max_in_flight)),
            max_in_flight: settings.max_in_flight,
            queue_timeout: settings.queue_timeout,
            gauge: Arc::new(Gauge::default()),
        })
    }

    /// Records sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.gauge.now.load(Ordering::Relaxed)
    }

    /// The most records ever in flight at once (never above the bound).
    pub fn max_in_flight_seen(&self) -> usize {
        self.gauge.max.load(Ordering::Relaxed)
    }

    /// Sends one record and waits for its acknowledgement, after waiting for
    /// room under the in-flight bound.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryReport, KafkaStageError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| KafkaStageError::Task(e.to_string()))?;
        let now = self.gauge.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.gauge.max.fetch_max(now, Ordering::Relaxed);
        let r = self.send_unbounded(&record).await;
        self.gauge.now.fetch_sub(1, Ordering::Relaxed);
        r
    }

    async fn send_unbounded(
        &self,
        record: &ProducerRecord,
    ) -> Result<DeliveryReport, KafkaStageError> {
        let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic);
        fr.partition = record.partition;
        fr.key = record.key.as_deref();
        fr.payload = record.payload.as_deref();
        fr.timestamp = record.timestamp;
        fr.headers = record.owned_headers();
        match self
            .producer
            .send(fr, Timeout::After(self.queue_timeout))
            .await
        {
            Ok(d) => Ok(DeliveryReport {
                topic: record.topic.clone(),
                partition: d.partition,
                offset: d.offset,
            }),
            Err((source, _)) => Err(KafkaStageError::Delivery {
                topic: record.topic.clone(),
                source,
            }),
        }
    }

    /// Sends a message's records concurrently; resolves when all are acknowledged.
    pub async fn send_message<P>(
        &self,
        message: ProducerMessage<P>,
    ) -> Result<ProducerResult<P>, KafkaStageError> {
        let ProducerMessage {
            records,
            passthrough,
        } = message;
        let deliveries = match records.len() {
            0 => Vec::new(),
            1 => {
                let mut it = records.into_iter();
                match it.next() {
                    Some(r) => vec![self.send(r).await?],
                    None => Vec::new(),
                }
            }
            _ => futures::future::try_join_all(records.into_iter().map(|r| self.send(r))).await?,
        };
        Ok(ProducerResult {
            deliveries,
            passthrough,
        })
    }

    /// A flow that produces each message's records and emits its
    /// [`ProducerResult`] once they are acknowledged, in input order. The
    /// first delivery failure fails the stream ([`KafkaStageError::Delivery`]).
    pub fn flow<P: Send + 'static>(&self) -> Flow<ProducerMessage<P>, ProducerResult<P>> {
        let p = self.clone();
        Flow::new().try_map_async(self.max_in_flight, move |m: ProducerMessage<P>| {
            let p = p.clone();
            async move { p.send_message(m).await }
        })
    }

    /// A sink that produces each message's records; its completion resolves
    /// when every record was acknowledged, or with the first delivery failure.
    pub fn sink<P: Send + 'static>(
        &self,
    ) -> Sink<impl SinkStage<ProducerMessage<P>, Mat = Completion<ProducerStats>>> {
        self.flow().to(Sink::fold(
            ProducerStats::default(),
            |mut s, r: ProducerResult<P>| {
                s.messages += 1;
                s.records += r.deliveries.len() as u64;
                s
            },
        ))
    }

    /// Waits (off the async threads) until librdkafka's queue is empty.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaStageError> {
        let p = self.producer.clone();
        // rdkafka adds the timeout to the current instant: bounded (about 24 days,
        // librdkafka's own limit) so that it cannot overflow.
        let timeout = timeout.min(Duration::from_millis(i32::MAX as u64));
        tokio::task::spawn_blocking(move || p.flush(Timeout::After(timeout)))
            .await
            .map_err(|e| KafkaStageError::Task(e.to_string()))?
            .map_err(KafkaStageError::Client)
    }

    /// The underlying client.
    pub fn client(&self) -> &FutureProducer<ClientLog> {
        &self.producer
    }
}

/// Unwraps the typed Kafka error from a stream failure, if it is one.
pub fn kafka_error(e: &StreamError) -> Option<&KafkaStageError> {
    e.downcast_ref::<KafkaStageError>()
}
