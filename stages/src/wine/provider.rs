//! The data provider: publishes wine records to the data topic and model
//! descriptors to the model topic, paced, with models swapped in as the
//! records flow — the tutorial's `DataProvider`, the engine of
//! `flowstage provide`.
//!
//! ```no_run
//! use flowstage_stages::kafka::shutdown_signal;
//! use flowstage_stages::wine::files::{generated_models, generated_wine_records};
//! use flowstage_stages::wine::provider::{provide, ProviderConfig};
//! # async fn run() -> Result<(), flowstage_stages::wine::WineError> {
//! let mut config = ProviderConfig::new("127.0.0.1:9092");
//! config.rate = 1000; // records per second
//! config.count = Some(10_000);
//! config.loop_data = true;
//! let summary = provide(
//!     config,
//!     generated_wine_records(1000, 1),
//!     generated_models(),
//!     |p| eprint!("\r{} records", p.records),
//!     shutdown_signal(),
//! )
//! .await?;
//! println!("{summary}");
//! # Ok(()) }
//! ```
//!
//! ## What is published, in which order
//! - Record `seq` (0, 1, 2, … in publish order) is the `seq % len`-th input
//!   record with dataType [`ProviderConfig::data_type`] and `ts` the epoch
//!   milliseconds when it is handed to the client (also the Kafka timestamp),
//!   keyed [`record_key(seq)`](super::record_key).
//! - Models are keyed by their dataType. The first model is acknowledged by
//!   the broker before the first record is sent; every later model is
//!   acknowledged before any later record is sent (a barrier). Models cycle
//!   through the list in order, one every [`ProviderConfig::model_interval`]
//!   or, deterministically, every [`ProviderConfig::model_every`] records
//!   (model `k` goes out after records `0..k*n` and before record `k*n`). A
//!   list of one model is published once (the topic is compacted; repeating
//!   it would only make servers reload it).
//! - Without records, the models are published one per interval, each once
//!   (forever round the list with [`ProviderConfig::loop_data`]).
//!
//! ## Pacing and throughput
//! At a rate, record `k` is not sent before `k / rate` seconds after the
//! first model's acknowledgement; sending happens in time slices (the timer's
//! millisecond), so pacing is accurate at 100k records/s and beyond, and a
//! stall is caught up. At full speed (`rate` 0) the in-flight bound
//! ([`ProviderConfig::max_in_flight`], the [`KafkaProducer`]'s) is the only
//! limit: records go to the producer's client without an allocation of their
//! own (key and payload are copied by librdkafka), their acknowledgements are
//! taken in send order, and sending waits while `max_in_flight` are
//! unacknowledged.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowstage_model::pb::{ModelDescriptor, WineRecord};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use prost::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::util::Timeout;

use super::server::MAX_COUNT_SETTING;
use super::{Topics, WineError, WINE};
use crate::kafka::{
    DeliveryReport, KafkaProducer, KafkaStageError, ProducerRecord, ProducerSettings,
};

/// Records handed to the client per scheduling step at most (so that
/// acknowledgements, the clock and shutdown are looked at often).
const FILL_CHUNK: usize = 1024;

/// How often `on_progress` is called at most (besides every model and the end).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The highest `rate` [`provide`] takes, records a second (0 is full speed).
pub const MAX_RATE: u64 = 100_000_000;

/// The longest `model_interval` [`provide`] takes: a year.
pub const MAX_MODEL_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// What [`provide`] publishes and how. Its `Debug` hides secret property
/// values (passwords, secrets, PEM keys).
#[derive(Clone, PartialEq)]
pub struct ProviderConfig {
    /// `bootstrap.servers` of the cluster.
    pub brokers: String,
    /// Topic names ([`Topics::data`] for records, [`Topics::models`] for models).
    pub topics: Topics,
    /// The dataType set on every record, and on models that have none.
    pub data_type: String,
    /// Records per second; 0 publishes at full speed.
    pub rate: u64,
    /// Records to publish in all. `None`: each input record once, or forever
    /// with [`loop_data`](Self::loop_data). Without `loop_data` publishing
    /// also stops at the end of the input.
    pub count: Option<u64>,
    /// Start over at the first record after the last one.
    pub loop_data: bool,
    /// Time between models (when [`model_every`](Self::model_every) is not set).
    pub model_interval: Duration,
    /// A model every this many records instead of by time (deterministic).
    pub model_every: Option<u64>,
    /// Records sent and not yet acknowledged at most
    /// ([`ProducerSettings::max_in_flight`]).
    pub max_in_flight: usize,
    /// How long to wait for the cluster's metadata before giving up.
    pub connect_timeout: Duration,
    /// On shutdown, how long to wait for in-flight records' acknowledgements.
    pub drain_timeout: Duration,
    /// librdkafka properties of every client of the provider (its producer):
    /// what a secured cluster needs (`security.protocol`, `sasl.*`, `ssl.*`).
    /// Applied after the provider's own settings and before
    /// [`properties`](Self::properties), which override them.
    pub kafka_properties: Vec<(String, String)>,
    /// Extra librdkafka producer properties, applied after the provider's own
    /// (`linger.ms` 5).
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::kafka::connection::Redacted;
        f.debug_struct("ProviderConfig")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .field("data_type", &self.data_type)
            .field("rate", &self.rate)
            .field("count", &self.count)
            .field("loop_data", &self.loop_data)
            .field("model_interval", &self.model_interval)
            .field("model_every", &self.model_every)
            .field("max_in_flight", &self.max_in_flight)
            .field("connect_timeout", &self.connect_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .field("kafka_properties", &Redacted(&self.kafka_properties))
            .field("properties", &Redacted(&self.properties))
            .finish()
    }
}

impl ProviderConfig {
    /// Defaults for `brokers`: the tutorial's topics, dataType `wine`, 1000
    /// records/s, each record once, a model every 10 s, 10,000 records in
    /// flight.
    pub fn new(brokers: impl Into<String>) -> Self {
        ProviderConfig {
            brokers: brokers.into(),
            topics: Topics::default(),
            data_type: WINE.into(),
            rate: 1000,
            count: None,
            loop_data: false,
            model_interval: Duration::from_secs(10),
            model_every: None,
            max_in_flight: 10_000,
            connect_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            kafka_properties: Vec::new(),
            properties: Vec::new(),
        }
    }

    /// The provider's part of the low-latency settings
    /// ([`ServerConfig::low_latency`](super::server::ServerConfig::low_latency)):
    /// records batched for 0.2 ms (`linger.ms`) instead of 5 ms. In front of
    /// [`properties`](Self::properties), which override it.
    pub fn low_latency(mut self) -> Self {
        self.properties.insert(
            0,
            (
                "linger.ms".to_string(),
                super::server::LOW_LATENCY_LINGER_MS.to_string(),
            ),
        );
        self
    }

    /// Checks the settings ([`provide`] does): the dataType not empty, topic
    /// names Kafka allows, the brokers well formed, `max_in_flight` from 1 to
    /// [`MAX_COUNT_SETTING`], the rate at most [`MAX_RATE`], the interval
    /// between models at most [`MAX_MODEL_INTERVAL`], `model_every` not 0.
    pub fn check(&self) -> Result<(), WineError> {
        if self.data_type.trim().is_empty() {
            return Err(config_error("data_type", "must not be empty"));
        }
        for (name, topic) in [
            ("data_topic", &self.topics.data),
            ("models_topic", &self.topics.models),
        ] {
            crate::kafka::check_topic_name(topic).map_err(|reason| config_error(name, reason))?;
        }
        crate::kafka::check_bootstrap(&self.brokers)
            .map_err(|reason| config_error("brokers", reason))?;
        if !(1..=MAX_COUNT_SETTING).contains(&self.max_in_flight) {
            return Err(config_error(
                "max_in_flight",
                format!("must be from 1 to {MAX_COUNT_SETTING}"),
            ));
        }
        if self.rate > MAX_RATE {
            return Err(config_error(
                "rate",
                format!("at most {MAX_RATE} records a second (0: full speed)"),
            ));
        }
        if self.model_interval > MAX_MODEL_INTERVAL {
            return Err(config_error(
                "model_interval",
                format!("at most {} s", MAX_MODEL_INTERVAL.as_secs()),
            ));
        }
        if self.model_every == Some(0) {
            return Err(config_error("model_every", "must be at least 1"));
        }
        Ok(())
    }

    /// [`check`](Self::check), and what depends on what is published
    /// (`records` and `models`, how many): models that take turns by time need
    /// a `model_interval` above zero ([`provide`] checks this).
    pub fn check_for(&self, records: usize, models: usize) -> Result<(), WineError> {
        self.check()?;
        let by_records = self.model_every.is_some() && records > 0;
        if models > 1 && !by_records && self.model_interval.is_zero() {
            return Err(config_error(
                "model_interval",
                "must be positive (or set model_every)",
            ));
        }
        Ok(())
    }

    /// How many records a run publishes with `len` input records (`None`: until stopped).
    pub fn total_records(&self, len: usize) -> Option<u64> {
        let len = len as u64;
        match (self.count, self.loop_data && len > 0) {
            (Some(c), true) => Some(c),
            (Some(c), false) => Some(c.min(len)),
            (None, true) => None,
            (None, false) => Some(len),
        }
    }
}

impl Default for ProviderConfig {
    /// [`ProviderConfig::new`] for `127.0.0.1:9092`.
    fn default() -> Self {
        ProviderConfig::new("127.0.0.1:9092")
    }
}

/// Where a run is, passed to `on_progress`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderProgress {
    /// Records acknowledged by the broker.
    pub records: u64,
    /// Records handed to the client (acknowledged or not).
    pub sent: u64,
    /// Models acknowledged.
    pub models: u64,
    /// Records the run publishes in all, when bounded.
    pub total: Option<u64>,
    /// The name of the last model acknowledged.
    pub current_model: Option<String>,
    /// Since the run started.
    pub elapsed: Duration,
}

/// What a run published.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderSummary {
    /// Records acknowledged by the broker.
    pub records: u64,
    /// Models acknowledged by the broker.
    pub models: u64,
    /// The whole run, from connecting to the last acknowledgement.
    pub elapsed: Duration,
    /// Records per second, from the first record sent to the last acknowledged.
    pub rate: f64,
    /// Whether the run was stopped by its shutdown future (a signal, the
    /// demo's `--duration`) rather than by its count.
    pub interrupted: bool,
    /// Records still unacknowledged when the drain timeout passed (after a shutdown).
    pub unacknowledged: u64,
    /// Models still unacknowledged then (at most one is in flight).
    pub unacknowledged_models: u64,
}

impl std::fmt::Display for ProviderSummary {
    /// One line: `published N records and M models in S s (R records/s)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "published {} and {} in {:.2} s ({:.0} records/s)",
            super::plural(self.records, "record"),
            super::plural(self.models, "model"),
            self.elapsed.as_secs_f64(),
            self.rate
        )?;
        if self.interrupted {
            write!(f, ", stopped on request")?;
        }
        if self.unacknowledged > 0 {
            let n = super::plural(self.unacknowledged, "record");
            write!(f, ", {n} unacknowledged")?;
        }
        if self.unacknowledged_models > 0 {
            let n = super::plural(self.unacknowledged_models, "model");
            write!(f, ", {n} unacknowledged")?;
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    now_ms_micros().0
}

/// The time now as epoch milliseconds and the microseconds past them
/// (`WineRecord.ts` and `ts_micros`).
fn now_ms_micros() -> (i64, i32) {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or((0, 0), |d| {
            let micros = i32::try_from(d.subsec_micros() % 1000).unwrap_or(0);
            (i64::try_from(d.as_millis()).unwrap_or(i64::MAX), micros)
        })
}

fn config_error(name: &'static str, reason: impl Into<String>) -> WineError {
    WineError::Config {
        name,
        reason: reason.into(),
    }
}

/// The decimal text of a record's sequence number, as [`record_key`](super::record_key) writes
/// it, without allocating.
#[derive(Default)]
struct DecimalKey([u8; 20]);

impl DecimalKey {
    fn of(&mut self, mut n: u64) -> &[u8] {
        let mut i = self.0.len();
        loop {
            i -= 1;
            self.0[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        &self.0[i..]
    }
}

/// Takes the acknowledgements at the front of `inflight` (in send order):
/// ready with how many when at least one, the first delivery failure as an
/// error.
fn poll_acks(
    inflight: &mut VecDeque<DeliveryFuture>,
    topic: &str,
    cx: &mut Context<'_>,
) -> Poll<Result<u64, KafkaStageError>> {
    let mut n = 0;
    while let Some(front) = inflight.front_mut() {
        match Pin::new(front).poll(cx) {
            Poll::Pending => break,
            Poll::Ready(r) => {
                inflight.pop_front();
                match r {
                    Ok(Ok(_)) => n += 1,
                    Ok(Err((source, _))) => {
                        return Poll::Ready(Err(KafkaStageError::Delivery {
                            topic: topic.to_string(),
                            source,
                        }))
                    }
                    Err(_) => {
                        return Poll::Ready(Err(KafkaStageError::Task(
                            "the producer dropped a delivery report".into(),
                        )))
                    }
                }
            }
        }
    }
    if n > 0 {
        Poll::Ready(Ok(n))
    } else {
        Poll::Pending
    }
}

/// A model being sent.
type ModelSend<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<DeliveryReport, KafkaStageError>> + Send + 'a>>;

/// A model ready to send: key, encoded descriptor, name.
struct Encoded {
    key: Vec<u8>,
    payload: Vec<u8>,
    name: String,
}

/// The producer's settings: `linger.ms` 5, then the client properties of
/// every client ([`ProviderConfig::kafka_properties`]), then the producer's
/// own ([`ProviderConfig::properties`]); a later one wins.
///
/// 5 ms is librdkafka's default and Kafka's Java producer's (since 4.0).
/// librdkafka sends each partition's batch in a produce request of its own
/// (librdkafka issue 1700), so with 1 ms at a fixed rate over six partitions
/// the provider sent ~2,500 requests a second at 5,000 records/s, two
/// records each, and on the 2-core benchmark machine the broker spent most
/// of a core on them: in 3 alternated runs of the pipeline benchmark on
/// Apache Kafka (6 partitions), 1 ms → 5 ms took the server's latency at
/// 5,000 records/s from p50 48–258 / p99 218–605 ms to 15–18 / 33–50 ms, at
/// 50,000 records/s from 36–197 / 219–488 ms to 25–39 / 102–155 ms, the
/// plain consume→produce loop's alike. For the lowest latency, one
/// partition and 0.2 ms ([`ProviderConfig::low_latency`]).
fn producer_settings(config: &ProviderConfig) -> ProducerSettings {
    let mut settings = ProducerSettings::new(config.brokers.clone())
        .max_in_flight(config.max_in_flight)
        .set("linger.ms", super::server::DEFAULT_LINGER_MS);
    settings.properties.extend(
        config
            .kafka_properties
            .iter()
            .chain(&config.properties)
            .cloned(),
    );
    settings
}

/// Publishes `records` and `models` as `config` says (see the [module
/// docs](self)) until done or until `shutdown` resolves; then waits for the
/// acknowledgement of what was sent (at most [`ProviderConfig::drain_timeout`]
/// after a shutdown) and reports. `on_progress` is called about every 100 ms,
/// after every model, and at the end.
///
/// Errors: invalid settings ([`WineError::Config`]), an unreachable cluster
/// or a failed delivery ([`WineError::Kafka`]).
pub async fn provide(
    config: ProviderConfig,
    mut records: Vec<WineRecord>,
    mut models: Vec<ModelDescriptor>,
    mut on_progress: impl FnMut(&ProviderProgress),
    shutdown: impl Future<Output = ()>,
) -> Result<ProviderSummary, WineError> {
    if records.is_empty() && models.is_empty() {
        return Err(config_error(
            "records",
            "nothing to publish: no records and no models",
        ));
    }
    config.check_for(records.len(), models.len())?;
    let by_records = config.model_every.is_some() && !records.is_empty();
    let cycle_models = models.len() > 1;
    for r in &mut records {
        r.data_type.clone_from(&config.data_type);
    }
    for m in &mut models {
        if m.data_type.is_empty() {
            m.data_type.clone_from(&config.data_type);
        }
    }
    let encoded: Vec<Encoded> = models
        .iter()
        .map(|m| Encoded {
            key: m.data_type.as_bytes().to_vec(),
            payload: m.encode_to_vec(),
            name: m.name.clone(),
        })
        .collect();
    drop(models);
    let total = config.total_records(records.len());
    let len = records.len() as u64;

    let producer = KafkaProducer::new(&producer_settings(&config))?;

    let start = Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    // Fail fast on an unreachable cluster (sends would wait for minutes); a
    // stop meanwhile ends the run at once.
    {
        let client = producer.client().clone();
        let timeout = config.connect_timeout;
        let connect = tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(None, Timeout::After(timeout))
        });
        tokio::select! {
            r = connect => {
                r.map_err(|e| KafkaStageError::Task(e.to_string()))?
                    .map_err(|source| WineError::Connect {
                        brokers: config.brokers.clone(),
                        reasons: String::new(),
                        source: Box::new(source),
                    })?;
            }
            () = &mut shutdown => {
                return Ok(ProviderSummary {
                    elapsed: start.elapsed(),
                    interrupted: true,
                    ..ProviderSummary::default()
                });
            }
        }
    }

    let far = start + Duration::from_secs(86_400 * 365);
    // Records' deliveries, in send order.
    let mut inflight: VecDeque<DeliveryFuture> = VecDeque::with_capacity(config.max_in_flight);
    let client = producer.client();
    let mut payload = Vec::with_capacity(256);
    let mut key = DecimalKey::default();
    let mut queue_full = false;
    let mut pending_model: Option<ModelSend<'_>> = None;
    let mut pending_name = String::new();
    let (mut sent, mut acked, mut models_acked) = (0u64, 0u64, 0u64);
    let mut current_model: Option<String> = None;
    let mut next_model = 0usize;
    // Models still to send in a run without records (None: unbounded).
    let mut models_left: Option<u64> = match (records.is_empty(), config.loop_data) {
        (true, false) => Some(encoded.len() as u64),
        _ => None,
    };
    let mut next_model_seq = 0u64;
    let mut next_model_at = start;
    let mut data_start: Option<Instant> = None;
    let mut first_sent: Option<Instant> = None;
    let (mut stopping, mut interrupted) = (false, false);
    let mut drain_deadline = far;
    let mut unacknowledged = 0u64;
    let mut unacknowledged_models = 0u64;
    // The first report comes once connected, with nothing published yet.
    let mut last_progress = start.checked_sub(PROGRESS_EVERY).unwrap_or(start);
    let rate = config.rate as f64;
    let topic = config.topics.data.as_str();

    let send_model = |m: &Encoded| {
        let mut r =
            ProducerRecord::new(config.topics.models.clone(), m.payload.clone()).key(m.key.clone());
        r.timestamp = Some(now_ms());
        producer.send(r)
    };
    if let Some(m) = encoded.first() {
        pending_model = Some(Box::pin(send_model(m)));
        pending_name.clone_from(&m.name);
        next_model = 1 % encoded.len();
        models_left = models_left.map(|n| n - 1);
        next_model_seq = config.model_every.unwrap_or(u64::MAX);
        next_model_at = Instant::now() + config.model_interval;
    } else {
        data_start = Some(start);
    }

    let mut last_ack: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let more_records = !stopping && total.is_none_or(|t| sent < t) && len > 0;
        // Whether models are still to come (records still to send, or a run of models only).
        let models_later = |sent: u64| {
            cycle_models
                && !stopping
                && models_left != Some(0)
                && ((len > 0 && total.is_none_or(|t| sent < t)) || len == 0)
        };

        // Records, up to the next limit.
        let mut rate_wait = None;
        if more_records && pending_model.is_none() {
            let mut allowed =
                (config.max_in_flight.saturating_sub(inflight.len())).min(FILL_CHUNK) as u64;
            if let Some(t) = total {
                allowed = allowed.min(t - sent);
            }
            if by_records && models_later(sent) {
                allowed = allowed.min(next_model_seq.saturating_sub(sent));
            }
            if rate > 0.0 {
                let since = now.duration_since(data_start.unwrap_or(now));
                let due = ((since.as_secs_f64() * rate) as u64).saturating_add(1);
                if due <= sent + allowed {
                    allowed = due.saturating_sub(sent);
                    rate_wait = data_start.map(|d| d + Duration::from_secs_f64(due as f64 / rate));
                }
            }
            if allowed > 0 && first_sent.is_none() {
                first_sent = Some(now);
            }
            queue_full = false;
            for _ in 0..allowed {
                // `len > 0` here, so the index is in range.
                let idx = usize::try_from(sent % len).unwrap_or(0);
                let (ts, micros) = now_ms_micros();
                let rec = &mut records[idx];
                rec.ts = ts;
                rec.ts_micros = micros;
                payload.clear();
                rec.encode(&mut payload)
                    .map_err(|e| KafkaStageError::Task(format!("cannot encode a record: {e}")))?;
                // Straight to the client (librdkafka copies key and payload):
                // no allocation per record beyond the delivery report's.
                let record = FutureRecord::to(topic)
                    .key(key.of(sent))
                    .payload(payload.as_slice())
                    .timestamp(ts);
                match client.send_result(record) {
                    Ok(delivery) => {
                        inflight.push_back(delivery);
                        sent += 1;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        queue_full = true;
                        break;
                    }
                    Err((source, _)) => {
                        return Err(KafkaStageError::Delivery {
                            topic: topic.to_string(),
                            source,
                        }
                        .into())
                    }
                }
            }
        }

        // The next model, when due.
        let models_due_later = models_later(sent);
        if pending_model.is_none() && models_due_later {
            let due = if by_records {
                sent >= next_model_seq
            } else {
                now >= next_model_at
            };
            if due {
                let m = &encoded[next_model];
                pending_model = Some(Box::pin(send_model(m)));
                pending_name.clone_from(&m.name);
                next_model = (next_model + 1) % encoded.len();
                models_left = models_left.map(|n| n.saturating_sub(1));
                next_model_seq = sent.saturating_add(config.model_every.unwrap_or(u64::MAX));
                next_model_at = now + config.model_interval;
            }
        }

        if now.duration_since(last_progress) >= PROGRESS_EVERY {
            last_progress = now;
            on_progress(&ProviderProgress {
                records: acked,
                sent,
                models: models_acked,
                total,
                current_model: current_model.clone(),
                elapsed: now.duration_since(start),
            });
        }

        let more_records = !stopping && total.is_none_or(|t| sent < t) && len > 0;
        let models_pending = models_due_later && len == 0;
        if pending_model.is_none()
            && inflight.is_empty()
            && (stopping || (!more_records && !models_pending))
        {
            break;
        }

        // Wait for an acknowledgement, the next slice, the next model or the signal.
        let mut wake = rate_wait.filter(|_| pending_model.is_none());
        if queue_full && inflight.is_empty() {
            // librdkafka's queue is full of other messages: try again shortly.
            wake = Some(now + Duration::from_millis(1));
        }
        if models_due_later && !by_records && pending_model.is_none() {
            wake = Some(wake.map_or(next_model_at, |w| w.min(next_model_at)));
        }
        let wake_at = wake.unwrap_or(far);
        tokio::select! {
            r = async {
                match pending_model.as_mut() {
                    Some(f) => f.await,
                    None => futures::future::pending().await,
                }
            }, if pending_model.is_some() => {
                r?;
                pending_model = None;
                models_acked += 1;
                current_model = Some(std::mem::take(&mut pending_name));
                if data_start.is_none() {
                    data_start = Some(Instant::now());
                }
                on_progress(&ProviderProgress {
                    records: acked,
                    sent,
                    models: models_acked,
                    total,
                    current_model: current_model.clone(),
                    elapsed: start.elapsed(),
                });
            }
            r = std::future::poll_fn(|cx| poll_acks(&mut inflight, topic, cx)),
                if !inflight.is_empty() =>
            {
                acked += r?;
                last_ack = Some(Instant::now());
            }
            () = tokio::time::sleep_until(wake_at.into()), if wake.is_some() => {}
            () = &mut shutdown, if !stopping => {
                stopping = true;
                interrupted = true;
                drain_deadline = Instant::now() + config.drain_timeout;
            }
            () = tokio::time::sleep_until(drain_deadline.into()), if stopping => {
                unacknowledged = inflight.len() as u64;
                unacknowledged_models = u64::from(pending_model.is_some());
                break;
            }
        }
    }
    drop(inflight);
    drop(pending_model);
    if unacknowledged + unacknowledged_models > 0 {
        // Give librdkafka a moment to deliver what it still holds.
        let _ = producer.flush(Duration::from_secs(1)).await;
    }

    let end = Instant::now();
    // Not counting a stop's wait for acknowledgements that never came.
    let rate = match (first_sent, last_ack) {
        (Some(t), Some(l)) if acked > 0 => {
            acked as f64 / l.saturating_duration_since(t).as_secs_f64().max(1e-9)
        }
        _ => 0.0,
    };
    let summary = ProviderSummary {
        records: acked,
        models: models_acked,
        elapsed: end.duration_since(start),
        rate,
        interrupted,
        unacknowledged,
        unacknowledged_models,
    };
    on_progress(&ProviderProgress {
        records: acked,
        sent,
        models: models_acked,
        total,
        current_model,
        elapsed: summary.elapsed,
    });
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{effective_property, EmbeddedBroker, EmbeddedBrokerConfig};
    use crate::wine::files::{generated_models, generated_wine_records};
    use crate::wine::{parse_record_key, record_key};
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message as _;
    use rdkafka::{Offset, TopicPartitionList};

    const GUARD: Duration = Duration::from_secs(120);

    /// [`provide`] under a hang guard.
    async fn guarded_provide(
        config: ProviderConfig,
        records: Vec<WineRecord>,
        models: Vec<ModelDescriptor>,
        on_progress: impl FnMut(&ProviderProgress),
        shutdown: impl Future<Output = ()>,
    ) -> Result<ProviderSummary, WineError> {
        tokio::time::timeout(
            GUARD,
            provide(config, records, models, on_progress, shutdown),
        )
        .await
        .expect("hang guard")
    }

    /// [`guarded_provide`] of 10 generated records and the generated models,
    /// stopped at the first progress report for which `stop_when` holds.
    async fn provide_stopped_when(
        config: ProviderConfig,
        stop_when: impl Fn(&ProviderProgress) -> bool,
    ) -> ProviderSummary {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut tx = Some(tx);
        guarded_provide(
            config,
            generated_wine_records(10, 1),
            generated_models(),
            move |p| {
                if stop_when(p) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            },
            async {
                let _ = rx.await;
            },
        )
        .await
        .expect("provides")
    }

    /// Every message of `topic` (key, payload, timestamp) up to `n` messages.
    fn consume(bootstrap: &str, topic: &str, n: usize) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "provider-test")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("tpl");
        }
        c.assign(&tpl).expect("assign");
        let deadline = Instant::now() + GUARD;
        let mut out = Vec::new();
        while out.len() < n {
            assert!(
                Instant::now() < deadline,
                "hang guard: {} of {n} messages",
                out.len()
            );
            if let Some(m) = c.poll(Duration::from_millis(200)) {
                let m = m.expect("message");
                out.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                    m.timestamp().to_millis().unwrap_or(0),
                ));
            }
        }
        out
    }

    fn broker() -> EmbeddedBroker {
        EmbeddedBroker::start(
            EmbeddedBrokerConfig::new(1)
                .topic("mdata", 3)
                .topic("models", 1),
        )
        .expect("broker")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_records_and_models_interleaved() {
        let b = broker();
        let mut config = ProviderConfig::new(b.bootstrap_servers());
        config.rate = 0;
        config.count = Some(100);
        config.loop_data = true;
        config.model_every = Some(30);
        let input = generated_wine_records(40, 3);
        let models = generated_models();
        let mut progress_calls = 0;
        let s = guarded_provide(
            config,
            input.clone(),
            models.clone(),
            |_| progress_calls += 1,
            futures::future::pending(),
        )
        .await
        .expect("provides");
        assert_eq!(s.records, 100);
        // Models before records 0, 30, 60 and 90.
        assert_eq!(s.models, 4);
        assert!(!s.interrupted);
        assert!(progress_calls >= 1);

        let bs = b.bootstrap_servers().to_string();
        let (recs, mods) = tokio::task::spawn_blocking(move || {
            (consume(&bs, "mdata", 100), consume(&bs, "models", 4))
        })
        .await
        .expect("consume");
        let mut by_seq: Vec<(u64, WineRecord, i64)> = recs
            .iter()
            .map(|(k, v, t)| {
                (
                    parse_record_key(k).expect("key"),
                    WineRecord::decode(v.as_slice()).expect("record"),
                    *t,
                )
            })
            .collect();
        by_seq.sort_by_key(|(k, _, _)| *k);
        for (i, (seq, rec, t)) in by_seq.iter().enumerate() {
            assert_eq!(*seq, i as u64);
            assert_eq!(rec.ts, *t);
            assert!((0..1000).contains(&rec.ts_micros), "{}", rec.ts_micros);
            let mut expected = input[i % 40].clone();
            expected.ts = rec.ts;
            expected.ts_micros = rec.ts_micros;
            assert_eq!(*rec, expected);
        }
        let names: Vec<String> = mods
            .iter()
            .map(|(k, v, _)| {
                assert_eq!(k.as_slice(), b"wine");
                ModelDescriptor::decode(v.as_slice()).expect("model").name
            })
            .collect();
        let cycle: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
        assert_eq!(
            names,
            [&cycle[0], &cycle[1], &cycle[2], &cycle[0]].map(String::as_str)
        );
        // Each model is acknowledged before the records that follow it.
        for (k, (_, _, model_ts)) in mods.iter().enumerate() {
            let first_after = &by_seq[k * 30];
            assert!(
                *model_ts <= first_after.2,
                "model {k} after record {}",
                k * 30
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paces_and_stops_on_shutdown() {
        let b = broker();
        // 400 records at 4000/s: the last one is due 99.75 ms after the start.
        let mut config = ProviderConfig::new(b.bootstrap_servers());
        config.rate = 4000;
        config.count = Some(400);
        config.loop_data = true;
        let t = Instant::now();
        let s = guarded_provide(
            config.clone(),
            generated_wine_records(10, 1),
            Vec::new(),
            |_| {},
            futures::future::pending(),
        )
        .await
        .expect("provides");
        assert_eq!(s.records, 400);
        assert!(
            t.elapsed() >= Duration::from_micros(99_750),
            "{:?}",
            t.elapsed()
        );

        // Forever, until the signal (sent once some records are acknowledged).
        config.count = None;
        let s = provide_stopped_when(config, |p| p.records > 0).await;
        assert!(s.interrupted);
        assert!(s.records > 0);
        assert_eq!(s.unacknowledged, 0);
        assert!(s.models >= 1);
    }

    /// A model the broker does not acknowledge before the drain timeout is
    /// reported, as records are.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_model_unacknowledged_at_the_stop_is_reported() {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        let b = broker();
        // Every produce request fails with a retriable error: nothing is acknowledged.
        b.request_errors(
            RDKafkaApiKey::Produce,
            vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 100_000],
        )
        .expect("errors set");
        let mut config = ProviderConfig::new(b.bootstrap_servers());
        config.drain_timeout = Duration::from_millis(500);
        // Stopped at the first progress report (once connected, the first model sent).
        let s = provide_stopped_when(config, |_| true).await;
        assert!(s.interrupted);
        assert_eq!((s.models, s.unacknowledged_models), (0, 1), "{s}");
        assert!(s.to_string().contains("1 model unacknowledged"), "{s}");
    }

    /// An unreachable cluster is a connection error, and a stop while waiting
    /// for it ends the run at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_cluster_is_a_connect_error_and_a_stop_ends_the_wait() {
        let mut config = ProviderConfig::new("127.0.0.1:1");
        config.connect_timeout = Duration::from_secs(1);
        let run = |config: ProviderConfig, stop: bool| {
            guarded_provide(
                config,
                generated_wine_records(10, 1),
                Vec::new(),
                |_| {},
                async move {
                    if !stop {
                        futures::future::pending::<()>().await;
                    }
                },
            )
        };
        let err = run(config.clone(), false).await.unwrap_err();
        assert!(matches!(err, WineError::Connect { .. }), "{err}");
        let s = run(config, true).await.expect("a stop is not an error");
        assert!(s.interrupted);
        assert_eq!((s.records, s.models), (0, 0));
    }

    /// Throughput on the in-process embedded broker, at full speed and paced
    /// at 100k records/s (a measurement, not a test; run in release):
    /// `cargo test --release -p flowstage-stages --lib -- --ignored --nocapture provider_throughput`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: run it in release"]
    async fn provider_throughput() {
        let b = EmbeddedBroker::start(
            EmbeddedBrokerConfig::new(1)
                .topic("mdata", 6)
                .topic("models", 1),
        )
        .expect("broker");
        let n: u64 = std::env::var("FLOWSTAGE_BENCH_RECORDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2_000_000);
        for rate in [0u64, 100_000] {
            let mut config = ProviderConfig::new(b.bootstrap_servers());
            config.rate = rate;
            config.count = Some(n);
            config.loop_data = true;
            let s = provide(
                config,
                generated_wine_records(1599, 1),
                generated_models(),
                |_| {},
                futures::future::pending(),
            )
            .await
            .expect("provides");
            println!("rate {rate} (0: full speed): {s}");
            assert_eq!(s.records, n);
        }
    }

    #[tokio::test]
    async fn invalid_settings_are_config_errors() {
        let recs = generated_wine_records(1, 1);
        let cases: [(ProviderConfig, Vec<WineRecord>, Vec<ModelDescriptor>); 3] = [
            (ProviderConfig::default(), Vec::new(), Vec::new()),
            (
                ProviderConfig {
                    model_every: Some(0),
                    ..ProviderConfig::default()
                },
                recs.clone(),
                Vec::new(),
            ),
            (
                ProviderConfig {
                    model_interval: Duration::ZERO,
                    ..ProviderConfig::default()
                },
                recs,
                generated_models(),
            ),
        ];
        for (c, r, m) in cases {
            let e = provide(c, r, m, |_| {}, futures::future::pending())
                .await
                .expect_err("invalid");
            assert!(matches!(e, WineError::Config { .. }), "{e}");
        }
    }

    #[test]
    fn decimal_keys_are_record_keys() {
        let mut k = DecimalKey::default();
        for n in [0, 7, 10, 999, 1_000_000, u64::MAX] {
            assert_eq!(k.of(n), record_key(n).as_slice());
        }
    }

    #[test]
    fn total_records() {
        let mut c = ProviderConfig::default();
        assert_eq!(c.total_records(10), Some(10));
        c.count = Some(5);
        assert_eq!(c.total_records(10), Some(5));
        c.count = Some(50);
        assert_eq!(c.total_records(10), Some(10));
        c.loop_data = true;
        assert_eq!(c.total_records(10), Some(50));
        c.count = None;
        assert_eq!(c.total_records(10), None);
        assert_eq!(c.total_records(0), Some(0));
    }

    #[test]
    fn producer_properties_override_client_properties_which_override_the_defaults() {
        let config = ProviderConfig {
            kafka_properties: vec![
                ("security.protocol".into(), "SASL_SSL".into()),
                ("linger.ms".into(), "3".into()),
                ("acks".into(), "1".into()),
            ],
            properties: vec![("acks".into(), "all".into())],
            ..ProviderConfig::new("k:9092")
        };
        let settings = producer_settings(&config);
        let effective = |key: &str| effective_property(&settings.properties, key);
        assert_eq!(settings.bootstrap_servers, "k:9092");
        assert_eq!(effective("security.protocol"), Some("SASL_SSL"));
        assert_eq!(effective("linger.ms"), Some("3"), "client over the default");
        assert_eq!(effective("acks"), Some("all"), "producer over client");
    }

    #[test]
    fn records_are_stamped_to_the_microsecond() {
        let micros = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
        let before = micros(SystemTime::now());
        let (ms, past) = now_ms_micros();
        let after = micros(SystemTime::now());
        assert!((0..1000).contains(&past), "{past}");
        let stamp =
            u128::try_from(ms).expect("after the epoch") * 1000 + past.unsigned_abs() as u128;
        assert!(
            before <= stamp && stamp <= after,
            "{before} <= {stamp} <= {after}"
        );
    }

    #[test]
    fn low_latency_batches_for_less_unless_told_otherwise() {
        let linger = |config: &ProviderConfig| {
            effective_property(&producer_settings(config).properties, "linger.ms")
                .map(str::to_string)
        };
        let plain = ProviderConfig::new("k:9092");
        assert_eq!(linger(&plain).as_deref(), Some("5"));
        assert_eq!(linger(&plain.clone().low_latency()).as_deref(), Some("0.2"));
        let told = ProviderConfig {
            properties: vec![("linger.ms".into(), "2".into())],
            ..plain
        }
        .low_latency();
        assert_eq!(linger(&told).as_deref(), Some("2"));
    }
}
