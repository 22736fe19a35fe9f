//! The Kafka-backed model store: a compacted changelog topic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::{ModelStore, StoreError};
use crate::kafka::{ClientLog, KafkaConnection};

/// The largest entry the Kafka store writes by default (64 MiB): the
/// changelog topic's `max.message.bytes` and the producer's
/// `message.max.bytes` are set to it (Kafka's default of 1 MB is too small for
/// a SavedModel by value). A broker's `socket.request.max.bytes` (100 MiB by
/// default) bounds what is possible.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long reading the changelog to its end may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// A [`ModelStore`] in a compacted Kafka topic keyed by dataType
/// (`model/{dataType}` and `stats/{dataType}`), Kafka Streams' changelog: any
/// instance on any machine restores it by reading the topic to its end; the
/// latest value of each key wins.
pub struct KafkaStore {
    kafka: KafkaConnection,
    topic: String,
    max_message_bytes: usize,
    producer: FutureProducer<ClientLog>,
}

impl std::fmt::Debug for KafkaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStore")
            .field("kafka", &self.kafka)
            .field("topic", &self.topic)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

impl KafkaStore {
    /// The default changelog topic of consumer group `group`:
    /// `<group>-model-store-changelog`.
    pub fn default_topic(group: &str) -> String {
        format!("{group}-model-store-changelog")
    }

    /// Connects to the cluster at `kafka` (its bootstrap servers, or a
    /// [`KafkaConnection`] with the client properties of a secured cluster,
    /// which every client of the store gets), creating `topic` (1 partition,
    /// the broker's default replication factor, `cleanup.policy=compact`,
    /// `max.message.bytes` = `max_message_bytes`)
    /// when it is missing and the cluster has the admin API. On librdkafka's
    /// mock cluster (the embedded broker), which has none, a missing topic
    /// is made by the mock's auto-creation (it neither compacts nor limits
    /// record sizes).
    pub async fn open(
        kafka: impl Into<KafkaConnection>,
        topic: &str,
        max_message_bytes: usize,
    ) -> Result<KafkaStore, StoreError> {
        let kafka: KafkaConnection = kafka.into();
        if topic.is_empty() {
            return Err(StoreError::Config("empty changelog topic name".into()));
        }
        if !(1_000..=1_000_000_000).contains(&max_message_bytes) {
            return Err(StoreError::Config(format!(
                "max_message_bytes {max_message_bytes} outside 1000..=1000000000"
            )));
        }
        create_topic(&kafka, topic, max_message_bytes).await?;
        let producer: FutureProducer<ClientLog> = kafka
            .client_config()
            .set("message.max.bytes", max_message_bytes.to_string())
            .set("acks", "all")
            .set("linger.ms", "0")
            .create_with_context(ClientLog)?;
        Ok(KafkaStore {
            kafka,
            topic: topic.to_string(),
            max_message_bytes,
            producer,
        })
    }

    /// The changelog topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

async fn create_topic(
    kafka: &KafkaConnection,
    topic: &str,
    max_bytes: usize,
) -> Result<(), StoreError> {
    let (mut config, t) = (kafka.client_config(), topic.to_string());
    let (exists, mock) = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer<ClientLog> = config
            .set("allow.auto.create.topics", "false")
            .create_with_context(ClientLog)?;
        let md = c.fetch_metadata(Some(&t), Duration::from_secs(10))?;
        let exists = md
            .topics()
            .iter()
            .any(|mt| mt.name() == t && mt.error().is_none() && !mt.partitions().is_empty());
        // The metadata just answered carries the cluster id: no wait.
        let mock = crate::kafka::is_mock_cluster(c.client(), Duration::from_secs(1));
        Ok::<_, StoreError>((exists, mock))
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))??;
    if exists {
        return Ok(());
    }
    if mock {
        // The mock has no topic configuration to set (it neither compacts
        // nor checks record sizes).
        let config = kafka.client_config();
        let t = topic.to_string();
        tokio::task::spawn_blocking(move || crate::kafka::mock_auto_create(&config, &[&t]))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        tracing::info!(
            topic,
            "model store topic created (by the embedded broker's auto-creation)"
        );
        return Ok(());
    }
    let admin: AdminClient<ClientLog> = kafka.client_config().create_with_context(ClientLog)?;
    let max = max_bytes.to_string();
    // The broker's default replication factor (-1; brokers from 2.4 on), as
    // for a topic the broker creates itself.
    let t = NewTopic::new(topic, 1, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact")
        .set("max.message.bytes", &max);
    // Short: a cluster without the admin API answers only with this
    // timeout; a real one creates a topic in well under a second.
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(5)))
        .request_timeout(Some(Duration::from_secs(5)));
    match admin.create_topics([&t], &opts).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(name) => tracing::info!(topic = name, "model store topic created"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    // Writes will tell if the topic is really unusable.
                    Err((name, e)) => tracing::warn!(
                        topic = name, error = %e,
                        "cannot create the model store topic; relying on the broker"
                    ),
                }
            }
        }
        Err(e) => tracing::info!(
            error = %e,
            "model store topic not created (no admin API on this cluster?); relying on the broker"
        ),
    }
    Ok(())
}

/// The partition entries are written to.
const WRITE_PARTITION: i32 = 0;

impl ModelStore for KafkaStore {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn put_raw(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut pending = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            // Record overhead (key, headers, batch) stays well below 1 KiB.
            if v.len() + k.len() + 1024 > self.max_message_bytes {
                return Err(StoreError::TooLarge {
                    key: k.clone(),
                    size: v.len(),
                    max: self.max_message_bytes,
                });
            }
            // Every entry on partition 0, whatever the topic's partitions (a
            // topic made by a broker's auto-creation has several): the order
            // of one partition is the order of the writes.
            let record = FutureRecord::to(&self.topic)
                .key(k.as_str())
                .payload(v)
                .partition(WRITE_PARTITION);
            let fut = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| StoreError::Kafka(e))?;
            pending.push(fut);
        }
        // Each delivery report arrives within message.timeout.ms.
        for fut in pending {
            match futures::executor::block_on(fut) {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(StoreError::Kafka(e)),
                Err(_) => return Err(StoreError::Task("delivery report lost".into())),
            }
        }
        Ok(())
    }

    fn load_raw(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let max = self.max_message_bytes;
        let consumer: BaseConsumer<ClientLog> = self
            .kafka
            .client_config()
            .set(
                "group.id",
                format!("flowstage-store-restore-{}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.max.bytes", max.to_string())
            .set("max.partition.fetch.bytes", max.to_string())
            .set("receive.message.max.bytes", (max + 1024 * 1024).to_string())
            .set("fetch.wait.max.ms", "50")
            // The end of a partition is an event: a changelog whose last
            // record is a transaction marker (never delivered) is read too.
            .set("enable.partition.eof", "true")
            .create_with_context(ClientLog)?;
        let timeout = Duration::from_secs(10);
        let md = consumer.fetch_metadata(Some(&self.topic), timeout)?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic && t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        // Partitions with records, and the offset after the last one.
        let mut behind: BTreeMap<i32, i64> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            let (low, high) = consumer.fetch_watermarks(&self.topic, p, timeout)?;
            if high > low {
                behind.insert(p, high);
                tpl.add_partition_offset(&self.topic, p, Offset::Beginning)?;
            }
        }
        // Per key, the partition of its latest record and the record (`None`:
        // a tombstone). Partition 0, where entries are written, wins over the
        // others (records another writer put there by key hash), whose order
        // against it is not known.
        let mut latest: BTreeMap<String, (i32, Option<Vec<u8>>)> = BTreeMap::new();
        if behind.is_empty() {
            return Ok(Vec::new());
        }
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + LOAD_TIMEOUT;
        while !behind.is_empty() {
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout {
                    topic: self.topic.clone(),
                    timeout: LOAD_TIMEOUT,
                });
            }
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = match m {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(p)) => {
                    behind.remove(&p);
                    continue;
                }
                Err(e) => {
                    crate::kafka::client_log::at_level!(
                        crate::kafka::client_log::error_level(&e),
                        error = %e,
                        topic = self.topic,
                        "model store consumer error (continuing)"
                    );
                    continue;
                }
            };
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            match key {
                Some(k) => {
                    let p = m.partition();
                    let newer = latest.get(&k).is_none_or(|&(q, _)| {
                        p == q || p == WRITE_PARTITION || q != WRITE_PARTITION
                    });
                    if newer {
                        latest.insert(k, (p, m.payload().map(<[u8]>::to_vec)));
                    }
                }
                None => tracing::warn!(
                    offset = m.offset(),
                    "model store: a record without key skipped"
                ),
            }
            if behind
                .get(&m.partition())
                .is_some_and(|&end| m.offset() + 1 >= end)
            {
                behind.remove(&m.partition());
            }
        }
        Ok(latest
            .into_iter()
            .filter_map(|(k, (_, v))| v.map(|v| (k, v)))
            .collect())
    }
}

impl Drop for KafkaStore {
    fn drop(&mut self) {
        // Writes are acknowledged one by one; this only drains what a failed
        // write may have left.
        let _ = self.producer.flush(Duration::from_secs(1));
    }
}
