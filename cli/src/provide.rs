//! `flowstage provide`: publishes wine records (a CSV file) and models (files
//! or directories) to Kafka, paced, with models swapped in as records flow.

use std::io::IsTerminal;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use flowstage_model::pb::ModelDescriptor;
use flowstage_model::{LoadOptions, ModelRegistry};
use flowstage_stages::kafka::shutdown_signal;
use flowstage_stages::wine::files::{
    model_descriptors, model_descriptors_by_location_with_values, read_wine_csv,
};
use flowstage_stages::wine::provider::{provide, ProviderConfig, ProviderProgress};
use flowstage_stages::wine::{plural, Topics};
use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::config::{kafka_properties, kafka_properties_env, name_setting, parse_property};

/// Arguments of `flowstage provide`. Each flag may also come from the
/// environment variable named beside it (flags win).
#[derive(Debug, Args)]
pub struct ProvideArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "FLOWSTAGE_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Wine records: a CSV file, the UCI format (`;`, no header) or with a header row.
    #[arg(long, env = "FLOWSTAGE_DATA", value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Models: .pmml/.xml, .pb (TensorFlow graph), .onnx files, SavedModel directories, or
    /// directories of those (repeatable; the environment variable holds one path).
    #[arg(long = "models", env = "FLOWSTAGE_MODELS", value_name = "PATH")]
    pub models: Vec<PathBuf>,
    /// Publish models by `location` (relative to the directory given) instead of by value;
    /// servers resolve locations inside their --models-dir.
    #[arg(long, env = "FLOWSTAGE_BY_LOCATION")]
    pub by_location: bool,
    /// Records per second; 0 publishes at full speed.
    #[arg(long, env = "FLOWSTAGE_RATE", default_value_t = 1000, value_name = "N")]
    pub rate: u64,
    /// Records to publish in all (default: each record of the file once, or forever with --loop).
    #[arg(long, env = "FLOWSTAGE_COUNT", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Start over at the first record after the last one.
    #[arg(long = "loop", env = "FLOWSTAGE_LOOP")]
    pub loop_data: bool,
    /// Seconds between two models (fractions allowed) [default: 10].
    #[arg(long, env = "FLOWSTAGE_MODEL_INTERVAL", value_name = "SECS", value_parser = parse_secs)]
    pub model_interval: Option<Duration>,
    /// A model every N records instead of by time (deterministic interleaving); not with
    /// --model-interval.
    #[arg(long, env = "FLOWSTAGE_MODEL_EVERY", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub model_every: Option<u64>,
    /// The dataType of the records, and of the models.
    #[arg(long, env = "FLOWSTAGE_DATA_TYPE", default_value = "wine")]
    pub data_type: String,
    /// Topic of wine records.
    #[arg(long, env = "FLOWSTAGE_DATA_TOPIC", default_value = "mdata")]
    pub data_topic: String,
    /// Topic of model descriptors (keyed by dataType).
    #[arg(long, env = "FLOWSTAGE_MODELS_TOPIC", default_value = "models")]
    pub models_topic: String,
    /// Records sent and not yet acknowledged at most.
    #[arg(long, env = "FLOWSTAGE_MAX_IN_FLIGHT", default_value_t = 10_000, value_name = "N",
          value_parser = parse_positive)]
    pub max_in_flight: usize,
    /// A librdkafka property of every Kafka client (repeatable); for a secured cluster:
    /// security.protocol=SASL_SSL (or SSL, SASL_PLAINTEXT), sasl.mechanism=PLAIN (or
    /// SCRAM-SHA-256/512), sasl.username=…, sasl.password=…, ssl.ca.location=ca.pem (else the
    /// system's CAs).
    /// Also from FLOWSTAGE_KAFKA_PROPERTIES (key=value lines; the flags override it);
    /// --producer-property overrides it.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_property)]
    pub kafka_property: Vec<(String, String)>,
    /// Extra librdkafka producer property (repeatable).
    #[arg(short = 'X', long, value_name = "KEY=VALUE", value_parser = parse_property)]
    pub producer_property: Vec<(String, String)>,
    /// Records batched for 0.2 ms instead of 5 ms (linger.ms=0.2), the provider's part of
    /// `flowstage serve --low-latency`; --producer-property overrides it.
    #[arg(long, env = "FLOWSTAGE_LOW_LATENCY")]
    pub low_latency: bool,
    /// No progress bar (there is one only when stderr is a terminal).
    #[arg(long, env = "FLOWSTAGE_NO_PROGRESS")]
    pub no_progress: bool,
}

/// Parses a non-negative number of seconds, fractions allowed.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("{s:?}: not a valid duration"))
}

/// Parses a count of at least 1.
fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive integer")),
    }
}

/// The progress bar, when wanted and stderr is a terminal.
fn progress_bar(args: &ProvideArgs, total: Option<u64>) -> Option<ProgressBar> {
    if args.no_progress || !std::io::stderr().is_terminal() {
        return None;
    }
    let (pb, template) = match total {
        Some(n) => (
            ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            "{spinner} {elapsed_precise} [{bar:30}] {human_pos}/{human_len} records \
             ({rate}) {msg}",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{spinner} {elapsed_precise} {human_pos} records ({rate}) {msg}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        // Whole records a second (indicatif's `{per_sec}` shows a varying number of decimals).
        let rate = |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}/s", HumanCount(s.per_sec().round() as u64));
        };
        pb.set_style(style.progress_chars("=> ").with_key("rate", rate));
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    Some(pb)
}

/// Runs `flowstage provide`.
pub fn run(args: ProvideArgs) -> Result<()> {
    crate::serve::init_tracing("warn,flowstage=info,flowstage_stages=info");
    if args.data.is_none() && args.models.is_empty() {
        bail!("nothing to publish: give --data FILE and/or --models PATH");
    }
    let records = match &args.data {
        Some(path) => {
            let r = read_wine_csv(path)?;
            if r.is_empty() {
                bail!("{}: no wine records in this file", path.display());
            }
            r
        }
        None => Vec::new(),
    };
    // By location, each model's bytes beside it, from the same scan: the files
    // found here are what the servers' models directory is expected to hold.
    let (models, by_value): (Vec<ModelDescriptor>, Option<Vec<ModelDescriptor>>) =
        if args.by_location {
            let (models, values) =
                model_descriptors_by_location_with_values(&args.models, &args.data_type)?
                    .into_iter()
                    .unzip();
            (models, Some(values))
        } else {
            (
                model_descriptors(&args.models, &args.data_type, false)?,
                None,
            )
        };

    let mut config = ProviderConfig {
        topics: Topics {
            data: args.data_topic.clone(),
            models: args.models_topic.clone(),
            ..Topics::default()
        },
        data_type: args.data_type.trim().to_string(),
        rate: args.rate,
        count: args.count,
        loop_data: args.loop_data,
        model_interval: args.model_interval.unwrap_or(DEFAULT_MODEL_INTERVAL),
        model_every: args.model_every,
        max_in_flight: args.max_in_flight,
        kafka_properties: kafka_properties(
            Default::default(),
            kafka_properties_env()?.as_deref(),
            args.kafka_property.clone(),
        )?,
        properties: args.producer_property.clone(),
        ..ProviderConfig::new(args.brokers.clone())
    };
    if args.low_latency {
        config = config.low_latency();
    }
    // Settings first: before the banner says anything is published.
    config
        .check_for(records.len(), models.len())
        .map_err(|e| name_setting::<ProvideArgs>(e, false))?;
    // Checked here rather than by clap, whose message would name two flags when one of
    // them came from the environment.
    if args.model_every.is_some() && args.model_interval.is_some() {
        bail!(
            "--model-every (FLOWSTAGE_MODEL_EVERY) and --model-interval \
             (FLOWSTAGE_MODEL_INTERVAL) are both set: models go out by records or by time, \
             not both"
        );
    }
    if args.model_every.is_some() && records.is_empty() {
        bail!("--model-every counts records: give --data, or use --model-interval");
    }
    // Every server would refuse a model that does not load: refuse it here, before
    // anything is published.
    check_models_load(by_value.as_deref().unwrap_or(&models))?;
    drop(by_value);
    if let (Some(c), false) = (args.count, args.loop_data) {
        if c > records.len() as u64 && !records.is_empty() {
            eprintln!(
                "note: --count {c} but the file has {} records; add --loop to publish {c}",
                records.len()
            );
        }
    }
    let total = config.total_records(records.len());
    let pace = match args.rate {
        0 => "at full speed".to_string(),
        r => format!("at {r} records/s"),
    };
    let how_many = match total {
        Some(n) => plural(n, "record"),
        None => "endless records".into(),
    };
    eprintln!(
        "publishing {how_many} {pace} to {} and {} to {} on {} (Ctrl-C stops)",
        config.topics.data,
        plural(models.len() as u64, "model"),
        config.topics.models,
        config.brokers
    );

    let pb = progress_bar(&args, total);
    let on_progress = {
        let pb = pb.clone();
        move |p: &ProviderProgress| {
            if let Some(pb) = &pb {
                pb.set_position(p.records);
                if let Some(m) = &p.current_model {
                    pb.set_message(format!("model {m} ({} published)", p.models));
                }
            }
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let brokers = config.brokers.clone();
    let offered = models.len() as u64;
    // The first signal stops after the records in flight are acknowledged (or
    // their wait times out); a second one stops at once.
    let stop = async {
        shutdown_signal().await;
        eprintln!(
            "flowstage provide: stopping: waiting for the records in flight to be acknowledged \
             (a second Ctrl-C or SIGTERM stops at once)"
        );
        crate::exit_on_next_signal(
            "flowstage provide: stopped at once; records in flight may not have reached the \
             broker",
        );
    };
    let summary = runtime
        .block_on(provide(config, records, models, on_progress, stop))
        .with_context(|| format!("publishing to {brokers} failed"));
    // A stop while connecting leaves the connection attempt's thread waiting
    // out its timeout: do not wait for it.
    runtime.shutdown_background();
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    let summary = summary?;
    writeln!(std::io::stdout(), "{summary}").context("cannot write the summary")?;
    if !summary.interrupted && summary.records > 0 && summary.models < offered {
        let longer = if args.loop_data {
            "raise --count"
        } else {
            "add --loop, raise --count"
        };
        eprintln!(
            "note: {} of the {offered} models were published: models go out between records, \
             and the records ended first ({longer}, or shorten --model-interval / use \
             --model-every)",
            summary.models
        );
    }
    if summary.unacknowledged > 0 || summary.unacknowledged_models > 0 {
        bail!(
            "{} records and {} model were sent but not acknowledged by the broker: they may \
             be lost",
            summary.unacknowledged,
            summary.unacknowledged_models
        );
    }
    Ok(())
}

/// The time between two models without `--model-interval`.
const DEFAULT_MODEL_INTERVAL: Duration = Duration::from_secs(10);

/// Loads each model as a server does (without scoring), so that a file that is
/// not a model of its kind is refused before it is published.
fn check_models_load(models: &[ModelDescriptor]) -> Result<()> {
    let registry = ModelRegistry::with_defaults();
    for m in models {
        if let Err(e) = registry.from_descriptor(m, &LoadOptions::default()) {
            let from = m
                .description
                .strip_prefix("from ")
                .unwrap_or(&m.description);
            return Err(anyhow::Error::new(e).context(format!(
                "model {from} does not load, so no server could use it; nothing was published"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seconds_and_counts() {
        assert_eq!(parse_secs("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("x").is_err());
        assert_eq!(parse_positive("3"), Ok(3));
        assert!(parse_positive("0").is_err());
    }
}
