//! An embedded Kafka-protocol broker: librdkafka's mock cluster, reachable
//! over real TCP on 127.0.0.1 by any Kafka client (including other processes).
//!
//! **Limits of the mock** (librdkafka 2.x): it keeps messages in memory, at
//! most **100,000 messages or 5 MiB per partition** (older ones are dropped),
//! so create topics with several partitions for long runs; no transactions
//! across restarts, no persistence, no security. It is for tests, demos and
//! benchmarks, not production.

use std::future::Future;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::Client;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr, RDKafkaType};

use super::client_log::ClientLog;
use super::error::KafkaStageError;

/// Whether `cluster_id` is that of librdkafka's mock cluster (the embedded
/// broker, `flowstage broker`): its ids start with `mockCluster`.
pub(crate) fn is_mock_cluster_id(cluster_id: &str) -> bool {
    cluster_id.starts_with("mockCluster")
}

/// Whether `client`'s cluster is librdkafka's mock cluster, by its id; `false`
/// when the id cannot be read within `timeout` (a client whose metadata
/// request was just answered has it at once). Blocking.
pub(crate) fn is_mock_cluster<C: rdkafka::ClientContext>(
    client: &Client<C>,
    timeout: Duration,
) -> bool {
    client
        .fetch_cluster_id(timeout)
        .is_some_and(|id| is_mock_cluster_id(&id))
}

/// Creates `topics` on librdkafka's mock cluster, which answers no
/// CreateTopics request (an admin client waits out its timeout): a
/// producer's metadata request for a topic it does not know makes the mock
/// create it, with its default partition count (4). Returns each topic's
/// partition count. Blocking. `config` connects to the cluster.
pub(crate) fn mock_auto_create(
    config: &rdkafka::ClientConfig,
    topics: &[&str],
) -> Result<Vec<usize>, rdkafka::error::KafkaError> {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{BaseProducer, Producer as _};
    let producer: BaseProducer<ClientLog> = config.create_with_context(ClientLog)?;
    topics
        .iter()
        .map(|&name| {
            let md = producer
                .client()
                .fetch_metadata(Some(name), Duration::from_secs(10))?;
            match md.topics().iter().find(|t| t.name() == name) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    Ok(t.partitions().len())
                }
                t => Err(KafkaError::MetadataFetch(
                    t.and_then(|t| t.error())
                        .map_or(RDKafkaErrorCode::UnknownTopicOrPartition, Into::into),
                )),
            }
        })
        .collect()
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The name.
    pub name: String,
    /// Partitions (several: see the per-partition limits above).
    pub partitions: i32,
    /// Replication factor (at most the number of brokers).
    pub replication: i32,
}

impl TopicSpec {
    /// A topic with `partitions` partitions and replication factor 1.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            replication: 1,
        }
    }
}

/// How to start an [`EmbeddedBroker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedBrokerConfig {
    /// Number of brokers (at least 1).
    pub brokers: i32,
    /// Topics created at start.
    pub topics: Vec<TopicSpec>,
    /// How long a new consumer group waits for more members before its first
    /// assignment (Kafka's `group.initial.rebalance.delay.ms`). Zero by
    /// default: the first consumer gets its partitions at once (librdkafka's
    /// mock, like Kafka, waits 3 s, which every demo start and every test
    /// that joins a group would pay).
    pub initial_rebalance_delay: Duration,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        EmbeddedBrokerConfig::new(1)
    }
}

impl EmbeddedBrokerConfig {
    /// `brokers` brokers, no topics yet.
    pub fn new(brokers: i32) -> Self {
        EmbeddedBrokerConfig {
            brokers,
            topics: Vec::new(),
            initial_rebalance_delay: Duration::ZERO,
        }
    }

    /// Sets [`initial_rebalance_delay`](Self::initial_rebalance_delay).
    pub fn initial_rebalance_delay(mut self, delay: Duration) -> Self {
        self.initial_rebalance_delay = delay;
        self
    }

    /// Adds a topic.
    pub fn topic(mut self, name: impl Into<String>, partitions: i32) -> Self {
        self.topics.push(TopicSpec::new(name, partitions));
        self
    }
}

enum Cmd {
    CreateTopic(TopicSpec, std_mpsc::Sender<Result<(), KafkaStageError>>),
    RequestErrors(
        RDKafkaApiKey,
        Vec<RDKafkaRespErr>,
        std_mpsc::Sender<Result<(), KafkaStageError>>,
    ),
    Shutdown,
}

/// A running mock cluster. Its client handle is not `Send`, so it lives on a
/// thread of its own; this handle is `Send + Sync` and stops it when dropped.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: String,
    tx: std_mpsc::Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
}

fn create(
    cluster: &MockCluster<'_, impl rdkafka::ClientContext>,
    t: &TopicSpec,
) -> Result<(), KafkaStageError> {
    if t.partitions < 1 || t.replication < 1 {
        return Err(KafkaStageError::Config {
            name: "topics",
            reason: format!(
                "topic {}: partitions and replication must be at least 1",
                t.name
            ),
        });
    }
    cluster
        .create_topic(&t.name, t.partitions, t.replication)
        .map_err(KafkaStageError::Client)
}

/// A client that owns a mock cluster of `brokers` brokers.
fn mock_client(brokers: i32) -> Result<Client<ClientLog>, KafkaStageError> {
    let mut config = rdkafka::ClientConfig::new();
    config.set("test.mock.num.brokers", brokers.to_string());
    let native = config
        .create_native_config()
        .map_err(KafkaStageError::Client)?;
    Client::new(&config, native, RDKafkaType::RD_KAFKA_PRODUCER, ClientLog)
        .map_err(KafkaStageError::Client)
}

impl EmbeddedBroker {
    /// Starts the mock cluster and creates the configured topics.
    pub fn start(config: EmbeddedBrokerConfig) -> Result<Self, KafkaStageError> {
        if config.brokers < 1 {
            return Err(KafkaStageError::Config {
                name: "brokers",
                reason: "at least one broker".into(),
            });
        }
        let (tx, rx) = std_mpsc::channel::<Cmd>();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<String, KafkaStageError>>();
        let thread = std::thread::Builder::new()
            .name("flowstage-mock-kafka".into())
            .spawn(move || {
                // The cluster belongs to a client of ours (rather than to
                // rdkafka's `MockCluster::new`), whose handle also reaches the
                // mock's settings that rdkafka does not wrap.
                let client = match mock_client(config.brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let Some(cluster) = client.mock_cluster() else {
                    let _ = ready_tx.send(Err(KafkaStageError::Embedded(
                        "librdkafka made no mock cluster".into(),
                    )));
                    return;
                };
                let delay_ms =
                    i32::try_from(config.initial_rebalance_delay.as_millis()).unwrap_or(i32::MAX);
                // SAFETY: the client, and so its mock cluster, lives until the
                // end of this thread.
                unsafe {
                    let mock = rd::rd_kafka_handle_mock_cluster(client.native_ptr());
                    rd::rd_kafka_mock_group_initial_rebalance_delay_ms(mock, delay_ms);
                }
                for t in &config.topics {
                    if let Err(e) = create(&cluster, t) {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
                if ready_tx.send(Ok(cluster.bootstrap_servers())).is_err() {
                    return;
                }
                // Serve commands until shutdown (or every handle is gone).
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Cmd::CreateTopic(t, reply) => {
                            let _ = reply.send(create(&cluster, &t));
                        }
                        Cmd::RequestErrors(api, errors, reply) => {
                            if errors.is_empty() {
                                cluster.clear_request_errors(api);
                            } else {
                                cluster.request_errors(api, &errors);
                            }
                            let _ = reply.send(Ok(()));
                        }
                        Cmd::Shutdown => break,
                    }
                }
                drop(cluster);
                drop(client);
            })
            .map_err(|e| {
                KafkaStageError::Embedded(format!("cannot start the broker thread: {e}"))
            })?;
        match ready_rx.recv() {
            Ok(Ok(bootstrap)) => Ok(EmbeddedBroker {
                bootstrap,
                tx,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(KafkaStageError::Embedded(
                    "the broker thread ended during start-up".into(),
                ))
            }
        }
    }

    /// The `bootstrap.servers` of the cluster (`127.0.0.1:port,…`).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic.
    pub fn create_topic(&self, topic: TopicSpec) -> Result<(), KafkaStageError> {
        self.call(|reply| Cmd::CreateTopic(topic, reply))
    }

    /// Makes the cluster answer the next `errors.len()` requests of `api`
    /// with these errors, in order (an empty list clears what is left):
    /// failure tests of clients, such as a coordinator that stays busy.
    pub fn request_errors(
        &self,
        api: RDKafkaApiKey,
        errors: Vec<RDKafkaRespErr>,
    ) -> Result<(), KafkaStageError> {
        self.call(|reply| Cmd::RequestErrors(api, errors, reply))
    }

    /// Sends a command to the broker thread and waits for its answer.
    fn call(
        &self,
        cmd: impl FnOnce(std_mpsc::Sender<Result<(), KafkaStageError>>) -> Cmd,
    ) -> Result<(), KafkaStageError> {
        let stopped = || KafkaStageError::Embedded("the broker has stopped".into());
        let (reply, rx) = std_mpsc::channel();
        self.tx.send(cmd(reply)).map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())?
    }

    /// Stops the cluster (also done on drop).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.tx.send(Cmd::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs an embedded broker until `shutdown` resolves: starts it, calls
/// `on_ready` with its bootstrap address (for `flowstage broker` to print),
/// then waits. For example
/// `run_embedded_broker(cfg, |b| println!("{b}"), shutdown_signal()).await`.
pub async fn run_embedded_broker(
    config: EmbeddedBrokerConfig,
    on_ready: impl FnOnce(&str),
    shutdown: impl Future<Output = ()>,
) -> Result<(), KafkaStageError> {
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(config))
        .await
        .map_err(|e| KafkaStageError::Task(e.to_string()))??;
    on_ready(broker.bootstrap_servers());
    shutdown.await;
    tokio::task::spawn_blocking(move || broker.shutdown())
        .await
        .map_err(|e| KafkaStageError::Task(e.to_string()))
}
