//! `flowstage broker`: the embedded Kafka-protocol broker (librdkafka's mock
//! cluster) for other processes — `flowstage provide`, `flowstage serve`, any
//! Kafka client. Prints its bootstrap address alone on the first line of
//! stdout (for scripts), then runs until Ctrl-C or SIGTERM.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;
use flowstage_stages::kafka::{run_embedded_broker, shutdown_signal, EmbeddedBrokerConfig};
use flowstage_stages::wine::instances::DEFAULT_INSTANCES_TOPIC;
use flowstage_stages::wine::Topics;

/// Arguments of `flowstage broker`.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Partitions of the data and results topics (a mock partition keeps at most 100,000
    /// messages / 5 MiB: use several for long runs).
    #[arg(long, default_value_t = 6, value_name = "N",
          value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub partitions: i32,
    /// Brokers in the mock cluster.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(i32).range(1..=16))]
    pub brokers: i32,
}

/// The cluster `args` describe: the pipeline's topics with their partitions.
fn cluster_config(args: &BrokerArgs) -> EmbeddedBrokerConfig {
    let t = Topics::default();
    EmbeddedBrokerConfig::new(args.brokers)
        .topic(t.data, args.partitions)
        .topic(t.models, 1)
        .topic(t.results, args.partitions)
        .topic(t.dlq, 1)
        .topic(DEFAULT_INSTANCES_TOPIC, 1)
}

/// Runs `flowstage broker`.
pub fn run(args: BrokerArgs) -> Result<()> {
    crate::serve::init_tracing("warn,flowstage=info,flowstage_stages=info");
    let config = cluster_config(&args);
    let topics = config
        .topics
        .iter()
        .map(|t| format!("{} ({})", t.name, t.partitions))
        .collect::<Vec<_>>()
        .join(", ");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let mut printed = Ok(());
    // Stops the broker at once when its address cannot be printed: no one
    // could use it.
    let (unprinted_tx, unprinted) = tokio::sync::oneshot::channel::<()>();
    let stop = async {
        tokio::select! {
            () = shutdown_signal() => {}
            Ok(()) = unprinted => {}
        }
    };
    runtime
        .block_on(run_embedded_broker(
            config,
            |bootstrap| {
                let mut out = std::io::stdout().lock();
                printed = writeln!(out, "{bootstrap}").and_then(|()| out.flush());
                if printed.is_err() {
                    let _ = unprinted_tx.send(());
                    return;
                }
                eprintln!(
                    "flowstage broker: librdkafka's mock cluster ({}) at {bootstrap}\n  \
                     topics: {topics}\n  \
                     limits: in memory only, each partition keeps at most 100,000 messages / \
                     5 MiB (older ones are dropped); no persistence, no security — for tests \
                     and demos\n  \
                     stop with Ctrl-C (or SIGTERM)",
                    flowstage_stages::wine::plural(
                        u64::try_from(args.brokers).unwrap_or(0),
                        "broker"
                    ),
                );
            },
            stop,
        ))
        .context("the embedded broker failed")?;
    printed.context("cannot write the bootstrap address to stdout")?;
    eprintln!("flowstage broker: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_the_pipeline_topics() {
        let c = cluster_config(&BrokerArgs {
            partitions: 4,
            brokers: 2,
        });
        let topics: Vec<_> = c
            .topics
            .iter()
            .map(|t| (t.name.as_str(), t.partitions))
            .collect();
        assert_eq!(
            topics,
            [
                ("mdata", 4),
                ("models", 1),
                ("results", 4),
                ("mdata-dlq", 1),
                ("serving-instances", 1)
            ]
        );
        assert_eq!(c.brokers, 2);
    }
}
