//! `flowstage serve`: the model server on Kafka.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use flowstage_stages::kafka::shutdown_signal;
use flowstage_stages::store::StoreConfig;
use flowstage_stages::wine::server::{Server, ServerConfig};

use crate::config::{
    kafka_properties, kafka_properties_env, name_setting, parse_property, FileConfig,
};

/// Arguments of `flowstage serve`. Each flag may also come from the
/// environment variable named beside it, or from the `--config` file; flags
/// win over the environment, the environment over the file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML configuration file (keys: the flag names with underscores).
    #[arg(long, env = "FLOWSTAGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers [default: 127.0.0.1:9092].
    #[arg(long, env = "FLOWSTAGE_BROKERS")]
    pub brokers: Option<String>,
    /// Consumer group of the data topic; servers in one group share its partitions
    /// [default: flowstage-serving].
    #[arg(long, env = "FLOWSTAGE_GROUP")]
    pub group: Option<String>,
    /// Address of the HTTP state, or "off" [default: 127.0.0.1:5500].
    #[arg(long, env = "FLOWSTAGE_HTTP", value_name = "ADDR")]
    pub http: Option<String>,
    /// Directory in which model `location`s are resolved (none: by-location models are rejected).
    #[arg(long, env = "FLOWSTAGE_MODELS_DIR", value_name = "DIR")]
    pub models_dir: Option<PathBuf>,
    /// Topic of wine records [default: mdata].
    #[arg(long, env = "FLOWSTAGE_DATA_TOPIC")]
    pub data_topic: Option<String>,
    /// Topic of model descriptors, read from the beginning [default: models].
    #[arg(long, env = "FLOWSTAGE_MODELS_TOPIC")]
    pub models_topic: Option<String>,
    /// Topic of serving results [default: results].
    #[arg(long, env = "FLOWSTAGE_RESULTS_TOPIC")]
    pub results_topic: Option<String>,
    /// Dead-letter topic for undecodable records [default: mdata-dlq].
    #[arg(long, env = "FLOWSTAGE_DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// Topic of instance records (GET /state/instances) [default: serving-instances].
    #[arg(long, env = "FLOWSTAGE_INSTANCES_TOPIC")]
    pub instances_topic: Option<String>,
    /// This instance's id, unique in the group [default: host-pid].
    #[arg(long, env = "FLOWSTAGE_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Records scored together (micro-batching) [default: 1].
    #[arg(long, env = "FLOWSTAGE_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// Records the serving stage takes in at once, at most: what the data
    /// consumer has ready, up to this many, is scored in one go [default: 64].
    #[arg(long, env = "FLOWSTAGE_DATA_BUFFER")]
    pub data_buffer: Option<usize>,
    /// Results unacknowledged by the broker at most [default: 10000].
    #[arg(long, env = "FLOWSTAGE_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Commit after this many processed records (with --processing
    /// exactly-once: records per transaction) [default: 10000].
    #[arg(long, env = "FLOWSTAGE_COMMIT_BATCH")]
    pub commit_batch: Option<usize>,
    /// Commit at least this often while records are processed, milliseconds [default: 1000].
    #[arg(long, env = "FLOWSTAGE_COMMIT_INTERVAL_MS")]
    pub commit_interval_ms: Option<u64>,
    /// How long a stop (Ctrl-C, SIGTERM) may take, milliseconds: the records in flight are
    /// finished and committed, then the last writes are made; what is not done by then is
    /// left (uncommitted records are consumed again) and the exit status is 1. A second
    /// Ctrl-C stops at once [default: 30000].
    #[arg(long, env = "FLOWSTAGE_SHUTDOWN_TIMEOUT_MS", value_name = "MS")]
    pub shutdown_timeout_ms: Option<u64>,
    /// Delivery: at-least-once, or exactly-once (results, dead letters and offsets
    /// committed in Kafka transactions every --commit-batch records / --commit-interval-ms;
    /// read the results with isolation.level=read_committed; keep --instance-id stable;
    /// needs a real Kafka cluster, not `flowstage broker`) [default: at-least-once].
    #[arg(long, env = "FLOWSTAGE_PROCESSING", value_name = "MODE")]
    pub processing: Option<String>,
    /// Where the current models, their statistics and history are kept across
    /// restarts: memory (lost on restart), local (a redb file, --store-path)
    /// or kafka (a compacted changelog topic, --store-topic) [default: memory].
    #[arg(long, env = "FLOWSTAGE_STORE", value_name = "KIND")]
    pub store: Option<String>,
    /// The database file of `--store local`.
    #[arg(long, env = "FLOWSTAGE_STORE_PATH", value_name = "FILE")]
    pub store_path: Option<PathBuf>,
    /// The changelog topic of `--store kafka` [default: <group>-model-store-changelog].
    #[arg(long, env = "FLOWSTAGE_STORE_TOPIC", value_name = "TOPIC")]
    pub store_topic: Option<String>,
    /// How often the store gets the statistics while records flow, milliseconds;
    /// after a crash at most this much of them is lost (at least the 100 ms
    /// between two snapshots of the statistics) [default: 1000].
    #[arg(long, env = "FLOWSTAGE_STORE_INTERVAL_MS", value_name = "MS")]
    pub store_interval_ms: Option<u64>,
    /// Low-latency settings, for a rate one partition takes: missing data and results topics
    /// created with one partition, fetches answered at the first record (fetch.min.bytes=1),
    /// results batched for 0.2 ms (linger.ms=0.2), a commit every 10000 records. Keep the
    /// data topic at one partition (with many, the broker spends a core on fetches); pair with
    /// `flowstage provide --low-latency`. --consumer-property, --producer-property and
    /// --commit-batch override its parts. `--low-latency=false` (or FLOWSTAGE_LOW_LATENCY=false)
    /// turns off a configuration file's `low_latency = true`. On a small machine whose cores
    /// the server shares with the broker, also set TOKIO_WORKER_THREADS=1 (one async worker
    /// thread; one per core without it).
    #[arg(
        long,
        env = "FLOWSTAGE_LOW_LATENCY",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub low_latency: Option<bool>,
    /// A librdkafka property of every Kafka client (repeatable): the data consumer, the
    /// producer, the model and instance readers, the admin client, the Kafka model store.
    /// For a secured cluster: security.protocol=SASL_SSL (or SSL, SASL_PLAINTEXT),
    /// sasl.mechanism=PLAIN (or SCRAM-SHA-256/512), sasl.username=…, sasl.password=…,
    /// ssl.ca.location=ca.pem (else the system's CAs). Also from
    /// FLOWSTAGE_KAFKA_PROPERTIES (key=value lines) and the [kafka] table of the --config
    /// file; flags override the environment, the environment the file. --consumer-property
    /// and --producer-property override it.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_property)]
    pub kafka_property: Vec<(String, String)>,
    /// Extra librdkafka property of the data consumer (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_property)]
    pub consumer_property: Vec<(String, String)>,
    /// Extra librdkafka property of the producer (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_property)]
    pub producer_property: Vec<(String, String)>,
}

/// Parses `--http`: an address, a host name and port (its first address), or "off"/"none".
pub fn parse_http(s: &str) -> Result<Option<SocketAddr>> {
    use std::net::ToSocketAddrs;
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if let Ok(a) = s.parse() {
        return Ok(Some(a));
    }
    // A host name (localhost:5500): its first address.
    let not_an_address = || format!("--http {s:?} is not an address (host:port) or \"off\"");
    s.to_socket_addrs()
        .with_context(not_an_address)?
        .next()
        .map(Some)
        .with_context(not_an_address)
}

/// The model store of `--store KIND` with `--store-path` / `--store-topic`.
pub fn store_config(
    kind: Option<&str>,
    path: Option<PathBuf>,
    topic: Option<String>,
) -> Result<StoreConfig> {
    match kind.unwrap_or("memory") {
        "memory" => Ok(StoreConfig::Memory),
        "local" => match path {
            Some(path) => Ok(StoreConfig::Local { path }),
            None => anyhow::bail!(
                "--store local needs --store-path FILE (or FLOWSTAGE_STORE_PATH, or store_path in the configuration file)"
            ),
        },
        "kafka" => Ok(StoreConfig::Kafka { topic }),
        other => anyhow::bail!("--store {other:?}: expected memory, local or kafka"),
    }
}

impl ServeArgs {
    /// The server settings: flags and environment over the file over the defaults.
    pub fn resolve(self) -> Result<ServerConfig> {
        let env = kafka_properties_env()?;
        self.resolve_with_env(env.as_deref())
    }

    /// [`resolve`](Self::resolve) with `kafka_env` as the value of
    /// `FLOWSTAGE_KAFKA_PROPERTIES`.
    fn resolve_with_env(self, kafka_env: Option<&str>) -> Result<ServerConfig> {
        let file = FileConfig::load(self.config.as_deref())?;
        let brokers = self
            .brokers
            .or(file.brokers)
            .unwrap_or_else(|| "127.0.0.1:9092".into());
        let mut c = ServerConfig::new(brokers);
        if let Some(g) = self.group.or(file.group) {
            c.group_id = g;
        }
        if let Some(h) = self.http.or(file.http) {
            c.http = parse_http(&h)?;
        }
        c.models_dir = self.models_dir.or(file.models_dir);
        let t = &mut c.topics;
        for (slot, flag, from_file) in [
            (&mut t.data, self.data_topic, file.data_topic),
            (&mut t.models, self.models_topic, file.models_topic),
            (&mut t.results, self.results_topic, file.results_topic),
            (&mut t.dlq, self.dlq_topic, file.dlq_topic),
            (
                &mut c.instances_topic,
                self.instances_topic,
                file.instances_topic,
            ),
        ] {
            if let Some(v) = flag.or(from_file) {
                *slot = v;
            }
        }
        if let Some(id) = self.instance_id.or(file.instance_id) {
            c.instance_id = id;
        }
        // Bounds are checked with the rest at the end (`ServerConfig::check`).
        if let Some(b) = self.batch_size.or(file.batch_size) {
            c.serving.batch_size = b;
        }
        if let Some(b) = self.data_buffer.or(file.data_buffer) {
            c.serving.data_buffer = b;
        }
        if let Some(m) = self.max_in_flight.or(file.max_in_flight) {
            c.max_in_flight = m;
        }
        if let Some(p) = self.processing.or(file.processing) {
            c.processing = p.parse().with_context(|| format!("--processing {p:?}"))?;
        }
        // The default, `DEFAULT_COMMIT_BATCH`, also makes transactions big
        // enough with exactly-once processing: a transaction costs a commit
        // round (~80 ms measured) while no other is open (1,000 records a
        // transaction gave 0.12x of at-least-once throughput, 10,000 0.78x in
        // the README's measurement).
        if let Some(n) = self.commit_batch.or(file.commit_batch) {
            anyhow::ensure!(n >= 1, "--commit-batch must be at least 1");
            c.commit = c.commit.max_batch(n);
        }
        if let Some(ms) = self.shutdown_timeout_ms.or(file.shutdown_timeout_ms) {
            c.shutdown_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.commit_interval_ms.or(file.commit_interval_ms) {
            anyhow::ensure!(ms >= 1, "--commit-interval-ms must be at least 1");
            c.commit = c.commit.max_interval(Duration::from_millis(ms));
        }
        let kind = self.store.or(file.store);
        // A flag or variable given for another kind of store (the file may hold
        // both, for switching kinds with `--store`).
        for (given, flag, used_by) in [
            (self.store_path.is_some(), "--store-path", "local"),
            (self.store_topic.is_some(), "--store-topic", "kafka"),
        ] {
            let kind = kind.as_deref().unwrap_or("memory");
            if given && kind != used_by {
                tracing::warn!(
                    "{flag} is ignored: it is for --store {used_by}, and the store is {kind}"
                );
            }
        }
        c.store = store_config(
            kind.as_deref(),
            self.store_path.or(file.store_path),
            self.store_topic.or(file.store_topic),
        )?;
        if let Some(ms) = self.store_interval_ms.or(file.store_interval_ms) {
            c.store_interval = Duration::from_millis(ms);
        }
        c.kafka_properties = kafka_properties(file.kafka, kafka_env, self.kafka_property)?;
        c.consumer_properties = file.consumer.into_iter().collect();
        c.consumer_properties.extend(self.consumer_property);
        c.producer_properties = file.producer.into_iter().collect();
        c.producer_properties.extend(self.producer_property);
        if self.low_latency.or(file.low_latency).unwrap_or(false) {
            // In front of the properties given.
            c = c.low_latency();
        }
        c.check().map_err(|e| name_setting::<ServeArgs>(e, true))?;
        Ok(c)
    }
}

/// Starts tracing output on standard error; `RUST_LOG` overrides `default`
/// (an `EnvFilter` directive such as `warn,flowstage_stages=info`).
pub fn init_tracing(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Runs `flowstage serve`.
pub fn run(args: ServeArgs) -> Result<()> {
    init_tracing("warn,flowstage=info,flowstage_stages=info");
    let config = args.resolve()?;
    let rt = crate::multi_thread_runtime()?;
    let result = rt.block_on(async move {
        let server = Server::start(config.clone())
            .await
            .context("cannot start the server")?;
        match server.http_addr() {
            Some(a) => println!(
                "flowstage serve: instance {} of group {} on {}; HTTP state on http://{a}/state",
                config.instance_id, config.group_id, config.brokers
            ),
            None => println!(
                "flowstage serve: instance {} of group {} on {}; no HTTP state",
                config.instance_id, config.group_id, config.brokers
            ),
        }
        // The first signal stops gracefully (bounded by --shutdown-timeout-ms);
        // a second one stops at once.
        let stop = async {
            shutdown_signal().await;
            eprintln!(
                "flowstage serve: stopping: finishing the records in flight (a second Ctrl-C \
                 or SIGTERM stops at once)"
            );
            crate::exit_on_next_signal(
                "flowstage serve: stopped at once; the records in flight were not committed \
                 and will be consumed again",
            );
        };
        let summary = server.run(stop).await?;
        println!("flowstage serve: stopped: {summary}");
        Ok(())
    });
    // Tasks still running now hold Kafka clients whose close waits for a
    // broker that may be away: the stop is bounded, so do not wait for them
    // after a failed stop (the broker is probably away; what they would have
    // committed is consumed again), and briefly after a clean one (the
    // server waited for its consumer's close already).
    if result.is_err() {
        rt.shutdown_background();
    } else {
        rt.shutdown_timeout(Duration::from_secs(2));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use flowstage_stages::kafka::Processing;
    use flowstage_stages::wine::server::DEFAULT_COMMIT_BATCH;
    use flowstage_stages::wine::DEFAULT_PARTITIONS;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("serve.toml");
        std::fs::write(
            &file,
            "brokers = \"file:9092\"\ngroup = \"from-file\"\nhttp = \"off\"\n[producer]\n\"linger.ms\" = \"5\"\n",
        )?;
        let file_arg = file.to_string_lossy().into_owned();
        let cli = Cli::try_parse_from([
            "serve",
            "--config",
            file_arg.as_str(),
            "--brokers",
            "flag:9092",
            "--results-topic",
            "scores",
            "--producer-property",
            "acks=all",
        ])?;
        let c = cli.serve.resolve()?;
        assert_eq!(c.brokers, "flag:9092");
        assert_eq!(c.group_id, "from-file");
        assert_eq!(c.http, None);
        assert_eq!(c.topics.results, "scores");
        assert_eq!(c.topics.data, "mdata");
        assert_eq!(
            c.producer_properties,
            [
                ("linger.ms".into(), "5".into()),
                ("acks".into(), "all".into())
            ]
        );
        Ok(())
    }

    #[test]
    fn kafka_properties_come_from_flags_env_and_file_and_specific_ones_win() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("secure.toml");
        std::fs::write(
            &file,
            "[kafka]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"PLAIN\"\n\
             \"sasl.username\" = \"file-user\"\n\"sasl.password\" = \"file-secret\"\n\
             [consumer]\n\"sasl.username\" = \"consumer-user\"\n",
        )?;
        let file_arg = file.to_string_lossy().into_owned();
        let cli = Cli::try_parse_from([
            "serve",
            "--config",
            file_arg.as_str(),
            "--kafka-property",
            "sasl.password=flag-secret",
            "--producer-property",
            "sasl.password=producer-secret",
        ])?;
        let c = cli
            .serve
            .resolve_with_env(Some("sasl.username=env-user\nsasl.password=env-secret\n"))?;
        let effective = |props: &[(String, String)], key: &str| {
            props
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.to_string())
        };
        let kafka = &c.kafka_properties;
        assert_eq!(
            effective(kafka, "security.protocol").as_deref(),
            Some("SASL_PLAINTEXT")
        );
        assert_eq!(effective(kafka, "sasl.mechanism").as_deref(), Some("PLAIN"));
        assert_eq!(
            effective(kafka, "sasl.username").as_deref(),
            Some("env-user"),
            "env over file"
        );
        assert_eq!(
            effective(kafka, "sasl.password").as_deref(),
            Some("flag-secret"),
            "flag over env"
        );
        // Every client gets them; the data consumer's and the producer's own override them.
        let every = c.kafka().client_config();
        assert_eq!(every.get("sasl.password"), Some("flag-secret"));
        assert_eq!(every.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        let mut consumer = c.kafka().client_config();
        for (k, v) in &c.consumer_properties {
            consumer.set(k, v);
        }
        assert_eq!(consumer.get("sasl.username"), Some("consumer-user"));
        assert_eq!(consumer.get("sasl.password"), Some("flag-secret"));
        let mut producer = c.kafka().client_config();
        for (k, v) in &c.producer_properties {
            producer.set(k, v);
        }
        assert_eq!(producer.get("sasl.password"), Some("producer-secret"));
        assert_eq!(producer.get("sasl.username"), Some("env-user"));

        // Without environment or flags, the file's table.
        let c = Cli::try_parse_from(["serve", "--config", file_arg.as_str()])?
            .serve
            .resolve_with_env(None)?;
        assert_eq!(
            effective(&c.kafka_properties, "sasl.username").as_deref(),
            Some("file-user")
        );
        let bad = Cli::try_parse_from(["serve"])?
            .serve
            .resolve_with_env(Some("nonsense"));
        assert!(bad.is_err());
        Ok(())
    }

    #[test]
    fn store_flags_win_over_the_file_and_local_needs_a_path() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("serve.toml");
        std::fs::write(
            &file,
            "store = \"kafka\"\nstore_topic = \"from-file\"\nstore_path = \"/tmp/f.redb\"\n",
        )?;
        let file_arg = file.to_string_lossy().into_owned();
        let c = Cli::try_parse_from(["serve", "--config", file_arg.as_str()])?
            .serve
            .resolve()?;
        assert_eq!(
            c.store,
            StoreConfig::Kafka {
                topic: Some("from-file".into())
            }
        );
        let c = Cli::try_parse_from([
            "serve",
            "--config",
            file_arg.as_str(),
            "--store",
            "local",
            "--store-interval-ms",
            "250",
        ])?
        .serve
        .resolve()?;
        assert_eq!(c.store_interval, Duration::from_millis(250));
        assert_eq!(
            c.store,
            StoreConfig::Local {
                path: "/tmp/f.redb".into()
            }
        );
        let err = store_config(Some("local"), None, None)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("--store-path")));
        assert!(store_config(Some("redis"), None, None).is_err());
        assert_eq!(store_config(None, None, None)?, StoreConfig::Memory);
        Ok(())
    }

    use flowstage_stages::kafka::effective_property as effective;

    #[test]
    fn low_latency_sets_the_recipe_and_what_is_given_wins() -> Result<()> {
        let plain = Cli::try_parse_from(["serve"])?.serve.resolve()?;
        let low = Cli::try_parse_from(["serve", "--low-latency"])?
            .serve
            .resolve()?;
        assert_eq!(
            effective(&plain.consumer_properties, "fetch.min.bytes"),
            None
        );
        assert_eq!(plain.create_topics, Some(DEFAULT_PARTITIONS));
        assert_eq!(
            effective(&low.consumer_properties, "fetch.min.bytes"),
            Some("1")
        );
        assert_eq!(
            effective(&low.producer_properties, "linger.ms"),
            Some("0.2")
        );
        assert_eq!(low.create_topics, Some(1));
        assert_eq!(low.commit.max_batch, 10_000);
        let given = Cli::try_parse_from([
            "serve",
            "--low-latency",
            "--producer-property",
            "linger.ms=1",
            "--consumer-property",
            "fetch.wait.max.ms=50",
            "--commit-batch",
            "500",
        ])?
        .serve
        .resolve()?;
        assert_eq!(
            effective(&given.producer_properties, "linger.ms"),
            Some("1")
        );
        assert_eq!(
            effective(&given.consumer_properties, "fetch.wait.max.ms"),
            Some("50")
        );
        assert_eq!(
            effective(&given.consumer_properties, "fetch.min.bytes"),
            Some("1")
        );
        assert_eq!(given.commit.max_batch, 500);
        // From the configuration file too.
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("low.toml");
        std::fs::write(
            &file,
            "low_latency = true\n[producer]\n\"linger.ms\" = \"0.5\"\n",
        )?;
        let from_file = Cli::try_parse_from(["serve", "--config", &file.to_string_lossy()])?
            .serve
            .resolve()?;
        assert_eq!(from_file.create_topics, Some(1));
        assert_eq!(
            effective(&from_file.producer_properties, "linger.ms"),
            Some("0.5")
        );
        // The flag's `false` turns the file's `true` off.
        let off = Cli::try_parse_from([
            "serve",
            "--config",
            &file.to_string_lossy(),
            "--low-latency=false",
        ])?
        .serve
        .resolve()?;
        assert_eq!(off.create_topics, Some(DEFAULT_PARTITIONS));
        assert_eq!(effective(&off.consumer_properties, "fetch.min.bytes"), None);
        Ok(())
    }

    #[test]
    fn processing_comes_from_the_flag_or_the_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("eos.toml");
        std::fs::write(&file, "processing = \"exactly-once\"\n")?;
        let file_arg = file.to_string_lossy().into_owned();
        let from_file = Cli::try_parse_from(["serve", "--config", file_arg.as_str()])?;
        let eos = from_file.serve.resolve()?;
        assert_eq!(eos.processing, Processing::ExactlyOnce);
        // Big transactions by default, unless set.
        assert_eq!(eos.commit.max_batch, DEFAULT_COMMIT_BATCH);
        let set = Cli::try_parse_from([
            "serve",
            "--config",
            file_arg.as_str(),
            "--commit-batch",
            "500",
        ])?;
        assert_eq!(set.serve.resolve()?.commit.max_batch, 500);
        let flag = Cli::try_parse_from([
            "serve",
            "--config",
            file_arg.as_str(),
            "--processing",
            "at-least-once",
        ])?;
        assert_eq!(flag.serve.resolve()?.processing, Processing::AtLeastOnce);
        let bad = Cli::try_parse_from(["serve", "--processing", "twice"])?;
        assert!(bad.serve.resolve().is_err());
        Ok(())
    }

    #[test]
    fn data_buffer_comes_from_the_flag_or_the_file_and_must_be_positive() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("buf.toml");
        std::fs::write(&file, "data_buffer = 16\n")?;
        let file_arg = file.to_string_lossy().into_owned();
        let default = Cli::try_parse_from(["serve"])?.serve.resolve()?;
        assert_eq!(
            default.serving.data_buffer,
            flowstage_stages::serving::ServingConfig::default().data_buffer
        );
        let from_file = Cli::try_parse_from(["serve", "--config", file_arg.as_str()])?;
        assert_eq!(from_file.serve.resolve()?.serving.data_buffer, 16);
        let flag =
            Cli::try_parse_from(["serve", "--config", file_arg.as_str(), "--data-buffer", "1"])?;
        assert_eq!(flag.serve.resolve()?.serving.data_buffer, 1);
        let zero = Cli::try_parse_from(["serve", "--data-buffer", "0"])?;
        assert!(zero.serve.resolve().is_err());
        Ok(())
    }

    #[test]
    fn bad_http_and_unknown_keys_are_errors() -> Result<()> {
        assert!(parse_http("nonsense").is_err());
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "brokerz = \"x\"\n")?;
        let file_arg = file.to_string_lossy().into_owned();
        let cli = Cli::try_parse_from(["serve", "--config", file_arg.as_str()])?;
        let err = cli.serve.resolve().err().map(|e| format!("{e:#}"));
        assert!(err.is_some_and(|e| e.contains("brokerz")));
        Ok(())
    }

    #[test]
    fn settings_out_of_bounds_are_errors_before_anything_starts() {
        let err = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["serve"], args].concat()).expect("parses");
            cli.serve
                .resolve()
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
                .expect_err("refused")
        };
        // Each refused setting, and what its error names.
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["--max-in-flight", "2305843009213693952"],
                &["max_in_flight", "1000000"],
            ),
            (&["--data-buffer", "1000000000000"], &["data_buffer"]),
            (&["--batch-size", "0"], &["batch_size"]),
            (
                &["--group", ""],
                &["`group` (set by --group", "must not be empty"],
            ),
            (&["--data-topic", " "], &["data_topic"]),
            (&["--brokers", "127.0.0.1:100041"], &["from 1 to 65535"]),
            (&["--brokers", ","], &["no broker address"]),
            (&["--shutdown-timeout-ms", "0"], &["shutdown_timeout"]),
            (&["--commit-batch", "0"], &["--commit-batch"]),
            (
                &["--consumer-property", "no.such.key=1"],
                &["consumer_properties", "no.such.key"],
            ),
            (
                &["--producer-property", "acks=banana"],
                &["producer_properties"],
            ),
            (&["--models-dir", "/nonexistent/models"], &["models_dir"]),
            (
                &["--store", "local", "--store-path", "/"],
                &["is a directory"],
            ),
            (
                &["--store", "local", "--store-path", "/nonexistent/s.redb"],
                &["does not exist"],
            ),
        ];
        for (args, named) in cases {
            let e = err(args);
            assert!(named.iter().all(|n| e.contains(n)), "{args:?}: {e}");
        }
    }

    #[test]
    fn http_takes_host_names_and_off_in_any_case() -> Result<()> {
        assert_eq!(parse_http("OFF")?, None);
        let a = parse_http("localhost:5625")?.expect("an address");
        assert!(a.ip().is_loopback() && a.port() == 5625, "{a}");
        assert!(parse_http("localhost").is_err());
        Ok(())
    }
}
