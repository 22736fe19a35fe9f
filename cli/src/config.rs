//! Configuration of `flowstage serve`: flags, environment variables
//! (`FLOWSTAGE_…`) and a TOML file, in that order of precedence, then the
//! defaults.
//!
//! The TOML file uses the long flag names with underscores, plus tables of
//! extra librdkafka properties:
//!
//! ```toml
//! brokers = "kafka-1:9092,kafka-2:9092"
//! group = "wine-scorers"
//! http = "0.0.0.0:5500"
//! models_dir = "/srv/models"
//! batch_size = 16
//!
//! [kafka]                      # every Kafka client (a secured cluster)
//! "security.protocol" = "SASL_PLAINTEXT"
//! "sasl.mechanism" = "PLAIN"
//! "sasl.username" = "scorer"
//! "sasl.password" = "…"
//!
//! [consumer]                   # the data consumer (overrides [kafka])
//! "session.timeout.ms" = 10000   # numbers and booleans are passed on as text
//!
//! [producer]
//! "linger.ms" = "5"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flowstage_stages::wine::WineError;
use serde::Deserialize;

/// The keys a TOML configuration file may set (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--brokers`.
    pub brokers: Option<String>,
    /// `--group`.
    pub group: Option<String>,
    /// `--http` (an address, or "off").
    pub http: Option<String>,
    /// `--models-dir`.
    pub models_dir: Option<PathBuf>,
    /// `--data-topic`.
    pub data_topic: Option<String>,
    /// `--models-topic`.
    pub models_topic: Option<String>,
    /// `--results-topic`.
    pub results_topic: Option<String>,
    /// `--dlq-topic`.
    pub dlq_topic: Option<String>,
    /// `--instances-topic`.
    pub instances_topic: Option<String>,
    /// `--instance-id`.
    pub instance_id: Option<String>,
    /// `--batch-size`.
    pub batch_size: Option<usize>,
    /// `--data-buffer`.
    pub data_buffer: Option<usize>,
    /// `--max-in-flight`.
    pub max_in_flight: Option<usize>,
    /// `--commit-batch`.
    pub commit_batch: Option<usize>,
    /// `--commit-interval-ms`.
    pub commit_interval_ms: Option<u64>,
    /// `--shutdown-timeout-ms`.
    pub shutdown_timeout_ms: Option<u64>,
    /// `--processing` (at-least-once or exactly-once).
    pub processing: Option<String>,
    /// `--store` (memory, local or kafka).
    pub store: Option<String>,
    /// `--store-path`.
    pub store_path: Option<PathBuf>,
    /// `--store-topic`.
    pub store_topic: Option<String>,
    /// `--store-interval-ms`.
    pub store_interval_ms: Option<u64>,
    /// `--low-latency`.
    pub low_latency: Option<bool>,
    /// librdkafka properties of every Kafka client (`--kafka-property`).
    #[serde(default, deserialize_with = "properties")]
    pub kafka: BTreeMap<String, String>,
    /// Extra librdkafka properties of the data consumer.
    #[serde(default, deserialize_with = "properties")]
    pub consumer: BTreeMap<String, String>,
    /// Extra librdkafka properties of the producer.
    #[serde(default, deserialize_with = "properties")]
    pub producer: BTreeMap<String, String>,
}

/// A table of librdkafka properties: strings, or numbers and booleans as TOML writes them
/// (`"session.timeout.ms" = 6000`), all passed to librdkafka as text.
fn properties<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    use serde::de::Error;
    BTreeMap::<String, toml::Value>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(D::Error::custom(format!(
                        "property {k:?}: expected a string, number or boolean, found {}",
                        other.type_str()
                    )))
                }
            };
            Ok((k, text))
        })
        .collect()
}

impl FileConfig {
    /// Reads `path`, or returns the empty configuration for `None`.
    pub fn load(path: Option<&Path>) -> Result<FileConfig> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid configuration {}", path.display()))
    }
}

/// Parses `key=value` (a `--kafka-property` / `--consumer-property` /
/// `--producer-property` flag).
pub fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// The environment variable of `--kafka-property`: `key=value` entries, one
/// per line (a value may hold `,` and `;`, as librdkafka's lists and
/// passwords do).
pub const KAFKA_PROPERTIES_ENV: &str = "FLOWSTAGE_KAFKA_PROPERTIES";

/// The value of [`KAFKA_PROPERTIES_ENV`], if it is set.
pub fn kafka_properties_env() -> Result<Option<String>> {
    match std::env::var(KAFKA_PROPERTIES_ENV) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(e).context(KAFKA_PROPERTIES_ENV),
    }
}

/// A setting refused by a library check ([`WineError::Config`]), named as the
/// user gives it: its flag, its environment variable and, when the command
/// reads a configuration file (`file`), its key or table there. Other errors
/// pass unchanged.
pub fn name_setting<A: clap::Args>(err: WineError, file: bool) -> anyhow::Error {
    let WineError::Config { name, reason } = &err else {
        return err.into();
    };
    // The flag of setting `batch_size` is `--batch-size`, of `shutdown_timeout`
    // `--shutdown-timeout-ms`, of `kafka_properties` `--kafka-property`.
    let ids = [
        name.to_string(),
        format!("{name}_ms"),
        name.strip_suffix("ies")
            .map_or_else(String::new, |n| format!("{n}y")),
    ];
    let cmd = A::augment_args(clap::Command::new("flowstage"));
    let Some(arg) = cmd
        .get_arguments()
        .find(|a| ids.iter().any(|id| a.get_id().as_str() == id))
    else {
        return err.into();
    };
    let mut places = Vec::new();
    if let Some(long) = arg.get_long() {
        places.push(format!("--{long}"));
    }
    let table = name.strip_suffix("_properties");
    match (arg.get_env(), table) {
        (Some(env), _) => places.push(env.to_string_lossy().into_owned()),
        (None, Some("kafka")) => places.push(KAFKA_PROPERTIES_ENV.to_string()),
        (None, _) => {}
    }
    if file {
        places.push(match table {
            Some(t) => format!("the [{t}] table of the configuration file"),
            None => format!("{} in the configuration file", arg.get_id()),
        });
    }
    let places = match places.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => return err.into(),
    };
    anyhow::anyhow!("invalid `{name}` (set by {places}): {reason}")
}

/// The properties of every Kafka client: the `[kafka]` table of the file,
/// then the `key=value` lines of [`KAFKA_PROPERTIES_ENV`] (`env`; blank lines
/// are skipped), then the `--kafka-property` flags. librdkafka keeps the last
/// value of a key, so flags override the environment, the environment the
/// file.
pub fn kafka_properties(
    file: BTreeMap<String, String>,
    env: Option<&str>,
    flags: Vec<(String, String)>,
) -> Result<Vec<(String, String)>> {
    let mut properties: Vec<(String, String)> = file.into_iter().collect();
    for line in env.unwrap_or_default().lines() {
        if line.trim().is_empty() {
            continue;
        }
        let property =
            parse_property(line).map_err(|e| anyhow::anyhow!("{KAFKA_PROPERTIES_ENV}: {e}"))?;
        properties.push(property);
    }
    properties.extend(flags);
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_settings_are_named_by_flag_variable_and_file_key() {
        let named = |name, file| {
            let err = WineError::Config {
                name,
                reason: "bad".into(),
            };
            name_setting::<crate::serve::ServeArgs>(err, file).to_string()
        };
        assert_eq!(
            named("batch_size", true),
            "invalid `batch_size` (set by --batch-size, FLOWSTAGE_BATCH_SIZE or batch_size in \
             the configuration file): bad"
        );
        assert!(named("shutdown_timeout", true).contains("--shutdown-timeout-ms"));
        assert_eq!(
            named("kafka_properties", false),
            "invalid `kafka_properties` (set by --kafka-property or FLOWSTAGE_KAFKA_PROPERTIES): \
             bad"
        );
        assert!(named("producer_properties", true).contains("the [producer] table"));
        // A setting without a flag, and other errors, pass unchanged.
        assert_eq!(named("topics", true), "invalid setting `topics`: bad");
        let other = WineError::Parse {
            path: "w.csv".into(),
            line: 3,
            reason: "bad".into(),
        };
        let shown = other.to_string();
        assert_eq!(
            name_setting::<crate::serve::ServeArgs>(other, true).to_string(),
            shown
        );
    }

    #[test]
    fn file_keys_are_checked() -> Result<()> {
        let c: FileConfig = toml::from_str(
            "brokers = \"k:9092\"\nbatch_size = 8\n[consumer]\n\"session.timeout.ms\" = \"9000\"\n",
        )?;
        assert_eq!(c.brokers.as_deref(), Some("k:9092"));
        assert_eq!(c.batch_size, Some(8));
        assert_eq!(
            c.consumer.get("session.timeout.ms").map(String::as_str),
            Some("9000")
        );
        assert!(toml::from_str::<FileConfig>("brokerz = \"x\"").is_err());
        Ok(())
    }

    #[test]
    fn property_tables_take_numbers_and_booleans_as_text() -> Result<()> {
        let c: FileConfig = toml::from_str(
            "[consumer]\n\"session.timeout.ms\" = 6000\n\"enable.partition.eof\" = false\n\
             [producer]\n\"linger.ms\" = 0.5\n",
        )?;
        assert_eq!(c.consumer["session.timeout.ms"], "6000");
        assert_eq!(c.consumer["enable.partition.eof"], "false");
        assert_eq!(c.producer["linger.ms"], "0.5");
        let err = toml::from_str::<FileConfig>("[kafka]\n\"a\" = [1]\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("expected a string, number or boolean"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn kafka_properties_flags_over_env_over_file() -> Result<()> {
        let file: FileConfig = toml::from_str(
            "[kafka]\n\"security.protocol\" = \"SSL\"\n\"sasl.mechanism\" = \"PLAIN\"\n\
             \"client.rack\" = \"file\"\n",
        )?;
        let env = "security.protocol=SASL_SSL\n\nsasl.password=a;b,c=d\r\nclient.rack=env\n";
        let flags = vec![("client.rack".to_string(), "flag".to_string())];
        let props = kafka_properties(file.kafka, Some(env), flags)?;
        let effective = |key: &str| {
            props
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(effective("sasl.mechanism"), Some("PLAIN"), "file only");
        assert_eq!(
            effective("security.protocol"),
            Some("SASL_SSL"),
            "env over file"
        );
        assert_eq!(
            effective("sasl.password"),
            Some("a;b,c=d"),
            "a line is one value"
        );
        assert_eq!(
            effective("client.rack"),
            Some("flag"),
            "flag over env and file"
        );
        assert!(kafka_properties(BTreeMap::new(), Some("no-equals-sign"), Vec::new()).is_err());
        assert!(kafka_properties(BTreeMap::new(), None, Vec::new())?.is_empty());
        Ok(())
    }

    #[test]
    fn properties_need_a_key() {
        assert_eq!(parse_property("a.b=1"), Ok(("a.b".into(), "1".into())));
        assert_eq!(parse_property("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_property("=1").is_err());
        assert!(parse_property("nokey").is_err());
    }
}
