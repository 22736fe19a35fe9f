//! The `flowstage` command-line tool.
//!
//! - `score`: score a CSV offline with any model the model registry can load.
//! - `broker`: run the embedded Kafka-protocol broker (librdkafka's mock cluster).
//! - `provide`: publish wine records and models to Kafka.
//! - `serve`: score the data topic with the models of the model topic, publish results.
//! - `demo`: broker, provider and server in one process — the README's main job.

mod broker;
mod config;
mod demo;
mod provide;
mod score;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flowstage_stages::wine::with_causes;

/// The tool's allocator. `serve` allocates a few small buffers per record
/// (payloads, keys, results), freed on other threads than the one that
/// allocated them; with mimalloc the server ran ~10 % fewer instructions per
/// record than with glibc's allocator (callgrind, 200,000 records), and no
/// longer contends on glibc's arena locks with librdkafka's threads. The
/// libraries leave the choice to the application.
///
/// Capped: while a model loads or scores, one allocation of more than 4 GiB
/// fails (the model is refused) instead of taking the machine's memory, since a
/// graph can ask for a huge tensor (see `flowstage_model::alloc`).
#[global_allocator]
static GLOBAL: flowstage_model::CappedAllocator<mimalloc::MiMalloc> =
    flowstage_model::CappedAllocator::wrapping(mimalloc::MiMalloc, 4 << 30);

/// flowstage: streaming model serving on Kafka, without a JVM.
#[derive(Debug, Parser)]
#[command(name = "flowstage", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Score a CSV file offline with a model and write JSON Lines, one object per row.
    Score(score::ScoreArgs),
    /// Run the embedded Kafka-protocol broker (librdkafka's mock cluster) and print its address.
    Broker(broker::BrokerArgs),
    /// Publish wine records (CSV) and models (files or a directory) to Kafka.
    Provide(provide::ProvideArgs),
    /// Serve models on Kafka: score the data topic with the current models, publish results.
    Serve(Box<serve::ServeArgs>),
    /// The whole wine pipeline in one process on the embedded broker.
    Demo(demo::DemoArgs),
}

/// The environment variable tokio reads for the number of worker threads of a
/// multi-threaded runtime (one per core without it).
const WORKER_THREADS_ENV: &str = "TOKIO_WORKER_THREADS";

/// `value` of [`WORKER_THREADS_ENV`] as a count of worker threads: a whole
/// number from 1.
fn parse_worker_threads(value: &str) -> anyhow::Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => anyhow::bail!("{WORKER_THREADS_ENV}={value:?}: must be a whole number from 1"),
    }
}

/// The multi-threaded tokio runtime of `serve` and `demo`: as many worker
/// threads as `TOKIO_WORKER_THREADS` says, else one per core. tokio reads that
/// variable itself but panics on a value it cannot use; here such a value is
/// an error that names it.
fn multi_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match std::env::var(WORKER_THREADS_ENV) {
        Ok(v) => {
            builder.worker_threads(parse_worker_threads(&v)?);
        }
        Err(std::env::VarError::NotPresent) => {}
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("{WORKER_THREADS_ENV} is not valid Unicode")
        }
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Score(args) => score::run(&args),
        Command::Broker(args) => broker::run(args),
        Command::Provide(args) => provide::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`flowstage score … | head`): stop quietly, as Unix tools do.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowstage: error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Spawns a task (on the current tokio runtime) that waits for the next Ctrl-C
/// or SIGTERM, prints `message` and exits at once with the signal's status
/// (130 or 143), whatever else is running: the "another signal stops at once"
/// of `serve`, `provide` and `demo`.
fn exit_on_next_signal(message: &'static str) {
    tokio::spawn(async move {
        let signal = flowstage_stages::kafka::stop_signal().await;
        eprintln!("{message}");
        std::process::exit(signal.exit_code());
    });
}

/// The error and its causes, `: `-separated, each cause once (see [`with_causes`]).
fn report(e: &anyhow::Error) -> String {
    with_causes(e.as_ref())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As a `thiserror` variant with `#[error("{path}: {source}")]` and `#[source]`.
    #[derive(Debug)]
    struct ShowsItsSource {
        path: String,
        source: std::io::Error,
    }

    impl std::fmt::Display for ShowsItsSource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: {}", self.path, self.source)
        }
    }

    impl std::error::Error for ShowsItsSource {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_cause_shown_already_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(ShowsItsSource {
            path: "/nope.csv".into(),
            source: io,
        })
        .context("cannot read the records");
        assert_eq!(
            report(&e),
            "cannot read the records: /nope.csv: no such file"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(report(&plain), "outer: inner");
    }

    #[test]
    fn worker_threads_are_a_whole_number_from_one() {
        assert_eq!(parse_worker_threads("1").ok(), Some(1));
        assert_eq!(parse_worker_threads(" 4 ").ok(), Some(4));
        for bad in ["0", "", "two", "-1", "1.5"] {
            let e = parse_worker_threads(bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|m| m.contains("TOKIO_WORKER_THREADS")),
                "{bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn a_closed_pipe_is_recognised_through_context() {
        let e = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("cannot write the output");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
