//! The `flowstage` command-line tool.
//!
//! Subcommands live in their own modules; `score` scores a CSV offline with any model the
//! model registry can load. (`broker`, `provide`, `serve` and `demo` come later.)

mod score;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Score(args) => score::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowstage: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
